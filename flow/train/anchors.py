"""k-means anchors (IoU distance, as YOLO does) from a dataset's training boxes at the model's input size."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    return inter / (wh[:, None].prod(2) + anchors[None].prod(2) - inter)


def kmeans_anchors(wh: np.ndarray, k: int = 3, iters: int = 100, seed: int = 0) -> np.ndarray:
    """Cluster (N, 2) box sizes with 1 - IoU as the distance; returns k anchors sorted by area."""
    wh = np.asarray(wh, np.float64)
    wh = wh[(wh > 1).all(1)]
    if len(wh) < k:
        raise ValueError(f"need at least {k} boxes for {k} anchors, got {len(wh)}")
    rng = np.random.default_rng(seed)
    centres = wh[rng.choice(len(wh), k, replace=False)]
    for _ in range(iters):
        assign = wh_iou(wh, centres).argmax(1)
        new = np.array([np.median(wh[assign == j], 0) if (assign == j).any() else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return centres[np.argsort(centres.prod(1))]


def dataset_wh(data: Path | None, img: int) -> np.ndarray:
    """Training face sizes after letterboxing to img."""
    from flow.train.data import load_split, read_image, resolve_data

    out = []
    for s in load_split(resolve_data(data), "train"):
        if len(s.boxes):
            h, w = read_image(s.path).shape[:2]
            out.append(s.boxes[:, 2:] * min(img / h, img / w))
    return np.concatenate(out)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow anchors", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path)
    p.add_argument("--img", type=int, default=416)
    p.add_argument("-k", type=int, default=3)
    p.add_argument("--out", type=Path, help="write the anchors as JSON here")
    a = p.parse_args(argv)
    wh = dataset_wh(a.data, a.img)
    anchors = kmeans_anchors(wh, a.k)
    fit = wh_iou(wh, anchors).max(1)
    print(f"anchors at {a.img}: {np.round(anchors, 1).tolist()}  (mean best IoU {fit.mean():.3f} over {len(wh)} faces)")
    if a.out:
        a.out.write_text(json.dumps({"img": a.img, "anchors": np.round(anchors, 2).tolist()}))
    return 0
