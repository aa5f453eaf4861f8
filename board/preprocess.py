"""Letterboxing: the only image work the ARM does before the accelerator (its input is raw UINT8 pixels).

Two resamples, a property of the model (QuantSpec.resample, manifest.json's input.resample): training, evaluation
and the board all resize through `resize_into`, so the network sees on the board the kind of picture it was trained
on (a mismatch costs far more AP than either resample does: see flow/train/loader.py's decode_fitted).
- "bilinear": OpenCV's fixed-point bilinear resize where cv2 imports (the PYNQ 3.0.1 image ships OpenCV 4.5.4);
  otherwise the same sampling in 7-bit fixed point with numpy. Against the old float32 bilinear path: OpenCV within
  1 LSB, the numpy fallback within 2 (tests/board/test_board_host_path.py). The A9 pays ~11 M instructions
  (~22 ms) per 640x480 frame: armhf OpenCV builds have no NEON resize.
- "nearest": each output pixel copies the source pixel at floor(x * in/out), computed as OpenCV's INTER_NEAREST does
  (so cv2 and the numpy fallback agree bit for bit, in every OpenCV version tried): ~1.7 M instructions (~3 ms).
- "bilinear-exact": `resize_bilinear_exact`, integer arithmetic with exact source positions and one rounding, the
  resize that the letterbox in the fabric (flow/hw/rtl/lpyolo_letterbox.sv) computes bit for bit, so a model
  trained with it can take whole camera frames and leave the letterbox to the accelerator.
Neither converts the frame as a whole (a float32 copy of a 48 MP photo is 576 MB, more than a PYNQ-Z2 has). The golden
model and the board are always compared on the same letterboxed canvas, so either keeps the cross-check exact.
"""

from __future__ import annotations

import numpy as np

try:  # C image code releases the GIL and costs ~0.2 ms here per 640x480 frame
    import cv2
except ImportError:  # a bare board image without OpenCV
    cv2 = None

from board.manifest import PAD_VALUE, RESAMPLES  # noqa: E402 - the contract's facts: YOLOv5's grey, the resamples

_FRAC_BITS = 7  # fallback weights in 1/128 steps: (b - a) * w stays within int16 (255 * 128 < 32767)


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Any HxW, HxWx1, HxWx3 or HxWx4 image of uint8, uint16 (16-bit PNG/TIFF) or float in [0, 1] -> HxWx3 uint8.

    A view when the input already is HxWx3 (or HxWx4) uint8; otherwise the conversion touches each pixel once."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)) or 0 in img.shape[:2]:
        raise ValueError(f"expected an HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA) image, got shape {img.shape}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)  # 16-bit full scale is 65535, not 255 (clipping made it 90 % white)
    elif img.dtype.kind == "f":
        img = (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"expected uint8, uint16 or float pixels in [0, 1], got {img.dtype}")
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    return img[:, :, :3]


def _taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear source indices and fixed-point weights for one axis (half-pixel centres, edges clamped: cv2's)."""
    pos = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = pos.astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = np.round((pos - i0) * (1 << _FRAC_BITS)).astype(np.int16)
    return i0, i1, w


def _lerp(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """a + (b - a) * w / 128, rounded, on int16 (uint8 inputs), in place; w broadcasts along the interpolated axis."""
    d = np.subtract(b, a, dtype=np.int16)
    d *= w
    d += 1 << (_FRAC_BITS - 1)
    d >>= _FRAC_BITS
    d += a
    return d.astype(np.uint8)


def resize_bilinear_fixed(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of an HxWxC uint8 image in 7-bit fixed point, rows first: only the 2*h source rows the
    output samples are read, so memory grows with the output height times the frame width, never the frame."""
    ih, iw = img.shape[:2]
    if (ih, iw) == (h, w):
        return img
    y0, y1, wy = _taps(h, ih)
    x0, x1, wx = _taps(w, iw)
    rows = _lerp(img[y0], img[y1], wy[:, None, None])
    return _lerp(np.take(rows, x0, axis=1), np.take(rows, x1, axis=1), wx[None, :, None])


def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each output index: floor(x * (1 / (n_out / n_in))), OpenCV INTER_NEAREST's own arithmetic
    (the reciprocal of the scale, not n_in / n_out: the two round differently at exact integers)."""
    return np.minimum(np.floor(np.arange(n_out) * (1.0 / (n_out / n_in))).astype(np.intp), n_in - 1)


def check_resample(resample: str) -> str:
    if resample not in RESAMPLES:
        raise ValueError(f"unknown resample {resample!r}; use one of: {', '.join(RESAMPLES)}")
    return resample


def resize_into(img: np.ndarray, out: np.ndarray, resample: str) -> None:
    """Resize img into the (h, w, 3) view `out` with `resample` (RESAMPLES). OpenCV writes straight into it (no
    intermediate copy of the resized frame); a cv2 whose binding hands back a new array instead has it copied in."""
    h, w = out.shape[:2]
    check_resample(resample)
    if (img.shape[0], img.shape[1]) == (h, w):
        out[...] = img
    elif resample == "bilinear-exact":
        out[...] = resize_bilinear_exact(img, h, w)
    elif cv2 is not None:
        inter = cv2.INTER_LINEAR if resample == "bilinear" else cv2.INTER_NEAREST
        got = cv2.resize(img, (w, h), dst=out, interpolation=inter)
        if not np.shares_memory(got, out):
            out[...] = got
    elif resample == "nearest":
        np.take(np.take(img, nearest_index(h, img.shape[0]), axis=0), nearest_index(w, img.shape[1]), axis=1, out=out)
    else:
        out[...] = resize_bilinear_fixed(img, h, w)


def letterbox_geometry(shape: tuple[int, int], size: int) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """(ratio, (resized h, resized w), (pad_x, pad_y)) for an image of shape (h, w) into size x size."""
    h, w = shape
    ratio = min(size / h, size / w)
    nh, nw = max(1, round(h * ratio)), max(1, round(w * ratio))
    return ratio, (nh, nw), ((size - nw) // 2, (size - nh) // 2)


def letterbox(img: np.ndarray, size: int, out: np.ndarray | None = None, *,
              resample: str) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Fit an image into size x size RGB uint8 keeping its aspect ratio, padded with grey.

    `img`: anything `to_rgb8` takes. `out`: an optional (size, size, 3) uint8 array to write into (reused per frame).
    `resample`: the model's (RESAMPLES; the module docstring).
    Returns (canvas, ratio, (pad_x, pad_y)); box_in_original = (box_in_canvas - pad) / ratio.
    """
    img = to_rgb8(img)
    ratio, (nh, nw), (px, py) = letterbox_geometry(img.shape[:2], size)
    canvas = np.empty((size, size, 3), np.uint8) if out is None else out
    if canvas.shape != (size, size, 3) or canvas.dtype != np.uint8:
        raise ValueError(f"letterbox output must be uint8 ({size}, {size}, 3), got {canvas.dtype}{canvas.shape}")
    canvas[:py] = PAD_VALUE
    canvas[py + nh :] = PAD_VALUE
    canvas[py : py + nh, :px] = PAD_VALUE
    canvas[py : py + nh, px + nw :] = PAD_VALUE
    resize_into(img, canvas[py : py + nh, px : px + nw], resample)
    return canvas, ratio, (px, py)


LB_FRAC_BITS = 8  # letterbox_fixed: source positions and weights in 1/256 pixel


def fixed_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """letterbox_fixed's sampling along one axis: (i0, i1, weight of i1 in 1/256).

    The half-pixel source position (o + 0.5) * n_in / n_out - 0.5 is the rational ((2o + 1) n_in - n_out) / (2 n_out);
    it is taken exactly, floored to LB_FRAC_BITS fractional bits and clamped to [0, n_in - 1] (OpenCV's edges).
    The RTL steps the same quotient and remainder by (2 n_in << 8) // (2 n_out) per output pixel, so every position
    is exact there too (no accumulated rounding of a Q16 step)."""
    o = np.arange(n_out, dtype=np.int64)
    pos = (((2 * o + 1) * n_in - n_out) << LB_FRAC_BITS) // (2 * n_out)  # floor, also of the negative first ones
    pos = np.clip(pos, 0, (n_in - 1) << LB_FRAC_BITS)
    i0 = pos >> LB_FRAC_BITS
    return i0, np.minimum(i0 + 1, n_in - 1), pos & ((1 << LB_FRAC_BITS) - 1)


def _weighted(a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray, dtype) -> np.ndarray:
    """a * wa + b * wb with weights summing to 256, in `dtype`: uint16 for uint8 taps (at most 255 * 256), uint32 for
    the 16-bit sums of the first axis (at most 255 * 256 * 256), exact either way."""
    a = a.astype(dtype)
    a *= wa
    b = b.astype(dtype)
    b *= wb
    a += b
    return a


def resize_bilinear_exact(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize with one rounding: per channel, h_k = (a << 8) + wx (b - a) along each of the two source
    rows (exact, 16 bits), then (h_0 << 8) + wy (h_1 - h_0) (exact, 24 bits), rounded half up to 8 bits.
    What lpyolo_letterbox.sv computes, bit for bit (flow/hw/rtl/letterbox.py simulates both).

    Every sum is an exact integer of weights (256 - w, w), so the two axes may go in either order: the one that
    leaves fewer pixels after the first pass goes first (x for a narrower output), on uint16 then uint32, over an
    (H, W * 3) view whose column taps carry the channel (np.take on 2-D rows: ~6x the speed of int32 fancy
    indexing on 3-D arrays; tests/board/test_board_host_path.py checks it against the formula above)."""
    ih, iw = img.shape[:2]
    y0, y1, wy = fixed_taps(h, ih)
    x0, x1, wx = fixed_taps(w, iw)
    ch = np.arange(3)
    cx0, cx1 = (x0[:, None] * 3 + ch).ravel(), (x1[:, None] * 3 + ch).ravel()
    wx1 = np.repeat(wx, 3).astype(np.uint16)
    wy1 = wy[:, None].astype(np.uint16)
    wx0, wy0 = 256 - wx1, 256 - wy1
    flat = np.ascontiguousarray(img).reshape(ih, iw * 3)
    if w <= iw:  # along x first (on the 2h source rows the output samples)
        r0, r1 = np.take(flat, y0, axis=0), np.take(flat, y1, axis=0)
        h0 = _weighted(np.take(r0, cx0, axis=1), np.take(r0, cx1, axis=1), wx0, wx1, np.uint16)
        h1 = _weighted(np.take(r1, cx0, axis=1), np.take(r1, cx1, axis=1), wx0, wx1, np.uint16)
        v = _weighted(h0, h1, wy0.astype(np.uint32), wy1.astype(np.uint32), np.uint32)
    else:  # along y first: an upscale in x would carry more columns
        col = _weighted(np.take(flat, y0, axis=0), np.take(flat, y1, axis=0), wy0, wy1, np.uint16)
        v = _weighted(np.take(col, cx0, axis=1), np.take(col, cx1, axis=1), wx0.astype(np.uint32),
                      wx1.astype(np.uint32), np.uint32)
    v += 1 << (2 * LB_FRAC_BITS - 1)
    v >>= 2 * LB_FRAC_BITS
    return v.astype(np.uint8).reshape(h, w, 3)


def letterbox_fixed(frame: np.ndarray, size: int) -> np.ndarray:
    """The letterbox the fabric computes (lpyolo_letterbox.sv): an HxWx3 uint8 frame -> size x size x 3 uint8,
    the geometry of letterbox_geometry, PAD_VALUE around, resize_bilinear_exact inside. Integer arithmetic only,
    so it is the bit-exact specification of the RTL; against cv2.INTER_LINEAR it differs by OpenCV's own rounding
    (11-bit weights, two roundings: flow/hw/README.md has the measured difference)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or 0 in frame.shape:
        raise ValueError(f"letterbox_fixed takes an HxWx3 uint8 frame, got {frame.dtype}{frame.shape}")
    _, (nh, nw), (px, py) = letterbox_geometry(frame.shape[:2], size)
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    canvas[py : py + nh, px : px + nw] = resize_bilinear_exact(frame, nh, nw)
    return canvas


def fit_geometry(shape: tuple[int, int], frame: tuple[int, int]) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """letterbox_geometry into a frame of (width, height) instead of a square: (ratio, (h, w) resized, (pad_x, pad_y))."""
    h, w = shape
    fw, fh = frame
    ratio = min(fw / w, fh / h)
    nh, nw = max(1, min(fh, round(h * ratio))), max(1, min(fw, round(w * ratio)))
    return ratio, (nh, nw), ((fw - nw) // 2, (fh - nh) // 2)


def fit_into_frame(img: np.ndarray, out: np.ndarray) -> tuple[float, tuple[int, int]]:
    """A picture of another size than a frame build's frame, fitted into the (height, width, 3) frame `out` as the
    letterbox fits one into the canvas: aspect kept, PAD_VALUE around, resize_bilinear_exact (the fabric's own
    resample, so the picture is resampled twice by the same arithmetic). Returns (ratio, (pad_x, pad_y))."""
    img = to_rgb8(img)
    fh, fw = out.shape[:2]
    ratio, (nh, nw), (px, py) = fit_geometry(img.shape[:2], (fw, fh))
    out[:py] = PAD_VALUE
    out[py + nh :] = PAD_VALUE
    out[py : py + nh, :px] = PAD_VALUE
    out[py : py + nh, px + nw :] = PAD_VALUE
    inner = out[py : py + nh, px : px + nw]
    inner[...] = img if (nh, nw) == img.shape[:2] else resize_bilinear_exact(img, nh, nw)
    return ratio, (px, py)


def unletterbox_boxes(boxes: np.ndarray, ratio: float, pad: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Map xyxy boxes from the letterboxed canvas back onto the original image of shape (h, w)."""
    out = boxes.astype(np.float32).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - pad[0]) / ratio
    out[:, [1, 3]] = (out[:, [1, 3]] - pad[1]) / ratio
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, shape[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, shape[0])
    return out
