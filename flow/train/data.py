"""Datasets in WIDER FACE's official layout: the reader (with the format's quirks) and the built-in set.

Layout (the same for WIDER FACE and the built-in set, so every later stage reads both through one reader):
    ROOT/wider_face_split/wider_face_{train,val}_bbx_gt.txt
    ROOT/WIDER_{train,val}/images/<event>/<name>.jpg
Annotation file: image path, face count, then per face `x1 y1 w h blur expression illumination invalid occlusion
pose`. An image with 0 faces is still followed by one line of zeros. Boxes with zero width/height and
`invalid=1` exist; lines may carry trailing spaces.

The built-in set is composed from real pictures that installed packages ship (no download): scikit-image's
`lfw_subset` (100 face and 100 non-face 25x25 crops) and the face in `astronaut()`, pasted onto face-free photos
(scikit-image, scikit-learn) at WIDER-like sizes (many small faces), with blending, brightness, blur, occlusion and
hard negatives. Deterministic by seed; generated on first use into data/builtin/.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flow.errors import FlowError

REPO = Path(__file__).resolve().parents[2]
BUILTIN = REPO / "data" / "builtin"
BUILTIN_VERSION = 2


class AnnotationError(FlowError):
    pass


@dataclass
class Sample:
    path: Path
    boxes: np.ndarray  # (N, 4) x1, y1, w, h in pixels, valid faces only
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # invalid / too small
    attrs: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.int32))


# ------------------------------------------------------------------------------------------------------ reader
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
FACE_FIELDS = "x1 y1 w h blur expression illumination invalid occlusion pose"
MAX_COORD = 1e5  # pixels: no photo is that large; a value beyond it (1e30) is a broken line, not a face


def _face_numbers(row: str) -> list[float] | None:
    parts = row.split()
    try:
        nums = [float(p) for p in parts[:10]] if len(parts) >= 4 else None
    except ValueError:
        return None
    return None if nums is None else nums + [0.0] * (10 - len(nums))


def _looks_like_image(row: str) -> bool:
    return Path(row.strip()).suffix.lower() in IMAGE_SUFFIXES or "/" in row


def read_wider_annotations(txt: Path, images_root: Path, skip_bad: bool = False, min_size: float = 0.0,
                           check_images: bool = True) -> list[Sample]:
    """Parse an official `wider_face_*_bbx_gt.txt`. Malformed lines or missing images raise AnnotationError naming
    file and line; with skip_bad they are skipped with one warning that counts them. A face count larger than the
    face lines that follow is reported at the count, and reading goes on at the next image, so it loses nothing
    else. Faces marked invalid, with zero size, or smaller than min_size pixels go to `ignore` (neither matched nor
    penalised in evaluation). A file with no image entries is an error."""
    txt, images_root = Path(txt), Path(images_root)
    if not txt.is_file():
        raise AnnotationError(f"{txt}: annotation file not found")
    raw = txt.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:  # WIDER's files are ASCII; one saved by an editor in Latin-1 is still readable
        text, line = raw.decode("latin-1"), raw[: e.start].count(b"\n") + 1
        warnings.warn(f"{txt}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); read as "
                      "Latin-1: check the image names on that line, and save the file as UTF-8 to silence this",
                      stacklevel=2)
    lines = text.splitlines()
    samples, bad, i = [], [], 0

    def fail(lineno: int, msg: str):
        if not skip_bad:
            raise AnnotationError(f"{txt}:{lineno}: {msg} (pass --skip-bad, make: SKIP_BAD=1, to skip such entries with a count)")
        bad.append(f"{lineno}: {msg}")

    while i < len(lines):
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        count_line = i + 2  # 1-based line of the face count
        if i + 1 >= len(lines):
            fail(i + 1, f"image {name!r} has no face count")
            break
        try:
            n = int(lines[i + 1].strip())
            if n < 0:
                raise ValueError
        except ValueError:
            fail(count_line, f"expected a face count after {name!r}, got {lines[i + 1].strip()!r}")
            i += 2
            continue
        want = max(n, 1)  # a 0-face image is followed by one dummy line
        rows = lines[i + 2 : i + 2 + want]
        vals, stop = [], None
        for k, row in enumerate(rows):
            nums = _face_numbers(row)
            if nums is None:
                stop = k
                break
            vals.append(nums)
        if stop is not None and _looks_like_image(rows[stop]):  # the count is too large: the next image starts
            what = (f"announces {n} face{'s' * (n != 1)} but only {stop} face line{'s' * (stop != 1)} follow"
                    if n else "has 0 faces but is not followed by WIDER's line of zeros")
            fail(count_line, f"{name!r} {what} (line {i + 3 + stop} is the next image, {rows[stop].strip()!r})")
            i += 2 + stop
            continue
        if stop is not None:
            fail(i + 3 + stop, f"face line {rows[stop].strip()!r} is not `{FACE_FIELDS}`")
            i += 2 + want
            continue
        if len(rows) < want:
            fail(count_line, f"{name!r} announces {n} faces but the file ends after {len(rows)}")
            break
        odd = next((k for k, v in enumerate(vals) if not all(math.isfinite(x) and abs(x) <= MAX_COORD for x in v)),
                   None)
        if odd is not None:
            fail(i + 3 + odd, f"face line {rows[odd].strip()!r} holds a value that is no pixel coordinate (nan, inf "
                 f"or beyond {MAX_COORD:g}); correct or delete the line")
            i += 2 + want
            continue
        i += 2 + want
        path = images_root / name
        if check_images and not path.is_file():
            fail(i - want - 1, f"image {path} not found")
            continue
        arr = np.asarray(vals[:n], np.float32).reshape(-1, 10)
        boxes, attrs = arr[:, :4], arr[:, 4:].astype(np.int32)
        invalid = (attrs[:, 3] == 1) | (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (
            np.minimum(boxes[:, 2], boxes[:, 3]) < min_size)
        samples.append(Sample(path, boxes[~invalid], boxes[invalid], attrs[~invalid]))
    if bad:
        warnings.warn(f"{txt}: skipped {len(bad)} bad entr{'y' if len(bad) == 1 else 'ies'} (first: line {bad[0]})",
                      stacklevel=2)
    if not samples:
        raise AnnotationError(f"{txt}: no usable image entries" + (f" (all {len(bad)} skipped as bad)" if bad else
                              " (the file is empty); expected WIDER's `path`, `face count`, face lines"))
    return samples


def require_faces(samples: list[Sample], txt: Path) -> list[Sample]:
    """A split without a single valid face can neither train anchors and a detector nor be evaluated."""
    if not any(len(s.boxes) for s in samples):
        ignored = sum(len(s.ignore) for s in samples)
        raise AnnotationError(f"{txt}: none of its {len(samples)} images has a valid face"
                              + (f" ({ignored} marked invalid, zero-size or below the minimum face size)" if ignored
                                 else "") + "; a detector cannot be trained or evaluated on it")
    return samples


def _decode_error(path: Path) -> str | None:
    try:
        read_image(path)
    except FlowError as e:
        return str(e)
    return None


def _map_on_every_core(fn, items: list) -> list:
    """[fn(x) for x in items] in one forked process per core (WIDER's 16,106 images take ~100 s on one)."""
    import multiprocessing
    import os

    n = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
            max(1, len(items) // 64))  # a small set is not worth the processes
    if n <= 1:
        return [fn(x) for x in items]
    with multiprocessing.get_context("fork").Pool(n) as pool:
        return pool.map(fn, items, chunksize=32)


def decodable(samples: list[Sample], skip_bad: bool = False) -> list[Sample]:
    """Decode every image once, on every core (a truncated or corrupt file is found now, not mid-training); with
    skip_bad, the undecodable are dropped with one warning that counts them."""
    good, bad = [], []
    for s, err in zip(samples, _map_on_every_core(_decode_error, [s.path for s in samples]), strict=True):
        if err is None:
            good.append(s)
        elif not skip_bad:
            raise FlowError(f"{err} (or pass --skip-bad, make: SKIP_BAD=1, to skip such images with a count)")
        else:
            bad.append(err)
    if bad:
        warnings.warn(f"skipped {len(bad)} undecodable image{'s' * (len(bad) != 1)} (first: {bad[0]})", stacklevel=2)
    if not good:
        raise FlowError(f"no decodable image among {len(samples)}")
    return good


def split_paths(root: Path, split: str) -> tuple[Path, Path]:
    root = Path(root)
    txt = root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
    images = root / f"WIDER_{split}" / "images"
    if not txt.is_file():
        raise FlowError(f"{root}: no {txt.relative_to(root)}; DATA must point at a WIDER FACE root "
                        "(wider_face_split/ and WIDER_train|val/images/)")
    return txt, images


def load_split(root: Path, split: str, skip_bad: bool = False, min_size: float = 0.0) -> list[Sample]:
    """One split's samples; an empty split or one without a valid face is an error naming its annotation file."""
    txt, images = split_paths(root, split)
    return require_faces(read_wider_annotations(txt, images, skip_bad=skip_bad, min_size=min_size), txt)


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - PIL raises several types for broken files
        raise FlowError(f"{path}: cannot decode image ({type(e).__name__}: {e}); remove or replace it") from e


# ------------------------------------------------------------------------------------------------ built-in set
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
WIDER_TRAIN_IMAGES, WIDER_VAL_IMAGES = 12_880, 3_226


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

    from tqdm import tqdm

    global _SOURCES
    _SOURCES = sources
    with multiprocessing.get_context("fork").Pool() as pool:
        for split, n in (("train", n_train), ("val", n_val)):
            jobs = [(str(root), seed, split, k) for k in range(n)]
            lines = []
            for rel, boxes in tqdm(pool.imap(_wider_sized_image, jobs, chunksize=8), total=n, leave=False,
                                   desc=f"WIDER-sized {split}"):
                lines += [rel, str(len(boxes))]
                lines += [f"{x:.0f} {y:.0f} {w:.0f} {h:.0f} 0 0 0 0 0 0 " for x, y, w, h in boxes] or ["0 0 0 0 0 0 0 0 0 0 "]
            (root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").write_text("\n".join(lines) + "\n")


def builtin_dataset() -> Path:
    return synth_dataset(BUILTIN)


def resolve_data(data: Path | None) -> Path:
    """DATA= or the built-in set (generated on first use)."""
    return Path(data) if data else builtin_dataset()


def val_images(img: int, n: int, data: Path | None = None, resample: str = "bilinear") -> np.ndarray:
    """n letterboxed val images (uint8 NHWC) with faces: real inputs for the cross-check."""
    from board.preprocess import letterbox

    samples = [s for s in load_split(resolve_data(data), "val") if len(s.boxes)]
    return np.stack([letterbox(read_image(s.path), img, resample=resample)[0] for s in samples[:n]])


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow data", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="generate the built-in dataset (WIDER layout)")
    s.add_argument("--out", type=Path, default=None, help="default data/builtin, data/wider-sized with --wider-sized")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--n-train", type=int, default=None, help=f"default 800, {WIDER_TRAIN_IMAGES} --wider-sized")
    s.add_argument("--n-val", type=int, default=None, help=f"default 200, {WIDER_VAL_IMAGES} --wider-sized")
    s.add_argument("--wider-sized", action="store_true",
                   help="pictures 1024 px wide with 12 faces on average, as WIDER FACE's (to measure the loader)")
    s.add_argument("--force", action="store_true")
    c = sub.add_parser("check", help="read a dataset's annotations and report what the reader sees")
    c.add_argument("--data", type=Path, default=None)
    c.add_argument("--skip-bad", action="store_true")
    a = p.parse_args(argv)
    if a.cmd == "synth":
        wide = a.wider_sized
        n_train = a.n_train if a.n_train is not None else WIDER_TRAIN_IMAGES if wide else 800
        n_val = a.n_val if a.n_val is not None else WIDER_VAL_IMAGES if wide else 200
        out = a.out or (REPO / "data" / "wider-sized" if wide else BUILTIN)
        root = synth_dataset(out, a.seed, n_train, n_val, wider_sized=wide)
        print(f"{'WIDER-sized' if wide else 'built-in'} dataset at {root}")
        a.data = root
        a.skip_bad = False
    for split in ("train", "val"):
        samples = decodable(load_split(resolve_data(a.data), split, skip_bad=a.skip_bad), skip_bad=a.skip_bad)
        faces = sum(len(x.boxes) for x in samples)
        ignored = sum(len(x.ignore) for x in samples)
        sizes = np.concatenate([x.boxes[:, 2] for x in samples if len(x.boxes)]) if faces else np.zeros(1)
        print(f"{split}: {len(samples)} images, {faces} faces ({ignored} ignored), median face width "
              f"{np.median(sizes):.0f} px, {np.mean(sizes < 32):.0%} under 32 px")
    return 0
