"""`python -m flow import MODEL.onnx --out RUN`: a QONNX model made elsewhere (LPYOLO's training repo, the user's own
Brevitas code) becomes a run folder that `qcdq`, `crosscheck`, `estimate`, `fold`, `rtlsim` and `deploy` take as
they take our own exports.

What the flow needs and the graph does not say (anchors, classes, decode) comes from flags or LPYOLO's defaults,
and the command prints which. Everything else is read from the graph: input and output shapes and datatypes, the
input quantizer and the output quantizer's scale. The accelerator boundary takes raw UINT8 pixels, so a model
trained on float input in [0, 1] (the usual Brevitas export) is rewritten to take pixels: an input Quant that is the
identity on codes 0..255 (scale 1/255, checked for all 256) becomes a Mul by its scale that FINN's streamlining
folds into the first layer's thresholds; any other per-tensor input Quant (Brevitas's default one, its scale
calibrated on the training images) stays, behind a Mul by 1/255, and FINN's `input_thresholds` step builds it as
integer thresholds on the pixels (flow/hw/input_thresholds.py). One that no thresholds on pixels express is refused
with the reason. The rewritten model is checked against the user's own file, in the user's domain (pixels / 255),
code for code, before anything is written; the user's file is kept as `model.original.onnx` and the cross-check
runs it too (backend `original`).

FINN-ONNX graphs (MultiThreshold nodes and `finn_datatype` quantization annotations, as FINN's ConvertQONNXtoFINN
and Brevitas's older `export_finn_onnx` write them, e.g. LPYOLO's released models) enter the same way. Their output
is MultiThreshold [-> Add] -> Mul: the codes the board decodes are the threshold count plus the bias, the Mul's
scalar their scale. A float input's MultiThreshold gets its thresholds rewritten for the UINT8 pixels (each pixel
maps to the count the original gives pixel * factor; checked for all 256 pixels and every channel) or, where it is
the identity on them, is dropped. QCDQ lowers MultiThreshold to standard ops (flow/qcdq.py), so every backend but
Brevitas (there is no PyTorch model) runs them.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from qonnx.transformation.base import Transformation

from board.manifest import InputSpec, Manifest, OutputSpec, Packing
from board.postprocess import DECODE_VERSION
from flow.backends import QONNXBackend, load_onnx_model, to_codes
from flow.errors import FlowError
from flow.export import refuse_to_overwrite
from flow.files import atomic_write_bytes, sha256
from models.lpyolo import DEFAULT_ANCHORS, STRIDE

# What the rest of the flow maps: FINN streamlines these into thresholds and MVAUs, QCDQ lowers the Quants.
MAPPABLE_OPS = {"Quant", "MultiThreshold", "Conv", "BatchNormalization", "Relu", "MaxPool", "Mul", "Add", "Sub",
                "Div", "Transpose", "Reshape", "Identity", "Pad", "Constant", "Concat", "MatMul", "Gemm", "Flatten"}
CUSTOM_DOMAINS = {"Quant": ("qonnx.custom_op.general", "onnx.brevitas"),
                  "MultiThreshold": ("qonnx.custom_op.general", "finn.custom_op.general", "finn")}
WHY_NOT = {"Sigmoid": "a float activation: the accelerator computes only quantized activations (LPYOLO uses a "
                      "quantized HardTanh instead)"}
# what runs each kind of graph (`flow crosscheck`, `estimate`, `rtlsim`, the board); none has a PyTorch model
BACKENDS = {"QONNX": ["original", "qonnx", "qcdq-ort", "int-ort", "finn-tidy", "finn-streamlined", "finn-hw",
                      "rtlsim", "board"],
            "FINN-ONNX": ["original", "qonnx", "qcdq-ort (MultiThreshold as standard ops)", "int-ort", "finn-tidy",
                          "finn-streamlined", "finn-hw", "rtlsim", "board"]}
INPUT_RANGES = {"0-1": np.float32(1 / 255), "0-255": np.float32(1.0)}
CALIBRATED_SPAN = 0.25  # the least fraction of its input range an input quantizer's span is taken to cover
ORIGINAL = "model.original.onnx"
IMPORTED_RESAMPLE = "bilinear"  # what an imported model was trained on is unknown: the common resize


class ImportError_(FlowError):  # noqa: N801 - not the builtin ImportError
    pass


# ------------------------------------------------------------------------------------------------ reading
def mappable(model, path: Path) -> None:
    """Every node an op the flow can map, or an error naming the first few that are not, with their nodes."""
    bad = [n for n in model.graph.node if n.op_type not in MAPPABLE_OPS
           or (n.op_type in CUSTOM_DOMAINS and n.domain not in CUSTOM_DOMAINS[n.op_type])]
    if bad:
        lines = [f"node {n.name or '(unnamed)'!r}: {n.op_type}" + (f" ({WHY_NOT[n.op_type]})" if n.op_type in WHY_NOT
                 else f" (domain {n.domain or 'ai.onnx'})") for n in bad[:5]]
        raise ImportError_(f"{path}: {len(bad)} node(s) the flow cannot map (it takes {', '.join(sorted(MAPPABLE_OPS))}"
                           f"): " + "; ".join(lines))


def cleaned(proto: onnx.ModelProto, path: Path):
    """qonnx's own check: wrap, fix the batch at 1, clean up (shapes, datatypes, constants), then onnx's checker."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.util.cleanup import cleanup_model

    proto = onnx.ModelProto.FromString(proto.SerializeToString())  # a copy: the caller's stays as it was
    inits = {t.name for t in proto.graph.initializer}
    real = [i for i in proto.graph.input if i.name not in inits]  # older exporters list weights as inputs too
    if len(real) != len(proto.graph.input):
        del proto.graph.input[:]
        proto.graph.input.extend(real)
    for n in proto.graph.node:  # qonnx's cleanup renames nodes: errors name them as the user's file does
        n.doc_string = n.name
        if n.op_type == "MultiThreshold":  # older exporters' domain; qonnx executes (and FINN builds) it as its own
            n.domain = "qonnx.custom_op.general"
    if any(n.op_type == "MultiThreshold" for n in proto.graph.node) and not any(
            o.domain == "qonnx.custom_op.general" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("qonnx.custom_op.general", 1))
    if len(real) != 1 or len(proto.graph.output) != 1:
        raise ImportError_(f"{path}: the graph has {len(real)} inputs and {len(proto.graph.output)} "
                           "outputs; the accelerator takes one image in and gives one detection map out")
    try:
        model = cleanup_model(ModelWrapper(proto))
        dims = model.get_tensor_shape(model.graph.input[0].name)
        if dims and dims[0] != 1:
            model = cleanup_model(model.transform(ChangeBatchSize(1)))
        onnx.checker.check_model(model.model)
    except FlowError:
        raise
    except Exception as e:  # noqa: BLE001 - qonnx and onnx raise assorted types
        raise ImportError_(f"{path}: qonnx could not check the model ({type(e).__name__}: {e})") from e
    return model


def named(node) -> str:
    """The node's name in the user's file (kept by `cleaned`), else qonnx's."""
    return node.doc_string or node.name


def quant_params(model, node) -> dict:
    def const(i, what):
        v = model.get_initializer(node.input[i]) if len(node.input) > i else None
        if v is None:
            raise ImportError_(f"node {named(node)} (Quant): its {what} is computed at run time; it must be a constant")
        return np.asarray(v)

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {"scale": const(1, "scale"), "zero_point": const(2, "zero point"), "bits": float(const(3, "bit width")),
            "signed": bool(attrs.get("signed", 1)), "narrow": bool(attrs.get("narrow", 0)),
            "rounding": attrs.get("rounding_mode", b"ROUND")}


def graph_format(model) -> str:
    """FINN-ONNX (MultiThreshold activations) or QONNX (Quant nodes)."""
    return "FINN-ONNX" if model.get_nodes_by_op_type("MultiThreshold") else "QONNX"


def threshold_params(model, node) -> dict:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    t = model.get_initializer(node.input[1])
    if t is None:
        raise ImportError_(f"node {named(node)} (MultiThreshold): its thresholds are computed at run time; they must "
                           "be a constant")
    layout = attrs.get("data_layout", b"NCHW")
    return {"thresholds": np.asarray(t, np.float32), "out_scale": float(attrs.get("out_scale", 1.0)),
            "out_bias": float(attrs.get("out_bias", 0.0)),
            "out_dtype": (attrs.get("out_dtype", b"") or b"").decode() if isinstance(attrs.get("out_dtype", b""), bytes)
            else attrs.get("out_dtype", ""), "layout": layout.decode() if isinstance(layout, bytes) else layout}


def input_shape(model, path: Path) -> int:
    name = model.graph.input[0].name
    shape = model.get_tensor_shape(name)
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise ImportError_(f"{path}: input {name!r} has shape {shape}; the flow takes square RGB images, NCHW "
                           "(1, 3, S, S)")
    if shape[2] % STRIDE:
        raise ImportError_(f"{path}: input {name!r} is {shape[2]}x{shape[3]}, not a multiple of {STRIDE} (the detector "
                           f"has one stride-{STRIDE} head); re-export at e.g. {shape[2] // STRIDE * STRIDE or 32} or "
                           f"{(shape[2] // STRIDE + 1) * STRIDE}")
    return shape[2]


def output_thresholds(model, path: Path) -> tuple[dict, object]:
    """FINN-ONNX's output MultiThreshold [-> Add] [-> Mul]: the codes' bits, sign and scale, as output_quant's."""
    from qonnx.core.datatype import DataType

    out = model.graph.output[0].name
    node, scale, bias, chain = model.find_producer(out), 1.0, 0.0, []
    for op in ("Mul", "Add"):
        if node is not None and node.op_type == op:
            v = model.get_initializer(node.input[1])
            if v is None or np.asarray(v).size != 1:
                what = "a scale per channel" if v is not None else "an operand computed at run time"
                raise ImportError_(f"{path}: the output's {op} {named(node)} has {what} (shape "
                                   f"{list(np.shape(v)) if v is not None else '-'}); the board decodes the integer codes "
                                   "with one scalar scale, so the codes' scale and offset must be scalars")
            scale, bias = (float(np.asarray(v).reshape(-1)[0]), bias) if op == "Mul" else (scale, float(np.asarray(v).reshape(-1)[0]))
            chain.append(node)
            node = model.find_producer(node.input[0])
    if node is None or node.op_type != "MultiThreshold":
        raise ImportError_(f"{path}: the output {out!r} is not written by MultiThreshold [-> Add] [-> Mul] (it comes from "
                           f"{named(node) if node else 'nothing'}, {node.op_type if node else '-'}); the accelerator sends "
                           "the output activation's integer codes, so the graph must end in one")
    t = threshold_params(model, node)
    n = t["thresholds"].shape[1]
    lo = t["out_bias"] + bias
    if t["out_scale"] != 1.0 or lo != round(lo) or not np.isfinite(scale) or scale <= 0:
        raise ImportError_(f"{path}: output MultiThreshold {named(node)} has out_scale {t['out_scale']:g} and an offset "
                           f"{lo:g}, scale {scale:g}; the board decodes codes count + offset (an integer) times one "
                           "positive scale")
    lo, hi = int(lo), int(lo) + n
    declared = DataType[t["out_dtype"]] if t["out_dtype"] in DataType.__members__ else None
    bits = declared.bitwidth() if declared is not None and declared.is_integer() and declared.allowed(lo) and \
        declared.allowed(hi) else next(b for b in range(1, 33) if (-(2 ** (b - 1)) <= lo and hi < 2 ** (b - 1)
                                                               if lo < 0 else hi < 2 ** b))
    if bits > 8:
        raise ImportError_(f"{path}: output MultiThreshold {named(node)} gives codes {lo}..{hi} ({bits} bits); the board "
                           "takes at most 8")
    signed = lo < 0
    q = {"scale": np.float32(scale), "bits": float(bits), "signed": signed,
         "narrow": bool(signed and lo == -(2 ** (bits - 1)) + 1), "codes": (lo, hi),
         "meaning": f"the output MultiThreshold {named(node)}'s count {'+ ' + str(lo) + ' ' if lo else ''}= code; "
                    "value = code * scale"}
    return q, node


def output_quant(model, path: Path) -> tuple[dict, object]:
    out = model.graph.output[0].name
    node = model.find_producer(out)
    if graph_format(model) == "FINN-ONNX":
        return output_thresholds(model, path)
    if node is None or node.op_type != "Quant":
        raise ImportError_(f"{path}: the output {out!r} is written by {named(node) if node else 'nothing'} "
                           f"({node.op_type if node else '-'}), not by a Quant node; the accelerator sends the output "
                           "quantizer's integer codes, so the graph must end in one (e.g. LPYOLO's QuantHardTanh)")
    q = quant_params(model, node)
    if q["scale"].size != 1 or np.any(q["zero_point"] != 0) or q["bits"] > 8 or q["bits"] != int(q["bits"]):
        raise ImportError_(f"{path}: output quantizer {named(node)} has scale of size {q['scale'].size}, zero point "
                           f"{q['zero_point'].reshape(-1)[:3].tolist()}, {q['bits']} bits; the board decodes one "
                           "scalar scale, zero point 0, at most 8 bits")
    return q, node


# ------------------------------------------------------------------------------------------- the input side
def pixel_factor(model, input_range: str | None, path: Path) -> tuple[np.float32, str]:
    """How the model's input relates to pixels p in 0..255: x = p * factor; and how that was decided."""
    from qonnx.core.datatype import DataType

    name = model.graph.input[0].name
    dtype = model.get_tensor_datatype(name)
    if dtype == DataType["UINT8"]:
        if input_range not in (None, "0-255"):
            raise ImportError_(f"{path}: input {name!r} is declared UINT8 (pixels), but --input-range {input_range} "
                               "was given")
        return INPUT_RANGES["0-255"], "input declared UINT8 in the graph: raw pixels"
    if dtype.is_integer():
        raise ImportError_(f"{path}: input {name!r} is declared {dtype.name}; the accelerator takes UINT8 pixels")
    if input_range:
        return INPUT_RANGES[input_range], f"--input-range {input_range}"
    first = model.find_consumers(name)
    if len(first) == 1 and first[0].op_type in ("Quant", "MultiThreshold"):
        if first[0].op_type == "Quant":
            q = quant_params(model, first[0])
            top = float(np.asarray(q["scale"]).reshape(-1)[0]) * (2 ** int(q["bits"]) - 1)
        else:  # its largest threshold: half a step below the top of the range it quantizes
            top = float(threshold_params(model, first[0])["thresholds"].max())
        # a constant quantizer spans its training range; one Brevitas calibrated on the training images (its
        # default) spans what it saw of it, a little less (e.g. 0..0.91 for images in 0..1)
        for key, factor in INPUT_RANGES.items():
            if 255 * factor * CALIBRATED_SPAN <= top <= 255 * factor * 1.02:
                return factor, (f"float input; its quantizer {named(first[0])} spans 0..{top:.4g}, so the model was "
                                f"trained on pixels in {key.replace('-', '..')} (--input-range says otherwise)")
    raise ImportError_(f"{path}: input {name!r} is float and nothing in the graph says its range; pass --input-range "
                       "0-1 (pixels / 255, the usual Brevitas training) or 0-255 (raw pixels)")


class PixelInput(Transformation):
    """Graph in: float input x = p * factor [-> input Quant] -> rest. Graph out: UINT8 pixel input p -> the same
    function of p. A Quant that is the identity on pixel codes 0..255 becomes a Mul by its scale (FINN's
    streamlining folds it into the first layer's thresholds); any other becomes [Mul by factor] -> the user's Quant,
    which FINN's `input_thresholds` step turns into integer thresholds on the pixels (flow/hw/input_thresholds.py).
    One that no thresholds on pixels can express is refused with the reason."""

    def __init__(self, factor: np.float32):
        super().__init__()
        self.factor = np.float32(factor)
        self.notes: list[str] = []

    def apply(self, model):
        from qonnx.core.datatype import DataType

        from flow.hw.input_thresholds import input_chain, pixel_codes, pixel_thresholds

        name = model.graph.input[0].name
        consumers = model.find_consumers(name)
        scale = self.factor
        if len(consumers) == 1 and consumers[0].op_type == "MultiThreshold" and scale != 1:
            self.notes.append(pixel_thresholds_for(model, consumers[0], self.factor))
            scale = np.float32(1)
        elif len(consumers) == 1 and consumers[0].op_type == "Quant":
            q, node = quant_params(model, consumers[0]), consumers[0]
            s = np.asarray(q["scale"], np.float32).reshape(-1)
            p = np.arange(256, dtype=np.float32)
            from qonnx.custom_op.general.intquant import max_int, min_int

            lo, hi = (f(q["signed"], q["narrow"], int(q["bits"])) for f in (min_int, max_int))
            codes = np.clip(np.round(p * self.factor / s[0]), lo, hi) if s.size == 1 else None
            identity = codes is not None and not np.any(q["zero_point"] != 0) and np.array_equal(codes, p)
            if identity:
                out = node.output[0]
                model.graph.node.remove(node)
                for n in model.graph.node:
                    n.input[:] = [name if t == out else t for t in n.input]
                scale = np.float32(s[0])
                self.notes.append(f"input quantizer {named(node)} ({int(q['bits'])}-bit unsigned, scale {s[0]:.6g}) "
                                  "is the identity on pixel codes 0..255 (checked for all 256): replaced by a Mul by "
                                  f"{s[0]:.6g} on the UINT8 pixels, which FINN's streamlining folds into the first "
                                  "thresholds")
        if scale != 1:
            mul_out = model.make_new_valueinfo_name()
            init = model.make_new_valueinfo_name()
            model.set_initializer(init, np.asarray(scale, np.float32))
            for n in model.graph.node:
                n.input[:] = [mul_out if t == name else t for t in n.input]
            model.graph.node.insert(0, helper.make_node("Mul", [name, init], [mul_out], name="PixelScale"))
        chain = None if self.notes else input_chain(model)
        if chain is not None:
            node = chain[1]
            q = quant_params(model, node)
            try:
                codes, s = pixel_codes(model, *chain, label=named(node))
            except FlowError as e:
                raise ImportError_(f"{e}, so the UINT8 accelerator boundary cannot take pixels; re-export with one "
                                   "8-bit unsigned per-tensor input quantizer (e.g. Brevitas's default "
                                   "Uint8ActPerTensorFloat), or without one") from None
            levels = len(np.unique(codes))
            self.notes.append(f"input quantizer {named(node)} ({int(q['bits'])}-bit "
                              f"{'signed' if q['signed'] else 'unsigned'}, scale {s:.6g}, zero point "
                              f"{float(np.asarray(q['zero_point']).reshape(-1)[0]):g}) on the UINT8 pixels x "
                              f"{self.factor:.6g}: {levels} levels, non-decreasing in the pixel (checked for all "
                              f"256), so FINN's input_thresholds step builds it as {len(pixel_thresholds(codes))} "
                              "integer thresholds on the pixels")
        elif not self.notes and scale != 1:
            self.notes.append(f"float input in pixels x {scale:.6g}: a Mul by {scale:.6g} on the UINT8 pixels, "
                              "which FINN's streamlining folds into the first layer's thresholds")
        model.set_tensor_datatype(name, DataType["UINT8"])
        return model, False


def pixel_thresholds_for(model, node, factor: np.float32) -> str:
    """A MultiThreshold on the float input x = p * factor -> the same counts on the UINT8 pixels p: per channel, the
    count the original gives each pixel (qonnx's own `multithreshold`, in float32), as thresholds on p; the
    thresholds no pixel reaches stay (as 256), those every pixel reaches become 0. Where the count is the pixel
    itself (255 thresholds at half steps of factor), the node is dropped. Returns what was done."""
    from qonnx.custom_op.general.multithreshold import multithreshold

    from flow.hw.input_thresholds import PIXELS, pixel_thresholds

    t = threshold_params(model, node)
    thr = t["thresholds"]
    channels = model.get_tensor_shape(node.input[0])[1]
    x = (PIXELS * np.float32(factor)).astype(np.float32)
    rows = np.broadcast_to(thr, (channels, thr.shape[1])) if thr.shape[0] == 1 else thr
    counts = np.stack([multithreshold(x.reshape(1, 1, -1), r.reshape(1, -1))[0, 0] for r in rows]).astype(np.int64)
    n = thr.shape[1]
    if t["out_scale"] == 1.0 and t["out_bias"] == 0.0 and np.all(counts == PIXELS.astype(np.int64)):
        out = node.output[0]
        model.graph.node.remove(node)
        for c in model.graph.node:
            c.input[:] = [model.graph.input[0].name if i == out else i for i in c.input]
        return (f"input MultiThreshold {named(node)} ({n} thresholds) counts the pixel itself on pixels x {factor:.6g} "
                "(checked for all 256 and every channel): dropped, the UINT8 pixels go straight to the next node")
    new = np.stack([np.concatenate([np.zeros(c[0]), pixel_thresholds(c), np.full(n - c[-1], 256.0)]) for c in counts])
    new = new[:1] if thr.shape[0] == 1 else new
    model.set_initializer(node.input[1], new.astype(np.float32))
    return (f"input MultiThreshold {named(node)} ({n} thresholds) on float pixels x {factor:.6g}: thresholds rewritten "
            f"for the UINT8 pixels, {len(np.unique(counts))} levels (the same count for all 256 pixels and every "
            "channel); FINN builds it as a thresholding layer at the accelerator's input")


# ---------------------------------------------------------------------------------------------- the import
def agreement(original, imported, factor: np.float32, out_scale: float, img: int) -> dict:
    """The rewritten model on pixels against the user's model on its own inputs (pixels * factor), code for code."""
    from qonnx.core.onnx_exec import execute_onnx

    from flow.samples import sample_images, to_nchw_float

    x = to_nchw_float(sample_images(img, n_real=2, n_random=1, seed=0, resample=IMPORTED_RESAMPLE))
    names = [(m.graph.input[0].name, m.graph.output[0].name) for m in (original, imported)]
    a = np.concatenate([execute_onnx(original, {names[0][0]: xi[None] * factor})[names[0][1]] for xi in x])
    b = np.concatenate([execute_onnx(imported, {names[1][0]: xi[None]})[names[1][1]] for xi in x])
    ca, cb = to_codes(a, out_scale), to_codes(b, out_scale)
    return {"images": len(x), "codes": int(ca.size), "differing": int(np.sum(ca != cb)),
            "distinct_codes": int(len(np.unique(ca)))}


def import_model(path: Path, out: Path, anchors=None, classes: list[str] | None = None, input_range: str | None = None,
                 decode: str = DECODE_VERSION, force: bool = False) -> Manifest:
    """MODEL.onnx -> out/{model.qonnx.onnx, model.original.onnx, manifest.json}; every check before any write."""
    path, out = Path(path), Path(out)
    refuse_to_overwrite(out, ("model.qonnx.onnx", "manifest.json", "model.pt", ORIGINAL), force=force)
    if decode != DECODE_VERSION:
        raise ImportError_(f"--decode {decode!r}: this flow's board decodes {DECODE_VERSION} only")
    proto = load_onnx_model(path)
    source = path.read_bytes()  # before anything is written: the model may be imported in place
    made, kept = out / "model.qonnx.onnx", out / ORIGINAL
    if (kept.is_file() and made.is_file() and hashlib.sha256(source).hexdigest() != sha256(kept)
            and (path.resolve() == made.resolve() or hashlib.sha256(source).hexdigest() == sha256(made))):
        raise ImportError_(f"{path}: is the model `flow import` made in {out}, not the one you brought (kept as "
                           f"{kept}); importing it would replace that. Nothing was written: import the original, "
                           f"`python -m flow import {kept} --out {out}`")
    mappable(proto, path)
    original = cleaned(proto, path)
    img = input_shape(original, path)
    factor, why = pixel_factor(original, input_range, path)
    oq, onode = output_quant(original, path)
    t = PixelInput(factor)
    try:
        model = original.transform(t)  # transform() copies: `original` stays the user's graph
    except ImportError_ as e:
        raise ImportError_(f"{path}: {e}") from e
    from qonnx.core.datatype import DataType
    from qonnx.util.cleanup import cleanup_model

    # neutral parameter names first: cleanup renames parameters by node order, which the inserted node shifted, and
    # its own first pass renames only tensors with shape info, so `Quant_0_param0` could be taken twice
    for i, init in enumerate(list(model.graph.initializer)):
        model.rename_tensor(init.name, f"imported_param{i}")
    model = cleanup_model(model)
    model.set_tensor_datatype(model.graph.input[0].name, DataType["UINT8"])
    onnx.checker.check_model(model.model)

    anchors = [list(map(float, a)) for a in (anchors or DEFAULT_ANCHORS)]
    oshape = model.get_tensor_shape(model.graph.output[0].name)
    g = img // STRIDE
    per_anchor, rem = divmod(oshape[1] if len(oshape) == 4 else -1, len(anchors))
    if len(oshape) != 4 or oshape[2:] != [g, g] or rem or per_anchor < 6:
        raise ImportError_(f"{path}: output shape {oshape} is not (1, A*(5+C), {g}, {g}) for the {len(anchors)} anchors "
                           "(a stride-32 YOLO head); pass --anchors with as many pairs as the head has")
    n_classes = per_anchor - 5
    classes = classes or (["face"] if n_classes == 1 else [f"class{i}" for i in range(n_classes)])
    if len(classes) != n_classes:
        raise ImportError_(f"{path}: the head has {n_classes} classes but --classes names {len(classes)}")
    scale = float(np.asarray(oq["scale"]).reshape(-1)[0])
    check = agreement(original, model, factor, scale, img)
    if check["differing"]:
        raise ImportError_(f"{path}: the pixel-input rewrite differs from the model on {check['differing']} of "
                           f"{check['codes']} output codes; nothing was written (please report this model)")
    bits = int(oq["bits"])
    data = model.model
    from flow.export import _strip_metadata

    _strip_metadata(data)
    from flow.provenance import record
    from flow.runlock import run_lock

    command = f"python -m flow import {path} --out {out}"
    with run_lock(out, command, create=True):
        qonnx_path = out / "model.qonnx.onnx"
        atomic_write_bytes(out / ORIGINAL, source)
        record(out / ORIGINAL, [], command, source=str(path.resolve()))
        atomic_write_bytes(qonnx_path, data.SerializeToString())
        record(qonnx_path, [out / ORIGINAL], command, source=f"imported:{path.name}")
        removed = [n for n in ("model.pt", "model.qcdq.onnx") if (out / n).exists()]
        for stale in removed:  # the replaced model's: the cross-check would run them as this one
            (out / stale).unlink()
        notes = t.notes or ["the input is used as it is (raw pixels)"]
        fmt = graph_format(original)
        manifest = Manifest(
            variant="imported-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem), spec=None, spec_hash=None,
            input=InputSpec(size=img, resample=IMPORTED_RESAMPLE, name=model.graph.input[0].name),
            output=OutputSpec(grid=g, channels=oshape[1], bits=bits, signed=bool(oq["signed"]), narrow=bool(oq["narrow"]),
                              scale=scale, name=model.graph.output[0].name,
                              meaning=oq.get("meaning", f"the output quantizer {named(onode)}'s value = code * scale")),
            anchors=anchors, stride=STRIDE, classes=classes, decode=decode,
            packing=Packing(input_bits=8, output_bits=bits, output_container="int8" if oq["signed"] else "uint8"),
            files={"qonnx": {"path": qonnx_path.name, "sha256": sha256(qonnx_path)},
                   "original": {"path": ORIGINAL, "sha256": sha256(out / ORIGINAL)}},
            source=f"imported:{path.name}",
            imported={"from": str(path.resolve()), "sha256": hashlib.sha256(source).hexdigest(), "format": fmt,
                      "backends": BACKENDS[fmt], "input_domain": why,
                      "pixel_factor": float(factor), "input_rewrite": notes,
                      "defaults": {k: v for k, v in (("anchors", anchors), ("classes", classes), ("decode", decode))},
                      "check": {**check, "what": "model.qonnx.onnx on pixels vs the original on pixels * pixel_factor"},
                      "removed": removed},
        )
        manifest.write(out / "manifest.json")
        record(out / "manifest.json", [qonnx_path], command)
        return manifest


# ------------------------------------------------------------------------------ the original in the cross-check
class OriginalBackend(QONNXBackend):
    """The user's own file, untouched, on its own inputs (pixels * the manifest's pixel factor)."""

    def __init__(self, run_dir: Path, manifest: Manifest):
        super().__init__(Path(run_dir) / ORIGINAL, manifest, name="original")
        self.model = cleaned(self.model.model, self.path)
        self.iname, self.oname = self.model.graph.input[0].name, self.model.graph.output[0].name
        self.factor = np.float32(manifest.imported["pixel_factor"])

    def _exec(self, x1, full=False):
        return super()._exec(np.asarray(x1 * self.factor, np.float32), full)

    def tensors(self, x):
        return None  # its tensors carry the user's graph's names, which do not line up with the rewritten one's

    def run_layer(self, layer, x):
        return None

    def info(self):
        return {"file": str(self.path), "inputs": f"pixels * {self.factor:.6g}"}


def crosscheck_backends(run_dir: Path, options: dict) -> list:
    m = options["manifest"]
    return [OriginalBackend(run_dir, m)] if m.imported and (Path(run_dir) / ORIGINAL).exists() else []


# ----------------------------------------------------------------------------------------------------- CLI
def _anchors(text: str) -> list[list[float]]:
    try:
        v = [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        v = []
    if not v or len(v) % 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give w,h pairs, e.g. 10,14,23,27,37,58")
    return [v[i : i + 2] for i in range(0, len(v), 2)]


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow import", description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="QONNX file (e.g. from brevitas.export.export_qonnx) or FINN-ONNX "
                   "(MultiThreshold; FINN's ConvertQONNXtoFINN, brevitas.onnx.export_finn_onnx)")
    p.add_argument("--out", type=Path, required=True, help="run folder to create")
    p.add_argument("--anchors", type=_anchors, help=f"w,h pairs in input pixels (default LPYOLO's "
                   f"{','.join(f'{w:g},{h:g}' for w, h in DEFAULT_ANCHORS)})")
    p.add_argument("--classes", help="comma-separated class names (default: face for one class)")
    p.add_argument("--input-range", choices=sorted(INPUT_RANGES), help="what the model was trained on: 0-1 (pixels/255)"
                   " or 0-255; default: the graph's input datatype or input quantizer")
    p.add_argument("--decode", default=DECODE_VERSION, help=f"output decode (default and only: {DECODE_VERSION})")
    p.add_argument("--force", action="store_true", help="replace a model/manifest in --out the flow did not write")
    a = p.parse_args(argv)
    m = import_model(a.model, a.out, a.anchors, a.classes.split(",") if a.classes else None, a.input_range, a.decode,
                     a.force)
    imp = m.imported
    said = lambda key, flag: "given" if flag else "default, --" + key  # noqa: E731
    print(f"imported {a.model} ({imp['format']}) -> {a.out / 'model.qonnx.onnx'} + manifest.json ({m.variant})")
    print(f"  input  {m.input.shape} UINT8 pixels; {imp['input_domain']}")
    for note in imp["input_rewrite"]:
        print(f"         {note}")
    print(f"  output {m.output.shape} {m.output.datatype}, scale {m.output.scale:.6g}")
    print(f"  anchors {m.anchors} ({said('anchors', a.anchors)}), stride {m.stride}, classes {m.classes} "
          f"({said('classes', a.classes)}), decode {m.decode} ({said('decode', a.decode != DECODE_VERSION)})")
    c = imp["check"]
    print(f"  checked: {c['codes']} output codes on {c['images']} images equal the original's on its own inputs "
          f"(pixels x {imp['pixel_factor']:.6g}); {c['distinct_codes']} distinct codes")
    print(f"  runs on: {', '.join(imp['backends'])} (not Brevitas: no PyTorch model)")
    if imp["removed"]:
        print(f"  removed the replaced model's {', '.join(imp['removed'])} from {a.out}")
    return 0
