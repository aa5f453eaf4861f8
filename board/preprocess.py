"""Letterboxing: the only image work the ARM does before the accelerator (its input is raw UINT8 pixels)."""

from __future__ import annotations

import numpy as np

PAD_VALUE = 114  # YOLOv5's grey


def _resize_bilinear(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Vectorised bilinear resize of an HxWxC uint8 image (no OpenCV on a bare board image)."""
    ih, iw = img.shape[:2]
    if (ih, iw) == (h, w):
        return img
    ys = (np.arange(h, dtype=np.float32) + 0.5) * (ih / h) - 0.5
    xs = (np.arange(w, dtype=np.float32) + 0.5) * (iw / w) - 0.5
    ys, xs = np.clip(ys, 0, ih - 1), np.clip(xs, 0, iw - 1)
    y0, x0 = ys.astype(np.int32), xs.astype(np.int32)
    y1, x1 = np.minimum(y0 + 1, ih - 1), np.minimum(x0 + 1, iw - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    f = img.astype(np.float32)
    top = f[y0][:, x0] * (1 - wx) + f[y0][:, x1] * wx
    bot = f[y1][:, x0] * (1 - wx) + f[y1][:, x1] * wx
    return np.clip(top * (1 - wy) + bot * wy + 0.5, 0, 255).astype(np.uint8)


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Fit an HxWx3 uint8 image into size x size keeping its aspect ratio, padded with grey.

    Returns (canvas HxWx3 uint8, ratio, (pad_x, pad_y)); box_in_original = (box_in_canvas - pad) / ratio.
    """
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {img.shape}")
    img = img[:, :, :3]
    if img.dtype != np.uint8:
        img = np.clip(img * (255 if img.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    ratio = min(size / h, size / w)
    nh, nw = max(1, round(h * ratio)), max(1, round(w * ratio))
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    py, px = (size - nh) // 2, (size - nw) // 2
    canvas[py : py + nh, px : px + nw] = _resize_bilinear(img, nh, nw)
    return canvas, ratio, (px, py)


def unletterbox_boxes(boxes: np.ndarray, ratio: float, pad: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Map xyxy boxes from the letterboxed canvas back onto the original image of shape (h, w)."""
    out = boxes.astype(np.float32).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - pad[0]) / ratio
    out[:, [1, 3]] = (out[:, [1, 3]] - pad[1]) / ratio
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, shape[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, shape[0])
    return out
