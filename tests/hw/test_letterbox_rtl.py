"""The letterbox in the fabric: board.preprocess.letterbox_fixed (the integer specification) against OpenCV, and
lpyolo_letterbox.sv against letterbox_fixed bit for bit in Verilator, with random stalls on both streams."""

import json
import subprocess
import sys

import numpy as np
import pytest

from board.preprocess import PAD_VALUE, letterbox, letterbox_fixed, letterbox_geometry
from flow.errors import FlowError
from flow.hw.rtl.letterbox import SOURCE, Letterbox, run, sample_frames
from flow.samples import PHOTOS, photo


def test_letterbox_fixed_within_one_level_of_opencv():
    """OpenCV's INTER_LINEAR rounds twice with 11-bit weights, letterbox_fixed once with 8-bit exact positions:
    they differ by at most one level, the padding and geometry not at all."""
    pytest.importorskip("cv2")
    for name in PHOTOS:
        img = photo(name)
        for size in (64, 416):
            ours = letterbox_fixed(img, size).astype(int)
            cv, _, (px, py) = letterbox(img, size, resample="bilinear")
            d = np.abs(ours - cv)
            assert d.max() <= 1, (name, size, d.max())
            assert d.mean() < 0.2, (name, size, d.mean())
            _, (nh, nw), _ = letterbox_geometry(img.shape[:2], size)
            inside = np.zeros((size, size), bool)
            inside[py : py + nh, px : px + nw] = True
            assert (ours[~inside] == PAD_VALUE).all()


def test_letterbox_fixed_sampling():
    """Same size: the identity; 2x down: the mean of each 2x2 block rounded half up (positions exactly halfway)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(letterbox_fixed(img, 16), img)
    blocks = img.reshape(8, 2, 8, 2, 3).astype(int)
    want = ((blocks[:, 0, :, 0] + blocks[:, 0, :, 1] + blocks[:, 1, :, 0] + blocks[:, 1, :, 1]) * 64 + 128) >> 8
    np.testing.assert_array_equal(letterbox_fixed(img, 8), want)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        letterbox_fixed(img[:, :, 0], 8)


@pytest.mark.parametrize("w, h, size", [(37, 23, 16), (23, 37, 16), (9, 12, 12), (8, 6, 32), (640, 480, 64)])
def test_letterbox_rtl_bit_exact(w, h, size):
    """A photo and random pixels, without stalls and with 30 % stalls on each stream; the module streams: it
    takes at most a quarter more cycles per frame than the larger of its input and output beats."""
    r = run(w, h, size, stall_pct=30, yosys=False)
    assert r["bit_exact"] and r["frames_checked"] == 4
    assert max(w * h, size * size) <= r["cycles_per_frame"] <= 1.25 * max(w * h, size * size), r
    assert r["stalled_cycles_per_frame"] > r["cycles_per_frame"]


@pytest.mark.parametrize("fault, fixed", [
    ("v = $signed({3'b0, u, 8'b0}) + p + 27'sd32768;", "v = $signed({3'b0, u, 8'b0}) + p;"),
    ("SRX = (2 * W_IN * 256) % DX", "SRX = 0"),
])
def test_planted_fault_is_caught(tmp_path, fault, fixed):
    """Truncating instead of rounding, or a column step without its remainder: letterbox_fixed disagrees."""
    text = SOURCE.read_text()
    assert fault in text
    bad = tmp_path / SOURCE.name
    bad.write_text(text.replace(fault, fixed))
    lb = Letterbox(23, 37, 16)  # 23 -> 10 columns: a step of 588.8 / 256 pixel, the remainder matters
    with pytest.raises(FlowError, match=r"values differ from letterbox_fixed, first frame 0 row \d+ column \d+"):
        lb.check(sample_frames(23, 37), sim=lb.build([bad]))


def test_bad_frame_is_refused():
    with pytest.raises(FlowError, match="sides must be 1..4095"):
        Letterbox(0, 480, 416)
    p = subprocess.run([sys.executable, "-m", "flow.hw.rtl.letterbox", "--frame", "640by480"], capture_output=True,
                       text=True)
    assert p.returncode == 2 and "expected WIDTHxHEIGHT" in p.stderr


@pytest.mark.slow
def test_camera_frame_to_416_cli():
    """As a user types it: 640x480 -> 416, bit-exact, its cycles per frame, and Yosys's count for the xc7z020."""
    p = subprocess.run([sys.executable, "-m", "flow.hw.rtl.letterbox", "--frame", "640x480", "--size", "416"],
                       capture_output=True, text=True, timeout=3000)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout)
    assert r["bit_exact"] and r["params"]["RH"] == 312 and r["params"]["RW"] == 416
    assert 640 * 480 <= r["cycles_per_frame"] <= 1.25 * 640 * 480
    assert r["fps_at_100mhz"] == round(100e6 / r["cycles_per_frame"], 1)
    dsp, nodsp = r["yosys_xc7z020"]["dsp"], r["yosys_xc7z020"]["nodsp"]
    assert nodsp["DSP"] == 0 and dsp["DSP"] > 0 and dsp["LUT"] < nodsp["LUT"]
    assert 1 <= nodsp["BRAM_18K"] <= 12 and nodsp["LUT"] < 0.05 * 53200
