"""QONNX -> QCDQ (QuantizeLinear -> Clip -> DequantizeLinear) for ONNX Runtime, from the cleaned QONNX file.

Wraps qonnx's `QuantToQCDQ`, which silently leaves alone every Quant it cannot express; here each such node is
refused up front with its name and the reason, so a QCDQ file is either exact or not written at all. Two lowerings
of our own come first:

- a Quant with a non-zero integer zero point z (qonnx's `int_quant`: round(clip(x / s + z)) - z, times s; qonnx's
  `QuantToQCDQ` refuses any z != 0) becomes those float32 steps as standard ops (`LowerZeroPointQuant`), not
  QuantizeLinear(x, s, z): that adds z after rounding, and on a tie half to even differs for an odd z;
- a MultiThreshold (FINN-ONNX: qonnx.custom_op.general.multithreshold, the count of thresholds x is greater than
  or equal to, times out_scale plus out_bias) becomes Unsqueeze -> GreaterOrEqual -> Cast -> ReduceSum [-> Mul]
  [-> Add] on the same float32 thresholds, in its data_layout (NCHW or NHWC), so ORT runs FINN-ONNX graphs too.

The batch dimension is made symbolic (`N`) so ORT sessions take any batch size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation

from flow.backends import load_onnx_model
from flow.errors import FlowError

QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")
SUPPORTED_ROUNDING = ("ROUND",)
THRESHOLD_CHUNK = 32  # thresholds compared at once: bounds the comparison tensor (a 416x416 input's 255 thresholds)
MIN_OPSET = 13  # ReduceSum's axes as an input, Clip on int8/uint8


class QCDQRefusal(FlowError):
    pass


def _static(model: ModelWrapper, node, idx: int, what: str) -> np.ndarray:
    val = model.get_initializer(node.input[idx]) if len(node.input) > idx else None
    if val is None:
        raise QCDQRefusal(f"node {node.name} (Quant): {what} is computed at run time; QCDQ needs it constant")
    return np.asarray(val)


def check_quant_node(model: ModelWrapper, node) -> None:
    """Raise QCDQRefusal naming the node when ORT's QuantizeLinear/DequantizeLinear cannot reproduce it exactly."""
    scale = _static(model, node, 1, "scale")
    zero = _static(model, node, 2, "zero point")
    bits = _static(model, node, 3, "bit width")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    rounding = attrs.get("rounding_mode", b"ROUND")
    rounding = rounding.decode() if isinstance(rounding, bytes) else rounding
    if bits.size != 1 or float(bits.flat[0]) != int(bits.flat[0]):
        raise QCDQRefusal(f"node {node.name} (Quant): bit width {bits.tolist()} is not one integer")
    b = int(bits.flat[0])
    if not 2 <= b <= 8:
        raise QCDQRefusal(f"node {node.name} (Quant): {b}-bit; ORT's int8/uint8 QuantizeLinear holds 2..8 bits "
                          f"(lower this layer's bits, or run the QONNX executor instead)")
    if np.any(zero != 0):
        if np.any(zero != np.round(zero)):
            raise QCDQRefusal(f"node {node.name} (Quant): zero point {zero.flatten()[:4].tolist()} is not an integer; "
                              "the codes would not be integers")
    if rounding not in SUPPORTED_ROUNDING:
        raise QCDQRefusal(f"node {node.name} (Quant): rounding_mode {rounding}; QuantizeLinear only rounds half to even")
    if np.squeeze(scale).ndim > 1:
        raise QCDQRefusal(f"node {node.name} (Quant): scale of shape {list(scale.shape)} varies along several axes; "
                          "QuantizeLinear takes a scalar or one per-channel axis")
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
        raise QCDQRefusal(f"node {node.name} (Quant): scale must be positive and finite")


class CheckLowerable(Transformation):
    """Graph in: QONNX. Raises QCDQRefusal on the first node ORT cannot execute exactly; graph out unchanged."""

    def apply(self, model: ModelWrapper):
        quants = 0
        for node in model.graph.node:
            if node.op_type == "Quant":
                check_quant_node(model, node)
                quants += 1
            elif node.op_type == "MultiThreshold" and node.domain in QONNX_DOMAINS:
                check_threshold_node(model, node)
                quants += 1
            elif node.domain in QONNX_DOMAINS:
                raise QCDQRefusal(f"node {node.name} ({node.op_type}, domain {node.domain}): no QCDQ equivalent; "
                                  "only Quant and MultiThreshold nodes are lowered (BipolarQuant, Trunc are not)")
        if quants == 0:
            raise QCDQRefusal("no Quant or MultiThreshold nodes: this is not a QONNX model, nor FINN-ONNX (export "
                              "it with `python -m flow export`)")
        return model, False


def _attrs(node) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def check_threshold_node(model: ModelWrapper, node) -> np.ndarray:
    """A MultiThreshold's constant thresholds (C or 1, T), or QCDQRefusal naming the node."""
    t = model.get_initializer(node.input[1]) if len(node.input) > 1 else None
    if t is None:
        raise QCDQRefusal(f"node {node.name} (MultiThreshold): thresholds computed at run time; QCDQ needs constants")
    layout = _attrs(node).get("data_layout", "NCHW")
    shape = model.get_tensor_shape(node.input[0])
    if layout not in ("NCHW", "NHWC", "NC") or shape is None or len(shape) != len(layout):
        raise QCDQRefusal(f"node {node.name} (MultiThreshold): data_layout {layout} on an input of shape {shape}; "
                          "lowered are NCHW, NHWC and NC")
    t = np.asarray(t, np.float32)
    channels = shape[layout.index("C")]
    if t.ndim != 2 or t.shape[0] not in (1, channels):
        raise QCDQRefusal(f"node {node.name} (MultiThreshold): thresholds of shape {list(t.shape)} for {channels} "
                          "channels; one row per channel, or one row for all")
    return t


def threshold_nodes(node, x: str, out: str, t: np.ndarray, layout: str, rank: int):
    """MultiThreshold(x; t) -> out as standard ops: (nodes, initializers). The thresholds are compared in chunks of
    THRESHOLD_CHUNK (their counts summed), so no comparison tensor is T times the activation."""
    from onnx import TensorProto, helper, numpy_helper

    a = _attrs(node)
    p = node.name or out
    inits = [numpy_helper.from_array(np.array([-1], np.int64), f"{p}_last_axis")]
    xe = f"{p}_x"
    nodes = [helper.make_node("Unsqueeze", [x, f"{p}_last_axis"], [xe], name=f"{p}_unsqueeze")]
    c = t.shape[0]
    lead = [1, c] + [1] * (rank - 2) if layout.startswith("NC") else [1] * (rank - 1) + [c]
    total = None
    for k, start in enumerate(range(0, t.shape[1], THRESHOLD_CHUNK)):
        chunk = t[:, start : start + THRESHOLD_CHUNK]
        tn, ge, fl, cnt = f"{p}_thresholds{k}", f"{p}_ge{k}", f"{p}_ge{k}_float", f"{p}_count{k}"
        inits.append(numpy_helper.from_array(chunk.reshape(*lead, chunk.shape[1]), tn))
        nodes += [helper.make_node("GreaterOrEqual", [xe, tn], [ge], name=f"{p}_compare{k}"),
                  helper.make_node("Cast", [ge], [fl], to=TensorProto.FLOAT, name=f"{p}_cast{k}"),
                  helper.make_node("ReduceSum", [fl, f"{p}_last_axis"], [cnt], keepdims=0, name=f"{p}_count{k}")]
        if total is not None:
            nodes.append(helper.make_node("Add", [total, cnt], [f"{p}_total{k}"], name=f"{p}_sum{k}"))
            cnt = f"{p}_total{k}"
        total = cnt
    for op, key, neutral in (("Mul", "out_scale", 1.0), ("Add", "out_bias", 0.0)):
        v = float(a.get(key, neutral))
        if v != neutral:  # qonnx: count * out_scale + out_bias, in float32
            inits.append(numpy_helper.from_array(np.float32(v), f"{p}_{key}"))
            nodes.append(helper.make_node(op, [total, f"{p}_{key}"], [f"{p}_{key}_out"], name=f"{p}_{key}"))
            total = f"{p}_{key}_out"
    nodes.append(helper.make_node("Identity", [total], [out], name=f"{p}_out"))
    return nodes, inits


class LowerMultiThreshold(Transformation):
    """Graph in: MultiThreshold nodes (FINN-ONNX). Out: each as standard ops (`threshold_nodes`), the same values."""

    def apply(self, model: ModelWrapper):
        graph = model.graph
        for node in list(graph.node):
            if node.op_type != "MultiThreshold" or node.domain not in QONNX_DOMAINS:
                continue
            t = check_threshold_node(model, node)
            layout = _attrs(node).get("data_layout", "NCHW")
            nodes, inits = threshold_nodes(node, node.input[0], node.output[0], t, layout, len(layout))
            replace_node(graph, node, nodes, inits)
        return model, False


def replace_node(graph, node, nodes: list, inits: list) -> None:
    """`node` becomes `nodes` at its place in the graph (topological order kept), with their initializers."""
    at = list(graph.node).index(node)
    graph.node.remove(node)
    for k, n in enumerate(nodes):
        graph.node.insert(at + k, n)
    graph.initializer.extend(inits)


class LowerZeroPointQuant(Transformation):
    """Graph in: Quant nodes with a non-zero integer zero point (checked by `check_quant_node`). Out: each as qonnx's
    `int_quant` computes it, step for step in float32: Div(s) -> Add(z) -> Clip(min_int, max_int) -> Round -> Sub(z)
    -> Mul(s). Not QuantizeLinear(x, s, z), which rounds x / s and adds z after: on a tie (x / s = k + 0.5) half to
    even then lands on the other side for an odd z. Quants with zero point 0 are left to qonnx's QuantToQCDQ."""

    def apply(self, model: ModelWrapper):
        from onnx import helper, numpy_helper
        from qonnx.custom_op.general.intquant import max_int, min_int

        graph = model.graph
        for node in list(graph.node):
            if node.op_type != "Quant" or node.domain not in QONNX_DOMAINS:
                continue
            zero = np.asarray(model.get_initializer(node.input[2]), np.float32)
            if not np.any(zero != 0):
                continue
            check_quant_node(model, node)
            a = _attrs(node)
            signed, narrow = int(a.get("signed", 1)), int(a.get("narrow", 0))
            bits = int(np.asarray(model.get_initializer(node.input[3])).flat[0])
            p = node.name
            consts = {"scale": np.asarray(model.get_initializer(node.input[1]), np.float32), "zero_point": zero,
                      "min": np.float32(min_int(signed, narrow, bits)), "max": np.float32(max_int(signed, narrow, bits))}
            inits = [numpy_helper.from_array(np.asarray(v, np.float32), f"{p}_{k}") for k, v in consts.items()]
            steps = [("Div", "scale"), ("Add", "zero_point"), ("Clip", None), ("Round", None), ("Sub", "zero_point"),
                     ("Mul", "scale")]
            nodes, x = [], node.input[0]
            for k, (op, const) in enumerate(steps):
                y = node.output[0] if k == len(steps) - 1 else f"{p}_{op.lower()}"
                ins = [x, f"{p}_min", f"{p}_max"] if op == "Clip" else [x] + ([f"{p}_{const}"] if const else [])
                nodes.append(helper.make_node(op, ins, [y], name=f"{p}_{op.lower()}"))
                x = y
            replace_node(graph, node, nodes, inits)
        return model, False


class MakeBatchSymbolic(Transformation):
    """Graph in: fixed batch 1 on inputs/outputs. Out: batch dim `N`; intermediate shape annotations dropped."""

    def apply(self, model: ModelWrapper):
        for vi in list(model.graph.input) + list(model.graph.output):
            vi.type.tensor_type.shape.dim[0].ClearField("dim_value")
            vi.type.tensor_type.shape.dim[0].dim_param = "N"
        del model.graph.value_info[:]
        return model, False


class LowerQuantToQCDQ(Transformation):
    """Graph in: QONNX (Quant nodes). Out: standard ONNX with QuantizeLinear/Clip/DequantizeLinear, no custom ops."""

    def apply(self, model: ModelWrapper):
        from qonnx.transformation.qonnx_to_qcdq import QuantToQCDQ

        model = model.transform(CheckLowerable())
        opset = next((o for o in model.model.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset is not None and opset.version < MIN_OPSET:
            opset.version = MIN_OPSET
        model = model.transform(LowerMultiThreshold()).transform(LowerZeroPointQuant())
        if model.get_nodes_by_op_type("Quant"):
            model = model.transform(QuantToQCDQ())
        left = [n.name for n in model.graph.node if n.domain in QONNX_DOMAINS]
        if left:
            raise QCDQRefusal(f"QuantToQCDQ left {len(left)} node(s) unconverted: {', '.join(left[:5])}")
        # qonnx's datatype annotations mean nothing to ORT and trip onnx.utils.extract_model (layer isolation)
        del model.graph.quantization_annotation[:]
        keep = [o for o in model.model.opset_import if o.domain not in QONNX_DOMAINS]
        del model.model.opset_import[:]
        model.model.opset_import.extend(keep)
        return model.transform(MakeBatchSymbolic()), False


def lower_to_qcdq(in_path: Path, out_path: Path) -> Path:
    from flow.files import atomic_write_bytes

    model = load_onnx_model(in_path, ModelWrapper)
    try:
        model = model.transform(LowerQuantToQCDQ())
    except QCDQRefusal as e:
        raise QCDQRefusal(f"{in_path}: {e}") from None
    onnx.checker.check_model(model.model)
    atomic_write_bytes(Path(out_path), model.model.SerializeToString())
    from flow.provenance import record

    record(Path(out_path), [Path(in_path)], f"python -m flow qcdq {in_path} {out_path}")
    return Path(out_path)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow qcdq", description=__doc__.splitlines()[0])
    p.add_argument("qonnx", type=Path, help="cleaned QONNX file (model.qonnx.onnx)")
    p.add_argument("out", type=Path, help="QCDQ file to write (model.qcdq.onnx; with --integer model.int.onnx)")
    p.add_argument("--integer", action="store_true", help="lower FINN's integer semantics (streamlined model: "
                   "integer accumulators, thresholds) instead: the hardware's golden model, bit for bit "
                   "(manifest.json beside the QONNX file)")
    a = p.parse_args(argv)
    if a.integer:
        from flow.intonnx import lower_to_integer

        info = lower_to_integer(a.qonnx, a.out)
        worst = max(info["bounds"], key=lambda b: b["accumulator_bound"])
        print(f"wrote {a.out}: {info['layers']} integer layers; largest worst-case |accumulator| "
              f"{worst['accumulator_bound']} (layer {worst['layer']}) < 2^24: exact in float32")
        return 0
    lower_to_qcdq(a.qonnx, a.out)
    counts = {}
    for n in onnx.load(str(a.out)).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    q = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("QuantizeLinear", "Clip", "DequantizeLinear"))
    print(f"wrote {a.out}: {q}")
    return 0
