"""FINN's intermediate models as cross-check backends: each saved model executed in python (FINN's own executor),
one layer at a time where the cross-check isolates layers."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from flow.backends import Backend, check_input


class FinnPythonBackend(Backend):
    """A saved FINN intermediate model executed in python (specialised HW nodes renamed to generic ones)."""

    exact_integer = True

    def __init__(self, path: Path, name: str, manifest):
        from qonnx.core.modelwrapper import ModelWrapper

        from flow.hw.compat import init_finn, to_python_exec

        init_finn(Path(path).parents[1] / "tmp")
        self.path, self.name = Path(path), name
        self.model = to_python_exec(ModelWrapper(str(path)))
        self.manifest = manifest
        self.iname = self.model.graph.input[0].name
        self.start = None
        letterbox = next((n for n in self.model.graph.node if n.op_type == "StreamLetterbox"), None)
        if letterbox is not None:  # a frame build: the network from the letterbox's canvas (the reference's input)
            self.iname, self.start = letterbox.output[0], self.model.find_consumer(letterbox.output[0])
        self.oname = self.model.graph.output[0].name
        self.in_shape = self.model.get_tensor_shape(self.iname)
        self.out_shape = self.model.get_tensor_shape(self.oname)

    def run(self, x):
        from finn.core.onnx_exec import execute_onnx

        check_input(x, self.manifest.input.shape, self.name)
        out = []
        nchw_in = list(self.in_shape[1:]) == list(self.manifest.input.shape[1:])
        accel_out = list(self.out_shape[1:]) == list(self.manifest.output.accel_shape[1:])
        for i in range(len(x)):
            xi = x[i : i + 1] if nchw_in else x[i : i + 1].transpose(0, 2, 3, 1)
            y = execute_onnx(self.model, {self.iname: np.ascontiguousarray(xi)}, False, self.start)[self.oname]
            y = y.reshape(self.out_shape)
            if accel_out:  # integer codes, NHWC: the accelerator's boundary
                out.append(np.round(y).astype(np.int32).transpose(0, 3, 1, 2))
            else:  # before the boundary step: dequantized NCHW values
                out.append(np.round(y / self.manifest.output.scale).astype(np.int32))
        return np.concatenate(out)

    @functools.cached_property
    def activations(self) -> list:
        """The nodes that write each layer's codes, in graph order: thresholds, alone or inside an MVAU."""
        from qonnx.custom_op.registry import getCustomOp

        def writes_codes(n) -> bool:
            if n.op_type == "MultiThreshold" or n.op_type.startswith("Thresholding"):
                return True
            return n.op_type.startswith("MVAU") and getCustomOp(n).get_nodeattr("noActivation") == 0

        return [n for n in self.model.graph.node if writes_codes(n)]

    def _layer_span(self, index: int) -> tuple | None:
        """(first node, last node) of layer `index`: from just after the previous layer's max pool (or its
        activation, or the graph input) through its activation; tidy graphs start at the Conv and end on the
        dequantizing Add/Mul after the thresholds. None when the graph's layers do not line up with the index."""
        acts = self.activations
        if index >= len(acts):
            return None
        act, m = acts[index], self.model
        start = act
        while start.op_type != "Conv":
            prev = m.find_producer(start.input[0])
            if prev is None or prev in acts or prev.op_type == "Transpose" or "Pool" in prev.op_type:
                break
            start = prev
        end = act
        if start.op_type == "Conv":  # tidy: thresholds count from 0, an Add re-centres, a Mul dequantizes
            while (nxt := m.find_consumer(end.output[0])) is not None and nxt.op_type in ("Add", "Mul"):
                end = nxt
        return start, end

    def run_layer(self, layer, x):
        from finn.core.onnx_exec import execute_onnx

        span = self._layer_span(layer.index)
        if span is None:
            return None
        start, end = span
        feed = start.input[0]
        shape = self.model.get_tensor_shape(feed)
        tidy = start.op_type == "Conv"  # NCHW, dequantized values as in the reference
        out = []
        for xi in x:
            v = xi[None] if tidy else np.round(xi[None] / layer.in_scale).transpose(0, 2, 3, 1)
            ctx = execute_onnx(self.model, {feed: np.ascontiguousarray(v, np.float32).reshape(shape)}, True, start, end)
            y = np.asarray(ctx[end.output[0]], np.float64)
            out.append(y if tidy else y.transpose(0, 3, 1, 2) * layer.out_scale)  # NHWC codes -> NCHW values
        return np.concatenate(out)

    def info(self):
        return {"model": self.path.name, "executor": "finn python"}


CROSSCHECK_MODELS = {"finn-tidy": "tidy_up", "finn-streamlined": "boundary", "finn-hw": "fifo_depths"}


def crosscheck_backends(run_dir: Path, options: dict) -> list[Backend]:
    from flow.hw.build import check_build

    d = Path(run_dir) / "finn" / "intermediate_models"
    if not d.is_dir():
        return []
    check_build(run_dir)  # a build of an earlier model would be compared with this one's reference: refused
    out = []
    for name, step in CROSSCHECK_MODELS.items():
        found = sorted(d.glob(f"*_{step}.onnx"))
        if found:
            out.append(FinnPythonBackend(found[-1], name, options["manifest"]))
    return out
