"""The estimate says which FPS it reports: the one the design with its sized FIFOs simulated at (the design
`bitstream` builds from the same FIFO config), the one it simulated at with FIFOs it was given, or FINN's analytic
figure where nothing was simulated, and why."""

import json
import subprocess
import sys

import pytest

from flow.hw.report import fps_basis


def test_without_a_sized_fifo_config_the_fps_is_labelled_analytic(tmp_path):
    b = fps_basis(63.58, None)
    assert b["fps_basis"] == "analytic" and b["fps_as_built"] is None and "every FIFO 32 deep" in b["fps_basis_note"]
    hand = tmp_path / "hand.json"  # depths written by hand: nothing says what the design reaches with them
    hand.write_text(json.dumps({"fifo_depths": {"StreamingFIFO_rtl_0": 64}}))
    b = fps_basis(63.58, str(hand))
    assert b["fps_basis"] == "analytic" and f"FIFO depths from {hand}, not simulated" in b["fps_basis_note"]
    (tmp_path / "bad.json").write_text("{")
    assert fps_basis(63.58, str(tmp_path / "bad.json"))["fps_basis"] == "analytic"


def test_a_sized_fifo_config_gives_the_simulated_fps_of_the_built_design(tmp_path):
    sized = tmp_path / "fifos.json"
    sized.write_text(json.dumps({"fifo_depths": {"StreamingFIFO_rtl_0": 64},
                                 "sized_by": {"cap": 256, "fps_unbounded": 62.1, "fps_bounded": 61.91}}))
    b = fps_basis(63.58, str(sized))
    assert b == {"fps_as_built": 61.91, "fps_basis": "sized", "fps_basis_note": b["fps_basis_note"]}
    assert "61.91 FPS (analytic: 63.58)" in b["fps_basis_note"]


def test_fifos_simulated_at_their_depths_give_the_simulated_fps(tmp_path):
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps({"fifo_depths": {"StreamingFIFO_rtl_0": 64}}))
    b = fps_basis(63.58, str(hand), simulated={"fps_at_clock": 44.52, "frames": 3})
    assert b["fps_basis"] == "simulated" and b["fps_as_built"] == 44.52
    assert str(hand) in b["fps_basis_note"] and "44.52 FPS (analytic: 63.58)" in b["fps_basis_note"]
    assert fps_basis(63.58, None, simulated={"fps_at_clock": 44.52, "frames": 3})["fps_basis_note"].startswith(
        "every FIFO 32 deep")


def test_where_nothing_can_be_simulated_the_estimate_says_why_and_stays_analytic(tmp_path, estimated_4w4a):
    """The HLS design (Verilator runs only the all-RTL one) and --no-rtlsim: FINN's figure, labelled, no simulation."""
    from dataclasses import replace

    from conftest import copy_run

    from flow.hw.build import FinnConfig
    from flow.hw.fifos import as_built

    run, s = estimated_4w4a
    run = copy_run(run, tmp_path / "run")
    cfg = FinnConfig(run_dir=str(run))
    got_cfg, got = as_built(cfg, s)
    assert got_cfg == cfg and got["fps_basis"] == "analytic" and got["fps_as_built"] is None
    assert "the HLS design" in got["fps_basis_note"] and "not simulated" in got["fps_basis_note"]
    assert json.loads((run / "finn/report/estimate.json").read_text())["fps_basis_note"] == got["fps_basis_note"]
    _, got = as_built(replace(cfg, standalone_thresholds=True), s, simulate=False)
    assert got["fps_basis"] == "analytic" and "--no-rtlsim" in got["fps_basis_note"]
    assert not (run / "fifos.json").exists() and not (run / "finn/report/rtlsim.json").exists()


def flow(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flow", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=3000)


@pytest.mark.slow
def test_estimate_sizes_fifos_that_stall_and_bitstream_builds_with_them(tmp_path):
    """6w4a 64x64 all-RTL, folded by FINN's heuristic for 1000 FPS (its layers balanced as at 256x256 for 60 FPS):
    with every FIFO 32 deep the RTL runs slower than FINN's figure. `estimate` sizes the FIFOs; the RTL of that
    build simulates within 5 % of the as-built FPS it reports; `bitstream` (Vivado stand-in) builds with them; the
    same depths given by hand are simulated by `estimate` at them."""
    from test_vivado import fake_deps, require_tclsh, standin_env

    from flow.export import export_run
    from flow.hw.rtlsim import run_rtlsim

    require_tclsh()
    run = tmp_path / "run"
    export_run(run, "6w4a", 64, frame="none")
    design = ("--standalone-thresholds", "--no-committed-folding", "--target-fps", 1000)
    report = run / "finn/report/estimate.json"
    p = flow("estimate", "--run", run, *design, "--no-rtlsim")
    assert p.returncode == 0, p.stderr[-3000:]
    analytic = json.loads(report.read_text())
    assert analytic["fps_basis"] == "analytic" and "--no-rtlsim" in analytic["fps_basis_note"]
    default = run_rtlsim(run, frames=3, bounded_fifos=True)  # every FIFO 32 deep
    assert default["bit_exact"] and default["fps_at_clock"] < 0.95 * analytic["fps"], (default, analytic["fps"])

    p = flow("estimate", "--run", run, *design)
    assert p.returncode == 0, p.stderr[-3000:]
    est = json.loads(report.read_text())
    assert est["fps_basis"] == "sized" and est["fps"] == analytic["fps"] and (run / "fifos.json").is_file()
    assert p.stdout.index(f"as built: {est['fps_as_built']} FPS (sized)") < p.stdout.index("FINN's analytic estimate")
    sized = run_rtlsim(run, frames=3, bounded_fifos=True)  # the FIFOs at the depths the build now has
    assert sized["bit_exact"] and abs(sized["fps_at_clock"] - est["fps_as_built"]) <= 0.05 * sized["fps_at_clock"]
    assert sized["fps_at_clock"] > 1.05 * default["fps_at_clock"], (sized["fps_at_clock"], default["fps_at_clock"])
    depths = json.loads((run / "fifos.json").read_text())["fifo_depths"]
    assert max(depths.values()) > 32

    # bitstream reads the sizing (no second one) and FINN's Vivado half gets those depths
    p = flow("bitstream", "--run", run, "--no-committed-folding", "--target-fps", 1000,
             env=standin_env(fake_deps(tmp_path / "deps")))
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert f"building with {run / 'fifos.json'}: sized {est['fps_as_built']} FPS" in p.stdout
    assert "unbounded FIFOs:" not in p.stdout  # the sizing was not redone
    assert json.loads((run / "finn/report/fifo_config.json").read_text())["fifo_depths"] == depths
    assert (run / "finn/vivado/bitfile/finn-accel.bit").exists()

    # the same depths given by hand (no note of a sizing): simulated with them, the same FPS
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps({k: v for k, v in json.loads((run / "fifos.json").read_text()).items() if k != "sized_by"}))
    p = flow("estimate", "--run", run, *design, "--fifos", hand)
    assert p.returncode == 0, p.stderr[-3000:]
    given = json.loads(report.read_text())
    assert given["fps_basis"] == "simulated" and str(hand) in given["fps_basis_note"]
    assert abs(given["fps_as_built"] - sized["fps_at_clock"]) <= 0.05 * sized["fps_at_clock"]
