"""The accelerator boundary as a graph transformation (as LPYOLO's released driver,
github.com/sefaburakokcu/finn-quantized-yolo, scales the INT8 output on the ARM): after streamlining, the trailing scalar Mul (the
output scale) and the trailing Transpose (NHWC->NCHW) move to the host, where manifest.json already records them;
otherwise FINN would build an ElementwiseMul (float) and a Shuffle for them."""

from __future__ import annotations

import numpy as np

from flow.errors import FlowError


class MoveOutputScaleAndLayoutToHost:
    """Graph in: ... MultiThreshold -> [Transpose NHWC->NCHW] -> [Mul by scalar] -> output.
    Graph out: ... MultiThreshold -> output (integer codes, NHWC). Records the removed scale for checking."""

    def __init__(self, expected_scale: float):
        self.expected_scale = expected_scale
        self.removed: list[str] = []

    def apply(self, model):
        out = model.graph.output[0]
        node = model.find_producer(out.name)
        if node is None or node.op_type not in ("Mul", "Transpose"):
            return model, False
        if node.op_type == "Mul":
            scale = model.get_initializer(node.input[1])
            if scale is None or np.asarray(scale).size != 1:
                raise FlowError(f"FINN graph ends in {node.name} (Mul) by a non-scalar: cannot move it to the host")
            if not np.isclose(float(np.asarray(scale).reshape(-1)[0]), self.expected_scale, rtol=1e-6):
                raise FlowError(f"FINN graph's output scale {float(np.asarray(scale).reshape(-1)[0])} differs from "
                                f"manifest.json's {self.expected_scale}: the manifest is not this model's")
        elif list(node.attribute[0].ints) != [0, 3, 1, 2]:
            return model, False
        src = node.input[0]
        model.graph.node.remove(node)
        for n in model.graph.node:  # rewire the producer of src to write the graph output
            n.output[:] = [out.name if t == src else t for t in n.output]
        shape = model.get_tensor_shape(out.name) if node.op_type == "Mul" else None
        dtype = model.get_tensor_datatype(src)
        if node.op_type == "Transpose":
            import qonnx.core.data_layout as layout

            model.set_tensor_shape(out.name, model.get_tensor_shape(src))
            model.set_tensor_layout(out.name, layout.NHWC)  # else standalone thresholding sees NHWC in, NCHW out
        elif shape is not None:
            model.set_tensor_shape(out.name, shape)
        model.set_tensor_datatype(out.name, dtype)
        self.removed.append(f"{node.name} ({node.op_type})")
        return model, True  # run again: the Transpose sits before the Mul
