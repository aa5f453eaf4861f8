"""Decode + NMS in numpy: one implementation for the board, the host evaluator and the cross-check.

Decode (LPYOLO's board formula, `decode: lpyolo-hardtanh-v1` in manifest.json), v = code * scale in [-1, 1]:
    xy = (v + 0.5 + grid) * stride,  wh = (v + 1)^2 * anchor,  objectness / class = v / 2 + 0.5
which equals YOLOv5's 2*sigmoid - 0.5 / (2*sigmoid)^2 decode with sigmoid replaced by the rescaled HardTanh.
Channel layout per anchor a: [x, y, w, h, obj, cls_0 .. cls_{C-1}], anchors stacked along the channel axis.

Score: objectness x class probability with several classes; objectness alone with one. The loss trains no class
channel for one class (as YOLOv5's does), so that channel holds whatever the untrained head emits; multiplying by
it threw away the faces: a 4w4a model trained as `python -m flow demo` does (192x192, 8 epochs), on 200 built-in
val images, kept 0 boxes above 0.25 (180 with objectness alone), WIDER AP50 0.210 -> 0.235 (COCO 0.213 -> 0.241).
"""

from __future__ import annotations

import numpy as np

DECODE_VERSION = "lpyolo-hardtanh-v1"


def hardtanh_values(codes: np.ndarray, scale: float) -> np.ndarray:
    return codes.astype(np.float32) * np.float32(scale)


def decode(codes_hwc: np.ndarray, scale: float, anchors, stride: int, num_classes: int = 1,
           conf_thresh: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accelerator output (H, W, A*(5+C)) integer codes -> (boxes xyxy (N,4), scores (N,), classes (N,)).

    score = objectness * class probability (objectness alone for one class); only cells above conf_thresh are
    returned.
    """
    anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
    h, w, ch = codes_hwc.shape
    na = len(anchors)
    if ch != na * (5 + num_classes):
        raise ValueError(f"output has {ch} channels; {na} anchors x (5 + {num_classes} classes) needs {na * (5 + num_classes)}")
    v = hardtanh_values(codes_hwc, scale).reshape(h, w, na, 5 + num_classes)
    prob = v[..., 4:] * 0.5 + 0.5  # objectness and class probabilities
    if num_classes == 1:  # the class channel is never trained: see the module docstring
        cls = np.zeros(prob.shape[:-1], np.int64)
        score = prob[..., 0]
    else:
        cls = prob[..., 1:].argmax(-1)
        score = prob[..., 0] * np.take_along_axis(prob[..., 1:], cls[..., None], -1)[..., 0]
    keep = score > conf_thresh
    if not keep.any():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    gy, gx, ga = np.nonzero(keep)
    t = v[gy, gx, ga]
    cx = (t[:, 0] + 0.5 + gx) * stride
    cy = (t[:, 1] + 0.5 + gy) * stride
    bw = (t[:, 2] + 1.0) ** 2 * anchors[ga, 0]
    bh = (t[:, 3] + 1.0) ** 2 * anchors[ga, 1]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)
    return boxes, score[keep].astype(np.float32), cls[keep].astype(np.int64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between xyxy boxes a (N,4) and b (M,4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float = 0.45, max_det: int = 300) -> np.ndarray:
    """Greedy NMS; returns kept indices sorted by descending score (ties broken by index, deterministic).

    Which box overlaps which is one whole-array step (the IoU matrix, computed as `box_iou` does, so the decisions
    are the same float for float; at most 507 x 507 here); then one step per kept box drops every remaining box it
    overlaps. No Python iteration per candidate: an A9 runs Python ~37x slower than this host."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    b = boxes[order]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    w = np.clip(np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1), 0, None)
    h = np.clip(np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1), 0, None)
    inter = w * h
    overlaps = inter / np.maximum(area[:, None] + area - inter, 1e-9) > iou_thresh
    rest = np.arange(len(order))
    keep = []
    while rest.size and len(keep) < max_det:
        keep.append(rest[0])
        rest = rest[1:][~overlaps[rest[0], rest[1:]]]
    return order[np.asarray(keep, np.int64)]


def detect(codes_hwc: np.ndarray, scale: float, anchors, stride: int, num_classes: int = 1,
           conf_thresh: float = 0.25, iou_thresh: float = 0.45, max_det: int = 300) -> np.ndarray:
    """Decode + NMS -> (N, 6) array of [x1, y1, x2, y2, score, class], in model-input pixels.

    NMS is per class in one pass: each class's boxes are shifted by its own offset so no two classes overlap."""
    boxes, scores, classes = decode(codes_hwc, scale, anchors, stride, num_classes, conf_thresh)
    if not len(scores):
        return np.zeros((0, 6), np.float32)
    offset = classes[:, None].astype(np.float32) * (np.abs(boxes).max() * 2 + 1)
    k = nms(boxes + offset, scores, iou_thresh, max_det)
    return np.concatenate([boxes[k], scores[k, None], classes[k, None].astype(np.float32)], axis=1)


def detect_with_manifest(codes_hwc: np.ndarray, manifest, conf_thresh: float | None = None,
                         iou_thresh: float | None = None) -> np.ndarray:
    """detect() with the facts of a board.manifest.Manifest (thresholds: its own unless given)."""
    if manifest.decode != DECODE_VERSION:
        raise ValueError(f"manifest asks for decode {manifest.decode!r}; this runtime implements {DECODE_VERSION}")
    return detect(codes_hwc, manifest.output.scale, manifest.anchors, manifest.stride, len(manifest.classes),
                  manifest.conf_thresh if conf_thresh is None else conf_thresh,
                  manifest.iou_thresh if iou_thresh is None else iou_thresh)
