"""`python -m flow estimate` and `python -m flow bitstream`, and the hardware benchmarks (`bench finn`, `bench
rtlsim`): the top of `flow/hw/`, above the build, the folding search, the simulation and the Vivado half."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from board.manifest import load_manifest
from flow.errors import FlowError
from flow.hw import build
from flow.hw.build import FinnConfig, run_estimate
from flow.hw.report import over_budget_message, print_summary
from flow.hw.rtlsim import run_rtlsim


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=build.__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="run directory (model.qonnx.onnx + manifest.json)")
    p.add_argument("--folding", type=Path, help="folding JSON (from `python -m flow fold` or flow/hw/foldings/)")
    p.add_argument("--target-fps", type=int, default=60, help="FINN heuristic target when no --folding is given")
    p.add_argument("--mvau-wwidth-max", type=int, default=36)
    p.add_argument("--standalone-thresholds", action="store_true", help="MVAU_rtl + Thresholding_rtl (all-RTL)")
    p.add_argument("--no-committed-folding", action="store_true",
                   help="ignore flow/hw/foldings/<variant>_<img>.json and use --folding or FINN's heuristic")
    p.add_argument("--fifos", type=Path, help="FIFO config (`python -m flow fifos`); default: RUN/fifos.json, else "
                   "the folding's own <folding>.fifos.json, else (all-RTL) sized here as `python -m flow fifos` does, "
                   "else every FIFO 32 deep")
    p.add_argument("--no-rtlsim", action="store_true", help="no Verilator run: FIFOs not sized, FPS reported is FINN's "
                   "analytic one (the built design may be slower)")
    return p


def _config(a) -> FinnConfig:
    from flow.hw.foldings import committed_folding, fifos_beside, read_meta

    for opt, v in (("--target-fps", a.target_fps), ("--mvau-wwidth-max", a.mvau_wwidth_max)):
        if v <= 0:
            raise FlowError(f"{opt} {v}: must be positive")

    folding = a.folding
    if folding is None and not a.no_committed_folding:
        m = load_manifest(a.run)
        committed = committed_folding(m.variant, m.input.size, a.standalone_thresholds)
        folding = committed if committed.exists() else None
    # a folding names the nodes of the build mode it was made in; its meta file says which
    standalone = a.standalone_thresholds or bool(folding and read_meta(folding).get("standalone_thresholds"))
    # FIFO sizes: given, or this run's own (`python -m flow fifos`), or those sized with the folding
    # (made for the design that reads the canvas: a frame build, with the letterbox in front, has other FIFOs)
    beside = folding and load_manifest(a.run).input.frame is None and fifos_beside(folding)
    found = [p for p in (Path(a.run) / "fifos.json", beside) if p and p.exists()]
    fifos = a.fifos or (found[0] if found else None)
    return FinnConfig(run_dir=str(a.run), folding=str(folding) if folding else None, target_fps=a.target_fps,
                      mvau_wwidth_max=a.mvau_wwidth_max, standalone_thresholds=standalone,
                      fifo_config=str(fifos) if fifos else None)


def cli_estimate(argv: list[str]) -> int:
    from flow.hw.fifos import as_built

    a = _parser("python -m flow estimate").parse_args(argv)
    cfg = _config(a)
    _, s = as_built(cfg, run_estimate(cfg), simulate=not a.no_rtlsim)  # the FPS of the design `bitstream` builds
    print_summary(s)
    print(f"written {Path(s.get('build_dir', Path(a.run) / 'finn')) / 'report/estimate.json'}")
    if not s["fits"]:
        print("error: " + over_budget_message(s) + f"; this build is set aside in {s['build_dir']} (not deployable): "
              f"fold for fewer FPS (`python -m flow fold --run {a.run}`) or lower --target-fps", file=sys.stderr)
        return 1
    return 0


def cli_bitstream(argv: list[str]) -> int:
    from flow.runlock import run_lock

    p = _parser("python -m flow bitstream")
    p.add_argument("--hls", action="store_true", help="build the HLS design (MVAU_hls, Pool_hls) instead of the "
                   "all-RTL one, whose RTL is simulated bit-exact and sized by Yosys here")
    a = p.parse_args(argv)
    if a.hls and a.standalone_thresholds:
        raise FlowError("--hls and --standalone-thresholds ask for two different designs; give one")
    a.standalone_thresholds = not a.hls  # the all-RTL design by default: the one verified without Vivado
    with run_lock(a.run, f"python -m flow bitstream --run {a.run}{' --hls' if a.hls else ''}"):
        return _bitstream(a)


def _bitstream(a) -> int:
    from flow.hw.fifos import as_built
    from flow.hw.vivado import VIVADO_STEPS, ensure_finn_deps, run_vivado_steps, vivado_tools

    tools = vivado_tools()  # a wrong Vivado version stops here, before any step
    if tools["usable"]:
        ensure_finn_deps()  # finn-hlslib and the board files, before any step
    cfg = _config(a)
    s = run_estimate(cfg)
    if s["fits"] and tools["usable"]:  # FIFOs sized as `estimate` sizes them; the Vivado steps read that build
        cfg, s = as_built(cfg, s, simulate=not a.no_rtlsim)
    print_summary(s)
    if not s["fits"]:
        raise FlowError(over_budget_message(s) + "; no bitstream attempted")
    if not tools["usable"]:
        print(f"error: Vivado/Vitis HLS not found ({tools['missing']}). Estimates are written to "
              f"{a.run}/finn/report/estimate.json. Still to run, with Xilinx tools: {', '.join(VIVADO_STEPS)}.\n"
              "Source Vivado's settings64.sh (and Vitis HLS's) and run `make bitstream` again, or run them in the "
              "FINN container with Vivado mounted from the host:\n"
              f"  FINN_XILINX_PATH=/tools/Xilinx FINN_XILINX_VERSION=2024.2 make docker-bitstream RUN={a.run}")
        return 2
    print(f"building with {cfg.fifo_config or 'every FIFO 32 deep'}: {s['fps_basis']} "
          f"{s['fps_as_built'] or s['fps']} FPS")
    made = run_vivado_steps(Path(a.run))
    print(f"written {made['bitfile']}, {made['hwh']}; FINN's driver in {made['driver']}; reports: "
          + ", ".join(made["reports"].values()))
    print(f"post-route timing: {made['timing']} (finn/report/vivado.json)")
    if made["standin"]:
        print("note: made by the test suite's Vivado stand-in (tests/vivado_standin): not hardware files, and "
              "`python -m flow deploy` refuses them")
    if not made["timing_met"]:
        print(f"error: the bitfile misses timing: {made['timing']}. It is not copied to {a.run}/deploy; "
              "`python -m flow deploy --force` would package it anyway")
        return 1
    return 0


def bench_finn(argv: list[str]) -> int:
    """Best estimated FPS per preset at 416x416 and 100 MHz that fits the Z2 planning limits."""
    import tempfile

    from flow.export import export_run
    from flow.hw.fold import search_folding
    from models import PRESETS

    p = argparse.ArgumentParser(prog="python -m flow bench finn", description=bench_finn.__doc__)
    p.add_argument("--img", type=int, default=416)
    p.add_argument("--variants", default=",".join(n for n, s in PRESETS.items() if not s.is_float))
    p.add_argument("--out", type=Path)
    p.add_argument("--standalone-thresholds", action="store_true", help="search the all-RTL build mode")
    p.add_argument("--write-foldings", action="store_true",
                   help="store each winner as flow/hw/foldings/<variant>_<img>.json (+ .meta.json): the committed configs")
    a = p.parse_args(argv)
    from flow.hw.foldings import committed_folding, write_meta

    root = Path(a.out or tempfile.mkdtemp(prefix="bench-finn-"))
    for v in a.variants.split(","):
        d = root / v
        if not (d / "manifest.json").exists():
            export_run(d, v, a.img)
        t0 = time.perf_counter()
        best = search_folding(d, standalone_thresholds=a.standalone_thresholds, quiet=True)
        tried = json.loads((d / "folding_search.json").read_text())["tried"]
        # baseline, same process: FINN's own heuristic with its default 36-bit weight streams, best that fits
        base = max((t["fps"] for t in tried if t["mvau_wwidth_max"] == 36 and t["how"] == "heuristic" and t["fits"]),
                   default=None)
        ratio = f"{best['fps'] / base:.2f}x FINN's default heuristic ({base} FPS)" if best and base else "no baseline fits"
        print(f"{v}: {best['fps'] if best else 'nothing fits'} FPS, {best and best['total_with_overhead']}, "
              f"{ratio}; search {time.perf_counter() - t0:.0f} s")
        if best and a.write_foldings:
            target = committed_folding(v, a.img, a.standalone_thresholds)
            target.parent.mkdir(exist_ok=True)
            shutil.copy(d / "folding.best.json", target)
            write_meta(target, best, a.standalone_thresholds)
    return 0


def bench_rtlsim(argv: list[str]) -> int:
    """4w4a at 416x416, all-RTL, committed folding and FIFO sizes: simulated FPS on the RTL (FIFOs unbounded, then
    bounded at their sized depths: the hardware's) and Yosys's resource counts beside FINN's estimates."""
    import tempfile

    from flow.export import export_run
    from flow.hw.build import FinnConfig, run_estimate
    from flow.hw.foldings import committed_folding, fifos_beside
    from models import PRESETS

    p = argparse.ArgumentParser(prog="python -m flow bench rtlsim", description=bench_rtlsim.__doc__)
    p.add_argument("--variant", default="4w4a", choices=[n for n, s in PRESETS.items() if not s.is_float])
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
    from flow.hw.synth import run_synth

    s = run_synth(d)
    fin = s["finn_estimate_total"]
    print("Yosys synth_xilinx (pre-place-and-route) vs FINN's estimate, whole chain without shell: "
          + ", ".join(f"{k} {v} vs {fin.get(k, '-')}" for k, v in s["total"].items())
          + f"; with the shell allowance fits the Z2's planning limits: {s['fits']} ({s['seconds']})")
    return 0 if free["bit_exact"] and r["bit_exact"] else 1
