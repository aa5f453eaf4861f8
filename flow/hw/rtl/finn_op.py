"""`StreamMaxPool2x2`: our RTL max pool as a FINN custom op, and the transformation that puts it in the graph.

finn-plus builds a 2x2/2 max pool as a sliding-window generator (ConvolutionInputGenerator, depthwise) followed by
`Pool_hls`, the one HLS node left in the all-RTL (`standalone_thresholds`) design. `InferStreamMaxPool` replaces
that pair with one `StreamMaxPool2x2` node, which FINN's own SpecializeLayers turns into `StreamMaxPool2x2_rtl`
(it prefers an `_rtl` variant when one is registered). The generic op executes in python (the cross-check's FINN
backends run it), the RTL variant generates a wrapper named after the node around `lpyolo_maxpool.sv`, which stays in
flow/hw/rtl (shared, like finn-rtllib's sources), as FINN's RTL nodes do. `register()` adds both to FINN's op
registries; `flow.hw.compat.init_finn` calls it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from finn.custom_op.fpgadataflow.hwcustomop import HWCustomOp
from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend
from qonnx.core.datatype import DataType
from qonnx.transformation.base import Transformation

from flow.hw.rtl.maxpool import SOURCE, MaxPool


class StreamMaxPool2x2(HWCustomOp):
    """2x2 max pool, stride 2, on an NHWC stream of PE channels per beat (input and output types equal)."""

    def get_nodeattr_types(self):
        return {"ImgDim": ("ints", True, []), "NumChannels": ("i", True, 0), "PE": ("i", False, 1),
                "dataType": ("s", True, ""), **super().get_nodeattr_types()}

    def model(self) -> MaxPool:
        h, w = self.get_nodeattr("ImgDim")
        dt = DataType[self.get_nodeattr("dataType")]
        return MaxPool(H=h, W=w, C=self.get_nodeattr("NumChannels"), PE=self.get_nodeattr("PE"), BITS=dt.bitwidth(),
                       SIGNED=dt.signed())

    def get_input_datatype(self, ind=0):
        return DataType[self.get_nodeattr("dataType")]

    def get_output_datatype(self, ind=0):
        return DataType[self.get_nodeattr("dataType")]

    def get_normal_input_shape(self, ind=0):
        h, w = self.get_nodeattr("ImgDim")
        return (1, h, w, self.get_nodeattr("NumChannels"))

    def get_normal_output_shape(self, ind=0):
        h, w = self.get_nodeattr("ImgDim")
        return (1, h // 2, w // 2, self.get_nodeattr("NumChannels"))

    def _fold(self, shape):
        pe = self.get_nodeattr("PE")
        return (*shape[:-1], shape[-1] // pe, pe)

    def get_folded_input_shape(self, ind=0):
        return self._fold(self.get_normal_input_shape())

    def get_folded_output_shape(self, ind=0):
        return self._fold(self.get_normal_output_shape())

    def get_instream_width(self, ind=0):
        return self.get_nodeattr("PE") * self.get_input_datatype().bitwidth()

    def get_outstream_width(self, ind=0):
        return self.get_instream_width()

    def get_number_output_values(self):
        return int(np.prod(self.get_folded_output_shape()[:-1]))

    def get_exp_cycles(self):
        return self.model().cycles()

    def lut_estimation(self, fpgapart=None):
        return self.model().resources()["LUT"]

    def bram_estimation(self, fpgapart=None):
        return 0

    def dsp_estimation(self, fpgapart=None):
        return 0

    def infer_node_datatype(self, model):
        dt = model.get_tensor_datatype(self.onnx_node.input[0])
        self.set_nodeattr("dataType", dt.name)
        model.set_tensor_datatype(self.onnx_node.output[0], dt)

    def verify_node(self):
        self.model()  # raises FlowError naming what cannot be built
        return ["StreamMaxPool2x2: attributes valid"]

    def execute_node(self, context, graph):
        x = context[self.onnx_node.input[0]]
        context[self.onnx_node.output[0]] = self.model().execute(x.reshape(self.get_normal_input_shape())).astype(
            np.float32)


class WrappedRTL:
    """What our RTL variants share (put first among the bases: `class X_rtl(WrappedRTL, X, RTLBackend)`): the
    source `SOURCE` with its top `MODULE`, a wrapper with the node's name and FINN's port names (write_wrapper), the
    IPI commands that place it, and execution by the generic op `GENERIC`'s python model (Verilator runs go through
    flow.hw.rtl)."""

    GENERIC: type
    SOURCE: Path
    MODULE: str

    def get_nodeattr_types(self):
        return {**self.GENERIC.get_nodeattr_types(self), **RTLBackend.get_nodeattr_types(self)}

    def generate_hdl(self, model, fpgapart, clk):
        write_wrapper(self, self.MODULE, self.model().params())

    def get_rtl_file_list(self, abspath=False):
        d = self.get_nodeattr("code_gen_dir_ipgen") + "/" if abspath else ""
        return [str(self.SOURCE) if abspath else self.SOURCE.name, d + self.get_nodeattr("gen_top_module") + ".v"]

    def code_generation_ipi(self):
        return [*(f"add_files -norecurse {f}" for f in self.get_rtl_file_list(abspath=True)),
                f"create_bd_cell -type module -reference {self.get_nodeattr('gen_top_module')} {self.onnx_node.name}"]

    def execute_node(self, context, graph):
        self.GENERIC.execute_node(self, context, graph)


class StreamMaxPool2x2_rtl(WrappedRTL, StreamMaxPool2x2, RTLBackend):  # noqa: N801 - FINN's naming rule for RTL variants
    """The RTL variant: `lpyolo_maxpool.sv` and its wrapper."""

    GENERIC, SOURCE, MODULE = StreamMaxPool2x2, SOURCE, "lpyolo_maxpool"


def write_wrapper(inst: RTLBackend, module: str, params: dict[str, int]) -> None:
    """The top-level wrapper of one of our RTL nodes, in the node's folder, named after the node, with FINN's port
    names around `module` (one in0_V, one out0_V stream). The module's source stays in flow/hw/rtl and every node
    references it there (as FINN does its shared finn-rtllib sources), so one Vivado project declares it once. The
    wrapper tells Vivado its clock, the streams on it and the active-low reset, as finn-rtllib's wrappers do."""
    d = Path(inst.get_nodeattr("code_gen_dir_ipgen"))
    d.mkdir(parents=True, exist_ok=True)
    top = inst.get_verilog_top_module_name()
    args = ", ".join(f".{k}({v})" for k, v in params.items())
    in_w, out_w = ((w + 7) // 8 * 8 for w in (inst.get_instream_width(), inst.get_outstream_width()))
    (d / f"{top}.v").write_text(
        f"// generated by lpyolo-flow for node {top}\nmodule {top} (\n"
        '  (* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 ap_clk CLK" *)\n'
        '  (* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF in0_V:out0_V, ASSOCIATED_RESET ap_rst_n" *)\n'
        "  input ap_clk,\n"
        '  (* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW" *)\n'
        "  input ap_rst_n,\n"
        f"  input [{in_w - 1}:0] in0_V_TDATA, input in0_V_TVALID, output in0_V_TREADY,\n"
        f"  output [{out_w - 1}:0] out0_V_TDATA, output out0_V_TVALID, input out0_V_TREADY\n);\n"
        f"  {module} #({args}) impl (\n"
        "    .ap_clk(ap_clk), .ap_rst_n(ap_rst_n), .in0_V_TDATA(in0_V_TDATA), .in0_V_TVALID(in0_V_TVALID),\n"
        "    .in0_V_TREADY(in0_V_TREADY), .out0_V_TDATA(out0_V_TDATA), .out0_V_TVALID(out0_V_TVALID),\n"
        "    .out0_V_TREADY(out0_V_TREADY));\nendmodule\n")
    inst.set_nodeattr("gen_top_module", top)
    inst.set_nodeattr("ipgen_path", str(d))
    inst.set_nodeattr("ip_path", str(d))


def register(*ops: type) -> None:
    """Add our ops (a generic HWCustomOp and its `_rtl` variant each; default the max pool's) to FINN's registries
    (qonnx resolves a node's class from its domain module's `custom_op`)."""
    import finn.custom_op.fpgadataflow as generic
    import finn.custom_op.fpgadataflow.rtl as rtl

    for op in ops or (StreamMaxPool2x2, StreamMaxPool2x2_rtl):
        (rtl if op.__name__.endswith("_rtl") else generic).custom_op.setdefault(op.__name__, op)


class InferStreamMaxPool(Transformation):
    """ConvolutionInputGenerator (2x2 window, stride 2, depthwise) -> Pool(MaxPool) becomes one StreamMaxPool2x2."""

    def apply(self, model):
        from onnx import helper
        from qonnx.custom_op.registry import getCustomOp

        for swg in model.graph.node:
            if swg.op_type != "ConvolutionInputGenerator":
                continue
            pool = model.find_consumer(swg.output[0])
            if pool is None or pool.op_type != "Pool":
                continue
            s, p = getCustomOp(swg), getCustomOp(pool)
            h, w = s.get_nodeattr("IFMDim")
            if (p.get_nodeattr("Function") != "MaxPool" or list(s.get_nodeattr("ConvKernelDim")) != [2, 2]
                    or list(s.get_nodeattr("Stride")) != [2, 2] or list(s.get_nodeattr("Dilation")) != [1, 1]
                    or h % 2 or w % 2):
                continue  # other pools keep FINN's window + Pool_hls
            node = helper.make_node("StreamMaxPool2x2", [swg.input[0]], [pool.output[0]], name=f"StreamMaxPool2x2_{pool.name}",
                                    domain="finn.custom_op.fpgadataflow", backend="fpgadataflow", ImgDim=[h, w],
                                    NumChannels=p.get_nodeattr("Channels"), PE=1,
                                    dataType=p.get_nodeattr("InputDataType"))
            graph = model.graph
            graph.node.insert(list(graph.node).index(swg), node)
            graph.node.remove(swg)
            graph.node.remove(pool)
            return model, True
        return model, False
