"""The generated accelerator as HDL: every node of the folded dataflow model (FIFOs and width converters included)
generates its RTL with FINN's own `generate_hdl` (ours for the max pool), and a top-level module chains the nodes'
AXI streams (our generated SystemVerilog: FINN's stitching needs Vivado). Below both `rtlsim` (Verilator) and
`synth` (Yosys), which read the same sources."""

from __future__ import annotations

import json
import re
from pathlib import Path

from flow.errors import FlowError
from flow.hw.z2 import CLK_NS, PART


def load_hw_model(run_dir: Path):
    """The folded dataflow model with FIFOs and DWCs (the estimate build's fifo_depths step), as FINN saved it."""
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.hw.build import check_build
    from flow.hw.compat import init_finn

    run_dir = Path(run_dir)
    build = run_dir / "finn"
    found = sorted((build / "intermediate_models").glob("*_fifo_depths.onnx"))
    if not (build / "build_config.json").exists() or not found or not (build / "build_done.json").exists():
        raise FlowError(f"{run_dir}: no finished FINN estimate build; run `python -m flow estimate --run {run_dir} "
                        "--standalone-thresholds` first")
    check_build(run_dir)  # never simulate or synthesise a build of another model than the run's
    init_finn(build / "tmp")
    model = ModelWrapper(str(found[-1]))
    hls = [f"{n.name} ({n.op_type})" for n in model.graph.node if n.op_type.endswith("_hls")]
    if hls:
        raise FlowError(f"{found[-1]}: {len(hls)} HLS node(s) need Vitis HLS, not Verilator: {', '.join(hls[:4])}; "
                        "rebuild the estimate with --standalone-thresholds (the all-RTL mode)")
    return model


def read_estimate(run_dir: Path) -> dict:
    path = Path(run_dir) / "finn" / "report" / "estimate.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FlowError(f"{path}: the build's estimate report is missing or unreadable ({e}); remake the build: "
                        f"`python -m flow estimate --run {run_dir} --standalone-thresholds`") from e


def generate_rtl(model, out: Path) -> tuple[list, list[Path]]:
    """Generate every node's RTL under out/<node>; returns (custom op instances in stream order, source files)."""
    from finn.util.settings import get_settings
    from qonnx.custom_op.registry import getCustomOp

    rtllib = Path(get_settings().finn_rtllib)
    insts, files = [], {}
    for node in model.graph.node:
        inst = getCustomOp(node)
        d = out / node.name
        d.mkdir(parents=True, exist_ok=True)
        inst.set_nodeattr("code_gen_dir_ipgen", str(d.resolve()))
        try:
            inst.generate_hdl(model, PART, CLK_NS)
        except Exception as e:  # noqa: BLE001 - FINN raises anything; name the node
            raise FlowError(f"RTL generation failed for {node.name} ({node.op_type}): {type(e).__name__}: {e}") from e
        for v in d.glob("*.v"):  # thresholds by absolute path, checked to exist
            text = v.read_text()
            fixed = re.sub(r'THRESHOLDS_PATH = "\./', f'THRESHOLDS_PATH = "{d.resolve()}/', text)
            if fixed != text:
                v.write_text(fixed)
                if not list(d.glob("*threshs*.dat")):
                    raise FlowError(f"{node.name}: threshold files not found in {d}")
        for f in inst.get_rtl_file_list(abspath=True):
            files.setdefault(Path(f).name, Path(f))  # finn-rtllib sources are shared between nodes
        for f in d.glob("*_memstream_wrapper.v"):  # decoupled weights: FINN stitches this streamer in Vivado IPI
            files[f.name] = f
            for lib in ("memstream/hdl/memstream.sv", "memstream/hdl/memstream_axi.sv", "axi/hdl/axilite.sv"):
                files.setdefault(Path(lib).name, rtllib / lib)
        insts.append(inst)
    files.setdefault("lpyolo_stream_fifo.sv", Path(__file__).parent / "rtl" / "lpyolo_stream_fifo.sv")
    ordered = sorted(files.values(), key=lambda p: (not p.stem.endswith("_pkg"), p.suffix != ".sv"))
    return insts, verilator_compatible(ordered, out)


def verilator_compatible(files: list[Path], out: Path) -> list[Path]:
    """finn-rtllib's add_multi.sv declares a constant function inside a generate block, which Verilator 5.48
    rejects (IEEE 1800-2023 13.4.3); it is only instantiated by wide MVUs (not at 64x64). A copy with the function,
    its typedef and its localparam moved to module scope (same meaning: they depend on module parameters only)."""
    patched = []
    for f in files:
        if f.name == "add_multi.sv":
            text = f.read_text()
            start = text.index("\t\t// Compute the count of decendents")
            end = text.index("LEAF_LOAD = init_leaf_loads();", start) + len("LEAF_LOAD = init_leaf_loads();\n")
            anchor = "\tuwire [SUM_WIDTH-1:0]  sum0;"
            if anchor not in text or start > end:
                raise FlowError(f"{f}: this finn-rtllib version no longer has the construct we convert; update "
                                "flow.hw.rtlsim.verilator_compatible")
            block = text[start:end]
            text = text[:start] + text[end:]
            text = text.replace(anchor, block.replace("\n\t\t", "\n\t").lstrip("\t") + anchor, 1)
            f = out / "verilator_compat" / f.name
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(text)
        patched.append(f)
    return patched


def stitch(insts, top: str = "lpyolo_accel", bounded_fifos: bool = False, gauges: bool = True) -> str:
    """SystemVerilog top chaining the nodes' streams in order (the LPYOLO dataflow is one chain). FIFOs are FINN's
    own, which FINN_SIMULATION turns into unbounded occupancy gauges (how full each gets: FIFO sizing); with
    `bounded_fifos`, FIFOs of the configured depth, so that backpressure happens where the hardware has it.
    `gauges=False` leaves the occupancy ports open and prints nothing at the end (the top for synthesis)."""

    def axis(inst, kind):
        ports = inst.get_verilog_top_module_intf_names()[kind]
        if len(ports) != 1:
            raise FlowError(f"{inst.onnx_node.name}: {len(ports)} {kind} ports; the stitcher handles one-in/one-out")
        name, width = ports[0]
        return name, (int(width) + 7) // 8 * 8

    lines, prev = [], None
    for i, inst in enumerate(insts):
        (iname, iw), (oname, ow) = axis(inst, "s_axis"), axis(inst, "m_axis")
        if prev is not None and prev[1] != iw:
            raise FlowError(f"stream width {prev[1]} of {insts[i - 1].onnx_node.name} != {iw} of {inst.onnx_node.name}")
        src = "in0_V" if i == 0 else f"s{i - 1}"
        dst = "out0_V" if i == len(insts) - 1 else f"s{i}"
        if i < len(insts) - 1:
            lines.append(f"  wire [{ow - 1}:0] s{i}_TDATA; wire s{i}_TVALID, s{i}_TREADY;")
        weights = ""
        streamer = Path(inst.get_nodeattr("code_gen_dir_ipgen")) / f"{inst.onnx_node.name}_memstream_wrapper.v"
        if streamer.exists():  # the node's weight stream (in1_V) from its memstream, AXI-lite and set select idle
            lines.append(f"  wire [{(inst.get_instream_width(1) + 7) // 8 * 8 - 1}:0] w{i}_TDATA; wire w{i}_TVALID, "
                         f"w{i}_TREADY;\n  {streamer.stem} m{i} (.ap_clk(ap_clk), .ap_clk2x(ap_clk), .ap_rst_n(ap_rst_n),"
                         " .s_axilite_AWVALID(1'b0), .s_axilite_AWPROT(3'b0), .s_axilite_AWADDR('0), .s_axilite_WVALID(1'b0),"
                         " .s_axilite_WDATA(32'b0), .s_axilite_WSTRB(4'b0), .s_axilite_BREADY(1'b0),"
                         " .s_axilite_ARVALID(1'b0), .s_axilite_ARPROT(3'b0), .s_axilite_ARADDR('0), .s_axilite_RREADY(1'b0),"
                         " .s_axis_0_tvalid(1'b0), .s_axis_0_tdata('0),"
                         f" .m_axis_0_tready(w{i}_TREADY), .m_axis_0_tvalid(w{i}_TVALID), .m_axis_0_tdata(w{i}_TDATA));")
            weights = (f" .ap_clk2x(ap_clk), .in1_V_TDATA(w{i}_TDATA), .in1_V_TVALID(w{i}_TVALID), "
                       f".in1_V_TREADY(w{i}_TREADY),")
        fifo = inst.onnx_node.op_type == "StreamingFIFO_rtl"
        if fifo and gauges:
            lines.append(f"  wire [31:0] mc{i};\n  final $display(\"FIFO {inst.onnx_node.name} %0d\", mc{i});")
        elif gauges:  # cycles this node's input waited on it: over a run, its own cycles (see node_cycles)
            lines.append(f"  longint offered{i} = 0;\n  always @(posedge ap_clk) if ({src}_TVALID) offered{i} <= offered{i} + 1;"
                         f"\n  final $display(\"NODE {inst.onnx_node.name} %0d\", offered{i});")
        if fifo and bounded_fifos:
            # FINN's wrapper is an unbounded gauge under FINN_SIMULATION: a bounded FIFO of the configured depth
            lines.append(f"  lpyolo_stream_fifo #(.DEPTH({int(inst.get_nodeattr('depth'))}), .WIDTH({iw})) n{i} "
                         f"(.ap_clk(ap_clk), .ap_rst_n(ap_rst_n), .maxcount({f'mc{i}' if gauges else ''}),\n    .in0_V_TDATA({src}_TDATA), "
                         f".in0_V_TVALID({src}_TVALID), .in0_V_TREADY({src}_TREADY), .out0_V_TDATA({dst}_TDATA), "
                         f".out0_V_TVALID({dst}_TVALID), .out0_V_TREADY({dst}_TREADY));")
        else:
            gauge = (f" .maxcount(mc{i}), .count()," if gauges else " .maxcount(), .count(),") if fifo else ""
            lines.append(f"  {inst.get_nodeattr('gen_top_module') or inst.onnx_node.name} n{i} (.ap_clk(ap_clk), "
                         f".ap_rst_n(ap_rst_n),{weights}{gauge}\n    .{iname}_TDATA({src}_TDATA), .{iname}_TVALID({src}_TVALID), "
                         f".{iname}_TREADY({src}_TREADY),\n    .{oname}_TDATA({dst}_TDATA), .{oname}_TVALID({dst}_TVALID), "
                         f".{oname}_TREADY({dst}_TREADY));")
        prev = (oname, ow)
    in_w, out_w = axis(insts[0], "s_axis")[1], prev[1]
    return (f"// generated by lpyolo-flow: {len(insts)} FINN nodes in one AXI-stream chain\n"
            f"module {top} (input ap_clk, input ap_rst_n,\n"
            f"  input [{in_w - 1}:0] in0_V_TDATA, input in0_V_TVALID, output in0_V_TREADY,\n"
            f"  output [{out_w - 1}:0] out0_V_TDATA, output out0_V_TVALID, input out0_V_TREADY);\n"
            + "\n".join(lines) + "\nendmodule\n")


def stitched_sources(model, out: Path, node: str | None = None, bounded_fifos: bool = False) -> tuple[list, list[Path]]:
    """Every node's RTL generated under `out` and the top level written beside it: (instances in the simulated
    chain — all nodes, or `node` alone —, the sources for `build("lpyolo_accel", ...)`)."""
    insts, files = generate_rtl(model, out)
    if node:
        insts = [i for i in insts if i.onnx_node.name == node]
        if not insts:
            raise FlowError(f"{node}: no such node in the dataflow model")
    top = out / "lpyolo_accel.sv"
    top.write_text(stitch(insts, bounded_fifos=bounded_fifos))
    return insts, [*files, top]
