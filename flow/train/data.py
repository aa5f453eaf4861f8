"""Datasets: DATA= (a WIDER FACE root, read by `wider.py`) or the built-in set (`builtin.py`), and `python -m flow
data` to make and inspect them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from flow.train import builtin, wider  # as modules: a name looked up when used (what a test patches is what runs)


def resolve_data(data: Path | None) -> Path:
    """DATA= or the built-in set (generated on first use)."""
    return Path(data) if data else builtin.builtin_dataset()


def val_pictures(n: int, data: Path | None = None) -> list[np.ndarray]:
    """The first n val pictures with faces, decoded (h, w, 3 uint8 each)."""
    samples = [s for s in wider.load_split(resolve_data(data), "val") if len(s.boxes)]
    return [wider.read_image(s.path) for s in samples[:n]]


def val_images(img: int, n: int, data: Path | None = None, *, resample: str) -> np.ndarray:
    """n letterboxed val images (uint8 NHWC) with faces: real inputs for the cross-check."""
    from board.preprocess import letterbox

    return np.stack([letterbox(p, img, resample=resample)[0] for p in val_pictures(n, data)])


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow data", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="generate the built-in dataset (WIDER layout)")
    s.add_argument("--out", type=Path, default=None, help="default data/builtin, data/wider-sized with --wider-sized")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--n-train", type=int, default=None, help=f"default 800, {wider.WIDER_TRAIN_IMAGES} --wider-sized")
    s.add_argument("--n-val", type=int, default=None, help=f"default 200, {wider.WIDER_VAL_IMAGES} --wider-sized")
    s.add_argument("--wider-sized", action="store_true",
                   help="pictures 1024 px wide with 12 faces on average, as WIDER FACE's (to measure the loader)")
    s.add_argument("--force", action="store_true")
    c = sub.add_parser("check", help="read a dataset's annotations and report what the reader sees")
    c.add_argument("--data", type=Path, default=None)
    c.add_argument("--skip-bad", action="store_true")
    a = p.parse_args(argv)
    if a.cmd == "synth":
        wide = a.wider_sized
        n_train = a.n_train if a.n_train is not None else wider.WIDER_TRAIN_IMAGES if wide else 800
        n_val = a.n_val if a.n_val is not None else wider.WIDER_VAL_IMAGES if wide else 200
        out = a.out or (builtin.REPO / "data" / "wider-sized" if wide else builtin.BUILTIN)
        root = builtin.synth_dataset(out, a.seed, n_train, n_val, wider_sized=wide)
        print(f"{'WIDER-sized' if wide else 'built-in'} dataset at {root}")
        a.data = root
        a.skip_bad = False
    for split in ("train", "val"):
        samples = wider.decodable(wider.load_split(resolve_data(a.data), split, skip_bad=a.skip_bad), skip_bad=a.skip_bad)
        faces = sum(len(x.boxes) for x in samples)
        ignored = sum(len(x.ignore) for x in samples)
        sizes = np.concatenate([x.boxes[:, 2] for x in samples if len(x.boxes)]) if faces else np.zeros(1)
        print(f"{split}: {len(samples)} images, {faces} faces ({ignored} ignored), median face width "
              f"{np.median(sizes):.0f} px, {np.mean(sizes < 32):.0%} under 32 px")
    return 0
