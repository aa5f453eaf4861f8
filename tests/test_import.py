"""`python -m flow import`: a QONNX model exported elsewhere becomes a run folder the rest of the flow takes;
every bad input is a clear error that writes nothing."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from board.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]


def user_brevitas_qonnx(path: Path, input_scale: float | None = 1 / 255, img: int = 64, variant: str = "4w4a") -> Path:
    """What a user brings: their own Brevitas network trained on float input in [0, 1] (an 8-bit unsigned input
    quantizer of constant scale `input_scale`, or with input_scale None Brevitas's default Uint8ActPerTensorFloat,
    its scale calibrated on a few images with brevitas.graph.calibrate.calibration_mode; then the LPYOLO shape),
    exported with Brevitas's QONNX exporter, float input, dynamic batch, names of their own."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas.inject.enum import ScalingImplType
    from brevitas.nn import QuantIdentity
    from brevitas.quant import Uint8ActPerTensorFloat

    from flow.samples import sample_images
    from models import build_model, spec_for

    torch.manual_seed(0)
    net = build_model(spec_for(variant, img=img), collect_stats_steps=4)
    act_quant = Uint8ActPerTensorFloat if input_scale is None else Uint8ActPerTensorFloat.let(
        scaling_impl_type=ScalingImplType.CONST, max_val=255 * input_scale)
    quant_in = QuantIdentity(act_quant=act_quant, return_quant_tensor=True)

    class UserNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant_in, self.net = quant_in, net

        def forward(self, x):
            return self.net(self.quant_in(x))

        def output_scale(self):
            return self.net.output_scale()

    model = UserNet()
    images = sample_images(img, n_real=6, n_random=2, seed=0, resample="bilinear")
    model.train()
    with torch.no_grad():
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255)
        if input_scale is None:  # the images as a training pipeline's brightness augmentation gives them: the
            x = x * 0.91  # calibrated scale is then not 1/255 (0.00357 and 0.00337 were measured on users' models)
        for _ in range(8):  # Brevitas's default: the scales come from statistics of the first training batches
            model(x)
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, args=torch.zeros(1, 3, img, img), export_path=str(path), dynamo=False, opset_version=13,
                     input_names=["images"], output_names=["detections"],
                     dynamic_axes={"images": {0: "batch"}, "detections": {0: "batch"}})
    return path


def flow(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    """The command as a user types it."""
    return subprocess.run([sys.executable, "-m", "flow", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def in_process(capsys, *args) -> tuple[int, str]:
    """`python -m flow ...` without a new interpreter (what __main__ runs): exit code and stderr."""
    from flow.cli import main

    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    return user_brevitas_qonnx(tmp_path_factory.mktemp("theirs") / "lpyolo_float_input.onnx")


@pytest.fixture(scope="module")
def imported(user_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "run"
    r = flow("import", user_model, "--out", out)
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_import_reads_the_graph_and_says_what_it_assumed(imported, user_model):
    out, said = imported
    m = load_manifest(out)
    assert m.input.shape == [1, 3, 64, 64] and m.input.datatype == "UINT8"
    assert m.output.shape == [1, 18, 2, 2] and m.output.datatype == "INT8"
    assert m.output.scale == pytest.approx(1 / 127)
    assert m.imported["pixel_factor"] == pytest.approx(1 / 255)
    assert "identity on pixel codes 0..255" in m.imported["input_rewrite"][0]
    assert "(default, --anchors)" in said and "(default, --classes)" in said and "trained on pixels in 0..1" in said
    assert (out / "model.original.onnx").read_bytes() == user_model.read_bytes()  # the user's file, untouched
    assert m.imported["check"]["differing"] == 0 and m.imported["check"]["distinct_codes"] > 2


def test_an_imported_float_input_model_runs_through_the_flow_in_its_own_domain(imported, tmp_path):
    import shutil

    from flow.crosscheck import run_crosscheck
    from flow.deploy import make_deploy
    from flow.hw.build import FinnConfig, run_estimate
    from flow.importer import OriginalBackend

    run = shutil.copytree(imported[0], tmp_path / "run")
    s = run_estimate(FinnConfig(run_dir=str(run)), quiet=True)
    assert s["fits"] and not any(n.startswith(("ElementwiseMul", "Thresholding")) for n in s["layers"])  # scale folded
    r = run_crosscheck(run, device="cpu", n_real=2, n_random=1)
    for name in ("qcdq-ort-cpu", "original", "finn-tidy", "finn-streamlined", "finn-hw", "board-sim"):
        assert r["backends"][name]["mismatches"] == 0 and r["backends"][name]["elements"] == 3 * 18 * 2 * 2, name
    assert not r["any_mismatch"]
    # the old way, the user's file fed raw pixels, is a different function: the cross-check above would have failed
    from flow.backends import QONNXBackend
    from flow.samples import sample_images, to_nchw_float

    m = load_manifest(run)
    x = to_nchw_float(sample_images(64, n_real=2, n_random=0, seed=0, resample="bilinear"))
    ref = QONNXBackend(run / "model.qonnx.onnx", m).run(x)
    raw = OriginalBackend(run, m.replace(imported={**m.imported, "pixel_factor": 1.0})).run(x)
    assert np.array_equal(OriginalBackend(run, m).run(x), ref) and not np.array_equal(raw, ref)
    assert make_deploy(run)["manifest"]


def _graph(path: Path, ops, shape=(1, 3, 64, 64), dtype=None):
    """A small hand-made ONNX graph: a chain of single-input ops, named."""
    import onnx
    from onnx import TensorProto, helper

    nodes, prev = [], "x"
    for i, (op, name) in enumerate(ops):
        nodes.append(helper.make_node(op, [prev], [f"t{i}"], name=name))
        prev = f"t{i}"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_text("this is not a model\n") and p, "not a readable ONNX model|has no nodes"),
    (lambda p: _graph(p, [("Relu", "act0"), ("Softmax", "head_softmax")]), r"node 'head_softmax': Softmax"),
    (lambda p: _graph(p, [("Relu", "act0")], shape=(1, 3, 48, 48)), "48x48, not a multiple of 32"),
    (lambda p: _graph(p, [("Relu", "act0")]), "pass --input-range"),
    (lambda p: _graph(p, [("Relu", "act0")], shape=(1, 1, 64, 64)), "square RGB images"),
])
def test_a_bad_model_is_a_clear_error_that_writes_nothing(tmp_path, capsys, make, needle):
    import re

    model = make(tmp_path / "model.onnx")
    rc, err = in_process(capsys, "import", model, "--out", tmp_path / "run")
    assert rc != 0 and err.startswith("error: ") and re.search(needle, err), err
    assert str(model) in err
    assert not (tmp_path / "run").exists()


def test_nothing_the_user_made_is_overwritten(user_model, run_4w4a, tmp_path, capsys):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "model.qonnx.onnx").write_bytes(user_model.read_bytes())
    before = {p.name: p.read_bytes() for p in theirs.iterdir()}
    # what the old error message told them to do
    rc, err = in_process(capsys, "crosscheck", "--run", theirs)
    assert rc == 1 and "flow import" in err and "no manifest" in err
    for argv in (["export", "--variant", "4w4a", "--img", 64, "--out", theirs],
                 ["import", user_model, "--out", theirs]):
        rc, err = in_process(capsys, *argv)
        assert rc == 1 and "model.qonnx.onnx is not the flow's own output" in err and "--force" in err, err
        assert {p.name: p.read_bytes() for p in theirs.iterdir()} == before
    rc, err = in_process(capsys, "import", user_model, "--out", theirs, "--force")
    assert rc == 0, err
    rc, _ = in_process(capsys, "import", user_model, "--out", theirs)  # the flow's own output: replaced freely
    assert rc == 0


def test_a_manifest_missing_keys_names_each_key(run_4w4a, tmp_path, capsys):
    import shutil

    run = shutil.copytree(run_4w4a, tmp_path / "run")
    m = json.loads((run / "manifest.json").read_text())
    del m["anchors"], m["output"]["scale"]
    (run / "manifest.json").write_text(json.dumps(m))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}  # the session's run may hold earlier reports
    for cmd in ("crosscheck", "estimate", "deploy"):
        rc, err = in_process(capsys, cmd, "--run", run)
        assert rc == 1 and "missing output.scale, anchors" in err, (cmd, err)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing written or changed


def test_export_of_another_variants_run_folder_and_a_bad_size_write_nothing(run_4w4a, tmp_path, capsys):
    rc, err = in_process(capsys, "export", "--variant", "2w4a", "--checkpoint", run_4w4a, "--out", tmp_path / "x")
    assert rc == 1 and "variant '4w4a'" in err and "--variant 2w4a" in err, err
    rc, err = in_process(capsys, "export", "--variant", "4w4a", "--img", 50, "--out", tmp_path / "y")
    assert rc == 1 and "not a positive multiple of 32" in err, err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _with_input_quant(user_model: Path, out: Path, scale, narrow: int = 0) -> tuple[Path, str]:
    """The user's file with its input quantizer's scale (a scalar or per-channel array) and narrow flag replaced."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(user_model))
    q = next(n for n in m.graph.node if n.op_type == "Quant" and n.input[0] == "images")
    init = next(t for t in m.graph.initializer if t.name == q.input[1])
    value = np.asarray(scale, np.float32)
    value = value.reshape(numpy_helper.to_array(init).shape) if value.size == 1 else value.reshape(1, -1, 1, 1)
    init.CopyFrom(numpy_helper.from_array(value, init.name))
    for a in q.attribute:
        if a.name == "narrow":
            a.CopyFrom(helper.make_attribute("narrow", narrow))
    onnx.save(m, str(out))
    return out, q.name


@pytest.mark.parametrize("scale, narrow", [(1 / 256, 0), (1 / 255, 1), (0.00357, 0), (0.0123, 0), (1 / 128, 1)])
def test_any_per_tensor_input_quantizer_is_exact_integer_thresholds_on_the_pixels(user_model, tmp_path, scale, narrow):
    """Every pixel 0..255 through the imported graph's input chain (UINT8 -> Mul -> the user's Quant) and through the
    thresholds FINN's input_thresholds step puts in its place: the same values, whether the code steps by 0, 1 or 2
    per pixel, and with pixel 255 clipped to code 254 by a narrow range."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from flow.hw.input_thresholds import input_chain, step_input_thresholds
    from flow.importer import import_model

    theirs, _ = _with_input_quant(user_model, tmp_path / "theirs.onnx", scale, narrow)
    m = import_model(theirs, tmp_path / "run", input_range="0-1")  # scale 0.0123 spans 0..3.1: a range not implied
    assert m.imported["check"]["differing"] == 0 and "integer thresholds on the pixels" in m.imported["input_rewrite"][0]
    model = ModelWrapper(str(tmp_path / "run" / "model.qonnx.onnx"))
    mul, quant = input_chain(model)
    # a 1x3x64x64 image holding every pixel value in every channel; the chain's output is the Quant's
    pixels = np.tile(np.arange(256, dtype=np.float32), 16).reshape(1, 1, 64, 64).repeat(3, axis=1)

    def chain_output(mw, tensor):
        sub = ModelWrapper(mw.model)
        return execute_onnx(sub, {mw.graph.input[0].name: pixels}, return_full_exec_context=True)[tensor]

    want = chain_output(model, quant.output[0])
    built = step_input_thresholds(ModelWrapper(str(tmp_path / "run" / "model.qonnx.onnx")))
    (mt,) = built.find_consumers(built.graph.input[0].name)
    assert mt.op_type == "MultiThreshold" and [n.op_type for n in built.find_consumers(mt.output[0])] == ["Mul"]
    assert not any(n.op_type == "Quant" and n.input[0] == built.graph.input[0].name for n in built.graph.node)
    got = chain_output(built, quant.output[0])
    assert np.array_equal(got, want) and len(np.unique(want)) > 40


@pytest.mark.parametrize("scale, why", [(-1 / 255, "scale -0.00392157; thresholds need a positive"),
                                        ([1 / 255, 1 / 250, 1 / 255], "per-channel scale")])
def test_an_input_quantizer_no_thresholds_on_pixels_express_is_refused(user_model, tmp_path, capsys, scale, why):
    theirs, qname = _with_input_quant(user_model, tmp_path / "theirs.onnx", scale)
    rc, err = in_process(capsys, "import", theirs, "--out", tmp_path / "run", "--input-range", "0-1")
    assert rc == 1 and why in err and qname in err and "cannot take pixels" in err, err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def calibrated_model(tmp_path_factory):
    return user_brevitas_qonnx(tmp_path_factory.mktemp("theirs") / "lpyolo_default_input_quant.onnx", input_scale=None)


def test_brevitas_default_calibrated_input_quantizer_imports_without_flags_and_is_bit_exact(calibrated_model, tmp_path):
    """Brevitas's default Uint8ActPerTensorFloat, its scale calibrated on the images (not 1/255): imported as it is,
    built by FINN with a thresholding layer at the accelerator's input, bit-exact in QCDQ and FINN's models."""
    from flow.crosscheck import run_crosscheck
    from flow.hw.build import FinnConfig, run_estimate

    r = flow("import", calibrated_model, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "trained on pixels in 0..1" in m["import"]["input_domain"] and m["import"]["pixel_factor"] == pytest.approx(1 / 255)
    assert "scale 0.0035" in m["import"]["input_rewrite"][0] and m["input"]["datatype"] == "UINT8"
    s = run_estimate(FinnConfig(run_dir=str(tmp_path / "run")), quiet=True)
    assert s["fits"] and any(n.startswith("Thresholding") for n in s["layers"])
    c = run_crosscheck(tmp_path / "run", device="cpu", n_real=2, n_random=1)
    for name in ("qcdq-ort-cpu", "original", "finn-tidy", "finn-streamlined", "finn-hw", "board-sim"):
        assert c["backends"][name]["mismatches"] == 0 and c["backends"][name]["elements"] == 3 * 18 * 2 * 2, name
    assert not c["any_mismatch"]


@pytest.mark.slow
@pytest.mark.parametrize("variant, img", [("2w4a", 320), ("6w4a", 256)])
def test_brevitas_default_export_at_full_size_is_bit_exact_down_to_the_rtl(tmp_path, variant, img):
    """The same at the sizes LPYOLO's models are built at: QCDQ, FINN's models and the all-RTL design simulated in
    Verilator agree bit for bit with the user's own file."""
    from flow.crosscheck import run_crosscheck
    from flow.hw.build import FinnConfig, run_estimate
    from flow.hw.rtlsim import run_rtlsim
    from flow.importer import import_model

    theirs = user_brevitas_qonnx(tmp_path / f"{variant}_{img}.onnx", input_scale=None, img=img, variant=variant)
    run = tmp_path / "run"
    m = import_model(theirs, run)
    assert m.imported["check"]["differing"] == 0 and "integer thresholds on the pixels" in m.imported["input_rewrite"][0]
    s = run_estimate(FinnConfig(run_dir=str(run), standalone_thresholds=True), quiet=True)
    assert any(n.startswith("Thresholding") for n in s["layers"])
    c = run_crosscheck(run, device="cpu", n_real=1, n_random=1)
    assert not c["any_mismatch"] and c["backends"]["original"]["mismatches"] == 0
    r = run_rtlsim(run, frames=1)
    assert r["bit_exact"]

