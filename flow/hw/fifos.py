"""`python -m flow fifos --run DIR`: every FIFO of an all-RTL build sized from its simulated RTL, without Vivado.

FINN sizes FIFOs in `set_fifo_depths` by simulating the stitched design with Vivado's tools (LPYOLO rebuilds got
million-entry FIFOs from it); until then every FIFO here was 32 deep, and at 416x416 that holds the 255.75 FPS
design to 177.8 FPS in hardware. On the estimate build that `rtlsim` simulates:
1. The stitched RTL runs in Verilator with FINN's unbounded FIFO gauges (`rtlsim`'s default; a report of such a
   run on this build is reused): each FIFO's highest fill is the depth at which it never holds its producer back.
2. Each FIFO gets that fill + 1, at least FIFO_DEPTH (a 32-deep shift register costs the LUTs of a 2-deep one),
   at most `cap`: the largest fills come from a fast stage running ahead of a slower one for a whole frame
   (257,500 words ahead of the first convolution at 416x416), and holding such a stage back costs nothing.
3. FIFOs deeper than a shift register go to block RAM where FINN's FIFO cost model (the one its estimates use,
   fitted to finn-rtllib's fifo.sv) says that saves LUTs, most LUTs saved per BRAM18 first, within the BRAM
   planning limit; the rest to LUT RAM.
4. The build is re-estimated with them and simulated with FIFOs bounded at those depths: the hardware's FPS.
   While that is more than TOLERANCE below the gauges' FPS and the design fits, the cap doubles.
Writes the FIFO config (FINN's fifo_config_file format: `estimate`/`bitstream` read it as RUN/fifos.json, or
beside a folding as <folding>.fifos.json) and leaves the build estimated and simulated with it.

`as_built` is what `estimate` and `bitstream` report: an all-RTL build without a FIFO config is sized by this very
code (RUN/fifos.json, which `bitstream` then builds with); one with a config not sized here is simulated with its
FIFOs bounded at those depths; only where nothing can be simulated (HLS layers, no Verilator, `--no-rtlsim`) the
figure stays FINN's analytic one, labelled so.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from flow.errors import FlowError

CAPS = (256, 512, 1024, 2048)
TOLERANCE = 0.03  # bounded FPS this close to the gauges' FPS is the folding's speed (input timing jitters ~0.5 %)
SHIFT_FIFO_MAX = 33  # fifo.sv builds every FIFO up to this depth as a shift register, whatever its ram_style


class NoSizingFits(FlowError):
    """Every FIFO sizing tried is over the PYNQ-Z2's budget: the design keeps the FIFOs it had."""


def plan_fifos(fifos: dict[str, tuple[int, int]], cap: int, bram_left: int, cost=None) -> dict[str, tuple[int, str]]:
    """{FIFO: (stream width in bits, highest fill with unbounded FIFOs)} -> {FIFO: (depth, ram_style)}.
    cost(depth, width, style) -> (BRAM18, LUT): FINN's model of fifo.sv by default."""
    from flow.hw.fold import best_per_block
    from flow.hw.steps import FIFO_DEPTH

    if cost is None:
        from finn.util.resource_models import _fifo_cost  # what FINN's StreamingFIFO estimates are made of

        def cost(depth, width, style):
            c = _fifo_cost(depth, width, style)
            return c.bram, c.lut

    plan, gains = {}, []
    for name, (width, fill) in fifos.items():
        depth = max(FIFO_DEPTH, min(fill + 1, cap))  # fill + 1: a full FIFO refuses the word a pop would make room for
        plan[name] = (depth, "auto" if depth <= SHIFT_FIFO_MAX else "distributed")
        if depth > SHIFT_FIFO_MAX:
            (_, lut), (bram, lut_block) = cost(depth, width, "distributed"), cost(depth, width, "block")
            if lut > lut_block and bram > 0:
                gains.append(((lut - lut_block) / bram, bram, name))
    for name in best_per_block(gains, bram_left):
        plan[name] = (plan[name][0], "block")
    return plan


def size_fifos(run_dir: Path, out: Path, caps=CAPS, frames: int = 3, quiet: bool = False) -> dict:
    """Size the FIFOs of DIR's all-RTL estimate build (steps 1-4 above); returns the sizing report, also written
    to DIR/finn/report/fifo_sizing.json. Interrupted or failed, it leaves the build, its reports and the FIFO
    config as they were."""
    from flow.runlock import run_lock

    if frames < 1:
        raise FlowError(f"--frames {frames}: simulate at least 1 frame (3 or more for a steady-state cycle count)")
    run_dir, out = Path(run_dir), Path(out)
    if out.is_dir():
        raise FlowError(f"--out {out}: a folder; name the FIFO config file to write (default RUN/fifos.json)")
    with run_lock(run_dir):
        return _size_fifos(run_dir, out, caps, frames, quiet)


def reusable_rtlsim(run_dir: Path, frames: int, bounded: bool, nodes: int) -> dict | None:
    """DIR's rtlsim report if it simulated this very build (its provenance says so) whole, without stalls, for at
    least `frames` frames, with FIFOs bounded or not as asked; else None."""
    from flow.provenance import StaleError, check

    build = Path(run_dir) / "finn"
    done = build / "report" / "rtlsim.json"
    try:
        check(done, [build / "build_done.json"], remake="")
        r = json.loads(done.read_text())
    except (StaleError, OSError, json.JSONDecodeError):
        return None
    ok = (isinstance(r, dict) and r.get("fifos", "").startswith("bounded" if bounded else "unbounded")
          and r.get("frames", 0) >= frames and r.get("stall_pct") == 0 and r.get("nodes") == nodes)
    return r if ok else None


def as_built(cfg, summary: dict, simulate: bool = True, frames: int = 3, quiet: bool = False):
    """(the config `bitstream` builds with, the estimate summary of that build with `fps_as_built`, `fps_basis`,
    `fps_basis_note`), estimate.json rewritten with them. cfg is the FinnConfig `summary` was just estimated with."""
    from flow.files import atomic_write_json
    from flow.hw.report import fps_basis
    from flow.hw.rtl.verilator import verilator
    from flow.hw.rtlgen import read_estimate
    from flow.hw.rtlsim import run_rtlsim

    run_dir = Path(cfg.run_dir)
    if not summary["fits"]:
        return cfg, summary
    why = None
    if not simulate:
        why = "simulation skipped with --no-rtlsim"
    elif not cfg.standalone_thresholds:
        why = ("the HLS design: Verilator simulates only the all-RTL one (`--standalone-thresholds`, what "
               "`bitstream` builds unless --hls)")
    else:
        try:
            verilator()
        except FlowError as e:
            why = f"no Verilator to simulate it: {e}"
    basis = fps_basis(summary["fps"], cfg.fifo_config, not_simulated=why)
    if why is None and cfg.fifo_config is None:  # size them, as `python -m flow fifos` does, and build with them
        out = run_dir / "fifos.json"
        try:
            size_fifos(run_dir, out, frames=frames, quiet=quiet)
            cfg = replace(cfg, fifo_config=str(out))
            summary = read_estimate(run_dir)
            basis = fps_basis(summary["fps"], cfg.fifo_config)
        except NoSizingFits as e:  # the build is back as it was, 32-deep FIFOs: simulate those
            if not quiet:
                print(f"note: {e}; the design keeps 32-deep FIFOs")
    if why is None and basis["fps_basis"] == "analytic":  # FIFOs not sized here: simulate them as they are
        r = run_rtlsim(run_dir, frames=frames, bounded_fifos=True)  # the estimate just made has no rtlsim report
        if not r["bit_exact"]:
            raise FlowError(f"{run_dir}: the RTL with its FIFOs bounded at their depths is not bit-exact with FINN's "
                            "python model (finn/report/rtlsim.json): a hardware bug, not an FPS question")
        basis = fps_basis(summary["fps"], cfg.fifo_config, simulated=r)
    summary = {**summary, **basis}
    atomic_write_json(run_dir / "finn" / "report" / "estimate.json", summary)
    return cfg, summary


def _snapshot(paths: list[Path]) -> dict[Path, bytes | None]:
    return {p: p.read_bytes() if p.is_file() else None for p in paths}


def _restore(snap: dict[Path, bytes | None]) -> None:
    from flow.files import atomic_write_bytes

    for p, data in snap.items():
        if data is None:
            p.unlink(missing_ok=True)
        else:
            atomic_write_bytes(p, data)


def _size_fifos(run_dir: Path, out: Path, caps, frames: int, quiet: bool) -> dict:
    from flow.files import atomic_write_json
    from flow.hw.build import FinnConfig, fifo_config_of, run_estimate
    from flow.hw.rtlgen import load_hw_model, read_estimate
    from flow.hw.rtlsim import run_rtlsim
    from flow.hw.z2 import PLANNING_LIMITS, Z2_RESOURCES
    from flow.provenance import record

    build = run_dir / "finn"
    if not (build / "build_config.json").exists():
        raise FlowError(f"{run_dir}: no FINN estimate build; run `python -m flow estimate --run {run_dir} "
                        "--standalone-thresholds` first")
    cfg = replace(FinnConfig(**json.loads((build / "build_config.json").read_text())), run_dir=str(run_dir))
    model = load_hw_model(run_dir)  # says what to do if the build is not all-RTL
    widths = fifo_config_of(model)["stream_width"]
    # put back as they were if this fails: the config written before, the build's reports, their records
    report_dir = build / "report"
    snap = _snapshot([out, out.parent / "provenance.json", *(report_dir / n for n in (
        "rtlsim.json", "synth.json", "fifo_sizing.json", "provenance.json"))])
    gauge = reusable_rtlsim(run_dir, frames, bounded=False, nodes=len(model.graph.node))
    if gauge is None:
        try:
            gauge = run_rtlsim(run_dir, frames=frames)
        except BaseException:
            _restore({p: d for p, d in snap.items() if p.parent == report_dir})
            raise
    if not gauge["bit_exact"]:
        raise FlowError(f"{run_dir}: the RTL is not bit-exact with unbounded FIFOs (finn/report/rtlsim.json); "
                        "FIFO depths cannot fix that")
    fills = {n: (widths[n], gauge["fifo_max_occupancy"][n]) for n in widths}
    est = read_estimate(run_dir)
    fifo_bram = sum(v["BRAM_18K"] for k, v in est["layers"].items() if k.startswith("StreamingFIFO"))
    bram_left = int(PLANNING_LIMITS["BRAM_18K"] * Z2_RESOURCES["BRAM_18K"]) - (est["total_with_overhead"]["BRAM_18K"]
                                                                               - fifo_bram)
    if not quiet:
        print(f"unbounded FIFOs: {gauge['fps_at_clock']} FPS simulated; deepest fills "
              + ", ".join(f"{n} {f}" for n, (_, f) in sorted(fills.items(), key=lambda kv: -kv[1][1])[:4]))
    tried, best = [], None
    qonnx = run_dir / "model.qonnx.onnx"
    made_from = [qonnx, *([Path(cfg.folding)] if cfg.folding else [])]
    command = f"python -m flow fifos --run {run_dir}" + (f" --out {out}" if out != run_dir / "fifos.json" else "")
    try:
        for cap in caps:
            plan = plan_fifos(fills, cap, bram_left)
            conf = {"fifo_depths": {n: d for n, (d, _) in plan.items()}, "impl_style": {n: "rtl" for n in plan},
                    "ram_style": {n: style for n, (_, style) in plan.items()},
                    "stream_width": {n: w for n, (w, _) in fills.items()}}
            atomic_write_json(out, conf)
            record(out, made_from, command)
            s = run_estimate(replace(cfg, fifo_config=str(out)), quiet=True)
            step = {"cap": cap, "fits": s["fits"], "estimated_fps": s["fps"],
                    **{k: s["total_with_overhead"][k] for k in ("LUT", "BRAM_18K", "DSP")}}
            if s["fits"]:
                r = run_rtlsim(run_dir, frames=frames, bounded_fifos=True)
                if not r["bit_exact"]:
                    raise FlowError(f"{run_dir}: bounded FIFOs (cap {cap}) change the outputs (finn/report/"
                                    "rtlsim.json): a hardware bug under backpressure, not a sizing question")
                step.update(fps_bounded=r["fps_at_clock"], cycles_per_frame=r["cycles_per_frame"],
                            full=sorted(r["fifos_at_or_over_depth"]))
                if best is None or r["fps_at_clock"] > best[0]["fps_bounded"]:
                    best = (step, conf)
            tried.append(step)
            if not quiet:
                print(f"  cap {cap:>5}: estimate {s['fps']} FPS, LUT {step['LUT']}, BRAM18 {step['BRAM_18K']}, fits "
                      f"{s['fits']}" + (f"; bounded FIFOs {step['fps_bounded']} FPS simulated" if s["fits"] else ""))
            if not s["fits"] or step["fps_bounded"] >= (1 - TOLERANCE) * gauge["fps_at_clock"]:
                break
        if best is None:
            raise NoSizingFits(f"{run_dir}: no FIFO sizing fits the PYNQ-Z2 ({tried[-1]}); the folding leaves no room "
                            "for FIFOs: fold for fewer FPS")
    except BaseException:
        _restore({p: d for p, d in snap.items() if p.parent != report_dir})
        run_estimate(cfg, quiet=True)  # the build as it was: the same inputs make the same build_done.json,
        _restore({p: d for p, d in snap.items() if p.parent == report_dir})  # so its reports are valid again
        raise
    step, conf = best
    conf["sized_by"] = {"how": "python -m flow fifos (Verilator: FINN's FIFO gauges, then bounded FIFOs)",
                        "cap": step["cap"], "fps_unbounded": gauge["fps_at_clock"], "fps_bounded": step["fps_bounded"]}
    atomic_write_json(out, conf)
    record(out, made_from, command)
    if tried[-1] is not step:  # a later cap tried did not win: the build back to the written config
        run_estimate(replace(cfg, fifo_config=str(out)), quiet=True)
        run_rtlsim(run_dir, frames=frames, bounded_fifos=True)
    report = {"fifo_config": str(out), "fps_unbounded": gauge["fps_at_clock"], "chosen": step, "tried": tried,
              "deep_fifos": {n: [d, conf["ram_style"][n]] for n, d in conf["fifo_depths"].items() if d > SHIFT_FIFO_MAX},
              "bram_left_for_fifos": bram_left, "fills_unbounded": {n: f for n, (_, f) in fills.items()}}
    atomic_write_json(build / "report" / "fifo_sizing.json", report)
    return report


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow fifos", description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--out", type=Path, help="where to write the FIFO config (default RUN/fifos.json, which "
                   "`estimate`/`bitstream` on RUN then use)")
    p.add_argument("--frames", type=int, default=3)
    a = p.parse_args(argv)
    r = size_fifos(a.run, a.out or a.run / "fifos.json", frames=a.frames)
    c = r["chosen"]
    print(f"FIFOs sized: {len(r['fills_unbounded'])} FIFOs, {len(r['deep_fifos'])} deeper than a shift register "
          f"(cap {c['cap']}); simulated {c['fps_bounded']} FPS with them (unbounded: {r['fps_unbounded']}); "
          f"LUT {c['LUT']}, BRAM18 {c['BRAM_18K']} with the shell; written {r['fifo_config']}")
    return 0
