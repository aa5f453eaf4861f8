"""The built-in set: a WIDER-format face set made on first use from pictures that installed packages ship.

Composed from real pictures (no download): scikit-image's `lfw_subset` (100 face and 100 non-face 25x25 crops) and
the face in `astronaut()`, pasted onto face-free photos (scikit-image, scikit-learn) at WIDER-like sizes (many small
faces), with blending, brightness, blur, occlusion and hard negatives. Deterministic by seed; generated on first use
into data/builtin/, in WIDER FACE's layout (`wider.py`), so every later stage reads both through one reader.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BUILTIN = REPO / "data" / "builtin"
BUILTIN_VERSION = 2


def _face_sources() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Real face crops (RGB uint8) and real non-face crops (hard negatives) that scikit-image ships."""
    from skimage import data

    lfw = (data.lfw_subset() * 255).astype(np.uint8)  # 100 faces then 100 non-faces, 25x25 grey
    faces = [np.repeat(f[:, :, None], 3, axis=2) for f in lfw[:100]]
    faces.append(data.astronaut()[25:175, 165:300])  # the astronaut's face, in colour
    negatives = [np.repeat(f[:, :, None], 3, axis=2) for f in lfw[100:]]
    return faces, negatives


def _backgrounds() -> list[np.ndarray]:
    """Face-free photos (no `camera`: it shows a person)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    out = []
    for name in ("coffee", "chelsea", "rocket", "hubble_deep_field", "grass", "gravel", "brick",
                 "immunohistochemistry"):
        im = getattr(data, name)()
        out.append(np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im[:, :, :3])
    out += list(load_sample_images().images)
    return out


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((max(1, w), max(1, h)), Image.BILINEAR))


def _blur(img: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return img
    f = img.astype(np.float32)
    pad = np.pad(f, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)), mode="edge")
    c = np.cumsum(np.cumsum(pad, 0), 1)
    c = np.pad(c, ((1, 0), (1, 0), (0, 0)))
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return np.clip(s / (k * k), 0, 255).astype(np.uint8)


def _paste(canvas: np.ndarray, patch: np.ndarray, x: int, y: int, rng) -> None:
    """Blend a patch with a soft elliptical mask (no hard rectangle edge for the detector to learn)."""
    h, w = patch.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
    alpha = np.clip((1.15 - r) / 0.3, 0, 1)[:, :, None] * rng.uniform(0.85, 1.0)
    region = canvas[y : y + h, x : x + w].astype(np.float32)
    canvas[y : y + h, x : x + w] = (alpha * patch + (1 - alpha) * region).astype(np.uint8)


def compose_image(rng, backgrounds, faces, negatives, size: int, width: int | None = None,
                  faces_mean: float | None = None) -> tuple[np.ndarray, list[list[float]]]:
    """One training picture: a background crop with 0-6 faces (small-face bias) and 0-3 hard negatives; `size` px
    high. WIDER-sized (`width`, `faces_mean`): `width` px wide, a geometric number of faces with that mean."""
    bg = backgrounds[rng.integers(len(backgrounds))]
    side = min(bg.shape[0], bg.shape[1])
    ch = int(rng.integers(min(size // 2, side), side + 1))
    y0, x0 = rng.integers(0, bg.shape[0] - ch + 1), rng.integers(0, bg.shape[1] - ch + 1)
    aspect = rng.uniform(0.75, 1.33)
    h, w = (size, int(size * aspect)) if width is None else (int(width / aspect), width)
    canvas = _resize(bg[y0 : y0 + ch, x0 : x0 + ch], h, w).copy()
    canvas = np.clip(canvas.astype(np.float32) * rng.uniform(0.6, 1.3), 0, 255).astype(np.uint8)
    H, W = canvas.shape[:2]
    size = size if width is None else min(H, W)
    boxes, taken = [], []
    n_faces = int(rng.choice([0, 1, 1, 2, 2, 3, 4, 6])) if faces_mean is None else int(rng.geometric(1 / faces_mean))
    for kind in ["face"] * n_faces + ["neg"] * int(rng.integers(0, 4)):
        src = faces[rng.integers(len(faces))] if kind == "face" else negatives[rng.integers(len(negatives))]
        side = int(np.exp(rng.uniform(np.log(14), np.log(size * 0.45))))  # log-uniform: many small faces
        fw, fh = side, int(side * rng.uniform(1.0, 1.25))
        if fw >= W - 2 or fh >= H - 2:
            continue
        for _ in range(10):  # avoid heavy overlap with earlier objects
            x, y = int(rng.integers(0, W - fw)), int(rng.integers(0, H - fh))
            if all(x + fw < a or a + c < x or y + fh < b or b + d < y for a, b, c, d in taken):
                break
        else:
            continue
        patch = _resize(src, fh, fw).astype(np.float32)
        tint = rng.uniform([0.85, 0.65, 0.5], [1.15, 0.95, 0.8]) if src.shape[0] == 25 else np.ones(3)
        patch = np.clip(patch * tint * rng.uniform(0.6, 1.4), 0, 255).astype(np.uint8)
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        patch = _blur(patch, int(rng.choice([1, 1, 1, 3, 5])))
        _paste(canvas, patch, x, y, rng)
        taken.append((x, y, fw, fh))
        if kind == "face":
            if rng.random() < 0.15:  # occluder over part of the face
                ow, oh = int(fw * rng.uniform(0.3, 0.6)), int(fh * rng.uniform(0.3, 0.6))
                ox, oy = x + int(rng.integers(0, fw - ow + 1)), y + int(rng.integers(0, fh - oh + 1))
                canvas[oy : oy + oh, ox : ox + ow] = rng.integers(0, 256, 3)
            boxes.append([float(x), float(y), float(fw), float(fh)])
    return canvas, boxes


WIDER_SIZED = {"width": 1024, "faces_mean": 12.0}  # WIDER FACE's train split: 1024 px wide, 159,424 faces / 12,880


def synth_dataset(root: Path = BUILTIN, seed: int = 0, n_train: int = 800, n_val: int = 200, size: int = 256,
                  force: bool = False, wider_sized: bool = False) -> Path:
    """Generate the built-in set in WIDER layout (cached: a matching `builtin.json` means it is there).
    wider_sized: pictures at WIDER's size and face count, for measuring the loader at WIDER scale (the faces are
    the built-in set's); each picture seeded by (seed, split, index) and generated in parallel."""
    from PIL import Image

    root = Path(root)
    stamp = {"version": BUILTIN_VERSION, "seed": seed, "n_train": n_train, "n_val": n_val, "size": size}
    if wider_sized:
        stamp = {**stamp, "size": WIDER_SIZED["width"], **{f"wider_{k}": v for k, v in WIDER_SIZED.items()}}
    marker = root / "builtin.json"
    if marker.exists() and not force and json.loads(marker.read_text()) == stamp:
        return root
    if root.exists():
        shutil.rmtree(root)
    faces, negatives = _face_sources()
    backgrounds = _backgrounds()
    (root / "wider_face_split").mkdir(parents=True)
    if wider_sized:
        _synth_wider_sized(root, seed, n_train, n_val, (backgrounds, faces, negatives))
        marker.write_text(json.dumps(stamp))
        return root
    for split, n, s in (("train", n_train, seed), ("val", n_val, seed + 1_000_003)):
        rng = np.random.default_rng(s)
        lines = []
        for k in range(n):
            event = f"{k % 4}--Synth_{split}"
            rel = f"{event}/{split}_{k:05d}.jpg"
            img, boxes = compose_image(rng, backgrounds, faces, negatives, size)
            path = root / f"WIDER_{split}" / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path, quality=90)
            lines += [rel, str(len(boxes))]
            lines += [f"{x:.0f} {y:.0f} {w:.0f} {h:.0f} 0 0 0 0 0 0 " for x, y, w, h in boxes] or ["0 0 0 0 0 0 0 0 0 0 "]
        (root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    marker.write_text(json.dumps(stamp))
    return root


_SOURCES: tuple = ()  # (backgrounds, faces, negatives), inherited by the forked generating processes


def _wider_sized_image(job) -> tuple[str, list[list[float]]]:
    from PIL import Image

    root, seed, split, k = job
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, k])
    backgrounds, faces, negatives = _SOURCES
    img, boxes = compose_image(rng, backgrounds, faces, negatives, 0, **WIDER_SIZED)
    rel = f"{k % 61}--Synth_{split}/{split}_{k:05d}.jpg"  # WIDER has 61 event folders
    path = Path(root) / f"WIDER_{split}" / "images" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=90)
    return rel, boxes


def _synth_wider_sized(root: Path, seed: int, n_train: int, n_val: int, sources) -> None:
    import multiprocessing

    from flow.terminal import progress

    global _SOURCES
    _SOURCES = sources
    with multiprocessing.get_context("fork").Pool() as pool:
        for split, n in (("train", n_train), ("val", n_val)):
            jobs = [(str(root), seed, split, k) for k in range(n)]
            lines = []
            for rel, boxes in progress(pool.imap(_wider_sized_image, jobs, chunksize=8), n, f"WIDER-sized {split}"):
                lines += [rel, str(len(boxes))]
                lines += [f"{x:.0f} {y:.0f} {w:.0f} {h:.0f} 0 0 0 0 0 0 " for x, y, w, h in boxes] or ["0 0 0 0 0 0 0 0 0 0 "]
            (root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").write_text("\n".join(lines) + "\n")


def builtin_dataset() -> Path:
    return synth_dataset(BUILTIN)
