"""The estimate says which FPS it reports: the one the design with its sized FIFOs simulated at (the design
`bitstream` builds from the same FIFO config), the one it simulated at with FIFOs it was given, or FINN's analytic
figure where nothing was simulated, and why."""

import json

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
