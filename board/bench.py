"""`python -m board bench`: every stage of the board's loop timed where it runs (the board, or a host with the
simulated overlay), and the frames per second those times allow.

Each stage is the least of many timed calls of the code the Pipeline runs, on one 640x480 camera frame into the
LPYOLO 416x416 geometry; the letterbox counted in the frame is the model's resample (manifest.json's
input.resample). The stages include the pipeline's own per-frame hand-offs between threads (a future and two
queues), which run Python and hold the GIL.

Frames per second from the stage times: the pipeline runs capture, two preprocess workers (JPEG decode + letterbox,
C code that releases the GIL, but for Pillow's conversion of the decoded frame to an array), the accelerator
thread (copy in, sleep until done, unpack) and the postprocess thread (decode + NMS, draw) on two cores, so a frame
costs the largest of: the CPU time of all stages over two cores; the accelerator thread's copy + accelerator +
unpack; the postprocess thread; the stages that hold the GIL (their flag in stage_calls), which no second core can
run at once.

What these times come to on the PYNQ-Z2's Cortex-A9 when measured on a host is a host-side estimate:
`python -m flow bench a9` (flow/a9/estimate.py), which builds on this module's measurements.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np

from board.accelerator import read_manifest
from board.packing import pack, unpack
from board.postprocess import box_iou, decode, detect
from board.preprocess import cv2, letterbox, resize_bilinear_fixed

ACCEL_FRAME_S = 0.00397  # 416x416 4w4a with sized FIFOs, bounded Verilator simulation at 100 MHz (README)
FRAME = (640, 480)  # the camera frame every figure here is of (width, height)
# A frame build's accelerator also streams the whole frame through the fabric letterbox (its RTL in Verilator,
# 640x480 -> 416 under stalls: 286.2 FPS at 100 MHz, README), beside the network: the slower of the two paces it.
LETTERBOX_FRAME_S = 1 / 286.2
FRAME_BUILD_ACCEL_S = max(ACCEL_FRAME_S, LETTERBOX_FRAME_S)
LETTERBOX_STAGE = {"bilinear": "letterbox_640x480", "nearest": "letterbox_640x480_nearest",
                   "bilinear-exact": "letterbox_640x480_exact"}  # the frame's, by resample (on the host)
# the stages of one 640x480 MJPEG frame, by path: "frame" (a frame build: the letterbox in the fabric) or the host
# letterbox's resample; every path also runs PATH_COMMON
PATH_COMMON = ("capture_mjpeg_frame", "capture_usb_kernel", "execute_host_cpu", "unpack", "decode_nms_3_faces", "draw",
               "pipeline_handoffs")  # capture_usb_kernel: the kernel's share, no call here (the A9 estimate's)
HOST_PATH = ("capture_decode_640x480_jpeg", "decoded_frame_to_array", "pack_copy_to_dma")
PATH_STAGES = {"frame": ("capture_decode_640x480_jpeg", "frame_rgb_into_dma", "dma_flush_640x480"),
               **{rs: (*HOST_PATH, stage) for rs, stage in LETTERBOX_STAGE.items()}}
ACCEL_THREAD = ("pack_copy_to_dma", "dma_flush_640x480", "execute_host_cpu", "unpack")  # besides the accelerator


def path_stages(path: str) -> set:
    """The stages of one 640x480 frame on `path` ("frame" or a resample)."""
    return set(PATH_COMMON) | set(PATH_STAGES[path])


def accelerator_s(path: str) -> float:
    return FRAME_BUILD_ACCEL_S if path == "frame" else ACCEL_FRAME_S
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
    pool = ThreadPoolExecutor(1)  # lives as long as the process: the bench and the armhf count call it to the end

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
    frame = np.zeros(acc.manifest.input.accel_shape, np.uint8)
    acc(frame)
    walls, cpus = [], []
    for _ in range(frames):
        acc.pack_input(frame)
        g0, c0, t0 = ov.golden_cpu_s, time.thread_time(), time.perf_counter()
        acc.execute()
        walls.append(time.perf_counter() - t0)
        cpus.append(max(0.0, time.thread_time() - c0 - (ov.golden_cpu_s - g0)))
    return {"wall_s": statistics.median(walls), "host_cpu_s": statistics.median(cpus)}


def time_execute_beside_python(deploy: Path, frames: int = 100) -> dict:
    """The accelerator's wait beside a Python-bound thread (a pure-Python loop: it never gives the GIL up by itself,
    the worst case of decode + NMS): execute() on the simulated overlay, its done bit held back for ACCEL_FRAME_S
    and the golden model not run (the wait alone), with CPython's 5 ms switch interval and with the pipeline's
    (board.accelerator.gil_handover). Median and 90th percentile of the wall time per call."""
    import threading

    from board.accelerator import WAIT_SWITCH_S, Accelerator, gil_handover
    from board.sim import SimOverlay

    out = {}
    for label, interval in (("switch_5ms", 0.005), (f"switch_{WAIT_SWITCH_S * 1e3:g}ms", WAIT_SWITCH_S)):
        ov = SimOverlay(deploy, frame_time_s=ACCEL_FRAME_S)
        ov._run = lambda: None  # the wait alone: no golden model in the waiting thread
        acc = Accelerator(deploy, overlay=ov, input_buffers=1)
        frame = np.zeros(acc.manifest.input.accel_shape, np.uint8)
        acc.pack_input(frame)
        acc.execute()
        stop = threading.Event()

        def python_bound(stop=stop):
            while not stop.is_set():
                total = 0
                for i in range(20_000):
                    total += i

        t = threading.Thread(target=python_bound, daemon=True)
        walls = []
        with gil_handover(interval):
            t.start()
            try:
                for _ in range(frames):
                    t0 = time.perf_counter()
                    acc.execute()
                    walls.append(time.perf_counter() - t0)
            finally:
                stop.set()
                t.join()
        out[label] = {"median_ms": round(statistics.median(walls) * 1e3, 3),
                      "p90_ms": round(float(np.percentile(walls, 90)) * 1e3, 3), "frames": frames}
    return out


def stage_calls() -> tuple[dict, dict]:
    """The host path's stages for one frame (the LPYOLO 416x416 geometry), each a call on warm inputs with its ratio
    kind, whether it holds the GIL and whether it is in the 640x480 frame; and the baseline's calls. The x86 timing
    and the armhf instruction count (flow/a9/count.py, host side) run these same calls."""
    from board.pipeline import draw, image_array, open_image, rgb_into

    size, g, ch = LPYOLO["size"], LPYOLO["grid"], LPYOLO["channels"]
    anchors, stride, scale = LPYOLO["anchors"], LPYOLO["stride"], LPYOLO["scale"]
    if cv2 is not None:
        cv2.setNumThreads(1)  # one core per stage, as on the board where the other core runs the other stages
    vga, hd = camera_frame(640, 480), camera_frame(1280, 720)
    jpg, jpg_422 = jpeg_bytes(vga), jpeg_bytes(vga, chroma="4:2:2")
    canvas = np.empty((size, size, 3), np.uint8)
    jpg_mat = np.frombuffer(jpg, np.uint8).reshape(1, -1)  # OpenCV's MJPEG frame as cap.read() hands it over
    frame_buf = np.zeros((FRAME[1], FRAME[0], 3), np.uint8)  # a frame build's DMA buffer, as the CPU sees it
    flush_stand_in = np.zeros_like(frame_buf)
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
        "letterbox_640x480": (lambda: letterbox(vga, size, canvas, resample="bilinear"), "c_image", False, True),
        "letterbox_640x480_nearest": (lambda: letterbox(vga, size, canvas, resample="nearest"), "c_image", False, False),
        "letterbox_640x480_exact": (lambda: letterbox(vga, size, canvas, resample="bilinear-exact"), "memory", True,
                                    False),
        "letterbox_1280x720": (lambda: letterbox(hd, size, canvas, resample="bilinear"), "c_image", False, False),
        "pack_copy_to_dma": (lambda: np.copyto(dma_in, canvas.reshape(1, -1)), "memory", False, True),
        "unpack": (lambda: unpack(raw_out, 8, ch, g * g * ch, True).reshape(g, g, ch), "python", True, True),
        "decode_nms_3_faces": (lambda: detect(realistic, scale, anchors, stride), "python", True, True),
        "decode_nms_507_candidates_worst": (lambda: detect(worst, scale, anchors, stride), "python", True, False),
        "draw": (lambda: draw(decoded, boxes_drawn, ["face"]), "c_image", False, True),
        "pipeline_handoffs": (handoff_call(), "python", True, True),
        # capture: camera_source's share of a frame in user space, OpenCV's copy out of the V4L2 buffer and tobytes
        "capture_mjpeg_frame": (lambda: np.array(jpg_mat).tobytes(), "memory", True, True),
        # a frame build: the decoded frame packed into the DMA buffer (board.pipeline.decode_into), then flushed; the
        # flush's time here is a copy of the buffer (the simulated overlay's): on the board it is the A9's cache
        # maintenance, which the A9 estimate takes from a board measurement
        "frame_rgb_into_dma": (lambda: rgb_into(opened, frame_buf), "c_image", True, False),
        # a plain copy of the frame's bytes into the buffer: what the board's copy + flush measurement also copied
        "copy_640x480_frame": (lambda: np.copyto(frame_buf, decoded), "memory", False, False),
        "dma_flush_640x480": (lambda: np.copyto(flush_stand_in, frame_buf), "memory", False, False),
    }
    if cv2 is not None:  # OpenCV's way into the buffer, for comparison: decode to BGR, the conversion writes into it
        bgr = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
        calls["frame_decode_640x480_jpeg_bgr_cv2"] = (
            lambda: cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR), "c_image", False, False)
        calls["frame_bgr_to_rgb_into_dma_cv2"] = (lambda: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=frame_buf),
                                                  "c_image", False, False)
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
    """Seconds per stage of one frame (the LPYOLO 416x416 geometry) here, and the baseline's."""
    calls, base_calls = stage_calls()
    t = {name: (time_stage(fn, reps), kind, gil, counted) for name, (fn, kind, gil, counted) in calls.items()}
    execute = time_execute(deploy) if deploy else {"wall_s": ACCEL_FRAME_S, "host_cpu_s": 0.0}
    t["execute_host_cpu"] = (execute["host_cpu_s"], "python", True, True)
    slow = ("letterbox_640x480", "decode_nms_507_candidates_worst")  # the old code's slowest: fewer calls
    baseline = {name: time_stage(fn, reps, 3 if name in slow else 10) for name, fn in base_calls.items()}
    return {"stages": t, "baseline": baseline, "accelerator_s": ACCEL_FRAME_S, "execute_wall_s": execute["wall_s"],
            "execute_measured": bool(deploy),
            "execute_beside_python_thread": time_execute_beside_python(deploy) if deploy else None}


def frame_cost(stage_s: dict, accelerator_s: float, gil: set) -> tuple[float, str, str]:
    """(seconds per frame, bound lane, its largest stage) on two cores, from per-stage seconds (see module doc);
    `gil`: the stages that hold the GIL."""
    s = stage_s
    gil = sorted(gil & set(s))
    accel_thread = {"accelerator": accelerator_s} | {k: s[k] for k in ACCEL_THREAD if k in s}
    lanes = {
        "both cores (all CPU stages / 2)": (sum(s.values()) / 2, s),
        "accelerator thread (copy in or flush + accelerator + wait + unpack)":
            (sum(accel_thread.values()), accel_thread),
        "postprocess thread (decode + NMS, draw)":
            (s["decode_nms_3_faces"] + s["draw"], {k: s[k] for k in ("decode_nms_3_faces", "draw")}),
        "GIL (the stages that hold it)":
            (sum(s[k] for k in gil), {k: s[k] for k in gil}),
    }
    lane = max(lanes, key=lambda k: lanes[k][0])
    top = max(lanes[lane][1], key=lanes[lane][1].get)
    return lanes[lane][0], lane, top


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

    frame_build = read_manifest(deploy).input.frame is not None
    ov = SimOverlay(deploy, frame_time_s=FRAME_BUILD_ACCEL_S if frame_build else ACCEL_FRAME_S)
    acc = Accelerator(deploy, overlay=ov)
    jpg = jpeg_bytes(camera_frame(*(acc.frame or FRAME)))
    s = Pipeline(acc).run((f"f{i}", jpg) for i in range(frames))
    return {k: s[k] for k in ("frames", "end_to_end_fps", "accelerator_fps", "stage_ms")} | {
        "model_input": [acc.manifest.input.size] * 2, "frame_build": frame_build}


def frame_stages(m: dict, per_stage: dict, path: str) -> dict:
    """The stages of one 640x480 frame on `path` ("frame" or the host letterbox's resample), from per-stage values."""
    keep = path_stages(path)
    return {n: v for n, v in per_stage.items() if n in keep}


def summarize(m: dict, path: str) -> dict:
    """The measured report (the x86_* keys: measured here, whatever here is): per stage ms; one 640x480 frame on
    `path` (the model's: "frame" where the fabric letterboxes, else its resample), against the baseline (the host
    bilinear path as it was); the FPS the stage times allow, bound by what."""
    stages, here = {}, {}
    in_path = path_stages(path)
    for name, (sec, _kind, gil, _counted) in m["stages"].items():
        stages[name] = {"x86_ms": round(sec * 1e3, 4), "holds_gil": gil, "in_640x480_frame": name in in_path}
        here[name] = sec
    stages["accelerator"] = {"x86_ms": round(accelerator_s(path) * 1e3, 3),
                             "execute_wall_x86_ms": round(m["execute_wall_s"] * 1e3, 3),
                             "execute_measured_on_sim": m["execute_measured"]}
    gil_stages = {name for name, (_, _, holds, _) in m["stages"].items() if holds}
    in_frame = frame_stages(m, here, path)
    frame_s, lane, top = frame_cost(in_frame, accelerator_s(path), gil_stages)
    host = frame_stages(m, here, "bilinear")
    base = dict(host)  # the baseline: the host bilinear path with the old float letterbox, NMS and packing
    base.update({k: v for k, v in m["baseline"].items() if k in base})
    host_ms = sum(in_frame.values()) * 1e3
    base_ms = sum(base.values()) * 1e3
    decode = [k for k in ("capture_decode_640x480_jpeg", "decoded_frame_to_array", "frame_rgb_into_dma")
              if k in in_frame]
    no_decode = host_ms - sum(in_frame[k] for k in decode) * 1e3
    base_no_decode = base_ms - (host["capture_decode_640x480_jpeg"] + host["decoded_frame_to_array"]) * 1e3
    return {
        "path": path,
        "letterbox_in": "the fabric (bilinear-exact)" if path == "frame" else f"the host ({path})",
        "x86_ms_per_frame": round(host_ms, 3),
        "x86_ms_per_frame_without_capture_decode": round(no_decode, 3),
        "x86_baseline_ms_per_frame": round(base_ms, 3),
        "x86_baseline_ms_per_frame_without_capture_decode": round(base_no_decode, 3),
        "x86_speedup_vs_baseline": round(base_ms / host_ms, 2),
        "x86_speedup_vs_baseline_without_capture_decode": round(base_no_decode / no_decode, 1),
        "x86_fps_estimate": round(1 / frame_s, 1), "x86_bound_stage": top, "x86_bound_by": lane,
        "stages": stages,
        "execute_beside_python_thread": m.get("execute_beside_python_thread"),
        "baseline_x86_ms": {k: round(v * 1e3, 3) for k, v in m["baseline"].items()},
        "letterbox": "OpenCV" if cv2 is not None else "numpy (no cv2)",
        "software": software(),
    }


def print_measured(r: dict) -> None:
    sw = r["software"]
    print(f"measured with Python {sw['python']}, numpy {sw['numpy']}, OpenCV {sw['opencv']}, JPEG: {sw['jpeg_decoder']} "
          "(the PYNQ 3.0.1 image: Python 3.10, numpy 1.21.5, OpenCV 4.5.4, libjpeg-turbo 2.1.2)")


def print_wait(r: dict) -> None:
    w = r.get("execute_beside_python_thread")
    if w:
        print("accelerator wait beside a Python-bound thread (simulated overlay, wait alone), median / p90 ms: "
              + "; ".join(f"{k.replace('_', ' ')} {v['median_ms']:.2f} / {v['p90_ms']:.2f}" for k, v in w.items()))


def print_frame(r: dict) -> None:
    print(f"here: {r['x86_ms_per_frame']:.3f} ms CPU per 640x480 frame ({r['x86_ms_per_frame_without_capture_decode']:.3f} "
          f"without the JPEG decode); baseline (float letterbox, per-candidate NMS, converting pack) "
          f"{r['x86_baseline_ms_per_frame']:.3f} ms ({r['x86_baseline_ms_per_frame_without_capture_decode']:.3f}): "
          f"{r['x86_speedup_vs_baseline']}x ({r['x86_speedup_vs_baseline_without_capture_decode']}x); {r['x86_fps_estimate']} FPS "
          f"from the stage times, bound by {r['x86_bound_by']}")


def print_pipeline(r: dict, deploy: Path | None, frames: int) -> None:
    if deploy:
        r["pipeline_x86"] = pipeline_fps(deploy, frames)
        p = r["pipeline_x86"]
        how = "the simulated fabric letterboxing them" if p["frame_build"] else "letterboxed on the host"
        print(f"real Pipeline here, simulated {ACCEL_FRAME_S * 1e3:.2f} ms accelerator, {p['frames']} 640x480 JPEG frames "
              f"to a {p['model_input'][0]}x{p['model_input'][1]} model, {how}: {p['end_to_end_fps']} FPS end to end")


def write_json(r: dict, json_path: Path | None) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(r, indent=2))
        print(f"written {json_path}")


def model_path(deploy: Path | None) -> str:
    """The deploy's path: "frame" where its accelerator letterboxes (manifest input.frame), else its host letterbox's
    resample; without a deploy folder, "frame", the default build (every path's stages are timed either way)."""
    if not deploy:
        return "frame"
    m = read_manifest(deploy)
    return "frame" if m.input.frame is not None else m.input.resample


def report(deploy: Path | None, json_path: Path | None, reps: int = 5, frames: int = 40) -> dict:
    """Measure, print and return the per-stage and per-frame figures here (with `deploy`: on the simulated overlay,
    and the real Pipeline end to end)."""
    r = summarize(measure(deploy, reps), model_path(deploy))
    print_measured(r)
    print(f"{'stage':<34} {'here ms':>8}")
    for name, s in r["stages"].items():
        mark = "" if s.get("in_640x480_frame", True) else "  (not in the frame sum)"
        print(f"{name:<34} {s['x86_ms']:8.3f}{' (simulated frame time)' if name == 'accelerator' else mark}")
    print_frame(r)
    print_wait(r)
    print_pipeline(r, deploy, frames)
    write_json(r, json_path)
    return r
