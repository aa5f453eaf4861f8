"""The model's input quantizer as integer thresholds on the UINT8 pixels: FINN builds them as a thresholding layer
at the accelerator's input, so the boundary stays raw pixels whatever the quantizer's scale.

A Brevitas model trained on float input (pixels / 255) usually starts with an 8-bit unsigned input quantizer whose
scale was calibrated on the training images (Brevitas's default `Uint8ActPerTensorFloat`, e.g. scale 0.00357, not
1/255). `flow import` gives such a model a UINT8 pixel input followed by the user's own Mul by 1/255 and Quant. On the
256 pixel values that chain is a non-decreasing step function p -> code(p), so it is exactly

    MultiThreshold(p; T) -> [Add code(0) - zero point] -> Mul by the scale

where T holds, for every pixel p at which the code steps up by k, the threshold p k times (MultiThreshold counts the
thresholds its input reaches). The thresholds are found by evaluating the quantizer itself (qonnx's `int_quant`, the
function the graph's Quant node computes) on all 256 pixels, not by inverting its formula, so ties and rounding modes
come out as the model computes them. A chain that is not such a function (a per-channel scale, a step down) is
refused with the reason.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.transformation.base import Transformation

from flow.errors import FlowError

PIXELS = np.arange(256, dtype=np.float32)


def _const(model, node, i: int, what: str) -> np.ndarray:
    v = model.get_initializer(node.input[i]) if len(node.input) > i else None
    if v is None:
        raise FlowError(f"input quantizer {node.name}: its {what} is computed at run time; thresholds need a constant")
    return np.asarray(v)


def input_chain(model):
    """The graph input's [Mul by a constant] -> Quant chain, as (mul node or None, quant node), or None."""
    name = model.graph.input[0].name
    consumers = model.find_consumers(name)
    if len(consumers) != 1:
        return None
    mul, node = None, consumers[0]
    if node.op_type == "Mul" and model.get_initializer(node.input[1]) is not None:
        nxt = model.find_consumers(node.output[0])
        if len(nxt) != 1:
            return None
        mul, node = node, nxt[0]
    return (mul, node) if node.op_type == "Quant" else None


def pixel_codes(model, mul, quant, label: str | None = None) -> tuple[np.ndarray, float]:
    """The chain on pixels 0..255 -> (integer code - zero point for each pixel, scale); refused where one scalar
    scale and a non-decreasing code do not describe it. label: the Quant's name in errors (default its own)."""
    from qonnx.custom_op.general.intquant import int_quant

    attrs = {a.name: helper.get_attribute_value(a) for a in quant.attribute}
    scale, zero = _const(model, quant, 1, "scale"), _const(model, quant, 2, "zero point")
    bits = _const(model, quant, 3, "bit width")
    factor = _const(model, mul, 1, "factor") if mul is not None else np.float32(1)
    where = f"input quantizer {label or quant.name}"
    if scale.size != 1 or zero.size != 1 or np.asarray(factor).size != 1:
        raise FlowError(f"{where}: per-channel scale, zero point or input factor (sizes {scale.size}, {zero.size}, "
                        f"{np.asarray(factor).size}); one threshold set with one output scale needs scalars")
    x = PIXELS * np.asarray(factor, np.float32).reshape(())  # what the graph's Mul computes, in float32
    rounding = attrs.get("rounding_mode", b"ROUND")
    values = int_quant(x, scale.reshape(()), zero.reshape(()), bits.reshape(()), int(attrs.get("signed", 1)),
                       int(attrs.get("narrow", 0)), rounding.decode() if isinstance(rounding, bytes) else rounding)
    s = float(scale.reshape(()))
    if not (np.isfinite(s) and s > 0):
        raise FlowError(f"{where}: scale {s:g}; thresholds need a positive finite scale")
    codes = np.round(np.asarray(values, np.float64) / s)
    if not np.array_equal(np.asarray(codes * np.float32(s), np.float32), np.asarray(values, np.float32)):
        raise FlowError(f"{where}: its outputs on pixels are not integer multiples of its scale {s:g}")
    down = np.flatnonzero(np.diff(codes) < 0)
    if len(down):
        raise FlowError(f"{where}: its code goes down from pixel {down[0]} to {down[0] + 1}; thresholds count up only")
    return codes.astype(np.int64), s


def pixel_thresholds(codes: np.ndarray) -> np.ndarray:
    """Codes for pixels 0..255 (non-decreasing) -> thresholds: pixel p repeated by how much the code steps at p."""
    steps = np.diff(codes)
    return np.repeat(np.arange(1, 256), steps).astype(np.float32)


class InputQuantToThresholds(Transformation):
    """UINT8 input -> [Mul] -> Quant  becomes  UINT8 input -> MultiThreshold -> [Add] -> Mul(scale), the same
    values for every pixel. A model without an input quantizer is returned unchanged."""

    def apply(self, model):
        from qonnx.core.datatype import DataType

        name = model.graph.input[0].name
        chain = input_chain(model)
        if chain is None or model.get_tensor_datatype(name) != DataType["UINT8"]:
            return model, False
        mul, quant = chain
        codes, scale = pixel_codes(model, mul, quant)
        thresholds = pixel_thresholds(codes)
        channels = model.get_tensor_shape(name)[1]
        out = quant.output[0]
        for n in (mul, quant):
            if n is not None:
                model.graph.node.remove(n)
        thr, counted = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
        model.set_initializer(thr, np.tile(thresholds, (channels, 1)))
        count_type = DataType.get_smallest_possible(len(thresholds))
        nodes = [helper.make_node("MultiThreshold", [name, thr], [counted], domain="qonnx.custom_op.general",
                                  out_dtype=count_type.name, data_layout="NCHW", name="InputThresholds")]
        if codes[0]:
            offset, shifted = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
            model.set_initializer(offset, np.asarray(codes[0], np.float32))
            nodes.append(helper.make_node("Add", [counted, offset], [shifted], name="InputThresholdsOffset"))
            counted = shifted
        sc = model.make_new_valueinfo_name()
        model.set_initializer(sc, np.asarray(scale, np.float32))
        nodes.append(helper.make_node("Mul", [counted, sc], [out], name="InputThresholdsScale"))
        for i, n in enumerate(nodes):
            model.graph.node.insert(i, n)
        model.set_tensor_datatype(nodes[0].output[0], count_type)
        return model, False


def step_input_thresholds(model):
    """FINN builder step (before qonnx_to_finn): the input quantizer as thresholds on the pixels."""
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    model = model.transform(InputQuantToThresholds())
    return model.transform(InferShapes()).transform(InferDataTypes())
