"""FINN flow at 64x64: estimates without Vivado, HW-layer models bit-exact in the cross-check, loud folding errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from board.manifest import InputSpec, Manifest, OutputSpec, Packing, load_manifest
from board.postprocess import DECODE_VERSION
from flow.crosscheck import run_crosscheck
from flow.errors import FlowError
from flow.export import export_run
from flow.hw.build import ESTIMATE_STEPS, FinnConfig, FoldingError, prefolding_key, run_estimate
from flow.hw.report import over_budget_message
from models import PRESETS, SpecError

FINN_PRESETS = [p for p, s in PRESETS.items() if not s.is_float]


@pytest.fixture
def finn_run(estimated_4w4a):
    return estimated_4w4a


def test_estimate_report(finn_run):
    d, s = finn_run
    on_disk = json.loads((d / "finn/report/estimate.json").read_text())
    assert on_disk["fps"] == s["fps"] > 0 and on_disk["fits"] is True
    assert set(on_disk["total_with_overhead"]) == {"LUT", "BRAM_18K", "DSP"}
    assert on_disk["utilisation"]["LUT"] < 0.70
    assert any(n.startswith("MVAU") for n in on_disk["layers"]) and on_disk["fifos_and_dwcs_included"]["LUT"] > 0
    # the boundary: no float scale or layout node is left inside the accelerator
    assert not any(n.startswith(("ElementwiseMul", "Shuffle", "InnerShuffle", "OuterShuffle")) for n in on_disk["layers"])
    assert (d / "finn/report/estimate_layers.png").stat().st_size > 1000
    assert s["flow_seconds"] < 60
    assert json.loads((d / "finn/report/folding_used.json").read_text())


@pytest.mark.parametrize("variant", [FINN_PRESETS[0]] + [pytest.param(v, marks=pytest.mark.slow) for v in FINN_PRESETS[1:]])
def test_hw_layer_models_are_bit_exact(tmp_path, variant, request):
    if variant == "4w4a":  # the session's build of this preset
        shutil.copytree(request.getfixturevalue("estimated_4w4a")[0], tmp_path, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".flow.lock", "crosscheck.json"))
    else:
        export_run(tmp_path, variant, 64, frame="none")
        run_estimate(FinnConfig(run_dir=str(tmp_path)), quiet=True)
    r = run_crosscheck(tmp_path, device="cpu", n_real=2, n_random=1)
    for name in ("finn-tidy", "finn-streamlined", "finn-hw"):
        row = r["backends"][name]
        assert row["mismatches"] == 0, (name, row)
        assert row["elements"] == 3 * 18 * 2 * 2
    assert not r["any_mismatch"]


def copy_run(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("crosscheck.json"))
    return to


def test_planted_fault_in_the_hw_model_is_caught_in_its_layer(finn_run, tmp_path):
    import onnx

    d = copy_run(finn_run[0], tmp_path / "run")
    hw = sorted((d / "finn/intermediate_models").glob("*_fifo_depths.onnx"))[-1]
    model = onnx.load(str(hw))
    mvau = [n for n in model.graph.node if n.op_type.startswith("MVAU")][2]  # conv2's
    w = next(i for i in model.graph.initializer if i.name == mvau.input[1])
    arr = onnx.numpy_helper.to_array(w).copy()
    arr[arr != 0] *= -1  # flip the signs of one layer's weights, in the HW model only
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(model, str(hw))
    r = run_crosscheck(d, device="cpu", n_real=2, n_random=1)
    row = r["backends"]["finn-hw"]
    assert row["mismatches"] > 0 and "finn-hw" in r["mismatching_backends"]
    assert r["backends"]["finn-streamlined"]["bit_exact"]
    # run layer by layer on the reference's inputs, the HW model is wrong in conv2 and nowhere else
    assert row["first_mismatching_layer"] == "conv2"
    assert [k for k, v in row["isolated_layers"].items() if v["mismatches"]] == ["conv2"]


def plant_threshold(ref, path: Path, manifest: dict, x: np.ndarray, layer: int, tie: bool) -> float:
    """Move one threshold of `layer` in the FINN model at `path` so that one accumulator value of image 0 gets a
    code one off the reference's: the value whose reference pre-activation lies nearest a rounding boundary (a
    tie) or 0.4 codes from it (a fault). Thresholds count accumulators >= them. Returns that value's distance
    from the boundary in codes."""
    from finn.core.onnx_exec import execute_onnx

    from flow.crosscheck import layer_boundaries
    from flow.hw.finn_backend import FinnPythonBackend

    fb = FinnPythonBackend(path, "planted", manifest)
    cut = layer_boundaries(ref)[layer]
    pre = ref.tensors(x[:1])[ref.model.find_producer(cut.out_name).input[0]] / cut.out_scale
    mt = fb.activations[layer]
    acc = execute_onnx(fb.model, {fb.iname: x[:1]}, True)[mt.input[0]].transpose(0, 3, 1, 2)
    frac = pre - np.floor(pre)
    dist = np.abs(frac - 0.5)
    e = np.unravel_index(np.argmin(dist if tie else np.abs(dist - 0.4)), dist.shape)
    thr = fb.model.get_initializer(mt.input[1]).copy()
    a, c = float(acc[e]), e[1]
    n = int((thr[c] <= a).sum())
    if frac[e] > 0.5:
        thr[c, n - 1] = a + 0.5  # the threshold just passed moves above a: one code less
    else:
        thr[c, n] = a  # the next threshold comes down onto a: one code more
    fb.model.set_initializer(mt.input[1], thr)
    fb.model.save(str(path))
    return float(dist[e])


def test_finn_layers_alone_tell_a_tie_from_a_fault(finn_run, tmp_path):
    """A float tie inside the network (a reference pre-activation within TIE_TOL of .5) may round either way in
    FINN's thresholds, which are computed in float32; end-to-end its flip propagates. Run one layer at a time the
    FINN model differs from the reference only at that tie, so the cross-check calls it a tie; the same threshold
    moved 0.4 codes from any tie is a mismatch, named by layer. A backend that cannot run one layer alone but writes
    the same codes as the explained model inherits the explanation."""
    from flow.backends import Backend, QONNXBackend
    from flow.crosscheck import TIE_TOL, input_batch, isolated_layers
    from flow.hw.finn_backend import FinnPythonBackend

    d = copy_run(finn_run[0], tmp_path / "run")
    manifest = load_manifest(d)
    x, _ = input_batch(manifest, 2, 1, 0)
    ref = QONNXBackend(d / "model.qonnx.onnx", manifest)
    path = next((d / "finn/intermediate_models").glob("*_boundary.onnx"))
    clean = path.read_bytes()

    plant_threshold(ref, path, manifest, x, 0, tie=False)
    iso = isolated_layers(ref, FinnPythonBackend(path, "finn-streamlined", manifest), x)
    assert iso["conv0"]["mismatches"] > 0 and not any(v["mismatches"] for k, v in iso.items() if k != "conv0")

    class Replay(Backend):  # e.g. the stitched RTL: the same integer codes, no single-layer runs
        name, exact_integer = "replay", True

        def run(self, x):
            return FinnPythonBackend(path, self.name, manifest).run(x)

    for layer in (2, 1, 3, 4):  # a conv whose tie reaches the output (one that dies in a max pool tells nothing)
        path.write_bytes(clean)
        if plant_threshold(ref, path, manifest, x, layer, tie=True) > TIE_TOL:
            continue  # no pre-activation of this layer sits near enough a boundary for a tie
        iso = isolated_layers(ref, FinnPythonBackend(path, "finn-streamlined", manifest), x)
        assert iso[f"conv{layer}"]["tie_flips"] > 0 and not any(v["mismatches"] for v in iso.values()), iso
        r = run_crosscheck(d, device="cpu", n_real=2, n_random=1, extra_backends=[Replay()])
        row = r["backends"]["finn-streamlined"]
        if row["propagated_tie_flips"]:
            break
    else:
        pytest.fail("no conv of 2, 1, 3, 4 has a pre-activation at a tie whose flip reaches the output")
    assert not r["any_mismatch"] and not row["bit_exact"] and row["isolated_layers"][f"conv{layer}"]["tie_flips"]
    assert r["backends"]["replay"]["same_codes_as"] == "finn-streamlined"
    assert r["backends"]["replay"]["propagated_tie_flips"] == row["propagated_tie_flips"]
    assert r["backends"]["finn-hw"]["bit_exact"]


def test_folding_config_must_apply(finn_run, tmp_path):
    d = copy_run(finn_run[0], tmp_path / "run")  # re-estimated here: the shared build stays as it was
    used = json.loads((d / "finn/report/folding_used.json").read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**used, "MVAU_hls_99": {"PE": 4}}))
    with pytest.raises(FoldingError, match="names nodes this model does not have.*MVAU_hls_99"):
        run_estimate(FinnConfig(run_dir=str(d), folding=str(other)), quiet=True)
    partial = tmp_path / "partial.json"
    name = next(k for k in used if k.startswith("MVAU"))
    partial.write_text(json.dumps({k: v for k, v in used.items() if k != name}))
    with pytest.raises(FoldingError, match=f"leaves {name}.*PE=SIMD=1"):
        run_estimate(FinnConfig(run_dir=str(d), folding=str(partial)), quiet=True)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**used, name: {**used[name], "PE": 5}}))  # 5 divides no channel count here
    with pytest.raises(FlowError):
        run_estimate(FinnConfig(run_dir=str(d), folding=str(bad)), quiet=True)
    # a folding written by one build applies cleanly to the same model, and gives the same estimate
    good = tmp_path / "good.json"
    good.write_text(json.dumps(used))
    s = run_estimate(FinnConfig(run_dir=str(d), folding=str(good)), quiet=True)
    assert s["fits"] and s["folding"] == str(good)
    # a re-estimate of the same model (a folding search makes many) starts at the folding step, same result
    again = run_estimate(FinnConfig(run_dir=str(d), folding=str(good)), quiet=True)
    assert again["step_seconds"]["streamline"] == "reused" and again["step_seconds"]["folding"] != "reused"
    assert again["layers"] == s["layers"] and again["fps"] == s["fps"]
    assert len(list((d / "finn/intermediate_models").glob("*.onnx"))) == len(ESTIMATE_STEPS)
    manifest = load_manifest(d)
    key = prefolding_key(FinnConfig(run_dir=str(d)), d / "model.qonnx.onnx", manifest)
    assert key == prefolding_key(FinnConfig(run_dir=str(d), target_fps=400, folding=str(good), mvau_wwidth_max=9),
                                 d / "model.qonnx.onnx", manifest)
    assert key != prefolding_key(FinnConfig(run_dir=str(d), standalone_thresholds=True), d / "model.qonnx.onnx",
                                 manifest)
    # its meta file records the build mode, and the CLI's config follows it (the node names depend on it)
    from flow.hw.commands import _config, _parser
    from flow.hw.foldings import read_meta, write_meta

    write_meta(good, s, standalone_thresholds=True)
    assert read_meta(good)["fps"] == s["fps"] and read_meta(good)["variant"] == "4w4a"
    cfg = _config(_parser("t").parse_args(["--run", str(d), "--folding", str(good)]))
    assert cfg.standalone_thresholds and cfg.folding == str(good)
    assert not _config(_parser("t").parse_args(["--run", str(d), "--no-committed-folding"])).folding


def _checkout_copy(tmp_path) -> Path:
    """The first-party packages' sources, copied: a checkout whose code a test may edit."""
    from flow.codekey import PACKAGES, ROOT

    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.json", "*.ipynb"))
    return tmp_path


def test_prefolding_code_key_covers_what_the_steps_run(tmp_path, monkeypatch):
    """The pre-folding key covers the modules the pre-folding steps import (the RTL max pool's FINN op among them):
    a comment or docstring edit keeps it, a logic change in any of them changes it."""
    from flow.codekey import closure, code_key
    from flow.hw.build import PREFOLDING_MODULES

    root = _checkout_copy(tmp_path)
    reached = closure(PREFOLDING_MODULES, root)
    for m in ("flow.hw.steps", "flow.hw.boundary", "flow.hw.rtl.finn_op", "flow.hw.rtl.maxpool", "flow.hw.compat",
              "flow.hw.rtl.finn_letterbox", "flow.hw.rtl.letterbox_model"):
        assert m in reached
    key = code_key(PREFOLDING_MODULES, root)
    assert key == code_key(PREFOLDING_MODULES)  # the copy is the checkout
    finn_op = root / "flow/hw/rtl/finn_op.py"
    src = finn_op.read_text()
    finn_op.write_text("# a comment only\n" + src.replace("\n\n\n", "\n\n\n# another comment\n", 1))
    assert code_key(PREFOLDING_MODULES, root) == key
    doc = "(qonnx resolves a node's class from its domain module's `custom_op`)"
    assert doc in src
    finn_op.write_text(src.replace(doc, "(reworded)"))
    assert code_key(PREFOLDING_MODULES, root) == key
    finn_op.write_text(src.replace("if swg.op_type != \"ConvolutionInputGenerator\":", "if False:"))
    assert code_key(PREFOLDING_MODULES, root) != key
    finn_op.write_text(src.replace("\ndef ", "\nLOGIC_CHANGED = 1\n\n\ndef ", 1))
    assert code_key(PREFOLDING_MODULES, root) != key
    # prefolding_key reads the code it covers from the checkout
    import flow.codekey

    qonnx = tmp_path / "model.qonnx.onnx"
    qonnx.write_bytes(b"any model")
    manifest = Manifest(variant="4w4a", input=InputSpec(size=64, resample="bilinear"),
                        output=OutputSpec(grid=2, channels=18, bits=8, signed=True, scale=1.0), anchors=[[10, 13]],
                        stride=32, classes=["face"], decode=DECODE_VERSION, packing=Packing())
    cfg = FinnConfig(run_dir=str(tmp_path))
    monkeypatch.setattr(flow.codekey, "ROOT", root)
    changed = prefolding_key(cfg, qonnx, manifest)
    finn_op.write_text(src)
    assert prefolding_key(cfg, qonnx, manifest) != changed
    boundary = root / "flow/hw/boundary.py"
    boundary.write_text(boundary.read_text() + "\nLOGIC_CHANGED = 1\n")
    assert code_key(PREFOLDING_MODULES, root) != key


def test_float_model_and_over_budget_messages(tmp_path):
    export_run(tmp_path, "float", 64, frame="none")
    with pytest.raises(SpecError, match="FINN needs every layer quantized"):
        run_estimate(FinnConfig(run_dir=str(tmp_path)), quiet=True)
    summary = {"over_budget": {"LUT": 0.2}, "total_with_overhead": {"LUT": 48000},
               "layers": {"MVAU_hls_0": {"LUT": 30000}, "MVAU_hls_1": {"LUT": 9000}}}
    msg = over_budget_message(summary)
    assert "LUT 48000 > 37240" in msg and "by 10760" in msg and "MVAU_hls_0 30000" in msg


def test_bitstream_without_vivado_writes_estimates_then_explains(tmp_path):
    export_run(tmp_path, "4w4a", 64, frame="none")
    (tmp_path / "finn").mkdir()
    (tmp_path / "finn" / "leftover.txt").write_text("from a crashed run")  # no build_done marker
    p = subprocess.run([sys.executable, "-m", "flow", "bitstream", "--run", str(tmp_path)], capture_output=True,
                       text=True)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Vivado/Vitis HLS not found" in p.stdout and "synthesize_bitfile" in p.stdout
    assert "make docker-bitstream" in p.stdout
    assert (tmp_path / "finn/report/estimate.json").exists()
    assert list(tmp_path.glob("finn.crashed-*/leftover.txt"))  # the crashed build was moved aside, not mixed in
    assert np.isfinite(json.loads((tmp_path / "finn/report/estimate.json").read_text())["fps"])
