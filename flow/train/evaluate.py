"""Evaluation: WIDER FACE protocol AP (easy/medium/hard with the official .mat keep-lists, or an all-faces setting)
and COCO AP50 through faster-coco-eval. Decode + NMS are board/postprocess.py's, the same code the board runs.

The WIDER protocol, implemented from eval_tools/wider_eval.m (FACTS.md): scores min-max normalised over all
predictions; IoU >= 0.5; a prediction matching a face outside the keep-list (or an invalid face) is ignored, not a
false positive; precision/recall at 1000 score thresholds; VOC-style AP of that curve.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from board.postprocess import box_iou, detect
from flow.errors import FlowError

IOU_THRESH = 0.5
EVAL_CONF, EVAL_IOU = 0.001, 0.45  # YOLO's evaluation thresholds: keep low-score boxes for the PR curve


# ------------------------------------------------------------------------------------------- pure AP functions
def match_image(dets: np.ndarray, gts: np.ndarray, ignore: np.ndarray | None = None, iou: float = IOU_THRESH):
    """dets (N, 5) xyxy+score, gts (M, 4) and ignore (K, 4) xyxy -> per-detection flag: 1 true positive,
    0 false positive, -1 ignored (its best match is an ignored face). Greedy by descending score; a face is
    matched once; a later detection on an already-matched face is a false positive."""
    flags = np.zeros(len(dets), np.int8)
    if not len(dets):
        return flags
    order = np.argsort(-dets[:, 4], kind="stable")
    allg = np.concatenate([gts.reshape(-1, 4), (ignore if ignore is not None else np.zeros((0, 4))).reshape(-1, 4)])
    if not len(allg):
        return flags
    ious = box_iou(dets[:, :4], allg)
    used = np.zeros(len(gts), bool)
    for i in order:
        if len(gts):
            cand = np.where(used, -1.0, ious[i, : len(gts)])
            j = int(cand.argmax())
            if cand[j] >= iou:
                flags[i], used[j] = 1, True
                continue
        if len(allg) > len(gts) and ious[i, len(gts) :].max() >= iou:
            flags[i] = -1
    return flags


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope (VOC 2010+, as wider_eval.m's VOCevaldet)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    idx = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[idx + 1] - r[idx]) * p[idx + 1]))


def wider_pr(scores: np.ndarray, flags: np.ndarray, n_faces: int, thresholds: int = 1000):
    """Precision/recall at `thresholds` levels of min-max normalised score (ignored detections excluded)."""
    if n_faces == 0:
        raise FlowError("no faces to evaluate against")
    if len(scores) == 0:
        return np.zeros(thresholds), np.zeros(thresholds)
    s = (scores - scores.min()) / max(scores.max() - scores.min(), 1e-12)
    keep = flags >= 0
    s, tp = s[keep], flags[keep] == 1
    ts = 1 - (np.arange(thresholds) + 1) / thresholds  # 0.999 .. 0.0, as the official tool steps down
    above = s[None, :] >= ts[:, None]
    n_pred = above.sum(1)
    n_tp = (above & tp[None, :]).sum(1)
    precision = np.where(n_pred > 0, n_tp / np.maximum(n_pred, 1), 1.0)
    return precision, n_tp / n_faces


def wider_ap(per_image: list[tuple[np.ndarray, np.ndarray, np.ndarray]], iou: float = IOU_THRESH) -> dict:
    """per_image: (dets (N,5) xyxy+score, faces (M,4) xyxy, ignored (K,4) xyxy) -> AP and its curve."""
    scores, flags, n_faces = [], [], 0
    for dets, gts, ign in per_image:
        scores.append(dets[:, 4] if len(dets) else np.zeros(0))
        flags.append(match_image(dets, gts, ign, iou))
        n_faces += len(gts)
    precision, recall = wider_pr(np.concatenate(scores), np.concatenate(flags), n_faces)
    return {"ap": voc_ap(recall, precision), "faces": n_faces, "precision": precision, "recall": recall}


def coco_ap50(per_image: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """COCO-style AP at IoU 0.5 through faster-coco-eval (ignored faces as iscrowd regions)."""
    from faster_coco_eval import COCO, COCOeval_faster

    images, anns, dets = [], [], []
    for i, (d, gts, ign) in enumerate(per_image):
        images.append({"id": i, "width": 10_000, "height": 10_000})
        for box, crowd in [(b, 0) for b in gts] + [(b, 1) for b in ign]:
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "iscrowd": crowd})
        for x1, y1, x2, y2, s in d[:, :5]:
            dets.append({"image_id": i, "category_id": 1, "bbox": [float(x1), float(y1), float(x2 - x1),
                                                                  float(y2 - y1)], "score": float(s)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "face"}]}
    gt.createIndex()
    if not dets:
        return 0.0
    ev = COCOeval_faster(gt, gt.loadRes(dets), "bbox", print_function=lambda *a, **k: None)
    ev.params.maxDets = [1, 100, 1000]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[1])


# ----------------------------------------------------------------------------------------------- keep-lists
def load_wider_keep_lists(mat_dir: Path) -> dict[str, dict[str, set[int]]]:
    """Official wider_{easy,medium,hard}_val.mat -> {setting: {image name without .jpg: 0-based face indices}}."""
    from scipy.io import loadmat

    mat_dir = Path(mat_dir)
    out = {}
    for setting in ("easy", "medium", "hard"):
        path = mat_dir / f"wider_{setting}_val.mat"
        if not path.is_file():
            raise FlowError(f"{path}: missing; --mat-dir needs wider_easy/medium/hard_val.mat from WIDER's eval_tools")
        m = loadmat(str(path))
        keep: dict[str, set[int]] = {}
        for ev_files, ev_keep in zip(m["file_list"].ravel(), m["gt_list"].ravel(), strict=True):
            for f, k in zip(np.asarray(ev_files).ravel(), np.asarray(ev_keep).ravel(), strict=True):
                keep[_mat_leaf(f).item()] = {int(v) - 1 for v in _mat_leaf(k).ravel()}
        out[setting] = keep
    return out


def _mat_leaf(x) -> np.ndarray:
    """MATLAB cells load as nested object arrays; unwrap to the innermost (string or numeric) array."""
    x = np.asarray(x)
    while x.dtype == object:
        x = np.asarray(x.ravel()[0])
    return x


# ------------------------------------------------------------------------------------------------ prediction
def predict_codes(model, images_nchw, scale: float, batch: int = 16):
    """A Brevitas/torch model -> integer output codes, exactly as the exported graph would produce them."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(images_nchw), batch):
            y = model(torch.from_numpy(images_nchw[i : i + batch]))
            outs.append(np.round(y.numpy().astype(np.float64) / scale).astype(np.int32))
    return np.concatenate(outs)


def evaluate_model(model, spec, data: Path | None, split: str = "val", limit: int | None = None,
                   mat_dir: Path | None = None, predictions_dir: Path | None = None, skip_bad: bool = False) -> dict:
    """Letterbox each val image, run the model, decode with the board's code, evaluate in original pixels.
    skip_bad: drop malformed entries and undecodable images (with a count), as `train --skip-bad` does."""
    from board.preprocess import letterbox, unletterbox_boxes
    from flow.samples import to_nchw_float
    from flow.train.data import decodable, load_split, read_image, resolve_data
    from models.lpyolo import STRIDE

    samples = load_split(resolve_data(data), split, skip_bad=skip_bad)[:limit]
    if skip_bad:
        samples = decodable(samples, skip_bad=True)
    if not samples:
        raise FlowError(f"{data}: the {split} split has no images")
    scale = model.output_scale()
    per_image, names = [], []
    for start in range(0, len(samples), 16):
        chunk = samples[start : start + 16]
        imgs = [read_image(s.path) for s in chunk]
        boxed = [letterbox(im, spec.img) for im in imgs]
        codes = predict_codes(model, to_nchw_float(np.stack([b[0] for b in boxed])), scale)
        for s, im, (_, ratio, pad), c in zip(chunk, imgs, boxed, codes, strict=True):
            d = detect(c.transpose(1, 2, 0), scale, spec.anchors, STRIDE, spec.num_classes, EVAL_CONF, EVAL_IOU)
            d[:, :4] = unletterbox_boxes(d[:, :4], ratio, pad, im.shape[:2])
            per_image.append((d[:, :5], xywh_xyxy(s.boxes), xywh_xyxy(s.ignore)))
            names.append(s.path)
    result = {"images": len(samples), "faces": int(sum(len(p[1]) for p in per_image))}
    allfaces = wider_ap(per_image)
    result["wider_ap_all"] = round(allfaces["ap"], 4)
    result["coco_ap50"] = round(coco_ap50(per_image), 4)
    result["ap50"] = result["wider_ap_all"]
    result["_curve"] = (allfaces["precision"], allfaces["recall"])
    if mat_dir:
        keep = load_wider_keep_lists(mat_dir)
        for setting, lists in keep.items():
            sub = []
            for (d, gts, ign), s in zip(per_image, samples, strict=True):
                k = lists.get(s.path.stem)
                if k is None:
                    continue
                idx = np.isin(np.arange(len(gts)), sorted(k))
                sub.append((d, gts[idx], np.concatenate([ign, gts[~idx]])))
            result[f"wider_ap_{setting}"] = round(wider_ap(sub)["ap"], 4)
    if predictions_dir:
        write_wider_predictions(predictions_dir, names, [p[0] for p in per_image])
    return result


def xywh_xyxy(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)


def write_wider_predictions(out: Path, paths: list[Path], dets: list[np.ndarray]) -> None:
    """One txt per image under <event>/, the official tool's input format."""
    from board.pipeline import wider_prediction_text

    for p, d in zip(paths, dets, strict=True):
        f = Path(out) / p.parent.name / (p.stem + ".txt")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(wider_prediction_text(p.stem, np.concatenate([d, np.zeros((len(d), 1), np.float32)], 1)))


def plot_pr(curve, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precision, recall = curve
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(recall, precision)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def finish_report(result: dict, out_dir: Path, title: str) -> dict:
    from flow.files import atomic_write_json

    curve = result.pop("_curve")
    plot_pr(curve, out_dir / "pr_curve.png", title)
    atomic_write_json(out_dir / "eval.json", result)
    return result


def cli(argv: list[str]) -> int:
    from flow.export import load_checkpoint

    p = argparse.ArgumentParser(prog="python -m flow eval", description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="run directory with best.pt (or model.pt)")
    p.add_argument("--data", type=Path, help="WIDER FACE root (default: the built-in set)")
    p.add_argument("--split", default="val")
    p.add_argument("--mat-dir", type=Path, help="folder with wider_{easy,medium,hard}_val.mat")
    p.add_argument("--limit", type=int)
    p.add_argument("--skip-bad", action="store_true", help="skip malformed entries and undecodable images (counted)")
    a = p.parse_args(argv)
    ckpt = next((a.run / f for f in ("best.pt", "model.pt") if (a.run / f).exists()), None)
    if ckpt is None:
        raise FlowError(f"{a.run}: no best.pt or model.pt to evaluate")
    model, spec = load_checkpoint(ckpt)
    r = evaluate_model(model, spec, a.data, a.split, a.limit, a.mat_dir, a.run / "wider_predictions", a.skip_bad)
    r = finish_report(r, a.run, f"{spec.name} on {a.data or 'built-in'} {a.split}")
    print(json.dumps(r, indent=2))
    print(f"written {a.run / 'eval.json'}, {a.run / 'pr_curve.png'}, {a.run / 'wider_predictions'}/")
    return 0
