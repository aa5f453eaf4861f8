
import numpy as np
import onnx
import pytest
import torch

from board.manifest import load_manifest
from flow.backends import ORTBackend, QONNXBackend
from flow.errors import FlowError
from flow.export import ExportError, export_run, load_checkpoint
from flow.qcdq import QCDQRefusal, lower_to_qcdq
from flow.samples import sample_images, to_nchw_float


def test_export_writes_clean_qonnx_and_manifest(run_4w4a):
    m = load_manifest(run_4w4a)
    assert m.variant == "4w4a" and m.input.datatype == "UINT8"
    assert m.output.accel_shape == [1, 2, 2, 18] and m.output.scale == pytest.approx(1 / 127)
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(run_4w4a / "model.qonnx.onnx"))
    assert model.get_tensor_datatype("global_in").name == "UINT8"
    ops = {n.op_type for n in model.graph.node}
    assert "Quant" in ops and "Conv" in ops
    # torch's stack traces (with the exporting machine's paths) are stripped from every node
    assert not any(n.doc_string or len(n.metadata_props) for n in model.graph.node)
    assert m.files["qonnx"]["sha256"]


def test_qonnx_and_qcdq_agree_on_real_images(run_4w4a):
    m = load_manifest(run_4w4a)
    x = to_nchw_float(sample_images(64, 3, 2, resample="bilinear"))
    a = QONNXBackend(run_4w4a / "model.qonnx.onnx", m).run(x)
    b = ORTBackend(run_4w4a / "model.qcdq.onnx", m).run(x)  # batch 5 through the symbolic batch dim
    assert a.shape == (5, 18, 2, 2) and np.array_equal(a, b)
    assert len(np.unique(a)) > 3  # not a degenerate constant output


def test_qcdq_uses_only_standard_ops(run_4w4a):
    model = onnx.load(str(run_4w4a / "model.qcdq.onnx"))
    assert {n.domain for n in model.graph.node} <= {""}
    assert {"QuantizeLinear", "DequantizeLinear", "Clip"} <= {n.op_type for n in model.graph.node}


def _mutate_first_act_quant(src, dst, fn):
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "Quant" and n.input[0] not in inits)
    fn(model, node, inits)
    onnx.save(model, str(dst))
    return node.name


@pytest.mark.parametrize("what, needle", [
    ("bits", "9-bit"), ("zero", "zero point \\[2.5\\] is not an integer"), ("rounding", "rounding_mode FLOOR"),
])
def test_qcdq_refuses_what_ort_cannot_represent(run_4w4a, tmp_path, what, needle):
    def mutate(model, node, inits):
        if what == "bits":
            inits[node.input[3]].CopyFrom(onnx.numpy_helper.from_array(np.array(9.0, np.float32), node.input[3]))
        elif what == "zero":
            inits[node.input[2]].CopyFrom(onnx.numpy_helper.from_array(np.array(2.5, np.float32), node.input[2]))
        else:
            for a in node.attribute:
                if a.name == "rounding_mode":
                    a.s = b"FLOOR"

    bad = tmp_path / "bad.onnx"
    name = _mutate_first_act_quant(run_4w4a / "model.qonnx.onnx", bad, mutate)
    with pytest.raises(QCDQRefusal, match=needle) as e:
        lower_to_qcdq(bad, tmp_path / "out.onnx")
    assert name in str(e.value) and str(bad) in str(e.value)
    assert not (tmp_path / "out.onnx").exists()  # nothing half-written


def test_bad_files_get_one_clear_error(tmp_path, run_4w4a):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not an onnx file at all")
    with pytest.raises(FlowError, match="junk.onnx: not a readable ONNX model"):
        lower_to_qcdq(junk, tmp_path / "o.onnx")
    plain = tmp_path / "plain.onnx"
    lower_to_qcdq(run_4w4a / "model.qonnx.onnx", tmp_path / "q.onnx")
    onnx.save(onnx.load(str(tmp_path / "q.onnx")), str(plain))  # valid ONNX, but no Quant nodes
    with pytest.raises(QCDQRefusal, match="not a QONNX model"):
        lower_to_qcdq(plain, tmp_path / "o.onnx")
    m = load_manifest(run_4w4a)
    with pytest.raises(FlowError, match="does not match the model"):
        QONNXBackend(run_4w4a / "model.qonnx.onnx", m).run(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(FlowError, match="float32"):
        ORTBackend(run_4w4a / "model.qcdq.onnx", m).run(np.zeros((1, 3, 64, 64), np.uint8))


def test_checkpoint_errors_name_the_file_and_cause(tmp_path, run_4w4a):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ExportError, match="bad.pt: not a readable torch checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(ExportError, match="checkpoint is variant '4w4a', but --variant 2w4a"):
        export_run(tmp_path / "x", "2w4a", 64, checkpoint=run_4w4a / "model.pt")
    ckpt = torch.load(run_4w4a / "model.pt", weights_only=False)
    ckpt["spec"]["weight_bits"] = list(ckpt["spec"]["weight_bits"])
    ckpt["spec"]["weight_bits"][3] = 2  # spec and weights disagree
    torch.save(ckpt, tmp_path / "mixed.pt")
    model, spec = load_checkpoint(tmp_path / "mixed.pt")  # quantizer bit widths are not weights: loads,
    assert spec.weight_bits[3] == 2  # and the spec in the checkpoint is the one that is built


def test_export_from_checkpoint_reproduces_the_model(tmp_path, run_4w4a):
    export_run(tmp_path, "4w4a", 64, checkpoint=run_4w4a / "model.pt")
    a = (run_4w4a / "model.qonnx.onnx").read_bytes()
    b = (tmp_path / "model.qonnx.onnx").read_bytes()
    assert a == b  # deterministic, path-free export


def _one_node_model(node, x_shape, inits: dict, out_shape=None):
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    g = helper.make_graph([node], "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape or x_shape))],
                          [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    return cleanup_model(ModelWrapper(model))


def _qonnx_vs_ort(model, x, tmp_path):
    import onnxruntime as ort
    from qonnx.core.onnx_exec import execute_onnx

    src, dst = tmp_path / "m.onnx", tmp_path / "m.qcdq.onnx"
    model.save(str(src))
    lower_to_qcdq(src, dst)
    lowered = onnx.load(str(dst))
    assert {n.domain for n in lowered.graph.node} <= {""}
    iname, oname = model.graph.input[0].name, model.graph.output[0].name  # cleanup names them global_in/out
    ref = execute_onnx(model, {iname: x})[oname]
    got = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {iname: x})[0]
    return ref, got, lowered


@pytest.mark.parametrize("signed, narrow, bits, zero, per_channel", [
    (0, 0, 8, 37, False), (0, 0, 4, 5, False), (1, 0, 8, -20, False), (1, 1, 4, 3, False), (0, 0, 6, [0, 9, 63], True),
])
def test_a_quant_with_an_integer_zero_point_lowers_bit_exact(tmp_path, signed, narrow, bits, zero, per_channel):
    """Quant with a zero point, (round(clip(x / s + z)) - z) * s, as those float32 steps in standard ops: the same
    values as qonnx's executor on every input, including inputs far outside the range (clipped) and on ties
    (x / s = k + 0.5 for s = 0.02, where QuantizeLinear's round(x / s) + z differs for an odd z)."""
    from onnx import helper

    scale = np.array([0.05, 0.11, 0.02], np.float32).reshape(1, 3, 1, 1) if per_channel else np.float32(0.0731)
    z = np.asarray(zero, np.float32).reshape(np.shape(scale)) if per_channel else np.float32(zero)
    node = helper.make_node("Quant", ["x", "s", "z", "b"], ["y"], domain="qonnx.custom_op.general", signed=signed,
                            narrow=narrow, rounding_mode="ROUND")
    model = _one_node_model(node, (2, 3, 16, 16), {"s": scale, "z": z, "b": np.float32(bits)})
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2, 3, 16, 16)) * 8).astype(np.float32)
    x[0, :, 0, :] = (np.arange(-8, 8, dtype=np.float32) * np.asarray(scale).reshape(-1)[0])  # on codes exactly
    ref, got, lowered = _qonnx_vs_ort(model, x, tmp_path)
    assert np.array_equal(ref, got) and len(np.unique(ref)) > 8
    assert {"Div", "Add", "Clip", "Round", "Sub", "Mul"} == {n.op_type for n in lowered.graph.node}


@pytest.mark.parametrize("layout, per_channel, out_scale, out_bias, n", [
    ("NCHW", False, 1.0, 0.0, 255), ("NCHW", True, 1.0, -8.0, 15), ("NHWC", True, 2.0, -1.0, 7), ("NHWC", False, 1.0, 0.0, 40),
])
def test_multithreshold_lowers_to_standard_ops_bit_exact(tmp_path, layout, per_channel, out_scale, out_bias, n):
    """FINN-ONNX's MultiThreshold (count of thresholds x >= t, times out_scale plus out_bias) on ORT: the same values
    as qonnx's executor, in both layouts, per channel or global, more thresholds than one comparison chunk, and
    inputs exactly on thresholds (>=, not >)."""
    from onnx import helper

    shape = (1, 4, 6, 6) if layout == "NCHW" else (1, 6, 6, 4)
    rng = np.random.default_rng(2)
    t = np.sort(rng.standard_normal((4 if per_channel else 1, n)).astype(np.float32), axis=1)
    attrs = {"out_dtype": "INT8", "data_layout": layout}
    attrs.update({k: v for k, v, neutral in (("out_scale", out_scale, 1.0), ("out_bias", out_bias, 0.0)) if v != neutral})
    node = helper.make_node("MultiThreshold", ["x", "t"], ["y"], domain="qonnx.custom_op.general", **attrs)
    model = _one_node_model(node, shape, {"t": t})
    x = rng.standard_normal(shape).astype(np.float32) * 1.5
    x.reshape(-1)[: t.size] = t.reshape(-1)[: x.size]  # some inputs exactly on a threshold
    ref, got, _ = _qonnx_vs_ort(model, x, tmp_path)
    assert np.array_equal(ref, got) and len(np.unique(ref)) > 3


def test_export_writes_the_frame_the_fabric_letterboxes(tmp_path, run_4w4a, capsys):
    """A bilinear-exact model's manifest says the accelerator takes 640x480 frames unless --frame says otherwise;
    a model trained with another resize (or from before resamples were recorded) keeps the ARM's letterbox and a
    frame for it is refused before anything is written."""
    import json

    from flow.export import cli

    export_run(tmp_path / "a", checkpoint=run_4w4a / "model.pt")
    m = load_manifest(tmp_path / "a")
    assert m.input.frame == (640, 480) and m.input.accel_shape == [1, 480, 640, 3] and m.input.shape == [1, 3, 64, 64]
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["input"]["frame"] == [640, 480]
    assert cli(["--checkpoint", str(run_4w4a / "model.pt"), "--frame", "none", "--out", str(tmp_path / "b")]) == 0
    assert "the ARM letterboxes" in capsys.readouterr().out
    assert load_manifest(tmp_path / "b").input.frame is None
    assert "frame" not in json.loads((tmp_path / "b" / "manifest.json").read_text())["input"]

    ckpt = torch.load(run_4w4a / "model.pt", weights_only=False)
    ckpt["spec"]["resample"] = "bilinear"
    torch.save(ckpt, tmp_path / "bilinear.pt")
    del ckpt["spec"]["resample"]
    torch.save(ckpt, tmp_path / "legacy.pt")
    assert load_checkpoint(tmp_path / "legacy.pt")[1].resample == "bilinear"  # what every model before it used
    with pytest.raises(ExportError, match=r"--frame 640x480: the fabric letterbox computes bilinear-exact, but this "
                                          r"model was trained with 'bilinear' resizes; pass --frame none"):
        export_run(tmp_path / "c", checkpoint=tmp_path / "bilinear.pt", frame="640x480")
    with pytest.raises(ExportError, match=r"--frame '640\*480': give the camera frame as WIDTHxHEIGHT"):
        export_run(tmp_path / "c", checkpoint=run_4w4a / "model.pt", frame="640*480")
    assert not (tmp_path / "c").exists()
    export_run(tmp_path / "d", checkpoint=tmp_path / "legacy.pt")
    assert load_manifest(tmp_path / "d").input.frame is None


def test_frame_text():
    from flow.export import parse_frame

    assert parse_frame(None, "bilinear-exact") == (640, 480) and parse_frame(None, "nearest") is None
    assert parse_frame("1280X720", "bilinear-exact") == (1280, 720) and parse_frame("None", "bilinear") is None
    for bad in ("640", "0x480", "x480", "640x-1", "axb"):
        with pytest.raises(ExportError, match="WIDTHxHEIGHT"):
            parse_frame(bad, "bilinear-exact")
