"""FINN flow at 64x64: estimates without Vivado, HW-layer models bit-exact in the cross-check, loud folding errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from flow.crosscheck import run_crosscheck
from flow.errors import FlowError
from flow.export import export_run
from flow.finn_build import FinnConfig, FoldingError, over_budget_message, run_estimate
from models import SpecError

FINN_PRESETS = ["4w4a", "2w4a", "3w5a", "4w2a", "6w4a", "8w3a", "8w8a"]


@pytest.fixture(scope="module")
def finn_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("finn_4w4a")
    export_run(d, "4w4a", 64)
    summary = run_estimate(FinnConfig(run_dir=str(d)), quiet=True)
    return d, summary


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


@pytest.mark.parametrize("variant", FINN_PRESETS)
def test_hw_layer_models_are_bit_exact(tmp_path, variant):
    export_run(tmp_path, variant, 64)
    run_estimate(FinnConfig(run_dir=str(tmp_path)), quiet=True)
    r = run_crosscheck(tmp_path, device="cpu", n_real=2, n_random=1)
    for name in ("finn-tidy", "finn-streamlined", "finn-hw"):
        row = r["backends"][name]
        assert row["mismatches"] == 0, (name, row)
        assert row["elements"] == 3 * 18 * 2 * 2
    assert not r["any_mismatch"]


def test_planted_fault_in_the_hw_model_is_caught(tmp_path):
    import onnx

    export_run(tmp_path, "4w4a", 64)
    run_estimate(FinnConfig(run_dir=str(tmp_path)), quiet=True)
    hw = sorted((tmp_path / "finn/intermediate_models").glob("*_fifo_depths.onnx"))[-1]
    model = onnx.load(str(hw))
    mvau = next(n for n in model.graph.node if n.op_type.startswith("MVAU"))
    w = next(i for i in model.graph.initializer if i.name == mvau.input[1])
    arr = onnx.numpy_helper.to_array(w).copy()
    arr[arr != 0] *= -1  # flip the signs of one layer's weights, in the HW model only
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(model, str(hw))
    r = run_crosscheck(tmp_path, device="cpu", n_real=2, n_random=1)
    assert r["backends"]["finn-hw"]["mismatches"] > 0 and "finn-hw" in r["mismatching_backends"]
    assert r["backends"]["finn-streamlined"]["bit_exact"]


def test_folding_config_must_apply(finn_run, tmp_path):
    d, _ = finn_run
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
    # its meta file records the build mode, and the CLI's config follows it (the node names depend on it)
    from flow.finn_build import _config, _parser
    from flow.folding import read_meta, write_meta

    write_meta(good, s, standalone_thresholds=True)
    assert read_meta(good)["fps"] == s["fps"] and read_meta(good)["variant"] == "4w4a"
    cfg = _config(_parser("t").parse_args(["--run", str(d), "--folding", str(good)]))
    assert cfg.standalone_thresholds and cfg.folding == str(good)
    assert not _config(_parser("t").parse_args(["--run", str(d), "--no-committed-folding"])).folding


def test_float_model_and_over_budget_messages(tmp_path):
    export_run(tmp_path, "float", 64)
    with pytest.raises(SpecError, match="FINN needs every layer quantized"):
        run_estimate(FinnConfig(run_dir=str(tmp_path)), quiet=True)
    summary = {"over_budget": {"LUT": 0.2}, "total_with_overhead": {"LUT": 48000},
               "layers": {"MVAU_hls_0": {"LUT": 30000}, "MVAU_hls_1": {"LUT": 9000}}}
    msg = over_budget_message(summary)
    assert "LUT 48000 > 37240" in msg and "by 10760" in msg and "MVAU_hls_0 30000" in msg


def test_bitstream_without_vivado_writes_estimates_then_explains(tmp_path):
    export_run(tmp_path, "4w4a", 64)
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
