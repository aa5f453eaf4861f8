"""Threaded capture -> letterbox -> accelerate -> decode/NMS -> draw/sink, overlapping the ARM's work with the
accelerator's. Reports accelerator-only FPS and end-to-end FPS separately."""

from __future__ import annotations

import queue
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from board.accelerator import BoardError
from board.postprocess import detect_with_manifest
from board.preprocess import letterbox, unletterbox_boxes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_END = object()


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - PIL raises several types for broken files
        raise BoardError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e


def image_files(path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BoardError(f"{path}: no such image or folder")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BoardError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def image_source(path):
    """Yields (name, RGB array); an undecodable image is skipped with a warning (counted in the stats)."""
    for f in image_files(path):
        try:
            yield f.name, read_image(f)
        except BoardError as e:
            warnings.warn(str(e), stacklevel=2)
            yield f.name, None


def camera_source(device=0, max_frames: int | None = None):
    """USB webcam (or a video file path) through OpenCV, as on PYNQ images."""
    import cv2

    cap = cv2.VideoCapture(device)
    if not cap.isOpened():
        raise BoardError(f"camera/video {device!r} could not be opened")
    n = 0
    try:
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                if isinstance(device, str):
                    return  # end of the video file
                raise BoardError(f"camera {device!r} stopped delivering frames after {n} frames (unplugged?)")
            n += 1
            yield f"frame{n:06d}", frame[:, :, ::-1]
    finally:
        cap.release()


def draw(image: np.ndarray, dets: np.ndarray, classes) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    d = ImageDraw.Draw(im)
    for x1, y1, x2, y2, score, cls in dets:
        d.rectangle([x1, y1, x2, y2], outline=(0, 255, 0), width=2)
        d.text((x1 + 2, max(0, y1 - 11)), f"{classes[int(cls)]} {score:.2f}", fill=(0, 255, 0))
    return np.asarray(im)


class Pipeline:
    """Three stages in three threads joined by bounded queues; the accelerator is only ever called from one."""

    def __init__(self, accel, conf_thresh: float | None = None, iou_thresh: float | None = None, depth: int = 2):
        self.accel, self.manifest = accel, accel.manifest
        self.size = self.manifest["input"]["accel_shape"][1]
        self.conf, self.iou, self.depth = conf_thresh, iou_thresh, depth

    def run(self, source, sink=None, max_frames: int | None = None) -> dict:
        q_pre, q_post = queue.Queue(self.depth), queue.Queue(self.depth)
        errors, stats = [], {"frames": 0, "undecodable": 0, "detections": 0}
        accel_time = [0.0]

        def guard(fn):
            def run():
                try:
                    fn()
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                    errors.append(e)
                    for q in (q_pre, q_post):
                        q.put(_END)
            return run

        def produce():
            for i, (name, img) in enumerate(source):
                if max_frames is not None and i >= max_frames:
                    break
                if img is None:
                    stats["undecodable"] += 1
                    continue
                canvas, ratio, pad = letterbox(img, self.size)
                q_pre.put((name, img, canvas, ratio, pad))
            q_pre.put(_END)

        def accelerate():
            while (item := q_pre.get()) is not _END:
                name, img, canvas, ratio, pad = item
                t0 = time.perf_counter()
                codes = self.accel(canvas[None])[0]
                accel_time[0] += time.perf_counter() - t0
                q_post.put((name, img, codes, ratio, pad))
            q_post.put(_END)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=guard(f), daemon=True) for f in (produce, accelerate)]
        for t in threads:
            t.start()
        while (item := q_post.get()) is not _END:
            name, img, codes, ratio, pad = item
            dets = detect_with_manifest(codes, self.manifest, self.conf, self.iou)
            dets[:, :4] = unletterbox_boxes(dets[:, :4], ratio, pad, img.shape[:2])
            stats["frames"] += 1
            stats["detections"] += len(dets)
            if sink is not None:
                sink(name, img, dets)
        for t in threads:
            t.join(timeout=5)
        if errors:
            raise errors[0]
        wall = time.perf_counter() - t0
        stats.update({"seconds": round(wall, 4), "end_to_end_fps": round(stats["frames"] / wall, 2) if wall else 0.0,
                      "accelerator_fps": round(self.accel.fps(), 2),
                      "accelerator_call_fps": round(stats["frames"] / accel_time[0], 2) if accel_time[0] else 0.0})
        return stats


def wider_prediction_text(name: str, dets: np.ndarray) -> str:
    """One image's predictions in WIDER FACE's submission format: name, count, then `x y w h score` lines."""
    lines = [name, str(len(dets))]
    lines += [f"{x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f} {s:.4f}" for x1, y1, x2, y2, s, _ in dets]
    return "\n".join(lines) + "\n"
