"""Real pictures that installed packages ship, letterboxed to the model size: calibration and cross-check inputs."""

from __future__ import annotations

import numpy as np

from board.preprocess import letterbox

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


def to_nchw_float(batch_nhwc: np.ndarray) -> np.ndarray:
    """The network's input: pixel values 0..255 as float32, NCHW."""
    return np.ascontiguousarray(batch_nhwc.transpose(0, 3, 1, 2)).astype(np.float32)
