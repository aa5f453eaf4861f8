"""Real pictures that installed packages ship, letterboxed to the model size (or, for a model whose accelerator
letterboxes in the fabric, made into camera frames): calibration and cross-check inputs."""

from __future__ import annotations

import numpy as np

from board.preprocess import letterbox, resize_into, to_rgb8

# Photos scikit-image ships (astronaut has a face); no download needed.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img[:, :, :3].astype(np.uint8)


def sample_images(img: int, n_real: int = 4, n_random: int = 2, seed: int = 0, *, resample: str) -> np.ndarray:
    """(n_real + n_random, img, img, 3) uint8 NHWC: letterboxed photos (with the model's `resample`), then uniform
    random pixels."""
    out = [letterbox(photo(PHOTOS[i % len(PHOTOS)]), img, resample=resample)[0] for i in range(n_real)]
    rng = np.random.default_rng(seed)
    out += [rng.integers(0, 256, (img, img, 3), dtype=np.uint8) for _ in range(n_random)]
    return np.stack(out) if out else np.zeros((0, img, img, 3), np.uint8)


def as_frame(picture: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    """A picture as a camera of frame = (width, height) would show it: the centred crop of the frame's aspect
    ratio, resized to the frame (h, w, 3 uint8; OpenCV's bilinear where it imports: the frame is the input here,
    not the letterbox under test). No grey bars: those are the letterbox's to add."""
    pic = to_rgb8(picture)
    (ih, iw), (fw, fh) = pic.shape[:2], frame
    if iw * fh > fw * ih:  # wider than the frame: keep the middle columns
        cw = max(1, round(ih * fw / fh))
        pic = pic[:, (iw - cw) // 2 : (iw - cw) // 2 + cw]
    else:
        ch = max(1, round(iw * fh / fw))
        pic = pic[(ih - ch) // 2 : (ih - ch) // 2 + ch]
    out = np.empty((fh, fw, 3), np.uint8)
    resize_into(np.ascontiguousarray(pic), out, "bilinear")
    return out


def sample_frames(frame: tuple[int, int], n_real: int = 4, n_random: int = 2, seed: int = 0) -> np.ndarray:
    """(n_real + n_random, height, width, 3) uint8 camera frames: the photos of `sample_images` as frames, then
    uniform random pixels (the same generator and seed as sample_images' random canvases)."""
    fw, fh = frame
    out = [as_frame(photo(PHOTOS[i % len(PHOTOS)]), frame) for i in range(n_real)]
    rng = np.random.default_rng(seed)
    out += [rng.integers(0, 256, (fh, fw, 3), dtype=np.uint8) for _ in range(n_random)]
    return np.stack(out) if out else np.zeros((0, fh, fw, 3), np.uint8)


def to_nchw_float(batch_nhwc: np.ndarray) -> np.ndarray:
    """The network's input: pixel values 0..255 as float32, NCHW."""
    return np.ascontiguousarray(batch_nhwc.transpose(0, 3, 1, 2)).astype(np.float32)
