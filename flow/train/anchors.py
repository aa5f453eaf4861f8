"""k-means anchors (IoU distance, as YOLO does) from a dataset's training boxes at the model's input size."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from flow.errors import FlowError


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    return inter / (wh[:, None].prod(2) + anchors[None].prod(2) - inter)


def kmeans_anchors(wh: np.ndarray, k: int = 3, iters: int = 100, seed: int = 0) -> np.ndarray:
    """Cluster (N, 2) box sizes with 1 - IoU as the distance; returns k anchors sorted by area."""
    wh = np.asarray(wh, np.float64)
    wh = wh[(wh > 1).all(1)]
    if len(wh) < k:
        raise FlowError(f"need at least {k} face boxes larger than 1 px for {k} anchors, got {len(wh)}")
    rng = np.random.default_rng(seed)
    centres = wh[rng.choice(len(wh), k, replace=False)]
    for _ in range(iters):
        assign = wh_iou(wh, centres).argmax(1)
        new = np.array([np.median(wh[assign == j], 0) if (assign == j).any() else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return centres[np.argsort(centres.prod(1))]


def dataset_wh(data: Path | None, img: int, skip_bad: bool = False) -> np.ndarray:
    """Training face sizes after letterboxing to img."""
    from PIL import Image

    from flow.train.data import resolve_data
    from flow.train.wider import load_split, split_paths

    out = []
    root = resolve_data(data)
    for s in load_split(root, "train", skip_bad=skip_bad):
        if len(s.boxes):
            with Image.open(s.path) as im:  # the header's size: decoding is checked elsewhere (`decodable`)
                w, h = im.size
            out.append(s.boxes[:, 2:] * min(img / h, img / w))
    wh = np.concatenate(out)
    if ((wh > 1).all(1)).sum() < 3:
        raise FlowError(f"{split_paths(root, 'train')[0]}: {len(wh)} face box(es), fewer than 3 larger than 1 px "
                        "at this input size: too few for the 3 k-means anchors")
    return wh


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow anchors", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path)
    p.add_argument("--img", type=int, default=416)
    p.add_argument("-k", type=int, default=3)
    p.add_argument("--out", type=Path, help="write the anchors as JSON here")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed annotation entries (with a count)")
    a = p.parse_args(argv)
    wh = dataset_wh(a.data, a.img, a.skip_bad)
    anchors = kmeans_anchors(wh, a.k)
    fit = wh_iou(wh, anchors).max(1)
    print(f"anchors at {a.img}: {np.round(anchors, 1).tolist()}  (mean best IoU {fit.mean():.3f} over {len(wh)} faces)")
    if a.out:
        a.out.write_text(json.dumps({"img": a.img, "anchors": np.round(anchors, 2).tolist()}))
    return 0
