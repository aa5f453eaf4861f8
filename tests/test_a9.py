"""The host's estimate of the board loop on the PYNQ-Z2's Cortex-A9 (flow/a9): board/bench.py's measured stage
times times a board/host ratio, or armhf instruction counts over the A9's rate on each kind of code."""

import os
from pathlib import Path

import pytest

from board.bench import measure
from flow.a9.estimate import (
    A9_CALIBRATION,
    RATIOS,
    a9_from_counts,
    count_on_armhf,
    counts_per_call,
    estimate,
    parse_marks,
)
from flow.errors import FlowError


def test_bench_estimate_is_stage_time_times_its_ratio():
    r = estimate(measure(None, reps=1), None, "bilinear")
    board = {"pack_copy_to_dma", "dma_flush_640x480", "capture_usb_kernel"}  # from a board, not scaled
    for name, s in r["stages"].items():
        if name == "accelerator":
            assert s["a9_ms"] == s["x86_ms"] == 3.97  # hardware: simulated frame time, not scaled
            continue
        if name in board:
            continue
        value, low, high = RATIOS[s["ratio"]]
        assert s["ratio_value"] == value and s["ratio_range"] == [low, high]
        assert s["a9_ms"] == pytest.approx(s["x86_ms"] * value, rel=0.02, abs=5e-3)  # x86_ms is rounded
    assert r["stages"]["capture_decode_640x480_jpeg"]["ratio"] == "c_image"
    assert r["stages"]["decode_nms_3_faces"]["ratio"] == "python"
    assert r["stages"]["decoded_frame_to_array"]["holds_gil"]  # Pillow's pack to 3-byte pixels keeps the GIL
    assert r["a9_fps_range"][0] <= r["a9_fps_estimate"] <= r["a9_fps_range"][1]
    assert r["bound_stage"] in r["stages"] or r["bound_stage"] == "accelerator"
    assert r["x86_baseline_ms_per_frame"] > r["x86_ms_per_frame_without_capture_decode"]


def test_estimate_counts_what_a_board_spends():
    """The copy + flush into the DMA buffer as LPYOLO's PYNQ-Z2 measured it (3.19-3.37 ms for the 416x416x3 input),
    scaled by bytes for a frame build's flush; the USB capture's kernel share; the frame build without any host
    letterbox, decoded into the buffer; every path reported with its range and bound stage."""
    r = estimate(measure(None, reps=1), None, "frame")
    copy, flush = r["stages"]["pack_copy_to_dma"], r["stages"]["dma_flush_640x480"]
    assert copy["a9_ms"] == pytest.approx(3.294, abs=1e-3) and copy["a9_ms_range"] == [3.192, 3.37]
    scale = 640 * 480 / (416 * 416)
    plain_copy = r["stages"]["copy_640x480_frame"]  # the board measurement's copy: the frame build packs the buffer
    assert flush["a9_ms"] == pytest.approx(3.294 * scale - plain_copy["a9_ms"], abs=3e-3)  # in a stage of its own
    assert not plain_copy["in_640x480_frame"] and r["stages"]["frame_rgb_into_dma"]["in_640x480_frame"]
    assert flush["a9_ms_range"][1] == pytest.approx(3.37 * scale, abs=2e-3) and flush["a9_ms_range"][0] < flush["a9_ms"]
    assert flush["a9_method"].startswith("measured on a PYNQ-Z2") and flush["in_640x480_frame"]
    assert r["stages"]["capture_usb_kernel"]["a9_method"].startswith("assumed")
    assert not copy["in_640x480_frame"] and not r["stages"]["letterbox_640x480"]["in_640x480_frame"]
    for name in ("capture_decode_640x480_jpeg", "frame_rgb_into_dma", "capture_mjpeg_frame"):
        assert r["stages"][name]["in_640x480_frame"], name
    assert not r["stages"]["decoded_frame_to_array"]["in_640x480_frame"]  # packed into the buffer instead
    assert not r["stages"]["frame_decode_640x480_jpeg_bgr_cv2"]["in_640x480_frame"]  # OpenCV's way: for comparison
    by = r["a9_by_path"]
    assert set(by) == {"frame", "bilinear", "nearest", "bilinear-exact"} and r["path"] == "frame"
    assert r["a9_fps_estimate"] == by["frame"]["a9_fps_estimate"]
    for e in by.values():
        assert e["a9_fps_range"][0] <= e["a9_fps_estimate"] <= e["a9_fps_range"][1] and e["bound_stage"]
    # no letterbox on the host, the same accelerator pace: the frame build needs less A9 time than either host path
    assert by["frame"]["a9_cpu_ms_per_frame"] < by["nearest"]["a9_cpu_ms_per_frame"] < by["bilinear"]["a9_cpu_ms_per_frame"]


def _plugin_log(per_call: dict, calls: int) -> str:
    """The log insn_count.c writes around flow/a9/count.py's stages: cumulative counts at marks 2k and 2k+1."""
    lines, total, neon = ["insn_count: other plugin output is ignored"], 10**9, 10**6
    for k, (insns, simd) in enumerate(per_call.values()):
        lines.append(f"mark {2 * k} {total} {neon}")
        total, neon = total + insns * calls + 12345, neon + simd * calls  # + the marks' own instructions
        lines.append(f"mark {2 * k + 1} {total} {neon}")
        total += 777  # between stages: warm-up calls, not counted
    return "\n".join(lines + [f"total {total} {neon}"])


def test_a9_estimate_from_armhf_instruction_counts():
    """The counted path of `flow bench a9 --a9`: per-call counts from the plugin's marks, the A9's rate on each kind of
    code from the calibration calls and their board timings, each counted stage divided by its kind's rate."""
    cal = {kind: [n for n, (k, _) in A9_CALIBRATION.items() if k == kind] for kind in ("c_image", "python", "memory")}
    (big, small), (unpack_cal, lpyolo_cal), (pack_cal,) = cal["c_image"], cal["python"], cal["memory"]
    per_call = {"capture_decode_640x480_jpeg": (10_000_000, 3_000_000), "letterbox_640x480": (11_000_000, 0),
                "letterbox_640x480_nearest": (1_700_000, 0),
                "decode_nms_3_faces": (1_400_000, 0), "pack_copy_to_dma": (150_000, 0), big: (490_000_000, 0),
                small: (14_000_000, 0), unpack_cal: (79_000_000, 0), lpyolo_cal: (266_700_000, 0),
                pack_cal: (19_000_000, 0)}
    info = {"stages": list(per_call), "calls": 5, "machine": "armv7l", "python": "3.11.2", "numpy": "1.24.2",
            "opencv": "4.6.0", "pil": "9.4.0"}
    counts = counts_per_call(info, parse_marks(_plugin_log(per_call, 5)))
    for name, (insns, simd) in per_call.items():
        assert counts[name] == {"insns": insns + 12345 // 5, "neon": simd}
    m = measure(None, reps=1)
    kinds = {name: kind for name, (_, kind, _, _) in m["stages"].items()}
    a9 = a9_from_counts(counts, kinds)
    assert set(a9) == {"capture_decode_640x480_jpeg", "letterbox_640x480", "letterbox_640x480_nearest",
                       "decode_nms_3_faces", "pack_copy_to_dma"}
    rate_big, rate_small = counts[big]["insns"] / 1.02, counts[small]["insns"] / 0.0246
    dec, n = a9["capture_decode_640x480_jpeg"], counts["capture_decode_640x480_jpeg"]["insns"]
    assert dec["low"] == pytest.approx(n / max(rate_big, rate_small))
    assert dec["central"] == pytest.approx(n / (rate_big * rate_small) ** 0.5)
    assert dec["high"] == pytest.approx(n / min(rate_big, rate_small) + 3_000_000 / 650e6)  # a cycle more per NEON op
    nms, n = a9["decode_nms_3_faces"], counts["decode_nms_3_faces"]["insns"]  # Python-bound: two board points
    rate_finn, rate_lpyolo = counts[unpack_cal]["insns"] / 0.3555, counts[lpyolo_cal]["insns"] / 0.5745
    assert nms["central"] == pytest.approx(n / (rate_finn * rate_lpyolo) ** 0.5)
    assert nms["low"] == pytest.approx(n / max(rate_finn, rate_lpyolo))  # the spread between them is the range
    assert nms["high"] == pytest.approx(n / min(rate_finn, rate_lpyolo))
    copy = a9["pack_copy_to_dma"]  # numpy over a large array: FINN's pack's rate, spread as the C image points'
    assert copy["central"] == pytest.approx(counts["pack_copy_to_dma"]["insns"] / (counts[pack_cal]["insns"] / 0.0711))
    assert copy["high"] / copy["central"] == pytest.approx(max(rate_big, rate_small) / min(rate_big, rate_small))
    r = estimate(m, counts, "bilinear")
    assert r["stages"]["pack_copy_to_dma"]["a9_ms"] == pytest.approx(3.294, abs=1e-3)  # the board's, not the count
    assert r["stages"]["capture_decode_640x480_jpeg"]["a9_method"] == "armhf instructions / A9 rate on c_image code"
    assert r["stages"]["capture_decode_640x480_jpeg"]["a9_ms"] == pytest.approx(dec["central"] * 1e3, abs=1e-3)
    assert r["stages"]["decode_nms_3_faces"]["a9_ms"] == pytest.approx(nms["central"] * 1e3, abs=1e-3)
    draw = r["stages"]["draw"]  # not in this log: falls back to x86 time x its ratio
    assert draw["a9_method"] == "x86 time x ratio" and draw["a9_ms"] == pytest.approx(draw["x86_ms"] * 20, rel=0.02, abs=5e-3)
    assert r["armhf_software"]["numpy"] == "1.24.2"
    # the frame takes the model's path; every path is reported
    by = r["a9_by_path"]
    assert r["path"] == "bilinear" and r["a9_fps_estimate"] == by["bilinear"]["a9_fps_estimate"]
    assert by["nearest"]["a9_ms_per_frame"] < by["bilinear"]["a9_ms_per_frame"]
    assert not r["stages"]["letterbox_640x480_nearest"]["in_640x480_frame"]
    rn = estimate(m, counts, "nearest")
    assert rn["stages"]["letterbox_640x480_nearest"]["in_640x480_frame"] and not rn["stages"]["letterbox_640x480"]["in_640x480_frame"]
    assert rn["a9_ms_per_frame"] == by["nearest"]["a9_ms_per_frame"] and rn["a9_by_path"] == by
    assert r["a9_calibration"]["c_image"] == pytest.approx({big: rate_big, small: rate_small})
    with pytest.raises(FlowError, match="no marks around stage 'letterbox_640x480'"):
        counts_per_call(info, {0: (0, 0), 1: (5, 0)})


@pytest.mark.skipif(not os.environ.get("LPYOLO_A9_DIR"), reason="needs flow/a9/setup.sh's armhf root: set LPYOLO_A9_DIR")
def test_stages_counted_on_the_armhf_userland():
    counts = count_on_armhf(Path(os.environ["LPYOLO_A9_DIR"]))
    assert counts["_software"]["machine"] == "armv7l"
    assert counts["capture_decode_640x480_jpeg"]["neon"] > 0  # libjpeg-turbo's NEON path, as on the board
    big, small = (counts[k]["insns"] for k in list(A9_CALIBRATION)[:2])
    assert 25 < big / small < 50  # 36x the output pixels: the count follows the work
    assert set(counts) >= set(A9_CALIBRATION) | {"decode_nms_3_faces", "pipeline_handoffs", "draw",
                                                  "frame_rgb_into_dma", "frame_decode_640x480_jpeg_bgr_cv2"}
    assert 200e6 < counts["lpyolo_unpack_output_13x13x18_int8"]["insns"] < 400e6  # 316 M counted here (2026-12-06)
