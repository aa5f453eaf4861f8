"""FINN's integer semantics as a standard ONNX file (model.int.onnx): the golden model of the hardware for ORT.

The float graphs (QONNX, QCDQ) round `acc * scale + bias`; FINN's hardware compares an integer accumulator with
integer thresholds. Where a float sum lands on a rounding tie the two may differ by one code, and the difference
propagates. This lowering starts from FINN's streamlined model (the build's own steps, up to the accelerator
boundary: integer weights, integer-valued tensors, MultiThreshold) and writes it with standard ops only:

- Im2Col + MatMul -> Conv (MatMul alone -> 1x1 Conv) on float32 holding integers. Exact while every partial sum
  stays below 2^24 in magnitude; the worst case (sum of |w| times the input's largest magnitude, per output channel)
  is checked for every layer and a layer that could exceed it is refused by name.
- MultiThreshold -> x >= thresholds (GreaterOrEqual), counted (Cast + ReduceSum), times out_scale plus out_bias:
  FINN's definition (qonnx.custom_op.general.multithreshold: the count of thresholds x is greater than or equal
  to), on the same float32 thresholds.
- MaxPoolNHWC -> MaxPool; Mul/Add by constants stay as they are.

The graph runs in NCHW from the same input as the QCDQ file (N, 3, H, W pixel values) and writes the same output
(codes times the output scale, NCHW), so it can stand in for model.qcdq.onnx wherever that is run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from flow.errors import FlowError

EXACT_LIMIT = 2**24  # float32 holds every integer of magnitude <= 2^24
THRESHOLD_CHUNK = 32  # thresholds compared at once: bounds the (N, C, H, W, chunk) comparison tensor at 416x416
OPSET = 17


class IntegerRefusal(FlowError):
    pass


def streamlined_model(qonnx_path: Path):
    """The run's model after FINN's steps up to the accelerator boundary (as `flow estimate` makes
    finn/intermediate_models/NN_boundary.onnx), computed in memory with the build's own step functions."""
    import contextlib
    import io

    from qonnx.core.modelwrapper import ModelWrapper

    from board.manifest import load_manifest
    from flow.backends import load_onnx_model
    from flow.hw.compat import init_finn
    from flow.hw.steps import STEPS, FinnConfig, StepContext, dataflow_cfg

    qonnx_path = Path(qonnx_path)
    run_dir = qonnx_path.parent
    manifest = load_manifest(run_dir)
    model = load_onnx_model(qonnx_path, ModelWrapper)
    with tempfile.TemporaryDirectory(prefix="lpyolo-intonnx-") as td:
        init_finn(Path(td))
        cfg = FinnConfig(run_dir=str(run_dir))
        ctx = StepContext(cfg, dataflow_cfg(cfg, cfg.target_fps), manifest)
        names = list(STEPS)
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                for name in names[: names.index("boundary") + 1]:  # the build's own steps, in its order
                    model = STEPS[name](model, ctx)
        except FlowError as e:
            raise IntegerRefusal(f"{qonnx_path}: {e}") from None
        except Exception as e:  # noqa: BLE001 - FINN raises assorted types; name the file and keep the cause
            raise IntegerRefusal(f"{qonnx_path}: FINN cannot streamline it ({type(e).__name__}: {e}); "
                                 "no integer semantics to lower") from e
    return model, manifest


def accumulator_bound(weights: np.ndarray, in_dtype) -> int:
    """Largest |partial sum| a MatMul of integer weights (K, C_out) can reach on inputs of `in_dtype`."""
    x_max = max(abs(int(in_dtype.min())), abs(int(in_dtype.max())))
    return int(np.abs(weights.astype(np.float64)).sum(axis=0).max(initial=0) * x_max)


def _attrs(node) -> dict:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


class _Lowering:
    """One pass over the streamlined graph (NHWC tensors) writing the NCHW standard-ONNX graph."""

    def __init__(self, model, manifest: dict, where: str):
        self.m, self.manifest, self.where = model, manifest, where
        self.nodes, self.inits = [], []
        self.nchw: dict[str, str] = {}  # streamlined tensor -> its NCHW counterpart in the new graph
        self.im2col: dict[str, object] = {}  # Im2Col output -> the node (folded into the Conv that reads it)
        self.layer = 0
        self.bounds: list[dict] = []
        # tensors still NCHW in the streamlined graph: its input, and a thresholding layer on it before the
        # NCHW -> NHWC transpose (an input quantizer as thresholds on the pixels, a FINN-ONNX input MultiThreshold)
        self.native: set[str] = set()

    def refuse(self, node, why: str):
        raise IntegerRefusal(f"{self.where}: node {node.name} ({node.op_type}): {why}")

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def src(self, node, tensor: str) -> str:
        if tensor not in self.nchw:
            self.refuse(node, f"input {tensor} is not an NHWC activation this lowering knows")
        return self.nchw[tensor]

    def lower(self) -> onnx.ModelProto:
        m = self.m
        gin = m.graph.input[0]
        in_shape = m.get_tensor_shape(gin.name)
        if list(in_shape[1:]) != list(self.manifest.input.shape[1:]):
            raise IntegerRefusal(f"{self.where}: streamlined input {in_shape} is not the manifest's NCHW "
                                 f"{self.manifest.input.shape}")
        self.nchw[gin.name] = gin.name
        self.native.add(gin.name)
        for node in m.graph.node:
            getattr(self, f"op_{node.op_type}", lambda n: self.refuse(n, "no standard-ONNX lowering for this op"))(node)
        gout = m.graph.output[0].name
        want = list(self.manifest.output.accel_shape[1:])
        if list(m.get_tensor_shape(gout)[1:]) != want:
            raise IntegerRefusal(f"{self.where}: streamlined output {m.get_tensor_shape(gout)} is not the "
                                 f"accelerator's NHWC codes {want}")
        scale = self.const("output_scale", np.float32(self.manifest.output.scale))
        self.nodes.append(helper.make_node("Mul", [self.nchw[gout], scale], ["values"], name="output_scale"))
        c, h, w = self.manifest.output.shape[1:]
        graph = helper.make_graph(
            self.nodes, "lpyolo_integer",
            [helper.make_tensor_value_info(gin.name, TensorProto.FLOAT, ["N", *in_shape[1:]])],
            [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["N", c, h, w])], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="lpyolo-flow intonnx")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model

    # ---------------------------------------------------------------------------------------------- ops
    def op_Transpose(self, node):
        if node.input[0] not in self.native or _attrs(node).get("perm") != [0, 2, 3, 1]:
            self.refuse(node, "only the input's NCHW -> NHWC transpose is expected in a streamlined graph")
        self.nchw[node.output[0]] = self.nchw[node.input[0]]  # the new graph stays in NCHW

    def op_Im2Col(self, node):
        a = _attrs(node)
        if a.get("depthwise", 0):
            self.refuse(node, "depthwise Im2Col has no lowering here")
        if a.get("pad_value", 0) != 0:
            self.refuse(node, f"pads with {a['pad_value']}; Conv pads with 0")
        self.src(node, node.input[0])
        self.im2col[node.output[0]] = node

    def op_MatMul(self, node):
        m = self.m
        w = m.get_initializer(node.input[1])
        if w is None:
            self.refuse(node, "weights computed at run time")
        if not np.array_equal(w, np.round(w)):
            self.refuse(node, "non-integer weights: the accumulator would not be an integer")
        conv = self.im2col.get(node.input[0])
        x = conv.input[0] if conv is not None else node.input[0]
        dt = m.get_tensor_datatype(node.input[0])
        if not dt.is_integer():
            self.refuse(node, f"input datatype {dt.name} is not an integer type")
        bound = accumulator_bound(w, dt)
        self.bounds.append({"layer": self.layer, "node": node.name, "accumulator_bound": bound})
        if bound >= EXACT_LIMIT:
            self.refuse(node, f"layer {self.layer}: worst-case |accumulator| {bound} >= 2^24 ({dt.name} inputs, "
                        "these weights): float32 Conv would not be exact; lower the weight or activation bits")
        cout = w.shape[1]
        if conv is not None:
            a = _attrs(conv)
            kh, kw = a["kernel_size"]
            cin = w.shape[0] // (kh * kw)
            # FINN's Im2Col orders a window as (kh, kw, c): W_matmul[(i*kw + j)*cin + c, o]
            weight = w.reshape(kh, kw, cin, cout).transpose(3, 2, 0, 1)
            conv_attrs = {"kernel_shape": [kh, kw], "strides": a.get("stride", [1, 1]),
                          "pads": a.get("pad_amount", [0, 0, 0, 0]), "dilations": a.get("dilations", [1, 1])}
        else:
            if len(m.get_tensor_shape(node.input[0])) != 4:
                self.refuse(node, "a MatMul on a non-4D tensor has no Conv lowering here")
            weight = w.T.reshape(cout, w.shape[0], 1, 1)
            conv_attrs = {"kernel_shape": [1, 1]}
        wname = self.const(f"conv{self.layer}_weight", weight.astype(np.float32))
        out = f"conv{self.layer}_acc"
        self.nodes.append(helper.make_node("Conv", [self.src(node, x), wname], [out], name=f"conv{self.layer}",
                                           **conv_attrs))
        self.nchw[node.output[0]] = out
        self.layer += 1

    def op_MultiThreshold(self, node):
        a = _attrs(node)
        native = node.input[0] in self.native and a.get("data_layout", "NCHW") == "NCHW"
        if a.get("data_layout", "NCHW") != "NHWC" and not native:
            self.refuse(node, f"data_layout {a.get('data_layout')}; the streamlined activations are NHWC")
        t = self.m.get_initializer(node.input[1])
        if t is None:
            self.refuse(node, "thresholds computed at run time")
        t = np.asarray(t, np.float32)
        c = self.m.get_tensor_shape(node.input[0])[1 if native else -1]
        if native:
            self.native.add(node.output[0])
        if t.shape[0] not in (1, c):
            self.refuse(node, f"thresholds of shape {list(t.shape)} for {c} channels")
        x = self.src(node, node.input[0])
        i = self.layer - 1
        xe = f"act{i}_x"
        self.nodes.append(helper.make_node("Unsqueeze", [x, self.const(f"act{i}_axis", np.array([-1], np.int64))],
                                           [xe], name=f"act{i}_unsqueeze"))
        total = None
        for k, start in enumerate(range(0, t.shape[1], THRESHOLD_CHUNK)):
            chunk = t[:, start : start + THRESHOLD_CHUNK]
            tn = self.const(f"act{i}_thresholds{k}", chunk.reshape(1, chunk.shape[0], 1, 1, chunk.shape[1]))
            ge, fl, cnt = f"act{i}_ge{k}", f"act{i}_ge{k}_f", f"act{i}_count{k}"
            self.nodes += [
                helper.make_node("GreaterOrEqual", [xe, tn], [ge], name=f"act{i}_compare{k}"),
                helper.make_node("Cast", [ge], [fl], to=TensorProto.FLOAT, name=f"act{i}_cast{k}"),
                helper.make_node("ReduceSum", [fl, self.const(f"act{i}_sum_axis{k}", np.array([-1], np.int64))],
                                 [cnt], keepdims=0, name=f"act{i}_count{k}")]
            if total is not None:
                self.nodes.append(helper.make_node("Add", [total, cnt], [f"act{i}_total{k}"], name=f"act{i}_add{k}"))
                cnt = f"act{i}_total{k}"
            total = cnt
        scale, bias = float(a.get("out_scale", 1.0)), float(a.get("out_bias", 0.0))
        if scale != 1.0:
            self.nodes.append(helper.make_node("Mul", [total, self.const(f"act{i}_out_scale", np.float32(scale))],
                                               [f"act{i}_scaled"], name=f"act{i}_out_scale"))
            total = f"act{i}_scaled"
        if bias != 0.0:
            self.nodes.append(helper.make_node("Add", [total, self.const(f"act{i}_out_bias", np.float32(bias))],
                                               [f"act{i}_biased"], name=f"act{i}_out_bias"))
            total = f"act{i}_biased"
        self.nodes.append(helper.make_node("Identity", [total], [f"act{i}"], name=f"act{i}"))
        self.nchw[node.output[0]] = f"act{i}"

    def op_MaxPoolNHWC(self, node):
        a = _attrs(node)
        out = f"{node.name}_nchw"
        self.nodes.append(helper.make_node(
            "MaxPool", [self.src(node, node.input[0])], [out], name=node.name, kernel_shape=a["kernel_shape"],
            strides=a.get("strides", a["kernel_shape"]), pads=a.get("pads", [0, 0, 0, 0]),
            ceil_mode=a.get("ceil_mode", 0)))
        self.nchw[node.output[0]] = out

    def _elementwise(self, node):
        const = self.m.get_initializer(node.input[1])
        if const is None:
            self.refuse(node, "only a constant second operand is lowered")
        const = np.asarray(const, np.float32)
        c = self.m.get_tensor_shape(node.input[0])[-1]
        if node.input[0] in self.native:  # before the input's transpose: NCHW, a scalar stays as it is
            if const.size != 1:
                self.refuse(node, f"constant of shape {list(const.shape)} on the NCHW input; only a scalar is lowered")
            self.native.add(node.output[0])
        elif const.size == c and const.size > 1 and all(d == 1 for d in const.shape[:-1]):
            const = const.reshape(1, c, 1, 1)  # per channel, NHWC -> NCHW
        elif const.size != 1:
            self.refuse(node, f"constant of shape {list(const.shape)} is neither scalar nor per channel")
        out = f"{node.name}_nchw"
        self.nodes.append(helper.make_node(node.op_type, [self.src(node, node.input[0]),
                                                          self.const(f"{node.name}_const", const)], [out], name=node.name))
        self.nchw[node.output[0]] = out

    op_Mul = op_Add = _elementwise


def lower_to_integer(qonnx_path: Path, out_path: Path) -> dict:
    """Write the integer golden model of qonnx_path (its run folder's manifest.json beside it) to out_path;
    returns {"layers": n, "bounds": [per layer: worst-case |accumulator|]}. Nothing is written when refused."""
    from flow.files import atomic_write_bytes
    from flow.provenance import record

    qonnx_path, out_path = Path(qonnx_path), Path(out_path)
    model, manifest = streamlined_model(qonnx_path)
    low = _Lowering(model, manifest, str(qonnx_path))
    proto = low.lower()
    atomic_write_bytes(out_path, proto.SerializeToString())
    record(out_path, [qonnx_path, qonnx_path.parent / "manifest.json"], integer_command(qonnx_path, out_path))
    return {"layers": low.layer, "bounds": low.bounds}


def integer_command(qonnx_path: Path, out_path: Path) -> str:
    return f"python -m flow qcdq --integer {qonnx_path} {out_path}"


def check_integer_model(run_dir: Path, path: Path) -> None:
    """model.int.onnx must be made from the run's current model and manifest (else a StaleError says what to run)."""
    from flow.provenance import check

    qonnx = Path(run_dir) / "model.qonnx.onnx"
    check(Path(path), [qonnx, Path(run_dir) / "manifest.json"], integer_command(qonnx, Path(path)))

