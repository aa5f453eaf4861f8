"""Named bit-width presets (LPYOLO's configs plus 8w8a and float) and per-layer overrides.

First and last layers keep 8-bit weights, as in LPYOLO; the input is UINT8 pixels and the output an 8-bit code.
"""

from __future__ import annotations

import dataclasses
import re

from models.lpyolo import DEFAULT_RESAMPLE, LAYERS, QuantSpec, SpecError


def _preset(name: str, w: int | None, a: int | None) -> QuantSpec:
    n = len(LAYERS)
    if w is None:
        weights = (None,) * n
    else:
        weights = (8,) + (w,) * (n - 2) + (8,)
    return QuantSpec(name=name, weight_bits=weights, act_bits=(a,) * (n - 1))


PRESETS: dict[str, QuantSpec] = {
    "4w4a": _preset("4w4a", 4, 4),
    "2w4a": _preset("2w4a", 2, 4),
    "3w5a": _preset("3w5a", 3, 5),
    "4w2a": _preset("4w2a", 4, 2),
    "6w4a": _preset("6w4a", 6, 4),
    "8w3a": _preset("8w3a", 8, 3),
    "8w8a": _preset("8w8a", 8, 8),
    "float": _preset("float", None, None),
}

_OVERRIDE = re.compile(r"^(conv\d+)\.(w|a)=(\d+|f|float)$")


def parse_overrides(items: list[str] | str | None) -> dict[tuple[str, str], int | None]:
    """'conv3.w=2,conv5.a=3' (or a list of such items) -> {("conv3","w"): 2, ("conv5","a"): 3}."""
    if not items:
        return {}
    if isinstance(items, str):
        items = [items]
    out = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            m = _OVERRIDE.match(part)
            if not m:
                raise SpecError(f"bad override {part!r}: write LAYER.w=BITS or LAYER.a=BITS (e.g. conv3.w=2, conv5.a=f)")
            layer, kind, bits = m.groups()
            if layer not in LAYERS:
                raise SpecError(f"bad override {part!r}: no layer {layer}; layers are {', '.join(LAYERS)}")
            if kind == "a" and layer == LAYERS[-1]:
                raise SpecError(f"bad override {part!r}: {layer} ends in the fixed HardTanh output; set output bits instead")
            out[(layer, kind)] = None if bits in ("f", "float") else int(bits)
    return out


def spec_for(variant: str, img: int = 416, overrides=None, num_classes: int = 1, anchors=None,
             resample: str = DEFAULT_RESAMPLE) -> QuantSpec:
    if variant not in PRESETS:
        raise SpecError(f"unknown variant {variant!r}; presets: {', '.join(PRESETS)}")
    spec = PRESETS[variant]
    w, a = list(spec.weight_bits), list(spec.act_bits)
    ovr = parse_overrides(overrides)
    for (layer, kind), bits in ovr.items():
        (w if kind == "w" else a)[LAYERS.index(layer)] = bits
    name = variant if not ovr else variant + "+" + ",".join(f"{lay}.{k}={b or 'f'}" for (lay, k), b in ovr.items())
    kw = dict(name=name, weight_bits=tuple(w), act_bits=tuple(a), img=img, num_classes=num_classes, resample=resample)
    if anchors is not None:
        kw["anchors"] = tuple(tuple(float(v) for v in an) for an in anchors)
    return dataclasses.replace(spec, **kw).validate()
