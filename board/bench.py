"""`python -m board bench`: every stage of the board's loop timed on this host, and what it costs on the PYNQ-Z2.

Method of the A9 estimate (no board here): each stage's x86 time, measured in this run (least of many timed calls), times
a board-to-host ratio measured on public Zynq-7020 timings of the same kind of code re-run on this project's
2-core x86 (github.com/Xilinx/PYNQ-HelloWorld, github.com/Xilinx/finn-examples):
  python  Python-bound numpy on small arrays (FINN's unpack_output: 355-371 ms board / 9.6-10.4 ms here)   37x
  memory  numpy over large arrays, memory-bound (FINN's pack_input: 71-74 ms board / ~1 ms here)              70x
  c_image C image code, PIL/OpenCV (PIL bilinear resizes in PYNQ-HelloWorld: 1.02 s / 63-73 ms, 24.6 / 0.9)   14-28x
The low/high ends are the spread of those measurements, widened where our stage is not the measured code:
python 30-45x, memory 55-90x, c_image 14-28x (central 20x). Further error the ratios cannot see: OpenCV on x86
uses AVX2 where the A9 has NEON (both SIMD; OpenCV runs single-threaded here, as it effectively does on a core the
pipeline already uses), and pynq's MMIO register reads cost more than the simulated overlay's (the wait reads
the status register a few times a frame). The accelerator's own frame time (3.97 ms, Verilator simulation of the
416x416 design with its sized FIFOs) is taken as is, not scaled.

The x86 side should run the board's libraries: the JPEG decode, most of a frame's CPU, is ~1.6x faster here
with libjpeg-turbo 3.1 (opencv-python 4.13 wheels) than with 2.1.2 (opencv-python 4.5.5 wheels, and the PYNQ
3.0.1 image's OpenCV 4.5.4), and numpy 1.x costs more per call than 2.x; the report names what it ran with.

With `--a9 DIR` (board/a9/setup.sh DIR: an armhf Debian userland and a qemu-user plugin), every stage is instead
counted: board/a9count.py runs the same stage calls on armv7 Python/numpy/OpenCV/Pillow under `qemu-arm -cpu
cortex-a9`, and each stage's instructions are divided by the A9's instruction rate on its kind of code, measured by
counting, the same way, calls whose Zynq-7020 timings are public (A9_CALIBRATION): PIL resizes for C image code
(479/558 M instructions/s), FINN's driver unpacking a batch for Python-bound code (221 M/s), FINN's packing a
batch for numpy over large arrays (269 M/s). That removes the x86 side (AVX2 and other library builds here vs the
armhf builds' code, which for OpenCV's resize has no NEON path; the host's load); what remains is how far a stage's
code differs from its kind's calibration code (a9_from_counts says how the range is made) and what qemu-user does
not count: kernel time (futex wake-ups, page faults) and the memory system beyond what the calibration code met.

The stages include the pipeline's own per-frame hand-offs between threads (a future and two queues), which run
Python and hold the GIL. On the board itself the measured column is the A9's and the ratios do not apply.

End-to-end FPS from the stage times: the pipeline runs capture, two preprocess workers (JPEG decode + letterbox,
C code that releases the GIL, but for Pillow's conversion of the decoded frame to an array), the accelerator
thread (copy in, sleep until done, unpack) and the postprocess thread (decode + NMS, draw) on two cores, so a frame
costs the largest of: the CPU time of all stages over two cores; the accelerator thread's copy + accelerator +
unpack; the postprocess thread; the stages that hold the GIL (their flag in stage_calls), which no second core can
run at once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from board.accelerator import BoardError, input_resample, load_manifest
from board.packing import pack, unpack
from board.postprocess import box_iou, decode, detect
from board.preprocess import RESAMPLES, cv2, letterbox, resize_bilinear_fixed

ACCEL_FRAME_S = 0.00397  # 416x416 4w4a with sized FIFOs, bounded Verilator simulation at 100 MHz (README)
RATIOS = {"python": (37.0, 30.0, 45.0), "memory": (70.0, 55.0, 90.0), "c_image": (20.0, 14.0, 28.0)}
A9_HZ = 650e6
# The calibration calls board/a9count.py counts, each with the kind of code it stands for and its seconds on a
# Zynq-7020 board (github.com/Xilinx/PYNQ-HelloWorld, github.com/Xilinx/finn-examples): PIL resizes in
# PYNQ-HelloWorld's Pynq-Z2 notebook; FINN's
# driver in finn-examples' saved UNSW-NB15 notebook output (throughput_test, batch 1000, BIPOLAR in and out).
A9_CALIBRATION = {"pil_resize_3840x2160_to_1920x1080": ("c_image", 1.02),
                  "pil_resize_640x360_to_320x180": ("c_image", 0.0246),
                  "finn_unpack_output_1000x1_bipolar": ("python", 0.3555),
                  "finn_pack_input_1000x600_bipolar": ("memory", 0.0711)}
# A kind with one calibration point has no spread of its own. Python: the count runs CPython 3.11, the board
# 3.10, and 3.11's speed-up over 3.10 differs by workload (10-60 %, its release notes), so a stage's time relative
# to the calibration's is uncertain by up to 1.6/1.1 either way. Any other (numpy over large arrays): the spread of
# the C image points, as different kinds of compiled code differ.
A9_SINGLE_POINT_SPREAD = {"python": 1.6 / 1.1}
LETTERBOX_STAGE = {"bilinear": "letterbox_640x480", "nearest": "letterbox_640x480_nearest"}  # the frame's, by resample
LPYOLO = {"size": 416, "grid": 13, "channels": 18, "anchors": [[10, 14], [23, 27], [37, 58]], "stride": 32,
          "scale": 1 / 127}


# -- the host path as it was before the OpenCV letterbox and one-copy packing: the named baseline the speed-up is measured against --
def float_letterbox_baseline(img: np.ndarray, size: int) -> np.ndarray:
    """The old letterbox: the whole frame to float32, then a float bilinear resize (~83 MB of traffic per frame)."""
    h, w = img.shape[:2]
    ratio = min(size / h, size / w)
    nh, nw = max(1, round(h * ratio)), max(1, round(w * ratio))
    ys = np.clip((np.arange(nh, dtype=np.float32) + 0.5) * (h / nh) - 0.5, 0, h - 1)
    xs = np.clip((np.arange(nw, dtype=np.float32) + 0.5) * (w / nw) - 0.5, 0, w - 1)
    y0, x0 = ys.astype(np.int32), xs.astype(np.int32)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    f = img.astype(np.float32)
    top = f[y0][:, x0] * (1 - wx) + f[y0][:, x1] * wx
    bot = f[y1][:, x0] * (1 - wx) + f[y1][:, x1] * wx
    canvas = np.full((size, size, 3), 114, np.uint8)
    py, px = (size - nh) // 2, (size - nw) // 2
    canvas[py : py + nh, px : px + nw] = np.clip(top * (1 - wy) + bot * wy + 0.5, 0, 255).astype(np.uint8)
    return canvas


def loop_nms_baseline(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float = 0.45, max_det: int = 300):
    """The old NMS: one Python iteration per candidate over a precomputed IoU matrix."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    iou = box_iou(boxes[order], boxes[order]) > iou_thresh
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        if len(keep) == max_det:
            break
        suppressed |= iou[i]
    return np.asarray(keep, np.int64)


def detect_baseline(codes, scale, anchors, stride, conf=0.25, iou=0.45):
    boxes, scores, _ = decode(codes, scale, anchors, stride, 1, conf)
    k = loop_nms_baseline(boxes, scores, iou)
    return np.concatenate([boxes[k], scores[k, None], np.zeros((len(k), 1), np.float32)], axis=1)


# -- inputs --
def camera_frame(w: int, h: int) -> np.ndarray:
    """A photo-like RGB frame (a smooth gradient with texture and edges; JPEG-compressible like a camera's)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    img = np.stack([xx / w * 200, yy / h * 200, (xx + yy) / (w + h) * 255], axis=2)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    img[h // 4 : h // 2, w // 3 : w // 2] = (220, 180, 150)  # a face-coloured block: sharp edges
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(img: np.ndarray, quality: int = 85, chroma: str = "4:2:0") -> bytes:
    """An MJPEG camera frame as the camera sends it: 4:2:0 chroma, or 4:2:2 as many webcams send (more to decode)."""
    import io

    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(img).save(b, "JPEG", quality=quality, subsampling={"4:2:0": 2, "4:2:2": 1}[chroma])
    return b.getvalue()


def output_codes(faces: int, per_face: int = 8, seed: int = 0) -> np.ndarray:
    """A (13, 13, 18) output as a trained net gives it: `faces` faces, each firing `per_face` anchor cells around
    it with boxes close to the face's (what NMS exists for); every other cell below the 0.25 threshold. With
    `faces=None`, the worst case: all 507 anchor cells above the threshold with unrelated random boxes."""
    g, ch = LPYOLO["grid"], LPYOLO["channels"]
    rng = np.random.default_rng(seed)
    codes = rng.integers(-127, 128, (g, g, ch)).astype(np.int32)
    v = codes.reshape(g, g, 3, 6)
    if faces is None:
        v[..., 4] = rng.integers(0, 128, v.shape[:3])
        return codes
    v[..., 4] = -127  # objectness 0
    anchors = np.asarray(LPYOLO["anchors"], np.float64)
    for _ in range(faces):
        fx, fy = rng.uniform(2, g - 2, 2)  # face centre, in cells
        size = rng.uniform(20, 100)
        for _ in range(per_face):
            cx, cy = int(fx) + rng.integers(-1, 2), int(fy) + rng.integers(-1, 2)
            a = rng.integers(0, 3)
            jitter = rng.normal(0, 0.1, 4)
            t = [fx - cx - 0.5 + jitter[0], fy - cy - 0.5 + jitter[1],
                 np.sqrt(size * (1 + jitter[2]) / anchors[a, 0]) - 1, np.sqrt(size * (1 + jitter[3]) / anchors[a, 1]) - 1]
            v[cy, cx, a, :4] = np.clip(np.round(np.asarray(t) * 127), -127, 127)
            v[cy, cx, a, 4] = rng.integers(20, 128)
    return codes


# -- timing --
def time_stage(fn, reps: int = 5, inner: int = 10) -> float:
    """The least of `reps * inner` individually timed calls: other jobs on a shared machine only ever add time
    (on 2 busy cores even a 10-call batch is rarely left alone), so the least is the closest to the code's own
    cost, as `timeit` advises. Each stage runs warm, as in a stream of frames."""
    fn()
    best = float("inf")
    for _ in range(reps * inner):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def handoff_call():
    """The pipeline's own per-frame work as one call: a frame crosses to a preprocess worker and back (a future: two
    thread wake-ups), then through two bounded queues."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    q1, q2 = queue.Queue(4), queue.Queue(4)
    pool = ThreadPoolExecutor(1)  # lives as long as the process: the bench and a9count call it to the end

    def frame():
        q1.put(("f", pool.submit(int).result()), timeout=1)
        q2.put(q1.get(timeout=1), timeout=1)
        q2.get(timeout=1)
    return frame


def time_execute(deploy: Path, frames: int = 20) -> dict:
    """The accelerator wait on the simulated overlay, its done bit held back for ACCEL_FRAME_S: wall time, and the
    host CPU the wait itself costs (thread CPU time minus the golden model's, which is the accelerator's work)."""
    from board.accelerator import Accelerator
    from board.sim import SimOverlay

    ov = SimOverlay(deploy, frame_time_s=ACCEL_FRAME_S)
    acc = Accelerator(deploy, overlay=ov)
    frame = np.zeros(acc.manifest["input"]["accel_shape"], np.uint8)
    acc(frame)
    walls, cpus = [], []
    for _ in range(frames):
        acc.pack_input(frame)
        g0, c0, t0 = ov.golden_cpu_s, time.thread_time(), time.perf_counter()
        acc.execute()
        walls.append(time.perf_counter() - t0)
        cpus.append(max(0.0, time.thread_time() - c0 - (ov.golden_cpu_s - g0)))
    return {"wall_s": statistics.median(walls), "host_cpu_s": statistics.median(cpus)}


def stage_calls() -> tuple[dict, dict]:
    """The host path's stages for one frame (the LPYOLO 416x416 geometry), each a call on warm inputs with its ratio
    kind, whether it holds the GIL and whether it is in the 640x480 frame; and the baseline's calls. The x86 timing
    and the armhf instruction count (board/a9count.py) run these same calls."""
    from board.pipeline import draw, image_array, open_image

    size, g, ch = LPYOLO["size"], LPYOLO["grid"], LPYOLO["channels"]
    anchors, stride, scale = LPYOLO["anchors"], LPYOLO["stride"], LPYOLO["scale"]
    if cv2 is not None:
        cv2.setNumThreads(1)  # one core per stage, as on the board where the other core runs the other stages
    vga, hd = camera_frame(640, 480), camera_frame(1280, 720)
    jpg, jpg_422 = jpeg_bytes(vga), jpeg_bytes(vga, chroma="4:2:2")
    canvas = np.empty((size, size, 3), np.uint8)
    dma_in = np.zeros((1, size * size * 3), np.uint8)
    raw_out = pack(np.zeros((g * g, ch), np.int32), 8, ch).reshape(-1)
    realistic, worst = output_codes(3), output_codes(None)
    boxes_drawn = detect(realistic, scale, anchors, stride)
    opened = open_image(jpg)
    decoded = image_array(opened)  # read-only, as the pipeline hands it to the sink: draw copies it
    calls = {  # stage -> (call, ratio kind, holds the GIL, counted in the 640x480 frame)
        "capture_decode_640x480_jpeg": (lambda: open_image(jpg), "c_image", False, True),
        "capture_decode_640x480_jpeg_422": (lambda: open_image(jpg_422), "c_image", False, False),
        "decoded_frame_to_array": (lambda: image_array(opened), "c_image", True, True),
        "letterbox_640x480": (lambda: letterbox(vga, size, canvas), "c_image", False, True),
        "letterbox_640x480_nearest": (lambda: letterbox(vga, size, canvas, resample="nearest"), "c_image", False, False),
        "letterbox_1280x720": (lambda: letterbox(hd, size, canvas), "c_image", False, False),
        "pack_copy_to_dma": (lambda: np.copyto(dma_in, canvas.reshape(1, -1)), "memory", False, True),
        "unpack": (lambda: unpack(raw_out, 8, ch, g * g * ch, True).reshape(g, g, ch), "python", True, True),
        "decode_nms_3_faces": (lambda: detect(realistic, scale, anchors, stride), "python", True, True),
        "decode_nms_507_candidates_worst": (lambda: detect(worst, scale, anchors, stride), "python", True, False),
        "draw": (lambda: draw(decoded, boxes_drawn, ["face"]), "c_image", False, True),
        "pipeline_handoffs": (handoff_call(), "python", True, True),
    }
    if cv2 is not None:  # a board without OpenCV: the numpy fixed-point resize, memory-bound numpy
        calls["letterbox_640x480_numpy_fallback"] = (lambda: resize_bilinear_fixed(vga, 312, 416), "memory", True, False)
    baseline = {
        "letterbox_640x480": lambda: float_letterbox_baseline(vga, size),
        "pack_copy_to_dma": lambda: np.copyto(dma_in, pack(canvas.reshape(1, -1, 3), 8, 3).reshape(1, -1)),
        "decode_nms_3_faces": lambda: detect_baseline(realistic, scale, anchors, stride),
        "decode_nms_507_candidates_worst": lambda: detect_baseline(worst, scale, anchors, stride),
    }
    return calls, baseline


def measure(deploy: Path | None = None, reps: int = 5) -> dict:
    """x86 seconds per stage of one frame (the LPYOLO 416x416 geometry), the baseline's, and the A9 estimate."""
    calls, base_calls = stage_calls()
    t = {name: (time_stage(fn, reps), kind, gil, counted) for name, (fn, kind, gil, counted) in calls.items()}
    execute = time_execute(deploy) if deploy else {"wall_s": ACCEL_FRAME_S, "host_cpu_s": 0.0}
    t["execute_host_cpu"] = (execute["host_cpu_s"], "python", True, True)
    slow = ("letterbox_640x480", "decode_nms_507_candidates_worst")  # the old code's slowest: fewer calls
    baseline = {name: time_stage(fn, reps, 3 if name in slow else 10) for name, fn in base_calls.items()}
    return {"stages": t, "baseline": baseline, "accelerator_s": ACCEL_FRAME_S, "execute_wall_s": execute["wall_s"],
            "execute_measured": bool(deploy)}


def frame_cost(stage_s: dict, accelerator_s: float, gil: set) -> tuple[float, str, str]:
    """(seconds per frame, bound lane, its largest stage) on two cores, from per-stage seconds (see module doc);
    `gil`: the stages that hold the GIL."""
    s = stage_s
    gil = sorted(gil & set(s))
    lanes = {
        "both cores (all CPU stages / 2)": (sum(s.values()) / 2, s),
        "accelerator thread (copy in + accelerator + unpack)":
            (s["pack_copy_to_dma"] + accelerator_s + s["execute_host_cpu"] + s["unpack"],
             {"accelerator": accelerator_s, "pack_copy_to_dma": s["pack_copy_to_dma"], "unpack": s["unpack"]}),
        "postprocess thread (decode + NMS, draw)":
            (s["decode_nms_3_faces"] + s["draw"], {k: s[k] for k in ("decode_nms_3_faces", "draw")}),
        "GIL (the stages that hold it)":
            (sum(s[k] for k in gil), {k: s[k] for k in gil}),
    }
    lane = max(lanes, key=lambda k: lanes[k][0])
    top = max(lanes[lane][1], key=lanes[lane][1].get)
    return lanes[lane][0], lane, top


def estimate(m: dict, counts: dict | None = None, resample: str = "bilinear") -> dict:
    """The JSON report: x86 and A9 (central, low, high) per stage and per frame. With `counts` (armhf instructions
    per call, count_on_armhf), each counted stage's A9 time comes from its instructions and its kind's A9 rate
    instead of x86 time x ratio. The frame letterboxes with `resample` (the model's); `a9_by_resample` gives the
    frame with each."""
    stages = {}
    a9 = {"central": {}, "low": {}, "high": {}}
    x86 = {}
    kinds = {name: kind for name, (_, kind, _, _) in m["stages"].items()}
    gil_stages = {name for name, (_, _, holds, _) in m["stages"].items() if holds}
    counted_a9 = a9_from_counts(counts, kinds) if counts else {}
    for name, (sec, kind, gil, counted) in m["stages"].items():
        r, lo, hi = RATIOS[kind]
        a9_s = {"central": sec * r, "low": sec * lo, "high": sec * hi}
        if name in LETTERBOX_STAGE.values():
            counted = name == LETTERBOX_STAGE[resample]
        stages[name] = {"x86_ms": round(sec * 1e3, 4), "ratio": kind, "ratio_value": r, "ratio_range": [lo, hi],
                        "holds_gil": gil, "in_640x480_frame": counted, "a9_method": "x86 time x ratio"}
        if name in counted_a9:
            a9_s = counted_a9[name]
            stages[name].update(a9_method=f"armhf instructions / A9 rate on {kind} code",
                                armhf_insns=counts[name]["insns"], armhf_neon_insns=counts[name]["neon"],
                                a9_ms_by_ratio=round(sec * r * 1e3, 3))
        stages[name].update(a9_ms=round(a9_s["central"] * 1e3, 3),
                            a9_ms_range=[round(a9_s["low"] * 1e3, 3), round(a9_s["high"] * 1e3, 3)])
        x86[name] = sec
        for key in a9:
            a9[key][name] = a9_s[key]
    stages["accelerator"] = {"x86_ms": round(m["accelerator_s"] * 1e3, 3), "ratio": "hardware (simulated, not scaled)",
                             "a9_ms": round(m["accelerator_s"] * 1e3, 3), "execute_wall_x86_ms": round(m["execute_wall_s"] * 1e3, 3),
                             "execute_measured_on_sim": m["execute_measured"]}

    def frame(per_stage: dict, letterbox_with: str) -> dict:
        """The stages of one 640x480 frame letterboxed with `letterbox_with`."""
        keep = {n for n, (_, _, _, counted) in m["stages"].items() if counted} - set(LETTERBOX_STAGE.values())
        return {n: v for n, v in per_stage.items() if n in keep or n == LETTERBOX_STAGE[letterbox_with]}

    by_resample = {}
    for rs in RESAMPLES:
        f, lane, top = frame_cost(frame(a9["central"], rs), m["accelerator_s"], gil_stages)
        lo_f = frame_cost(frame(a9["low"], rs), m["accelerator_s"], gil_stages)[0]
        hi_f = frame_cost(frame(a9["high"], rs), m["accelerator_s"], gil_stages)[0]
        by_resample[rs] = {"a9_ms_per_frame": round(f * 1e3, 3), "a9_ms_per_frame_range": [round(lo_f * 1e3, 3), round(hi_f * 1e3, 3)],
                           "a9_fps_estimate": round(1 / f, 1), "a9_fps_range": [round(1 / hi_f, 1), round(1 / lo_f, 1)],
                           "bound_stage": top, "bound_by": lane}
    in_frame = frame(x86, resample)
    x86_frame, x86_lane, x86_top = frame_cost(in_frame, m["accelerator_s"], gil_stages)
    base = dict(in_frame)  # the baseline's letterbox (float bilinear) stands in for the frame's
    base.pop(LETTERBOX_STAGE[resample])
    base.update({k: v for k, v in m["baseline"].items() if k in base or k == "letterbox_640x480"})
    host_ms = sum(in_frame.values()) * 1e3
    base_ms = sum(base.values()) * 1e3
    no_decode = host_ms - (in_frame["capture_decode_640x480_jpeg"] + in_frame["decoded_frame_to_array"]) * 1e3
    return {
        "resample": resample,
        "x86_ms_per_frame": round(host_ms, 3),
        "x86_ms_per_frame_without_capture_decode": round(no_decode, 3),
        "x86_baseline_ms_per_frame": round(base_ms, 3),
        "x86_baseline_ms_per_frame_without_capture_decode": round(base_ms - (host_ms - no_decode), 3),
        "x86_speedup_vs_baseline": round(base_ms / host_ms, 2),
        "x86_speedup_vs_baseline_without_capture_decode": round((base_ms - (host_ms - no_decode)) / no_decode, 1),
        "x86_fps_estimate": round(1 / x86_frame, 1), "x86_bound_stage": x86_top, "x86_bound_by": x86_lane,
        **by_resample[resample],
        "a9_by_resample": by_resample,
        "stages": stages,
        "baseline_x86_ms": {k: round(v * 1e3, 3) for k, v in m["baseline"].items()},
        "letterbox": "OpenCV" if cv2 is not None else "numpy (no cv2)",
        "software": software(),
        "method": ("armhf instruction counts under qemu-user / the A9's instructions per second on the same kind of "
                   "code (calibration calls with public Zynq-7020 timings, counted the same way); stages not counted: "
                   if counts else "") +
                  "x86 stage time x board/host ratio of the same kind of code (board/bench.py docstring: PYNQ-HelloWorld and "
                  "finn-examples notebook timings)",
        "a9_calibration": a9_rates(counts) if counts else None,
        "armhf_software": counts.get("_software") if counts else None,
    }


# -- the A9 from instruction counts: the stages run on an armhf Debian userland under qemu-user --
def a9_rates(counts: dict) -> dict:
    """kind of code -> {calibration call: the A9's instructions per second on it}: the calls' armhf counts over their
    public board timings."""
    rates: dict = {}
    for name, (kind, sec) in A9_CALIBRATION.items():
        rates.setdefault(kind, {})[name] = counts[name]["insns"] / sec
    return rates


def a9_from_counts(counts: dict, kinds: dict) -> dict:
    """stage -> A9 seconds (central, low, high) from its armhf instructions and the A9 rate on its kind of code
    (`kinds`: stage -> "c_image" / "python" / "memory"). Central: the geometric mean of the kind's calibration
    rates. Two or more points: low from the fastest, high from the slowest plus one more cycle per NEON instruction
    (the calibration code is scalar; the A9's NEON unit is 64 bits wide, so a quad-register operation takes two).
    One point: central divided and multiplied by the kind's A9_SINGLE_POINT_SPREAD."""
    rates = a9_rates(counts)
    c_image = rates["c_image"].values()
    out = {}
    for name, c in counts.items():
        if name.startswith("_") or name in A9_CALIBRATION or kinds.get(name) not in rates:
            continue
        r = list(rates[kinds[name]].values())
        central = c["insns"] / statistics.geometric_mean(r)
        if len(r) > 1:
            out[name] = {"central": central, "low": c["insns"] / max(r),
                         "high": c["insns"] / min(r) + c["neon"] / A9_HZ}
        else:
            f = A9_SINGLE_POINT_SPREAD.get(kinds[name], max(c_image) / min(c_image))
            out[name] = {"central": central, "low": central / f, "high": central * f}
    return out


def parse_marks(text: str) -> dict[int, tuple[int, int]]:
    """insn_count.c's log: "mark <id> <instructions> <neon>" lines -> {id: (instructions, neon)}."""
    marks = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 4 and f[0] == "mark":
            marks[int(f[1])] = (int(f[2]), int(f[3]))
    return marks


def counts_per_call(info: dict, marks: dict) -> dict:
    """{name: {"insns", "neon"}} per call, from board/a9count.py's stage order (stage k between marks 2k, 2k+1)."""
    out = {}
    for k, name in enumerate(info["stages"]):
        if 2 * k not in marks or 2 * k + 1 not in marks:
            raise BoardError(f"armhf count: no marks around stage {name!r} in the plugin's log")
        (i0, n0), (i1, n1) = marks[2 * k], marks[2 * k + 1]
        out[name] = {"insns": (i1 - i0) // info["calls"], "neon": (n1 - n0) // info["calls"]}
    out["_software"] = {k: info[k] for k in ("machine", "python", "numpy", "opencv", "pil")}
    return out


def count_on_armhf(a9_dir: Path, timeout: float = 3600) -> dict:
    """Run board/a9count.py on the armhf root `a9_dir`/root under qemu-user with `a9_dir`/insn_count.so (both made
    by board/a9/setup.sh) and return the instructions per call of every stage and calibration call."""
    root, plugin, qemu = a9_dir / "root", a9_dir / "insn_count.so", shutil.which("qemu-arm")
    python = root / "usr" / "bin" / "python3"
    for need, what in ((python, "an armhf root with Python, numpy, OpenCV and Pillow"), (plugin, "the count plugin")):
        if not need.exists():
            raise BoardError(f"{need}: missing ({what}); make it with `bash board/a9/setup.sh {a9_dir}`")
    if qemu is None:
        raise BoardError("qemu-arm not on the PATH: `apt-get install qemu-user` (board/a9/setup.sh does)")
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        # FINN's data packing (the Python calibration code) and qonnx's DataType are pure Python: the guest imports
        # this host's installed copies through links, beside the armhf root's own numpy.
        shim = Path(tmp) / "pure"
        shim.mkdir()
        for pkg in ("finn", "qonnx"):
            spec = importlib.util.find_spec(pkg)
            if spec is None or not spec.submodule_search_locations:
                raise BoardError(f"{pkg} is not installed here: the armhf count imports its data packing "
                                 "(`make install` installs finn-plus and qonnx)")
            (shim / pkg).symlink_to(spec.submodule_search_locations[0], target_is_directory=True)
        # libjpeg-turbo turns NEON on from /proc/cpuinfo, which qemu-user 7.2 passes through from this x86 host (no
        # "neon" there); the board's lists it, so the guest is told to use it as the board does.
        env = dict(os.environ, PYTHONPATH=f"{repo}{os.pathsep}{shim}", JSIMD_FORCENEON="1")
        log = Path(tmp) / "marks.log"
        cmd = [qemu, "-cpu", "cortex-a9", "-L", str(root), "-plugin", str(plugin), "-d", "plugin", "-D", str(log),
               str(python), "-m", "board.a9count"]
        print("counting armhf instructions per stage under qemu-user (about a minute): " + " ".join(cmd))
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BoardError(f"armhf count: no result within {timeout:.0f} s") from None
        if p.returncode:
            raise BoardError(f"armhf count failed (exit {p.returncode}): {p.stderr.strip()[-600:]}")
        info = json.loads(p.stdout.strip().splitlines()[-1])
        return counts_per_call(info, parse_marks(log.read_text()))


def software() -> dict:
    """What the x86 figures were measured with: the JPEG decoder above all (the board's OpenCV 4.5.4 decodes with
    libjpeg-turbo 2.1.2; opencv-python 4.5.5 wheels bundle the same, 4.13 wheels bundle 3.1, ~1.6x faster here)."""
    import platform

    jpeg = "PIL"
    if cv2 is not None:
        jpeg = next((line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
                     if line.strip().startswith("JPEG:")), "?")
    return {"python": platform.python_version(), "numpy": np.__version__,
            "opencv": None if cv2 is None else cv2.__version__, "jpeg_decoder": jpeg}


def pipeline_fps(deploy: Path, frames: int = 40) -> dict:
    """The real Pipeline on camera-like 640x480 JPEG frames, simulated accelerator held to ACCEL_FRAME_S per frame
    (the deploy's golden model computes the outputs; its input size is the deploy's)."""
    from board.accelerator import Accelerator
    from board.pipeline import Pipeline
    from board.sim import SimOverlay

    acc = Accelerator(deploy, overlay=SimOverlay(deploy, frame_time_s=ACCEL_FRAME_S))
    jpg = jpeg_bytes(camera_frame(640, 480))
    s = Pipeline(acc).run((f"f{i}", jpg) for i in range(frames))
    return {k: s[k] for k in ("frames", "end_to_end_fps", "accelerator_fps", "stage_ms")} | {
        "model_input": acc.manifest["input"]["accel_shape"][1:3]}


def report(deploy: Path | None, json_path: Path | None, reps: int = 5, frames: int = 40,
           a9_dir: Path | None = None) -> dict:
    counts = count_on_armhf(a9_dir) if a9_dir else None
    resample = "bilinear"
    if deploy:
        resample = input_resample(load_manifest(deploy))
    r = estimate(measure(deploy, reps), counts, resample)
    sw = r["software"]
    print(f"measured with Python {sw['python']}, numpy {sw['numpy']}, OpenCV {sw['opencv']}, JPEG: {sw['jpeg_decoder']} "
          "(the PYNQ 3.0.1 image: Python 3.10, numpy 1.21.5, OpenCV 4.5.4, libjpeg-turbo 2.1.2)")
    if counts:
        a = r["armhf_software"]
        print(f"armhf (qemu-user, Cortex-A9 ISA): Python {a['python']}, numpy {a['numpy']}, OpenCV {a['opencv']}, "
              f"Pillow {a['pil']}; A9 rate, M instructions/s: "
              + "; ".join(f"{kind} " + ", ".join(f"{v / 1e6:.0f} ({k})" for k, v in per.items())
                          for kind, per in r["a9_calibration"].items()))
    print(f"{'stage':<34} {'here ms':>8} {'ratio':>8} {'A9 ms (low-high)':>22}")
    for name, s in r["stages"].items():
        if name == "accelerator":
            print(f"{name:<34} {s['x86_ms']:8.3f} {'hw':>8} {s['a9_ms']:10.3f} (simulated frame time)")
            continue
        mark = "" if s["in_640x480_frame"] else "  (not in the frame sum)"
        how = f"{s['ratio_value']:7.0f}x" if "armhf_insns" not in s else f"{s['armhf_insns'] / 1e6:6.1f}Mi"
        print(f"{name:<34} {s['x86_ms']:8.3f} {how:>8} {s['a9_ms']:9.2f} "
              f"({s['a9_ms_range'][0]:.2f}-{s['a9_ms_range'][1]:.2f}){mark}")
    print(f"x86: {r['x86_ms_per_frame']:.3f} ms host CPU per 640x480 frame ({r['x86_ms_per_frame_without_capture_decode']:.3f} "
          f"without the JPEG decode); baseline (float letterbox, per-candidate NMS, converting pack) "
          f"{r['x86_baseline_ms_per_frame']:.3f} ms ({r['x86_baseline_ms_per_frame_without_capture_decode']:.3f}): "
          f"{r['x86_speedup_vs_baseline']}x ({r['x86_speedup_vs_baseline_without_capture_decode']}x); {r['x86_fps_estimate']} FPS "
          f"estimated, bound by {r['x86_bound_by']}")
    for rs, e in r["a9_by_resample"].items():
        print(f"A9 estimate, {rs} letterbox{' (this model)' if rs == resample else ''}: {e['a9_ms_per_frame']:.2f} ms per "
              f"frame, {e['a9_fps_estimate']} FPS (range {e['a9_fps_range'][0]}-{e['a9_fps_range'][1]}), bound by "
              f"{e['bound_by']}: {e['bound_stage']}")
    if deploy:
        r["pipeline_x86"] = pipeline_fps(deploy, frames)
        p = r["pipeline_x86"]
        print(f"real Pipeline here, simulated {ACCEL_FRAME_S * 1e3:.2f} ms accelerator, {p['frames']} 640x480 JPEG frames "
              f"to a {p['model_input'][0]}x{p['model_input'][1]} model: {p['end_to_end_fps']} FPS end to end")
    if json_path:
        Path(json_path).write_text(json.dumps(r, indent=2))
        print(f"written {json_path}")
    return r
