"""`python -m flow import` on FINN-ONNX: MultiThreshold activations and `finn_datatype` quantization annotations,
as FINN's own converter and Brevitas's older FINN exporter write them. Both fixtures are made here, at test time,
from an LPYOLO-shaped 4w4a Brevitas model at 64x64 (tests/test_import.py::user_brevitas_qonnx):

- `finn_converted`: FINN's ConvertQONNXtoFINN (finn.transformation.qonnx.convert_qonnx_to_finn, what FINN's builder
  step `qonnx_to_finn` runs) and qonnx's cleanup on the model's QONNX export, its input quantizer calibrated by
  Brevitas's default;
- `older_brevitas_format`: the same graph rewritten to what `brevitas.onnx.export_finn_onnx` (Brevitas <= 0.9)
  wrote: MultiThreshold in the domain `finn.custom_op.general` (brevitas src/brevitas/export/onnx/finn/function/
  __init__.py, DOMAIN_STRING), one threshold row per channel (handler/act.py: `thresholds.expand(final_shape)`),
  an input QuantIdentity (signed 8-bit, Brevitas's default Int8ActPerTensorFloat) exported as its handler does,
  MultiThreshold -> Add(-128) -> Mul(scale) with thresholds min_threshold + step * t (handler/act.py,
  FINNQuantHardTanhHandler.thresholds), weights listed as graph inputs and opset 11 (torch.onnx of that time).
  LPYOLO's released files (github.com/sefaburakokcu/finn-quantized-yolo, README: 2w4a.onnx ... 8w3a.onnx) are
  hosted on OneDrive, not in the repository, and could not be fetched here.
"""

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from test_import import flow, in_process, user_brevitas_qonnx

from board.manifest import load_manifest


def finn_converter_output(qonnx_path, out_path):
    """QONNX -> FINN-ONNX with FINN's own converter, then qonnx's cleanup, as FINN's builder does."""
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    model = cleanup_model(cleanup_model(ModelWrapper(str(qonnx_path))).transform(ConvertQONNXtoFINN()))
    assert model.get_nodes_by_op_type("MultiThreshold") and not model.get_nodes_by_op_type("Quant")
    assert any(a.quant_parameter_tensor_names[0].value.startswith("INT") for a in model.graph.quantization_annotation)
    model.save(str(out_path))
    return out_path


def older_brevitas_finn_export(finn_path, out_path, input_scale=1 / 127):
    """The FINN converter's graph in the older Brevitas FINN exporter's conventions (see the module docstring)."""
    m = onnx.load(str(finn_path))
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    gin = g.input[0].name
    first = next(n for n in g.node if n.op_type == "MultiThreshold" and n.input[0] == gin)
    # the input QuantIdentity, signed 8-bit, not narrow: 255 thresholds from -s/2 - s * 127, step s, then Add(-128)
    step, n = np.float32(input_scale), 255
    thr = (-step / 2 - step * (n // 2 - 1) - step + step * np.arange(n, dtype=np.float32)).astype(np.float32)
    inits[first.input[1]].CopyFrom(numpy_helper.from_array(np.tile(thr, (3, 1)), first.input[1]))
    for a in first.attribute:
        if a.name == "out_dtype":
            a.s = b"INT8"
    scale_mul = next(n for n in g.node if n.op_type == "Mul" and n.input[0] == first.output[0])
    inits[scale_mul.input[1]].CopyFrom(numpy_helper.from_array(np.float32(input_scale), scale_mul.input[1]))
    bias = "input_quant_bias"
    g.initializer.append(numpy_helper.from_array(np.float32(-128), bias))
    at = list(g.node).index(scale_mul)
    g.node.insert(at, helper.make_node("Add", [first.output[0], bias], ["input_quant_biased"], name="Add_input"))
    scale_mul.input[0] = "input_quant_biased"
    for node in g.node:
        if node.op_type == "MultiThreshold":
            node.domain = "finn.custom_op.general"
            t = numpy_helper.to_array(inits[node.input[1]])
            if t.shape[0] == 1:  # one row per channel, as the exporter expanded them
                ch = next(v for v in g.value_info if v.name == node.input[0]).type.tensor_type.shape.dim[1].dim_value
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(np.tile(t, (ch, 1)), node.input[1]))
    keep = [v for v in g.value_info if v.name not in inits]  # the exporter annotated activations only
    del g.value_info[:]
    g.value_info.extend(keep)
    del m.opset_import[:]
    m.opset_import.extend([helper.make_opsetid("", 11), helper.make_opsetid("finn.custom_op.general", 1)])
    g.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in g.initializer)
    onnx.save(m, str(out_path))
    return out_path


@pytest.fixture(scope="module")
def finn_converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("finn_onnx")
    return finn_converter_output(user_brevitas_qonnx(d / "qonnx.onnx", input_scale=None), d / "lpyolo_4w4a_finn.onnx")


@pytest.fixture(scope="module")
def older_brevitas_format(finn_converted, tmp_path_factory):
    return older_brevitas_finn_export(finn_converted, tmp_path_factory.mktemp("old") / "lpyolo_4w4a_brevitas_finn.onnx")


BACKENDS = ("qonnx", "qcdq-ort-cpu", "original", "finn-tidy", "finn-streamlined", "finn-hw", "board-sim")


def test_finn_converter_output_imports_without_flags_and_is_bit_exact_on_every_backend(finn_converted, tmp_path):
    """Imported as it is; the report and the manifest say FINN-ONNX and what runs it; FINN's first steps leave it
    as it is (no Quant nodes); estimate builds the input MultiThreshold as a thresholding layer; QCDQ (thresholds
    as standard ops), the user's file, FINN's models and the board simulation agree bit for bit with the integer
    golden model."""
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.crosscheck import run_crosscheck
    from flow.hw.build import FinnConfig, run_estimate
    from flow.hw.compat import init_finn
    from flow.hw.steps import STEPS, StepContext, dataflow_cfg

    run = tmp_path / "run"
    r = flow("import", finn_converted, "--out", run)
    assert r.returncode == 0, r.stderr
    assert "(FINN-ONNX)" in r.stdout and "qcdq-ort (MultiThreshold as standard ops)" in r.stdout, r.stdout
    m = load_manifest(run)
    assert m.input.datatype == "UINT8" and m.output.datatype == "INT8" and m.output.narrow
    assert m.output.scale == pytest.approx(1 / 127) and m.imported["format"] == "FINN-ONNX"
    assert "thresholds rewritten for the UINT8 pixels" in m.imported["input_rewrite"][0]
    assert m.imported["check"]["differing"] == 0 and m.imported["check"]["distinct_codes"] > 2
    model = ModelWrapper(str(run / "model.qonnx.onnx"))
    init_finn(tmp_path / "finn_tmp")
    cfg = FinnConfig(run_dir=str(run))
    ctx = StepContext(cfg, dataflow_cfg(cfg, cfg.target_fps), m)
    after = STEPS["qonnx_to_finn"](STEPS["input_thresholds"](model, ctx), ctx)
    assert [n.op_type for n in after.graph.node] == [n.op_type for n in model.graph.node]  # a no-op on FINN-ONNX
    s = run_estimate(cfg, quiet=True)
    assert s["fits"] and s["fps"] > 0 and any(n.startswith("Thresholding") for n in s["layers"])
    c = run_crosscheck(run, device="cpu", n_real=2, n_random=1, reference="int-ort")
    assert c["reference"] == "int-ort-cpu" and not c["any_mismatch"]
    for name in BACKENDS:
        assert c["backends"][name]["mismatches"] == 0 and c["backends"][name]["elements"] == 3 * 18 * 2 * 2, name
    assert json.loads((run / "manifest.json").read_text())["import"]["backends"][0] == "original"


def test_older_brevitas_finn_export_imports_and_is_bit_exact(older_brevitas_format, tmp_path):
    """The older exporter's conventions (finn.custom_op.general, per-channel threshold rows, a signed input
    quantizer as MultiThreshold -> Add -> Mul, weights as inputs, opset 11): imported without flags, the same
    backends bit-exact against the QONNX executor."""
    from flow.crosscheck import run_crosscheck
    from flow.hw.build import FinnConfig, run_estimate
    from flow.importer import import_model

    m = import_model(older_brevitas_format, tmp_path / "run")
    assert m.imported["format"] == "FINN-ONNX" and m.input.datatype == "UINT8"
    assert "thresholds rewritten for the UINT8 pixels" in m.imported["input_rewrite"][0]
    assert m.imported["check"]["differing"] == 0
    assert run_estimate(FinnConfig(run_dir=str(tmp_path / "run")), quiet=True)["fits"]
    c = run_crosscheck(tmp_path / "run", device="cpu", n_real=2, n_random=1)
    assert not c["any_mismatch"]
    for name in BACKENDS[1:]:
        assert c["backends"][name]["mismatches"] == 0, name


def test_an_input_multithreshold_that_counts_the_pixel_is_dropped(tmp_path):
    """A constant 1/255 input quantizer, converted by FINN, is 255 thresholds at (k + 0.5) / 255: the count is the
    pixel itself, so the node goes and the pixels feed the first layer's scale."""
    from flow.importer import import_model

    theirs = finn_converter_output(user_brevitas_qonnx(tmp_path / "q.onnx"), tmp_path / "finn.onnx")
    m = import_model(theirs, tmp_path / "run")
    assert "counts the pixel itself" in m.imported["input_rewrite"][0] and m.imported["check"]["differing"] == 0
    model = onnx.load(str(tmp_path / "run" / "model.qonnx.onnx"))
    assert sum(n.op_type == "MultiThreshold" for n in model.graph.node) == \
        sum(n.op_type == "MultiThreshold" for n in onnx.load(str(theirs)).graph.node) - 1


def _edit(src, dst, fn):
    m = onnx.load(str(src))
    fn(m.graph, {t.name: t for t in m.graph.initializer})
    del m.graph.value_info[:]  # shapes are inferred again on import
    onnx.save(m, str(dst))
    return dst


def _output_mul(g):
    return next(n for n in g.node if n.output[0] == g.output[0].name)


def _per_channel_scale(g, inits):
    mul = _output_mul(g)
    inits[mul.input[1]].CopyFrom(numpy_helper.from_array(np.full((1, 18, 1, 1), 0.01, np.float32), mul.input[1]))


def _wide_output(g, inits):
    mt = next(n for n in reversed(g.node) if n.op_type == "MultiThreshold")
    t = numpy_helper.to_array(inits[mt.input[1]])
    inits[mt.input[1]].CopyFrom(numpy_helper.from_array(np.linspace(-3, 3, 511, dtype=np.float32)[None].repeat(
        t.shape[0], 0), mt.input[1]))
    for a in mt.attribute:
        if a.name == "out_dtype":
            a.s = b"INT10"


def _no_output_thresholds(g, inits):
    mt = next(n for n in reversed(g.node) if n.op_type == "MultiThreshold")
    g.node.remove(mt)
    for n in g.node:
        n.input[:] = [mt.input[0] if i == mt.output[0] else i for i in n.input]


def _foreign_domain(g, inits):
    next(n for n in g.node if n.op_type == "MultiThreshold").domain = "my.thresholds"


@pytest.mark.parametrize("edit, needles", [
    (_per_channel_scale, ["the output's Mul Mul_21 has a scale per channel", "one scalar scale"]),
    (_wide_output, ["MultiThreshold_10 gives codes -127..384 (10 bits)", "at most 8"]),
    (_no_output_thresholds, ["is not written by MultiThreshold", "comes from Mul_20"]),
    (_foreign_domain, ["MultiThreshold", "domain my.thresholds"]),
])
def test_what_the_board_cannot_decode_is_refused_naming_the_node(finn_converted, tmp_path, capsys, edit, needles):
    bad = _edit(finn_converted, tmp_path / "bad.onnx", edit)
    rc, err = in_process(capsys, "import", bad, "--out", tmp_path / "run")
    assert rc == 1 and str(bad) in err and all(n in err for n in needles), err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_finn_converter_output_is_bit_exact_down_to_the_rtl(finn_converted, tmp_path):
    """The all-RTL design FINN generates for the imported FINN-ONNX model, simulated in Verilator, writes the
    integer codes of the QONNX executor."""
    from flow.hw.build import FinnConfig, run_estimate
    from flow.hw.rtlsim import run_rtlsim
    from flow.importer import import_model

    run = tmp_path / "run"
    import_model(finn_converted, run)
    run_estimate(FinnConfig(run_dir=str(run), standalone_thresholds=True), quiet=True)  # the all-RTL mode
    assert run_rtlsim(run, frames=1)["bit_exact"]
