"""The estimate says which FPS it reports: FINN's analytic figure, or the one the design with its sized FIFOs
simulated at (the design `bitstream` builds from the same FIFO config)."""

import json

from flow.hw.report import fps_basis


def test_without_a_sized_fifo_config_the_fps_is_labelled_analytic(tmp_path):
    b = fps_basis(63.58, None)
    assert b["fps_basis"] == "analytic" and b["fps_as_built"] is None and "every FIFO 32 deep" in b["fps_basis_note"]
    hand = tmp_path / "hand.json"  # depths written by hand: nothing says what the design reaches with them
    hand.write_text(json.dumps({"fifo_depths": {"StreamingFIFO_rtl_0": 64}}))
    b = fps_basis(63.58, str(hand))
    assert b["fps_basis"] == "analytic" and "not sized by `flow fifos`" in b["fps_basis_note"]
    (tmp_path / "bad.json").write_text("{")
    assert fps_basis(63.58, str(tmp_path / "bad.json"))["fps_basis"] == "analytic"


def test_a_sized_fifo_config_gives_the_simulated_fps_of_the_built_design(tmp_path):
    sized = tmp_path / "fifos.json"
    sized.write_text(json.dumps({"fifo_depths": {"StreamingFIFO_rtl_0": 64},
                                 "sized_by": {"cap": 256, "fps_unbounded": 62.1, "fps_bounded": 61.91}}))
    b = fps_basis(63.58, str(sized))
    assert b == {"fps_as_built": 61.91, "fps_basis": "sized", "fps_basis_note": b["fps_basis_note"]}
    assert "61.91 FPS (analytic: 63.58)" in b["fps_basis_note"]
