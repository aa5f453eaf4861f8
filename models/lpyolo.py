"""The LPYOLO-shaped detector (arXiv 2207.10482, quantized-yolov5 `yolov1-tiny-quant.yaml`).

Six Conv3x3+BN+QuantReLU blocks (8, 8, 16, 32, 56, 104 channels, MaxPool 2x2/2 after the first five), a head of
Conv3x3->208, Conv1x1->56, Conv3x3->104 (each +BN+QuantReLU) and a final Conv3x3->A*(5+C) followed by an 8-bit
QuantHardTanh applied to x/2. One stride-32 output.

Quantizers are the ones FINN streamlines into thresholds: integer weights with per-channel float scales, unsigned
per-tensor activations after ReLU, a signed per-tensor 8-bit output. Convs carry no bias (BN follows) except the
last one, whose float bias FINN absorbs into the output thresholds. The network's input is the raw pixel value
0..255 (declared UINT8 at export), so the accelerator takes camera bytes and the ARM only letterboxes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from board.preprocess import check_resample

# (name, in_ch, out_ch, kernel, maxpool_after); in_ch of conv0 is the 3 image channels.
BACKBONE = [(8, True), (8, True), (16, True), (32, True), (56, True), (104, False)]
HEAD = [(208, 3), (56, 1), (104, 3)]


def _layer_table(num_outputs: int) -> list[tuple[str, int, int, int, bool]]:
    layers, cin = [], 3
    for i, (cout, pool) in enumerate(BACKBONE):
        layers.append((f"conv{i}", cin, cout, 3, pool))
        cin = cout
    for j, (cout, k) in enumerate(HEAD):
        layers.append((f"conv{len(BACKBONE) + j}", cin, cout, k, False))
        cin = cout
    layers.append((f"conv{len(BACKBONE) + len(HEAD)}", cin, num_outputs, 3, False))
    return layers


DEFAULT_ANCHORS = ((10, 14), (23, 27), (37, 58))
STRIDE = 32
LAYERS = [name for name, *_ in _layer_table(18)]  # conv0 .. conv9
MAX_BITS = 8  # FINN's thresholding path and ORT's QCDQ both stop at 8 bits
# New models resize with the fabric letterbox's integer bilinear, so the accelerator can take whole camera frames;
# specs saved before `resample` existed were "bilinear" (the only resample there was).
DEFAULT_RESAMPLE = "bilinear-exact"
LEGACY_RESAMPLE = "bilinear"


class SpecError(ValueError):
    """A QuantSpec that cannot be built (or cannot go where it was asked to go)."""


@dataclass(frozen=True)
class QuantSpec:
    """Bit widths of one network. `None` means float for that tensor.

    weight_bits: one entry per conv (conv0..conv9); act_bits: one per hidden activation (after conv0..conv8);
    input is always UINT8 pixels; the output is always a signed `output_bits` HardTanh code. resample: how pictures
    are resized to the input, in training and on the board alike (board/preprocess.py: "bilinear-exact", the
    letterbox the fabric computes, by default; "bilinear" (OpenCV's) or "nearest", which costs the PYNQ-Z2's A9
    ~3 ms a 640x480 frame instead of ~22 ms, where the ARM letterboxes).
    """

    name: str
    weight_bits: tuple[int | None, ...]
    act_bits: tuple[int | None, ...]
    output_bits: int = 8
    input_bits: int = 8
    img: int = 416
    num_classes: int = 1
    anchors: tuple[tuple[float, float], ...] = DEFAULT_ANCHORS
    resample: str = DEFAULT_RESAMPLE
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def num_outputs(self) -> int:
        return len(self.anchors) * (5 + self.num_classes)

    @property
    def grid(self) -> int:
        return self.img // STRIDE

    @property
    def is_float(self) -> bool:
        return all(b is None for b in self.weight_bits + self.act_bits)

    def validate(self, for_finn: bool = False) -> QuantSpec:
        n = len(LAYERS)
        if len(self.weight_bits) != n:
            raise SpecError(f"spec {self.name!r}: weight_bits needs {n} entries (conv0..conv{n - 1}), got {len(self.weight_bits)}")
        if len(self.act_bits) != n - 1:
            raise SpecError(f"spec {self.name!r}: act_bits needs {n - 1} entries (after conv0..conv{n - 2}), got {len(self.act_bits)}")
        if self.img <= 0 or self.img % STRIDE:
            raise SpecError(f"spec {self.name!r}: input size {self.img} is not a positive multiple of {STRIDE}; use e.g. 64, 416")
        for kind, bits in (("weight", self.weight_bits), ("activation", self.act_bits)):
            for layer, b in zip(LAYERS, bits, strict=False):
                if b is None:
                    continue
                if not isinstance(b, int) or b < 2:
                    raise SpecError(f"spec {self.name!r}: {layer} {kind} bits = {b!r}; use an integer >= 2 (or float)")
                if b > 16:
                    raise SpecError(f"spec {self.name!r}: {layer} {kind} bits = {b} is more than 16")
        if not 2 <= self.output_bits <= MAX_BITS:
            raise SpecError(f"spec {self.name!r}: output_bits = {self.output_bits}; the accelerator output is 2..8 bits")
        if self.input_bits != 8:
            raise SpecError(f"spec {self.name!r}: the input is UINT8 pixels; input_bits must be 8")
        try:
            check_resample(self.resample)
        except ValueError as e:
            raise SpecError(f"spec {self.name!r}: {e}") from e
        if len(self.anchors) < 1 or self.num_classes < 1:
            raise SpecError(f"spec {self.name!r}: needs at least one anchor and one class")
        if for_finn:
            if self.is_float or any(b is None for b in self.weight_bits + self.act_bits):
                raise SpecError(f"spec {self.name!r}: FINN needs every layer quantized; float layers cannot become hardware")
            over = [f"{lay}:{k}={b}" for k, bits in (("w", self.weight_bits), ("a", self.act_bits))
                    for lay, b in zip(LAYERS, bits, strict=False) if b > MAX_BITS]
            if over:
                raise SpecError(f"spec {self.name!r}: {', '.join(over)} over {MAX_BITS} bits; the FINN/QCDQ path stops at 8 bits")
        return self

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["anchors"] = [list(a) for a in self.anchors]
        return d

    @classmethod
    def from_json(cls, d: dict) -> QuantSpec:
        d = dict(d)
        d["weight_bits"] = tuple(d["weight_bits"])
        d["act_bits"] = tuple(d["act_bits"])
        d["anchors"] = tuple(tuple(a) for a in d["anchors"])
        d.setdefault("resample", LEGACY_RESAMPLE)
        return cls(**d)

    def describe(self) -> str:
        def fmt(bits):
            return ",".join("f" if b is None else str(b) for b in bits)

        resample = "" if self.resample == DEFAULT_RESAMPLE else f" ({self.resample} resample)"
        return (f"{self.name}: W[{fmt(self.weight_bits)}] A[{fmt(self.act_bits)}] out {self.output_bits}b img "
                f"{self.img}{resample}")


def _weight_quant(bits: int):
    from brevitas.quant import Int8WeightPerChannelFloat

    return Int8WeightPerChannelFloat.let(bit_width=bits)


def _act_quant(bits: int, collect_stats_steps: int):
    from brevitas.quant import Uint8ActPerTensorFloat

    return Uint8ActPerTensorFloat.let(bit_width=bits, collect_stats_steps=collect_stats_steps)


def _out_quant(bits: int):
    # Constant scale: HardTanh range [-1, 1] in a signed narrow code, so the board's decode needs one fixed scale.
    from brevitas.inject.enum import ScalingImplType
    from brevitas.quant import Int8ActPerTensorFloatMinMaxInit

    return Int8ActPerTensorFloatMinMaxInit.let(
        bit_width=bits, min_val=-1.0, max_val=1.0, narrow_range=True, scaling_impl_type=ScalingImplType.CONST
    )


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, k, w_bits, a_bits, pool, collect_stats_steps):
        super().__init__()
        if w_bits is None:
            self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        else:
            from brevitas.nn import QuantConv2d

            self.conv = QuantConv2d(cin, cout, k, padding=k // 2, bias=False, weight_quant=_weight_quant(w_bits))
        self.bn = nn.BatchNorm2d(cout)
        if a_bits is None:
            self.act = nn.ReLU()
        else:
            from brevitas.nn import QuantReLU

            self.act = QuantReLU(act_quant=_act_quant(a_bits, collect_stats_steps), return_quant_tensor=False)
        self.pool = nn.MaxPool2d(2, 2) if pool else nn.Identity()

    def forward(self, x):
        return self.pool(self.act(self.bn(self.conv(x))))


class RecoveringClamp(torch.autograd.Function):
    """Clamp to [-1, 1] whose gradient still reaches a saturated output when it points back into the range.

    The quantizer's own clamp has zero gradient outside [-1, 1]; with HardTanh in place of YOLO's sigmoid a head
    output that overshoots (wh at +1, objectness at -1) then never moves again and the detector stops learning
    (measured: 2/3 of the wh outputs and all objectness outputs dead after one epoch). Same values as the
    quantizer, so it is used in training only and never exported."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(-1.0, 1.0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        # gradient descent moves x by -g: keep g inside the range, and outside it only when it moves x back in
        blocked = ((x > 1) & (g < 0)) | ((x < -1) & (g > 0))
        return g.masked_fill(blocked, 0.0)


class OutputHead(nn.Module):
    """Final conv + QuantHardTanh(x/2): its codes are the accelerator's output, v = code * scale in [-1, 1]."""

    def __init__(self, cin, cout, w_bits, out_bits):
        super().__init__()
        from brevitas.nn import QuantHardTanh

        if w_bits is None:
            self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=True)
        else:
            from brevitas.nn import QuantConv2d

            self.conv = QuantConv2d(cin, cout, 3, padding=1, bias=True, weight_quant=_weight_quant(w_bits), bias_quant=None)
        self.act = QuantHardTanh(act_quant=_out_quant(out_bits), return_quant_tensor=False)

    def forward(self, x):
        x = self.conv(x) * 0.5
        if self.training:
            x = RecoveringClamp.apply(x)
        return self.act(x)

    def output_scale(self) -> float:
        return float(self.act.act_quant.scale())


class LPYOLO(nn.Module):
    """Input: float tensor of pixel values 0..255, NCHW. Output: HardTanh values (N, A*(5+C), H/32, W/32)."""

    def __init__(self, spec: QuantSpec, collect_stats_steps: int = 300):
        super().__init__()
        spec.validate()
        self.spec = spec
        table = _layer_table(spec.num_outputs)
        blocks = []
        for i, (name, cin, cout, k, pool) in enumerate(table[:-1]):
            blocks.append((name, ConvBlock(cin, cout, k, spec.weight_bits[i], spec.act_bits[i], pool, collect_stats_steps)))
        self.blocks = nn.ModuleDict(blocks)
        name, cin, cout, _, _ = table[-1]
        self.head = OutputHead(cin, cout, spec.weight_bits[-1], spec.output_bits)
        self.head_name = name

    def forward(self, x):
        for block in self.blocks.values():
            x = block(x)
        return self.head(x)

    def output_scale(self) -> float:
        return self.head.output_scale()

    def macs(self) -> int:
        total, size = 0, self.spec.img
        for _, cin, cout, k, pool in _layer_table(self.spec.num_outputs):
            total += size * size * cin * cout * k * k
            size //= 2 if pool else 1
        return total


def build_model(spec: QuantSpec, collect_stats_steps: int = 300) -> LPYOLO:
    return LPYOLO(spec, collect_stats_steps=collect_stats_steps)


def spec_hash(spec: QuantSpec) -> str:
    import hashlib

    return hashlib.sha1(json.dumps(spec.to_json(), sort_keys=True).encode()).hexdigest()[:12]
