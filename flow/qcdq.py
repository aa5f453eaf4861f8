"""QONNX -> QCDQ (QuantizeLinear -> Clip -> DequantizeLinear) for ONNX Runtime, from the cleaned QONNX file.

Wraps qonnx's `QuantToQCDQ`, which silently leaves alone every Quant it cannot express; here each such node is
refused up front with its name and the reason, so a QCDQ file is either exact or not written at all.
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
        raise QCDQRefusal(f"node {node.name} (Quant): non-zero zero point {zero.flatten()[:4].tolist()}; "
                          "Quant and QuantizeLinear define the offset differently, so it would not be exact")
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
            elif node.domain in QONNX_DOMAINS:
                raise QCDQRefusal(f"node {node.name} ({node.op_type}, domain {node.domain}): no QCDQ equivalent; "
                                  "only Quant nodes are lowered (BipolarQuant, Trunc, MultiThreshold are not)")
        if quants == 0:
            raise QCDQRefusal("no Quant nodes: this is not a QONNX model (export it with `python -m flow export`)")
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
