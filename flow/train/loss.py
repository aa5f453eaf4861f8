"""Single-head YOLO loss on LPYOLO's HardTanh outputs (objectness BCE + CIoU box + class BCE).

The decode is the board's (board/postprocess.py), written in torch so it is differentiable: with v in [-1, 1],
xy = v + 0.5 (+ cell), wh = (v + 1)^2 * anchor, probability = v / 2 + 0.5 — YOLOv5's 2*sigmoid - 0.5 and
(2*sigmoid)^2 with sigmoid replaced by the rescaled HardTanh, so what is trained is exactly what is deployed.
Target assignment follows YOLOv5: anchors whose width/height ratio to the face is under anchor_t, the face's own
cell and the two nearest neighbouring cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LossConfig:
    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0


def bbox_ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """CIoU of boxes given as (cx, cy, w, h), elementwise over the leading dims."""
    a1, a2 = a[..., :2] - a[..., 2:] / 2, a[..., :2] + a[..., 2:] / 2
    b1, b2 = b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(0).prod(-1)
    union = a[..., 2:].prod(-1) + b[..., 2:].prod(-1) - inter + eps
    iou = inter / union
    c = (torch.max(a2, b2) - torch.min(a1, b1)).pow(2).sum(-1) + eps
    rho = (a[..., :2] - b[..., :2]).pow(2).sum(-1)
    v = (4 / math.pi**2) * (torch.atan(b[..., 2] / (b[..., 3] + eps)) - torch.atan(a[..., 2] / (a[..., 3] + eps))).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho / c + v * alpha)


def _prob(v: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """HardTanh value -> probability, kept off 0 and 1 for the log; the gradient passes the clamp (straight
    through), so a positive whose objectness sits at 0 is still pulled up."""
    p = v * 0.5 + 0.5
    return p + (p.clamp(eps, 1 - eps) - p).detach()


class YoloLoss(nn.Module):
    def __init__(self, anchors, stride: int, num_classes: int, img: int, cfg: LossConfig = LossConfig()):
        super().__init__()
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32) / stride)  # in cells
        self.stride, self.nc, self.cfg = stride, num_classes, cfg
        self.obj_gain = cfg.obj * 3 * (img / 640) ** 2  # YOLOv5's scaling of the objectness gain with image size
        self.bce = nn.BCELoss()

    def build_targets(self, targets: torch.Tensor, g: int):
        """targets (M, 6): image index, class, cx, cy, w, h in pixels -> indices and boxes of positive cells."""
        t = targets[:, 2:6] / self.stride
        if len(t) == 0:
            empty = torch.zeros(0, dtype=torch.long, device=targets.device)
            return (empty, empty, empty, empty), torch.zeros(0, 4, device=targets.device), empty
        r = t[None, :, 2:4] / self.anchors[:, None]  # (na, M, 2)
        match = torch.max(r, 1 / r).max(2).values < self.cfg.anchor_t
        a_idx, m_idx = match.nonzero(as_tuple=True)
        gxy = t[m_idx, :2]
        offsets = [torch.zeros_like(gxy)]
        cand = [torch.ones(len(gxy), dtype=torch.bool, device=gxy.device)]
        frac, inv = gxy % 1, (g - gxy) % 1
        for dim in (0, 1):
            left = (frac[:, dim] < 0.5) & (gxy[:, dim] > 1)
            right = (inv[:, dim] < 0.5) & ((g - gxy[:, dim]) > 1)
            for mask, sign in ((left, -1.0), (right, 1.0)):
                off = torch.zeros_like(gxy)
                off[:, dim] = sign
                offsets.append(off)
                cand.append(mask)
        rows_a, rows_m, rows_off = [], [], []
        for off, c in zip(offsets, cand, strict=True):
            rows_a.append(a_idx[c])
            rows_m.append(m_idx[c])
            rows_off.append(off[c])
        a_all, m_all, off_all = torch.cat(rows_a), torch.cat(rows_m), torch.cat(rows_off)
        cell = (t[m_all, :2] + off_all).long().clamp(0, g - 1)
        tbox = torch.cat([t[m_all, :2] - cell, t[m_all, 2:4]], 1)
        b = targets[m_all, 0].long()
        return (b, a_all, cell[:, 1], cell[:, 0]), tbox, targets[m_all, 1].long()

    def forward(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        n, _, g, _ = out.shape
        na = len(self.anchors)
        v = out.view(n, na, 5 + self.nc, g, g).permute(0, 1, 3, 4, 2)  # (n, a, gy, gx, 5+C)
        (b, a, gy, gx), tbox, tcls = self.build_targets(targets, g)
        tobj = torch.zeros(v.shape[:4], device=out.device)
        lbox = out.new_zeros(())
        lcls = out.new_zeros(())
        if len(b):
            pv = v[b, a, gy, gx]
            pxy = pv[:, :2] + 0.5
            pwh = (pv[:, 2:4] + 1).pow(2) * self.anchors[a]
            ciou = bbox_ciou(torch.cat([pxy, pwh], 1), tbox)
            lbox = (1.0 - ciou).mean()
            tobj[b, a, gy, gx] = ciou.detach().clamp(0).to(tobj.dtype)
            if self.nc > 1:
                tc = torch.zeros_like(pv[:, 5:])
                tc[torch.arange(len(b)), tcls] = 1.0
                lcls = self.bce(_prob(pv[:, 5:]), tc)
        lobj = self.bce(_prob(v[..., 4]), tobj)
        loss = self.cfg.box * lbox + self.obj_gain * lobj + self.cfg.cls * lcls
        return loss * n, {"box": float(lbox.detach()), "obj": float(lobj.detach()), "cls": float(lcls.detach())}
