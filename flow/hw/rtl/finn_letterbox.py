"""`StreamLetterbox`: the letterbox in the fabric as a FINN custom op at the accelerator's input.

Where the manifest sets `input.frame` (width, height), the accelerator reads the camera's whole frame (NHWC UINT8,
one RGB pixel per 24-bit beat) and `lpyolo_letterbox.sv` resizes it into the network's size x size canvas in front
of FINN's dataflow. `InsertStreamLetterbox` puts the node at the graph input (the build step `letterbox`, after
`convert_to_hw`); FINN's SpecializeLayers turns it into `StreamLetterbox_rtl`, whose wrapper and Vivado IPI commands
follow the max pool's (`finn_op.py`). Its python execution is `board.preprocess.letterbox_fixed`, the bit-exact
specification of the RTL; its estimates are `flow.hw.rtl.letterbox.Letterbox`'s.
"""

from __future__ import annotations

import numpy as np
from finn.custom_op.fpgadataflow.hwcustomop import HWCustomOp
from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend
from qonnx.core.datatype import DataType
from qonnx.transformation.base import Transformation

from flow.errors import FlowError
from flow.hw.rtl.finn_op import WrappedRTL
from flow.hw.rtl.letterbox_model import SOURCE, Letterbox

FRAME_INPUT = "frame"  # the accelerator's input tensor in a frame build


class StreamLetterbox(HWCustomOp):
    """(1, H, W, 3) UINT8 camera frame -> (1, SIZE, SIZE, 3) UINT8 letterboxed canvas, one RGB pixel per beat."""

    def get_nodeattr_types(self):
        return {"FrameDim": ("ints", True, []), "Size": ("i", True, 0), **super().get_nodeattr_types()}

    def model(self) -> Letterbox:
        h, w = self.get_nodeattr("FrameDim")
        return Letterbox(W=w, H=h, SIZE=self.get_nodeattr("Size"))

    def get_input_datatype(self, ind=0):
        return DataType["UINT8"]

    def get_output_datatype(self, ind=0):
        return DataType["UINT8"]

    def get_normal_input_shape(self, ind=0):
        h, w = self.get_nodeattr("FrameDim")
        return (1, h, w, 3)

    def get_normal_output_shape(self, ind=0):
        s = self.get_nodeattr("Size")
        return (1, s, s, 3)

    def get_folded_input_shape(self, ind=0):
        return (*self.get_normal_input_shape()[:-1], 1, 3)

    def get_folded_output_shape(self, ind=0):
        return (*self.get_normal_output_shape()[:-1], 1, 3)

    def get_instream_width(self, ind=0):
        return 24  # lpyolo_letterbox.sv's in0_V: R in bits 7:0, G 15:8, B 23:16

    def get_outstream_width(self, ind=0):
        return 24

    def get_number_output_values(self):
        return int(np.prod(self.get_folded_output_shape()[:-1]))

    def get_exp_cycles(self):
        return self.model().cycles()

    def lut_estimation(self, fpgapart=None):
        return self.model().resources()["LUT"]

    def bram_estimation(self, fpgapart=None):
        return self.model().resources()["BRAM_18K"]

    def dsp_estimation(self, fpgapart=None):
        return self.model().resources()["DSP"]

    def infer_node_datatype(self, model):
        model.set_tensor_datatype(self.onnx_node.output[0], DataType["UINT8"])

    def verify_node(self):
        self.model()  # raises FlowError naming what cannot be built
        return ["StreamLetterbox: attributes valid"]

    def execute_node(self, context, graph):
        x = np.asarray(context[self.onnx_node.input[0]]).reshape(self.get_normal_input_shape())
        if x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x)):
            raise FlowError(f"{self.onnx_node.name}: the frame holds values that are not UINT8 pixels")
        context[self.onnx_node.output[0]] = self.model().execute(x.astype(np.uint8)).astype(np.float32)


class StreamLetterbox_rtl(WrappedRTL, StreamLetterbox, RTLBackend):  # noqa: N801 - FINN's naming rule for RTL variants
    """The RTL variant: `lpyolo_letterbox.sv` and its wrapper, its geometry from letterbox_geometry (the model's
    params)."""

    GENERIC, SOURCE, MODULE = StreamLetterbox, SOURCE, "lpyolo_letterbox"


class InsertStreamLetterbox(Transformation):
    """The graph's pixel input becomes a (1, H, W, 3) UINT8 NHWC frame that a StreamLetterbox node resizes into
    the NHWC canvas the network reads. FINN's conversion leaves the graph input NCHW with a Transpose to NHWC in
    front (the host's layout change, outside the dataflow partition): a camera frame is already NHWC, so that
    Transpose goes and the letterbox takes its place."""

    def __init__(self, width: int, height: int, size: int):
        super().__init__()
        self.width, self.height, self.size = width, height, size

    def apply(self, model):
        from onnx import TensorProto, helper

        graph = model.graph
        inp = graph.input[0]
        if any(n.op_type.startswith("StreamLetterbox") for n in graph.node):
            return model, False
        shape, dt = list(model.get_tensor_shape(inp.name)), model.get_tensor_datatype(inp.name)
        consumers = model.find_consumers(inp.name) or []
        transpose = consumers[0] if len(consumers) == 1 and consumers[0].op_type == "Transpose" else None
        s = self.size
        if transpose is not None and shape == [1, 3, s, s] and [a.ints for a in transpose.attribute
                                                                if a.name == "perm"] == [[0, 2, 3, 1]]:
            canvas = transpose.output[0]
            graph.node.remove(transpose)
        elif shape == [1, s, s, 3]:
            canvas = inp.name
            graph.value_info.append(helper.make_tensor_value_info(inp.name, inp.type.tensor_type.elem_type, shape))
        else:
            canvas = None
        if canvas is None or dt != DataType["UINT8"]:
            raise FlowError(f"the letterbox goes in front of a {s}x{s} RGB UINT8 pixel input (NHWC, or NCHW with FINN's "
                            f"Transpose to NHWC); this graph's input {inp.name} is {shape} {dt.name}")
        graph.input.remove(inp)
        graph.input.insert(0, helper.make_tensor_value_info(FRAME_INPUT, TensorProto.FLOAT, [1, self.height, self.width, 3]))
        graph.node.insert(0, helper.make_node("StreamLetterbox", [FRAME_INPUT], [canvas], name="StreamLetterbox_0",
                                              domain="finn.custom_op.fpgadataflow", backend="fpgadataflow",
                                              FrameDim=[self.height, self.width], Size=s))
        model.set_tensor_datatype(FRAME_INPUT, DataType["UINT8"])
        model.set_tensor_datatype(canvas, DataType["UINT8"])
        model.set_tensor_layout(FRAME_INPUT, ["N", "H", "W", "C"])
        return model, False
