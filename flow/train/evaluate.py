"""Evaluation: WIDER FACE AP as the official eval_tools compute it, for our models or any detector's txts.

Easy/medium/hard from the official .mat files; without them, the same protocol over all valid faces of annotation
txts (the built-in set: all_faces_ap, not an official setting) and COCO AP50 through faster-coco-eval. Decode + NMS
are board/postprocess.py's, the same code the board runs.

The official protocol, written from WIDER FACE's eval_tools (wider_eval.m, read_pred.m, norm_score.m,
evaluation.m, boxoverlap.m, VOCap.m), rule by rule:
- Ground truth: image list and boxes from wider_face_val.mat (`event_list`, `file_list`, `face_bbx_list`: every
  face, invalid and zero-size ones included); a setting file (wider_{easy,medium,hard}_val.mat) contributes only
  `gt_list`, 1-based indices into that image's `face_bbx_list` of the faces the setting keeps.
- Predictions: PRED/<event>/<name>.txt, `name`, `N`, then `x y w h score` lines. A missing file is an image with no
  predictions; each image's boxes are sorted by descending score (read_pred.m).
- Scores are min-max normalised over every prediction of every image, in single precision (norm_score.m).
- Overlap: boxes become x2 = x + w, y2 = y + h and the IoU counts pixels inclusively (width = x2 - x1 + 1).
- Per image, detections in score order each take the face of highest overlap among all faces; at IoU >= 0.5 a
  face outside the setting makes the detection ignored (neither true nor false positive), a kept face not yet
  found is recalled, a kept face already found leaves the detection a false positive. Below 0.5: false positive.
- Images with no face at all, or no prediction, are skipped; their kept faces still count in the recall's
  denominator.
- At thresholds 1 - t/1000 (t = 1..1000) precision = recalled / non-ignored detections scoring >= threshold,
  recall = recalled / kept faces; AP is VOC's area under the precision envelope with the points (0, 0) and (1, 0)
  appended.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flow.errors import FlowError

IOU_THRESH = 0.5
THRESHOLDS = 1000  # evaluation.m's thresh_num
EVAL_CONF, EVAL_IOU = 0.001, 0.45  # YOLO's evaluation thresholds: keep low-score boxes for the PR curve
SETTINGS = ("easy", "medium", "hard")
TOOL = "lpyolo-flow eval"  # names the tool in eval.json and pr_curves.png (their provenance records make them ours)
REPORT_FILES = ("eval.json", "pr_curves.png")


# ------------------------------------------------------------------------------------------- pure AP functions
def official_overlaps(dets_xywh: np.ndarray, faces_xywh: np.ndarray) -> np.ndarray:
    """(N, 4) detections and (M, 4) faces, both `x y w h` -> (N, M) IoU as evaluation.m computes it: x2 = x + w,
    then boxoverlap.m's inclusive pixel count (width x2 - x1 + 1); no overlap where the intersection is empty."""
    d = np.asarray(dets_xywh, np.float64).reshape(-1, 4)
    g = np.asarray(faces_xywh, np.float64).reshape(-1, 4)
    dx1, dy1, dx2, dy2 = d[:, 0:1], d[:, 1:2], d[:, 0:1] + d[:, 2:3], d[:, 1:2] + d[:, 3:4]
    gx1, gy1, gx2, gy2 = g[:, 0], g[:, 1], g[:, 0] + g[:, 2], g[:, 1] + g[:, 3]
    iw = np.minimum(dx2, gx2) - np.maximum(dx1, gx1) + 1
    ih = np.minimum(dy2, gy2) - np.maximum(dy1, gy1) + 1
    inter = iw * ih
    union = (dx2 - dx1 + 1) * (dy2 - dy1 + 1) + (gx2 - gx1 + 1) * (gy2 - gy1 + 1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        o = inter / union
    o[(iw <= 0) | (ih <= 0)] = 0.0
    return o


def match_image(dets_xywh: np.ndarray, faces_xywh: np.ndarray, kept: np.ndarray, iou: float = IOU_THRESH):
    """Detections in descending score order against every face of the image -> per detection 1 (recalls a kept
    face for the first time), 0 (a proposal that recalls nothing: a false positive), -1 (ignored: its best face is
    outside the setting). Each detection looks only at its single best face (evaluation.m's image_evaluation), so a
    duplicate on a found face is a false positive even when another kept face overlaps it enough."""
    flags = np.zeros(len(dets_xywh), np.int8)
    if not len(dets_xywh) or not len(faces_xywh):
        return flags
    ov = official_overlaps(dets_xywh, faces_xywh)
    best = ov.argmax(1)  # the first face of highest overlap, as MATLAB's max
    hit = ov[np.arange(len(best)), best] >= iou
    kept = np.asarray(kept, bool)
    flags[hit & ~kept[best]] = -1
    on_kept = np.nonzero(hit & kept[best])[0]
    _, first = np.unique(best[on_kept], return_index=True)  # the first detection on each kept face recalls it
    flags[on_kept[first]] = 1
    return flags


def rank_by_score(dets: np.ndarray) -> np.ndarray:
    """read_pred.m's sort(score, 'descend'): MATLAB's sort is stable, so equal scores keep their file order."""
    dets = np.asarray(dets, np.float64).reshape(-1, 5)
    return dets[np.argsort(-dets[:, 4], kind="stable")]


def normalised_scores(per_image: list[np.ndarray]) -> list[np.ndarray]:
    """norm_score.m: (s - min) / (max - min) over all images. Its running max and min start as
    realmin('single') and realmax('single'), which makes them, and so every normalised score, single precision
    (MATLAB's single-with-double arithmetic is single); the values are then stored back into double arrays. A
    score that normalises to 0.3 is therefore 0.30000001 and passes the threshold 1 - 700/1000 = 0.30000000000000004,
    which a double-precision normalisation would not. All scores equal: 0/0, every score NaN, nothing passes any
    threshold (what the official tool does)."""
    present = [np.asarray(s, np.float64) for s in per_image if len(s)]
    if not present:
        return [np.zeros(0) for _ in per_image]
    hi = np.float32(max(np.finfo(np.float32).tiny, max(float(s.max()) for s in present)))
    lo = np.float32(min(float(np.finfo(np.float32).max), min(float(s.min()) for s in present)))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return [((np.asarray(s, np.float64).astype(np.float32) - lo) / (hi - lo)).astype(np.float64)
                for s in per_image]


def score_thresholds(n: int = THRESHOLDS) -> np.ndarray:
    """1 - t/n for t = 1..n, the same double arithmetic as evaluation.m's `thresh = 1-t/thresh_num`."""
    return 1 - np.arange(1, n + 1) / n


def pr_curve(scores: np.ndarray, flags: np.ndarray, n_faces: int, thresholds: int = THRESHOLDS):
    """Dataset precision and recall at each threshold (image_pr_info + dataset_pr_info summed over images: counts
    add up, so one pass over all detections gives the same sums). Precision is NaN where no non-ignored detection
    passes the threshold (MATLAB's 0/0)."""
    if n_faces <= 0:
        raise FlowError("no faces to evaluate against in this setting")
    ts = score_thresholds(thresholds)
    scores, flags = np.asarray(scores, np.float64), np.asarray(flags)

    def passing(s: np.ndarray) -> np.ndarray:  # how many of s are >= each threshold (NaN never is)
        s = np.sort(s[~np.isnan(s)])
        return len(s) - np.searchsorted(s, ts, side="left")

    proposals = passing(scores[flags >= 0])
    recalled = passing(scores[flags == 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = recalled / proposals
    return precision, recalled / n_faces


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOCap.m: append (0, 0) and (1, 0), take the precision envelope from the right, sum it over the points where
    recall changes. MATLAB's max ignores NaN (precision 0/0 at thresholds nothing passes), hence fmax."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.fmax.accumulate(p[::-1])[::-1]
    i = np.nonzero(r[1:] != r[:-1])[0] + 1
    return float(np.sum((r[i] - r[i - 1]) * p[i]))


@dataclass
class GroundTruth:
    """Images in evaluation order with every face (`x y w h`), and per setting the 0-based indices of the faces it
    keeps in each image."""

    names: list[str]  # "<event>/<image name without .jpg>", the prediction file's path without .txt
    faces: list[np.ndarray]  # (M, 4) per image
    keep: dict[str, list[np.ndarray]]  # setting -> per image kept face indices
    source: str = ""

    def subset(self, names) -> GroundTruth:
        wanted = set(names)
        idx = [i for i, n in enumerate(self.names) if n in wanted]
        return GroundTruth([self.names[i] for i in idx], [self.faces[i] for i in idx],
                           {s: [k[i] for i in idx] for s, k in self.keep.items()}, self.source)


def wider_evaluate(gt: GroundTruth, predictions: list[np.ndarray | None], iou: float = IOU_THRESH,
                   thresholds: int = THRESHOLDS) -> dict[str, dict]:
    """predictions[i]: image i's raw `x y w h score` rows (None or empty: no predictions) -> per setting AP, kept
    faces, and the precision/recall curve, by the official protocol (module docstring)."""
    if len(predictions) != len(gt.names):
        raise ValueError(f"{len(predictions)} prediction arrays for {len(gt.names)} images")
    ranked = [rank_by_score(p) if p is not None and len(p) else np.zeros((0, 5)) for p in predictions]
    scores = normalised_scores([r[:, 4] for r in ranked])
    out = {}
    for setting, keeps in gt.keep.items():
        all_scores, all_flags, n_faces = [], [], 0
        for faces, keep, dets, s in zip(gt.faces, keeps, ranked, scores, strict=True):
            n_faces += len(keep)
            if not len(faces) or not len(dets):  # evaluation.m: `if isempty(gt_bbx) || isempty(pred_info)`
                continue
            kept = np.zeros(len(faces), bool)
            kept[np.asarray(keep, np.int64)] = True
            all_flags.append(match_image(dets[:, :4], faces, kept, iou))
            all_scores.append(s)
        if n_faces == 0:
            raise FlowError(f"{gt.source or 'ground truth'}: setting {setting!r} keeps no faces in the "
                            f"{len(gt.names)} images evaluated")
        precision, recall = pr_curve(np.concatenate(all_scores or [np.zeros(0)]),
                                     np.concatenate(all_flags or [np.zeros(0, np.int8)]), n_faces, thresholds)
        out[setting] = {"ap": voc_ap(recall, precision), "faces": n_faces, "precision": precision, "recall": recall}
    return out


def coco_ap50(per_image: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """COCO-style AP at IoU 0.5 through faster-coco-eval; per image (dets (N,5) xyxy+score, faces (M,4) xyxy,
    ignored (K,4) xyxy as iscrowd regions)."""
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


# -------------------------------------------------------------------------------------------- ground truth
def _mat_cells(value, where: str) -> list:
    """A MATLAB cell array (scipy: an object array) -> its elements in MATLAB (column-major) order."""
    a = np.asarray(value)
    if a.dtype != object:
        raise FlowError(f"{where} is not a cell array (dtype {a.dtype}); not a WIDER FACE ground-truth file")
    return list(a.ravel(order="F"))


def _mat_unwrap(x) -> np.ndarray:
    """A cell holding one value loads as a 1-element object array around it; unwrap to the value."""
    x = np.asarray(x)
    while x.dtype == object and x.size == 1:
        x = np.asarray(x.ravel()[0])
    return x


def _mat_text(x, where: str) -> str:
    x = _mat_unwrap(x)
    if x.dtype.kind != "U" or x.size != 1:
        raise FlowError(f"{where} is not a string")
    return str(x.ravel()[0])


def _mat_boxes(x, where: str) -> np.ndarray:
    b = _mat_unwrap(x).astype(np.float64)
    if not b.size:
        return np.zeros((0, 4))
    if b.ndim != 2 or b.shape[1] < 4:
        raise FlowError(f"{where} has shape {b.shape}, not (faces, 4)")
    return b[:, :4]


def _load_mat(path: Path, keys: tuple[str, ...], role: str) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise FlowError(f"{path}: missing; --mat-dir needs wider_face_val.mat and wider_{{easy,medium,hard}}_val.mat "
                        "(eval_tools/ground_truth in WIDER FACE's eval_tools)")
    try:
        m = loadmat(str(path))
    except Exception as e:  # noqa: BLE001 - scipy raises several types for non-.mat or v7.3 (HDF5) files
        raise FlowError(f"{path}: cannot read as a MATLAB .mat file ({type(e).__name__}: {e})") from e
    present = sorted(k for k in m if not k.startswith("__"))
    for k in keys:
        if k not in m:
            raise FlowError(f"{path}: no {k!r} variable (it has {', '.join(present) or 'none'}); {role} must be "
                            "the WIDER FACE eval_tools file of the val split")
    return m


def load_wider_mat_ground_truth(mat_dir: Path) -> GroundTruth:
    """wider_face_val.mat (images and every face) + the three setting files (their gt_list only, as the official
    evaluation uses them). Checks that every file describes the same images: a file from another split or version
    is refused, naming what disagrees."""
    mat_dir = Path(mat_dir)
    val_path = mat_dir / "wider_face_val.mat"
    m = _load_mat(val_path, ("event_list", "file_list", "face_bbx_list"), "wider_face_val.mat")
    events = [_mat_text(e, f"{val_path}: event_list{{{i + 1}}}") for i, e in enumerate(_mat_cells(m["event_list"],
                                                                                                  f"{val_path}: event_list"))]
    files = _mat_cells(m["file_list"], f"{val_path}: file_list")
    boxes = _mat_cells(m["face_bbx_list"], f"{val_path}: face_bbx_list")
    if not (len(events) == len(files) == len(boxes)):
        raise FlowError(f"{val_path}: event_list, file_list and face_bbx_list have {len(events)}, {len(files)} and "
                        f"{len(boxes)} events")
    names, faces, per_event = [], [], []
    for i, (ev, fl, bl) in enumerate(zip(events, files, boxes, strict=True)):
        fl = _mat_cells(fl, f"{val_path}: file_list{{{i + 1}}}")
        bl = _mat_cells(bl, f"{val_path}: face_bbx_list{{{i + 1}}}")
        if len(fl) != len(bl):
            raise FlowError(f"{val_path}: event {ev} lists {len(fl)} images but {len(bl)} box lists")
        per_event.append(len(fl))
        for j, (f, b) in enumerate(zip(fl, bl, strict=True)):
            names.append(f"{ev}/{_mat_text(f, f'{val_path}: file_list{{{i + 1}}}{{{j + 1}}}')}")
            faces.append(_mat_boxes(b, f"{val_path}: face_bbx_list for {names[-1]}"))
    keep = {}
    for setting in SETTINGS:
        path = mat_dir / f"wider_{setting}_val.mat"
        s = _load_mat(path, ("gt_list",), f"wider_{setting}_val.mat")
        gl = _mat_cells(s["gt_list"], f"{path}: gt_list")
        if len(gl) != len(events):
            raise FlowError(f"{path}: gt_list has {len(gl)} events, {val_path.name} has {len(events)}; the two come "
                            "from different splits or versions")
        # evaluation.m reads images and faces from the setting file itself (`load(gt_dir)`); the official files
        # carry the same copy as wider_face_val.mat, and the Python port reads only gt_list: take wider_face_val.mat's,
        # and refuse a setting file whose own copy differs
        if "face_bbx_list" in s:
            own = [_mat_boxes(b, f"{path}: face_bbx_list") for ev in _mat_cells(s["face_bbx_list"], f"{path}: face_bbx_list")
                   for b in _mat_cells(ev, f"{path}: face_bbx_list")]
            if len(own) != len(faces) or not all(np.array_equal(a, f) for a, f in zip(own, faces, strict=False)):
                raise FlowError(f"{path}: its face_bbx_list differs from {val_path.name}'s (another split or version)")
        if "file_list" in s:
            own = [_mat_text(f, f"{path}: file_list") for ev in _mat_cells(s["file_list"], f"{path}: file_list")
                   for f in _mat_cells(ev, f"{path}: file_list")]
            if own != [n.split("/", 1)[1] for n in names]:
                raise FlowError(f"{path}: its file_list names other images than {val_path.name}'s (another split or "
                                "version)")
        lists, k = [], 0
        for i, (ev, n_img) in enumerate(zip(gl, per_event, strict=True)):
            ev = _mat_cells(ev, f"{path}: gt_list{{{i + 1}}}")
            if len(ev) != n_img:
                raise FlowError(f"{path}: event {events[i]} has {len(ev)} keep lists, {val_path.name} has {n_img} "
                                "images there; the two come from different splits or versions")
            for idx in ev:
                idx = _mat_unwrap(idx).ravel()
                one_based = idx.astype(np.int64)
                if idx.size and (not np.all(one_based == idx) or one_based.min() < 1
                                 or one_based.max() > len(faces[k])):
                    raise FlowError(f"{path}: keep list of {names[k]} ({idx.tolist()}) does not index its "
                                    f"{len(faces[k])} faces in {val_path.name} (1-based)")
                lists.append(one_based - 1)
                k += 1
        keep[setting] = lists
    return GroundTruth(names, faces, keep, f"{mat_dir}/wider_{{face,easy,medium,hard}}_val.mat")


def ground_truth_from_samples(samples) -> GroundTruth:
    """Annotation-txt ground truth (flow.data Samples): one setting, all_faces, keeping every valid face; invalid
    and zero-size faces stay as faces outside it (a detection on them is ignored). Not an official setting."""
    names, faces, keep = [], [], []
    for s in samples:
        names.append(f"{s.path.parent.name}/{s.path.stem}")
        faces.append(np.concatenate([np.asarray(s.boxes, np.float64).reshape(-1, 4),
                                     np.asarray(s.ignore, np.float64).reshape(-1, 4)]))
        keep.append(np.arange(len(s.boxes)))
    return GroundTruth(names, faces, {"all_faces": keep}, "annotation txt")


# --------------------------------------------------------------------------------------------- predictions
_NUMBER_SPLIT = re.compile(r"[\s,]+")  # read_pred.m's str2num accepts spaces or commas between numbers


def parse_prediction_text(text: str, source: str) -> np.ndarray:
    """One WIDER prediction file -> (N, 5) `c1 c2 c3 c4 score` as written (the box format is decided for the whole
    directory). Malformed content raises FlowError naming file and line."""
    lines = text.splitlines()
    fmt = "(WIDER format: the image name, the number of boxes, then one `x y w h score` line per box)"
    if not lines or not lines[0].strip():
        raise FlowError(f"{source}:1: expected the image name {fmt}")
    if len(lines) < 2:
        raise FlowError(f"{source}:2: missing the number of boxes {fmt}")
    try:
        n = int(lines[1].strip())
        if n < 0:
            raise ValueError
    except ValueError:
        raise FlowError(f"{source}:2: expected the number of boxes, got {lines[1].strip()!r} {fmt}") from None
    rows = []
    for k in range(n):
        lineno = k + 3
        if lineno > len(lines):
            raise FlowError(f"{source}:{lineno}: the file ends after {k} of the {n} boxes it announces")
        parts = [p for p in _NUMBER_SPLIT.split(lines[lineno - 1].strip()) if p]
        try:
            vals = [float(p) for p in parts[:5]]
        except ValueError:
            vals = []
        if len(vals) < 5 or not np.all(np.isfinite(vals)):
            raise FlowError(f"{source}:{lineno}: {lines[lineno - 1].strip()!r} is not `x y w h score` (five finite "
                            "numbers)")
        rows.append(vals)
    for lineno in range(n + 3, len(lines) + 1):
        if lines[lineno - 1].strip():
            raise FlowError(f"{source}:{lineno}: a box line after the {n} boxes the file announces on line 2")
    return np.asarray(rows, np.float64).reshape(-1, 5)


@dataclass
class PredictionSet:
    boxes: list[np.ndarray | None]  # per ground-truth image, raw rows; None: no file
    missing: list[str]  # images without a prediction file
    unmatched: int  # prediction files for images not in the ground truth (the official tool never reads them)
    flat: int  # files found as PRED/<name>.txt rather than PRED/<event>/<name>.txt
    unreadable: list[str] = field(default_factory=list)  # `path: why` of empty or unreadable files (no predictions)


def read_prediction_file(path: Path) -> tuple[np.ndarray | None, str]:
    """One prediction file -> (rows, '') or, for a file that is empty or cannot be read, (None, why): read_pred.m
    prints a warning for such a file and scores its image as having no predictions, so we do the same. A file with
    content that is malformed is still refused with its line (a detector's bug, not an empty result)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return None, f"{path}: unreadable ({e.strerror or type(e).__name__})"
    if not text.strip():
        return None, f"{path}: empty ({path.stat().st_size} bytes)"
    return parse_prediction_text(text, str(path)), ""


def read_prediction_dir(pred_dir: Path, names: list[str]) -> PredictionSet:
    """Read PRED/<event>/<name>.txt for every ground-truth image (also PRED/<name>.txt, the board notebook's flat
    layout). A missing, empty or unreadable file counts as an image without predictions, as read_pred.m does."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FlowError(f"{pred_dir}: no such prediction directory")
    found = {p.relative_to(pred_dir).with_suffix("").as_posix(): p for p in pred_dir.rglob("*.txt")}
    if not found:
        raise FlowError(f"{pred_dir}: no .txt prediction files (expected <event>/<image name>.txt)")
    boxes, missing, used, flat, unreadable = [], [], set(), 0, []
    for name in names:
        path = found.get(name)
        if path is None and name.split("/", 1)[-1] in found:
            path, flat = found[name.split("/", 1)[-1]], flat + 1
        if path is None:
            boxes.append(None)
            missing.append(name)
            continue
        used.add(path)
        rows, why = read_prediction_file(path)
        boxes.append(rows)
        if why:
            unreadable.append(why)
    if not used:
        sample = sorted(found)[:3]
        raise FlowError(f"{pred_dir}: none of its {len(found)} prediction files (e.g. {', '.join(sample)}) is for an "
                        f"image of the ground truth ({len(names)} images, e.g. {names[0] if names else '-'}); "
                        "predictions of another split?")
    return PredictionSet(boxes, missing, len(set(found.values()) - used), flat, unreadable)


def as_xywh(rows: np.ndarray, box_format: str) -> np.ndarray:
    rows = np.asarray(rows, np.float64).reshape(-1, 5).copy()
    if box_format == "xyxy":
        rows[:, 2:4] -= rows[:, 0:2]
    return rows


def detect_box_format(predictions: list[np.ndarray | None], gt: GroundTruth, source: str) -> tuple[str, str]:
    """Whether a directory's boxes are `x y w h` (the official format) or `x1 y1 x2 y2` -> (format, why).
    Two witnesses: geometry (a box with x2 < x1 cannot be corners, a negative width cannot be a size) and the faces
    each reading finds at IoU 0.5 (clear when one finds 5 or more and at least twice the other's). Geometry decides
    unless the faces clearly say otherwise; when every box reads both ways the faces decide; otherwise refuse
    rather than guess."""
    rows = [p for p in predictions if p is not None and len(p)]
    if not rows:
        return "xywh", "no boxes to tell from; the official format assumed"
    b = np.concatenate(rows)[:, :4]
    not_corners = int(np.sum((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])))
    not_sizes = int(np.sum((b[:, 2] < 0) | (b[:, 3] < 0)))
    if not_corners and not_sizes:
        raise FlowError(f"{source}: boxes fit neither `x y w h` ({not_sizes} have a negative width or height) nor "
                        f"`x1 y1 x2 y2` ({not_corners} have x2 < x1 or y2 < y1)")
    found = {}
    for fmt in ("xywh", "xyxy"):
        found[fmt] = sum(int(np.sum(official_overlaps(as_xywh(p, fmt)[:, :4], faces).max(0) >= IOU_THRESH))
                         for p, faces in zip(predictions, gt.faces, strict=True)
                         if p is not None and len(p) and len(faces))
    faces_say = next((f for f, o in (("xywh", "xyxy"), ("xyxy", "xywh")) if found[f] >= 5 and found[f] >= 2 * found[o]),
                     None)
    counts = f"as xywh they find {found['xywh']} faces at IoU 0.5, as xyxy {found['xyxy']}"
    if not_corners or not_sizes:
        fmt = "xywh" if not_corners else "xyxy"
        why = (f"{not_corners} of {len(b)} boxes would have x2 < x1 or y2 < y1 as corners" if not_corners else
               f"{not_sizes} of {len(b)} boxes would have a negative width or height as x y w h")
        if faces_say not in (None, fmt):
            raise FlowError(f"{source}: {why}, yet {counts}; pass --box-format xywh or xyxy")
        return fmt, f"{why}; {counts}"
    if faces_say:
        return faces_say, f"every box reads both ways; {counts}"
    raise FlowError(f"{source}: every box reads both as `x y w h` and as `x1 y1 x2 y2`, and neither finds clearly more "
                    f"faces ({counts}); pass --box-format xywh or xyxy")


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
    """Letterbox each image, run the model, decode with the board's code, write the detections as WIDER prediction
    text (in original pixels) and score exactly that text: `flow eval --run` and `flow eval --predictions` on the
    txts it wrote give the same numbers. skip_bad: drop malformed entries and undecodable images (with a count), as
    `train --skip-bad` does."""
    from board.pipeline import wider_prediction_text
    from board.postprocess import detect
    from board.preprocess import letterbox, unletterbox_boxes
    from flow.samples import to_nchw_float
    from flow.train.data import resolve_data
    from flow.train.wider import decodable, load_split, read_image
    from models.lpyolo import STRIDE

    samples = load_split(resolve_data(data), split, skip_bad=skip_bad)[:limit]
    if skip_bad:
        samples = decodable(samples, skip_bad=True)
    if not samples:
        raise FlowError(f"{data}: the {split} split has no images")
    scale = model.output_scale()
    texts = {}
    for start in range(0, len(samples), 16):
        chunk = samples[start : start + 16]
        imgs = [read_image(s.path) for s in chunk]
        boxed = [letterbox(im, spec.img, resample=spec.resample) for im in imgs]
        codes = predict_codes(model, to_nchw_float(np.stack([b[0] for b in boxed])), scale)
        for s, im, (_, ratio, pad), c in zip(chunk, imgs, boxed, codes, strict=True):
            d = detect(c.transpose(1, 2, 0), scale, spec.anchors, STRIDE, spec.num_classes, EVAL_CONF, EVAL_IOU)
            d[:, :4] = unletterbox_boxes(d[:, :4], ratio, pad, im.shape[:2])
            texts[f"{s.path.parent.name}/{s.path.stem}"] = wider_prediction_text(s.path.stem, d)
    stale = []
    if predictions_dir:
        # the run's own folder: txts of images not predicted this time (an earlier run without --limit) would be
        # scored by a later `flow eval --predictions` on it, so they go
        stale = [f for f in Path(predictions_dir).glob("*/*.txt") if f"{f.parent.name}/{f.stem}" not in texts]
        for f in stale:
            f.unlink()
        for name, text in texts.items():
            f = Path(predictions_dir) / f"{name}.txt"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(text)
    preds = {n: parse_prediction_text(t, f"{n}.txt") for n, t in texts.items()}
    gt = ground_truth_from_samples(samples)
    result = report_header(str(predictions_dir or "(in memory)"), gt.source, "xywh", "written by flow eval")
    result.update(images=len(samples), prediction_boxes=int(sum(len(p) for p in preds.values())), _curve={})
    if stale:
        result["stale_prediction_files_removed"] = len(stale)
    result.update(setting_report(gt, [preds[n] for n in gt.names], result["_curve"]))
    result["coco_ap50"] = coco_ap50([(xywh_xyxy(preds[n][:, :4], preds[n][:, 4]), xywh_xyxy(s.boxes),
                                      xywh_xyxy(s.ignore)) for n, s in zip(gt.names, samples, strict=True)])
    if mat_dir:
        official = load_wider_mat_ground_truth(mat_dir)
        if limit:  # a --limit run is scored on the images it predicted, not as misses on all the others
            official = official.subset(preds)
        if not any(n in preds for n in official.names):
            raise FlowError(f"{mat_dir}: none of the {len(preds)} evaluated images (e.g. {next(iter(preds))}) is in "
                            "wider_face_val.mat; is --data the WIDER FACE val split?")
        official_preds = [preds.get(n) for n in official.names]
        result.update(setting_report(official, official_preds, result["_curve"]))
        result["ground_truth"] = f"{official.source} (easy/medium/hard); {gt.source} (all_faces)"
        result["images_official"] = len(official.names)
        note_missing(result, [n for n, p in zip(official.names, official_preds, strict=True) if p is None])
    return result


def xywh_xyxy(b: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    b = np.asarray(b, np.float64).reshape(-1, 4)
    out = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)
    return out if scores is None else np.concatenate([out, np.asarray(scores, np.float64).reshape(-1, 1)], 1)


# ------------------------------------------------------------------------------------------------- reporting
def report_header(predictions: str, ground_truth: str, box_format: str, why: str) -> dict:
    return {"tool": TOOL, "protocol": "WIDER FACE eval_tools (evaluation.m): IoU 0.5 (inclusive pixels), scores "
            "min-max normalised, 1000 thresholds, VOC AP", "predictions": predictions, "ground_truth": ground_truth,
            "box_format": box_format, "box_format_reason": why}


def setting_report(gt: GroundTruth, predictions: list[np.ndarray | None], curves: dict) -> dict:
    """The protocol's numbers as eval.json keys, wider_<setting>_ap (official settings) or all_faces_ap, with the
    kept faces per setting; each setting's curve goes into curves for the plot."""
    out: dict = {}
    for setting, r in wider_evaluate(gt, predictions).items():
        out["all_faces_ap" if setting == "all_faces" else f"wider_{setting}_ap"] = r["ap"]
        out[f"{setting}_faces"] = r["faces"]
        curves[setting] = (r["precision"], r["recall"], r["ap"])
    if "all_faces_ap" in out:
        out["ap50"] = out["all_faces_ap"]  # the figure train.py picks best.pt by and flow demo prints
    scores = np.concatenate([p[:, 4] for p in predictions if p is not None and len(p)] or [np.zeros(0)])
    if len(scores) and scores.min() == scores.max():
        out["warning"] = (f"all {len(scores)} prediction scores are {scores[0]:g}: the official min-max normalisation "
                          "divides 0 by 0 and no detection passes any threshold (AP 0, as the official tool gives)")
    return out


def note_missing(result: dict, missing: list[str]) -> None:
    result["images_without_prediction_file"] = len(missing)
    if missing:
        result["missing_prediction_files"] = missing[:20]


def plot_pr_curves(curves: dict, path: Path, title: str) -> None:
    """All settings on one axis, as papers show WIDER FACE results (precision over recall, AP in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for setting, (precision, recall, ap) in curves.items():
        ax.plot(recall, precision, label=f"{setting.replace('_', ' ')}  AP {ap:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": TOOL})
    plt.close(fig)


def refuse_foreign_report(out_dir: Path, overwrite: bool = False) -> None:
    from flow.provenance import ours

    foreign = [out_dir / f for f in REPORT_FILES if (out_dir / f).exists() and not ours(out_dir / f)]
    if foreign and not overwrite:
        raise FlowError(f"{foreign[0]} exists and was not written by flow eval; choose another --out or pass "
                        "--overwrite to replace it")


def finish_report(result: dict, out_dir: Path, title: str, overwrite: bool = False) -> dict:
    """Write eval.json (curves included) and pr_curves.png into out_dir. A file of those names that flow eval did
    not write is not replaced unless overwrite is given."""
    from flow.files import atomic_write_json

    out_dir = Path(out_dir)
    refuse_foreign_report(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = result.pop("_curve")
    plot_pr_curves(curves, out_dir / "pr_curves.png", title)
    result["pr_curves"] = {s: {"precision": [None if np.isnan(v) else round(float(v), 6) for v in p],
                               "recall": [round(float(v), 6) for v in r]} for s, (p, r, _) in curves.items()}
    atomic_write_json(out_dir / "eval.json", result)
    from flow.provenance import record

    for name in REPORT_FILES:
        record(out_dir / name, [], f"python -m flow eval --out {out_dir}")
    return result


def summary_lines(result: dict) -> list[str]:
    lines = []
    if "wider_easy_ap" in result:
        lines.append("WIDER FACE val AP   " + "   ".join(f"{s} {result[f'wider_{s}_ap']:.4f}" for s in SETTINGS))
    if "all_faces_ap" in result:
        extra = f"   COCO AP50 {result['coco_ap50']:.4f}" if "coco_ap50" in result else ""
        lines.append(f"all-faces AP (WIDER protocol, not an official setting) {result['all_faces_ap']:.4f}{extra}")
    if result.get("images_without_prediction_file"):
        n = result["images_without_prediction_file"]
        lines.append(f"note: {n} of {result.get('images_official', result['images'])} images have no prediction "
                     f"file and were scored as having no detections (first: {result['missing_prediction_files'][0]})")
    if result.get("empty_or_unreadable_prediction_files"):
        n, first = result["empty_or_unreadable_prediction_files"], result["empty_or_unreadable_files"][0]
        lines.append(f"warning: {n} prediction files are empty or unreadable and were scored as having no "
                     f"detections, as the official read_pred.m does (first: {first})")
    if result.get("warning"):
        lines.append(f"warning: {result['warning']}")
    if result.get("unmatched_prediction_files"):
        lines.append(f"note: {result['unmatched_prediction_files']} prediction files are for images outside the "
                     "ground truth and were not read")
    return lines


# ------------------------------------------------------------------------------------------------------- CLI
def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow eval", description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", type=Path, metavar="DIR", help="run directory with best.pt (or model.pt): predict, then score")
    what.add_argument("--predictions", type=Path, metavar="DIR",
                      help="WIDER-format prediction txts (<event>/<image>.txt) from any detector: score only")
    p.add_argument("--mat-dir", type=Path, metavar="DIR", help="eval_tools/ground_truth: wider_face_val.mat + "
                   "wider_{easy,medium,hard}_val.mat (the official settings)")
    p.add_argument("--data", type=Path, help="dataset root with annotation txts (default for --run: the built-in "
                   "set); gives the all-faces AP")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, help="--run: only the first N images")
    p.add_argument("--skip-bad", action="store_true", help="--run: skip malformed entries and undecodable images (counted)")
    p.add_argument("--box-format", choices=("auto", "xywh", "xyxy"), default="auto",
                   help="--predictions: box columns (official: xywh); auto decides when it is unambiguous")
    p.add_argument("--out", type=Path, metavar="DIR", help="where eval.json and pr_curves.png go (default: the run, or beside "
                   "the predictions directory)")
    p.add_argument("--overwrite", action="store_true", help="replace an eval.json/pr_curves.png not written by us")
    a = p.parse_args(argv)
    if a.run and a.box_format != "auto":
        raise FlowError("--box-format is for --predictions; --run writes and reads its own txts as x y w h")
    if a.predictions and a.limit:
        raise FlowError("--limit is for --run; --predictions scores every image of the ground truth")
    if a.run:
        from flow.export import load_checkpoint

        ckpt = next((a.run / f for f in ("best.pt", "model.pt") if (a.run / f).exists()), None)
        if ckpt is None:
            raise FlowError(f"{a.run}: no best.pt or model.pt to evaluate")
        out = a.out or a.run
        refuse_foreign_report(out, a.overwrite)  # before the predictions, not after them
        model, spec = load_checkpoint(ckpt)
        r = evaluate_model(model, spec, a.data, a.split, a.limit, a.mat_dir, a.run / "wider_predictions", a.skip_bad)
        r = finish_report(r, out, f"{spec.name} on {a.data or 'built-in'} {a.split}", a.overwrite)
        written = f"{a.run / 'wider_predictions'}/, "
    else:
        if not (a.mat_dir or a.data):
            raise FlowError("--predictions needs the ground truth: --mat-dir (official easy/medium/hard) and/or "
                            "--data (annotation txts: all-faces AP)")
        out = a.out or a.predictions.resolve().parent
        r = evaluate_prediction_dir(a.predictions, a.mat_dir, a.data, a.split, a.box_format)
        r = finish_report(r, out, f"{a.predictions.name}", a.overwrite)
        written = ""
    for line in summary_lines(r):
        print(line)
    print(f"written {written}{out / 'eval.json'}, {out / 'pr_curves.png'}")
    return 0


def evaluate_prediction_dir(pred_dir: Path, mat_dir: Path | None, data: Path | None, split: str = "val",
                            box_format: str = "auto") -> dict:
    """Score any detector's WIDER-format txts against the official .mat ground truth and/or annotation txts."""
    from flow.train.wider import load_split

    truths, samples = [], []
    if mat_dir:
        truths.append(load_wider_mat_ground_truth(mat_dir))
    if data:
        samples = load_split(Path(data), split)
        truths.append(ground_truth_from_samples(samples))
    main = truths[0]
    pset = read_prediction_dir(pred_dir, main.names)
    if box_format == "auto":
        box_format, why = detect_box_format(pset.boxes, main, str(pred_dir))
    else:
        why = "given with --box-format"
    result = report_header(str(pred_dir), "; ".join(t.source for t in truths), box_format, why)
    result.update(images=len(main.names), prediction_boxes=int(sum(len(b) for b in pset.boxes if b is not None)),
                  _curve={})
    note_missing(result, pset.missing)
    result["empty_or_unreadable_prediction_files"] = len(pset.unreadable)
    if pset.unreadable:
        result["empty_or_unreadable_files"] = pset.unreadable[:20]
    result["unmatched_prediction_files"] = pset.unmatched
    if pset.flat:
        result["flat_layout_files"] = pset.flat
    for k, gt in enumerate(truths):
        ps = pset if k == 0 else read_prediction_dir(pred_dir, gt.names)
        boxes = [np.zeros((0, 5)) if b is None else as_xywh(b, box_format) for b in ps.boxes]
        result.update(setting_report(gt, boxes, result["_curve"]))
    if samples:  # ps is the annotation txts' (the last truth): their faces and ignored faces, as --run scores them
        boxes = [np.zeros((0, 5)) if b is None else as_xywh(b, box_format) for b in ps.boxes]
        result["coco_ap50"] = coco_ap50([(xywh_xyxy(b[:, :4], b[:, 4]), xywh_xyxy(s.boxes), xywh_xyxy(s.ignore))
                                         for b, s in zip(boxes, samples, strict=True)])
    return result
