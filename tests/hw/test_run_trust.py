"""The FINN build of a run folder: a failed or refused estimate leaves the last good build, crashed builds
are kept up to a bound, a build of an earlier model is never simulated, synthesised, cross-checked or deployed,
and bad options or files get one clear error before any work."""

import json
import shutil

import pytest

from board.manifest import load_manifest
from flow.errors import FlowError
from flow.export import export_run
from flow.hw.build import FinnConfig, FoldingError, check_build, run_estimate
from flow.hw.build_dir import MAX_CRASHED, recover_build_dir
from flow.provenance import StaleError, record


@pytest.fixture
def built(estimated_4w4a):
    return estimated_4w4a[0]


def _copy(built, to):
    shutil.copytree(built, to, ignore=shutil.ignore_patterns(".flow.lock"))
    return to


def _state(run):
    return {p: (run / p).read_bytes() for p in ("finn/build_done.json", "finn/report/estimate.json",
                                                "finn/report/folding_used.json")}


def test_a_failed_estimate_keeps_the_last_good_build(built, tmp_path):
    run = _copy(built, tmp_path / "run")
    before = _state(run)
    used = json.loads((run / "finn/report/folding_used.json").read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**used, "MVAU_hls_99": {"PE": 4}}))
    for _ in range(MAX_CRASHED + 1):
        with pytest.raises(FoldingError, match="MVAU_hls_99"):
            run_estimate(FinnConfig(run_dir=str(run), folding=str(other)), quiet=True)
    assert _state(run) == before  # the last good build, as it was
    check_build(run)
    crashed = sorted(run.glob("finn.crashed-*"))
    assert len(crashed) == MAX_CRASHED and all("MVAU_hls_99" in (c / "crashed.json").read_text() for c in crashed)
    assert not (run / "finn.previous").exists()
    # refused before the build dir is touched: a corrupt model file, a missing folding
    good = (run / "model.qonnx.onnx").read_bytes()
    (run / "model.qonnx.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(FlowError, match="model.qonnx.onnx: not a readable ONNX model.*python -m flow export"):
        run_estimate(FinnConfig(run_dir=str(run)), quiet=True)
    (run / "model.qonnx.onnx").write_bytes(good)
    with pytest.raises(FoldingError, match="nope.json: folding file not found"):
        run_estimate(FinnConfig(run_dir=str(run), folding=str(tmp_path / "nope.json")), quiet=True)
    assert _state(run) == before and len(list(run.glob("finn.crashed-*"))) == MAX_CRASHED


def test_a_build_killed_midway_gives_back_the_last_good_one(built, tmp_path):
    run = _copy(built, tmp_path / "run")
    before = _state(run)
    (run / "finn").rename(run / "finn.previous")  # what an estimate does first, then SIGKILL mid-build
    (run / "finn" / "intermediate_models").mkdir(parents=True)
    recover_build_dir(FinnConfig(run_dir=str(run)))
    assert _state(run) == before and not (run / "finn.previous").exists()
    assert (next(run.glob("finn.crashed-*")) / "intermediate_models").is_dir()


def test_a_build_of_an_earlier_model_is_refused_by_name(built, tmp_path):
    from flow.crosscheck import run_crosscheck
    from flow.deploy import make_deploy
    from flow.hw.rtlgen import load_hw_model
    from flow.hw.rtlsim import run_rtlsim
    from flow.hw.synth import run_synth

    run = _copy(built, tmp_path / "run")
    (run / "fifos.json").write_text(json.dumps({"fifo_depths": {}}))
    record(run / "fifos.json", [run / "model.qonnx.onnx"], f"python -m flow fifos --run {run}")
    export_run(run, "8w8a", 64, frame="none")  # a re-export over the 4w4a run: finn/ is the 4w4a build
    stale = r"finn/build_done.json is stale: it was made from an earlier .*model.qonnx.onnx.*python -m flow estimate"
    for consumer in (lambda: load_hw_model(run), lambda: run_rtlsim(run), lambda: run_synth(run),
                     lambda: run_crosscheck(run, device="cpu", n_real=1, n_random=0),
                     lambda: make_deploy(run, tmp_path / "pkg")):
        with pytest.raises(StaleError, match=stale):
            consumer()
    with pytest.raises(StaleError, match=r"fifos.json is stale.*`python -m flow fifos --run"):
        run_estimate(FinnConfig(run_dir=str(run), fifo_config=str(run / "fifos.json")), quiet=True)
    assert not (run / "crosscheck.json").exists() and not (run / "finn/report/rtlsim.json").exists()


def test_pe_that_does_not_divide_names_the_node(built, tmp_path):
    run = _copy(built, tmp_path / "run")
    used = json.loads((run / "finn/report/folding_used.json").read_text())
    name = next(k for k in used if k.startswith("MVAU"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**used, name: {**used[name], "PE": 5}}))  # 5 divides no channel count here
    with pytest.raises(FoldingError, match=f"bad.json: {name} \\(MVAU_hls\\) cannot fold with .*'PE': 5.*PE must divide"):
        run_estimate(FinnConfig(run_dir=str(run), folding=str(bad)), quiet=True)


def test_simulation_options_are_checked_first(built):
    from flow.hw.fifos import size_fifos
    from flow.hw.rtlgen import read_estimate
    from flow.hw.rtlsim import run_rtlsim

    for kw, msg in (({"frames": 0}, "--frames 0"), ({"stall_pct": -5}, "--stall -5"), ({"stall_pct": 150}, "--stall 150")):
        with pytest.raises(FlowError, match=msg):
            run_rtlsim(built, **kw)
    with pytest.raises(FlowError, match="--frames 0"):
        size_fifos(built, built / "fifos.json", frames=0)
    with pytest.raises(FlowError, match="--out .*a folder"):
        size_fifos(built, built)
    with pytest.raises(FlowError, match="estimate.json: the build's estimate report is missing.*flow estimate"):
        read_estimate(built / "elsewhere")


def test_a_bitfile_is_deployed_only_with_its_own_build(built, tmp_path):
    """No Vivado here: a stand-in bitfile placed where `bitstream` leaves one. Its sha256 goes into the package's
    manifest only while it is the bitfile of the run's current build."""
    from flow.deploy import make_deploy
    from flow.files import sha256

    run = _copy(built, tmp_path / "run")
    vivado = run / "finn" / "vivado" / "bitfile" / "top.bit"
    vivado.parent.mkdir(parents=True)
    from flow.deploy import BIT_HEADER

    vivado.write_bytes(BIT_HEADER + b"a bitfile of unknown origin")  # shaped as Vivado's: the provenance decides
    with pytest.raises(StaleError, match=r"top.bit: no provenance record.*python -m flow bitstream"):
        make_deploy(run)
    shutil.rmtree(run / "finn" / "vivado")
    bit = run / "deploy" / "finn-accel.bit"
    bit.parent.mkdir()
    bit.write_bytes(BIT_HEADER + b"a bitfile")
    bit.with_suffix(".hwh").write_text("<hwh/>")
    for f in (bit, bit.with_suffix(".hwh")):
        record(f, [run / "finn" / "build_done.json"], f"python -m flow bitstream --run {run}")
    timing = {"wns_ns": 0.5, "tns_ns": 0.0, "whs_ns": 0.05, "ths_ns": 0.0, "met": True}  # as `bitstream` records it
    (run / "finn/report/vivado.json").write_text(json.dumps({"clock_ns": 10.0, "timing": timing,
                                                             "bitfile_sha256": sha256(bit)}))
    assert make_deploy(run)["bitfile"]
    assert load_manifest(run / "deploy").files["bitfile"]["sha256"] == sha256(bit)
    run_estimate(FinnConfig(run_dir=str(run), target_fps=30), quiet=True)  # another build of the same model
    with pytest.raises(StaleError, match=r"finn-accel.bit is stale: it was made from an earlier .*build_done.json"):
        make_deploy(run)
