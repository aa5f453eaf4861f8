"""WIDER FACE's official layout and its reader (with the format's quirks); the built-in set uses the same layout.

Layout:
    ROOT/wider_face_split/wider_face_{train,val}_bbx_gt.txt
    ROOT/WIDER_{train,val}/images/<event>/<name>.jpg
Annotation file: image path, face count, then per face `x1 y1 w h blur expression illumination invalid occlusion
pose`. An image with 0 faces is still followed by one line of zeros. Boxes with zero width/height and
`invalid=1` exist; lines may carry trailing spaces.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flow.errors import FlowError

WIDER_TRAIN_IMAGES, WIDER_VAL_IMAGES = 12_880, 3_226  # the official train and val splits


class AnnotationError(FlowError):
    pass


@dataclass
class Sample:
    path: Path
    boxes: np.ndarray  # (N, 4) x1, y1, w, h in pixels, valid faces only
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # invalid / too small
    attrs: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.int32))


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
