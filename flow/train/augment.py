"""Training-time augmentation (LPYOLO's values: data/hyps/hyp.widerface.yaml of
github.com/sefaburakokcu/quantized-yolov5; in numpy): mosaic, random scale/translate,
horizontal flip, HSV jitter, then letterbox to the model size. Boxes are xyxy pixels throughout. Every resize is the
board's letterbox resampler with the model's `resample` (board/preprocess.py), so training sees the same kind of
pixels the board feeds the accelerator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from board.preprocess import PAD_VALUE, letterbox, resize_into


@dataclass(frozen=True)
class AugmentConfig:
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    translate: float = 0.1
    scale: float = 0.5
    fliplr: float = 0.5
    mosaic: float = 1.0


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def letterbox_with_boxes(img: np.ndarray, boxes: np.ndarray, size: int,
                         resample: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    canvas, ratio, (px, py) = letterbox(img, size, resample=resample)
    out = boxes.copy() * ratio
    out[:, [0, 2]] += px
    out[:, [1, 3]] += py
    return canvas, out


def hsv_jitter(img: np.ndarray, rng, h: float, s: float, v: float) -> np.ndarray:
    """Multiplicative HSV gains as in YOLOv5, done in float on an approximate HSV of the image. (In-place float32
    steps in the same order as `grey + (f - grey) * gain_s` and so on: the same values, without a temporary image per
    step; it is most of the loader's time.)"""
    f = img.astype(np.float32)
    f /= 255.0
    r, g, b = img[:, :, 0], img[:, :, 1], img[:, :, 2]  # channel max/min on uint8 planes: the same values as
    mx = np.maximum(np.maximum(r, g), b).astype(np.float32) / 255.0  # f.max(2), several times faster than a
    mn = np.minimum(np.minimum(r, g), b).astype(np.float32) / 255.0  # reduction over a length-3 last axis
    gain_s, gain_v = rng.uniform(1 - s, 1 + s), rng.uniform(1 - v, 1 + v)
    grey = (mx + mn)[:, :, None] / 2
    f -= grey  # saturation around the mid-grey of each pixel
    f *= gain_s
    f += grey
    f *= gain_v
    shift = rng.uniform(-h, h) * 3  # small hue rotation: mix channels cyclically
    rolled = np.roll(f, 1 if shift > 0 else -1, axis=2)
    rolled *= abs(shift)
    f *= 1 - abs(shift)
    f += rolled
    f *= 255
    return np.clip(f, 0, 255, out=f).astype(np.uint8)


def random_affine(img: np.ndarray, boxes: np.ndarray, size: int, rng, scale: float, translate: float,
                  resample: str = "bilinear"):
    """Scale by 1±scale and translate by ±translate*size, crop/pad to size x size; boxes clipped, tiny ones dropped."""
    s = rng.uniform(1 - scale, 1 + scale)
    h, w = img.shape[:2]
    nh, nw = max(1, int(h * s)), max(1, int(w * s))
    scaled = np.empty((nh, nw, 3), np.uint8)
    resize_into(img, scaled, resample)
    dx = int(rng.uniform(-translate, translate) * size + (size - nw) / 2)
    dy = int(rng.uniform(-translate, translate) * size + (size - nh) / 2)
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    x0, y0 = max(dx, 0), max(dy, 0)
    x1, y1 = min(dx + nw, size), min(dy + nh, size)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = scaled[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    b = boxes * s + np.array([dx, dy, dx, dy], np.float32)
    return canvas, clip_boxes(b, size)


def clip_boxes(b: np.ndarray, size: int, min_side: float = 2.0, min_keep: float = 0.4) -> np.ndarray:
    if not len(b):
        return b.reshape(0, 4)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    c = b.clip(0, size)
    keep_area = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    ok = ((c[:, 2] - c[:, 0]) >= min_side) & ((c[:, 3] - c[:, 1]) >= min_side) & (keep_area >= min_keep * area)
    return c[ok]


def mosaic(items, size: int, rng, resample: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    """Four (image, xyxy boxes) around a random centre, into one size x size picture."""
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    cx, cy = (int(rng.uniform(0.25, 0.75) * size) for _ in range(2))
    out = []
    for k, (img, boxes) in enumerate(items):
        tile, tb = letterbox_with_boxes(img, boxes, size // 2, resample)
        th, tw = tile.shape[:2]
        x = cx - tw if k in (0, 2) else cx
        y = cy - th if k in (0, 1) else cy
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + tw, size), min(y + th, size)
        canvas[y0:y1, x0:x1] = tile[y0 - y : y1 - y, x0 - x : x1 - x]
        out.append(tb + np.array([x, y, x, y], np.float32))
    return canvas, clip_boxes(np.concatenate(out) if out else np.zeros((0, 4), np.float32), size)


def augment(items, size: int, rng, cfg: AugmentConfig, resample: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    """items: one (image, xyxy) pair, or four for mosaic -> (size x size x 3 uint8, xyxy boxes)."""
    if len(items) == 4:
        img, boxes = mosaic(items, size, rng, resample)
    else:
        img, boxes = letterbox_with_boxes(*items[0], size, resample)
    img, boxes = random_affine(img, boxes, size, rng, cfg.scale, cfg.translate, resample)
    if rng.random() < cfg.fliplr:
        img = img[:, ::-1].copy()
        boxes = boxes.copy()
        boxes[:, [0, 2]] = size - boxes[:, [2, 0]]
    return hsv_jitter(img, rng, cfg.hsv_h, cfg.hsv_s, cfg.hsv_v), boxes
