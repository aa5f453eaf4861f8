"""The estimate's report: per-layer and total resources and FPS from FINN's analyses, the fit against the Z2, the
message that names what is over budget, the per-layer plot and the printed table."""

from __future__ import annotations

from pathlib import Path

from flow.hw.z2 import PLANNING_LIMITS, Z2_RESOURCES, z2_fit


def resource_summary(model, cfg) -> dict:
    """Per-layer and total estimates, shell/FIFO overheads, utilisation and the fit against the Z2."""
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    res = model.analysis(lambda m: res_estimation(m, cfg.part))
    cycles = model.analysis(exp_cycles_per_layer)
    layers = {name: {"cycles": int(cycles.get(name, 0)), "LUT": int(r.get("LUT", 0)),
                     "BRAM_18K": int(r.get("BRAM_18K", 0)), "DSP": int(r.get("DSP", 0))}
              for name, r in res.items()}
    total = {k: sum(v[k] for v in layers.values()) for k in ("LUT", "BRAM_18K", "DSP")}
    fifo = {k: sum(v[k] for n, v in layers.items() if n.startswith(("StreamingFIFO", "StreamingDataWidthConverter")))
            for k in total}
    max_cycles = max(v["cycles"] for v in layers.values())
    slowest = max(layers, key=lambda n: layers[n]["cycles"])
    fps = 1e9 / cfg.clk_ns / max_cycles
    return {"fps": round(fps, 2), "clock_mhz": 1e3 / cfg.clk_ns, "max_cycles": max_cycles, "slowest_layer": slowest,
            "latency_cycles": sum(v["cycles"] for v in layers.values()),
            "total_layers": total, "fifos_and_dwcs_included": fifo, **z2_fit(total),
            "device": {"part": cfg.part, **Z2_RESOURCES}, "FF": "not estimated by FINN (pre-synthesis)", "layers": layers,
            **fps_basis(round(fps, 2), cfg.fifo_config)}


def fps_basis(analytic_fps: float, fifo_config: str | None, simulated: dict | None = None,
              not_simulated: str | None = None) -> dict:
    """Which FPS the built design will have, and on what it rests. FINN's figure is the slowest layer's cycle count
    alone: it assumes FIFOs deep enough never to stall a producer. With the default 32-deep FIFOs the RTL is slower
    than that wherever a stage runs ahead of a slower one and fills its FIFO. In order of trust:
    `sized`: a FIFO config sized by `python -m flow fifos` (or by `estimate`/`bitstream`, the same code) carries
    the FPS the design simulated at with exactly those FIFOs; `simulated`: the design simulated in Verilator with
    its FIFOs bounded at the depths it is built with (`simulated`, an rtlsim report); `analytic`: FINN's figure,
    where nothing was simulated (`not_simulated` says why)."""
    import json

    sized = None
    if fifo_config:
        try:
            sized = json.loads(Path(fifo_config).read_text()).get("sized_by")
        except (OSError, ValueError, AttributeError):
            sized = None
    fifos = f"FIFO depths from {fifo_config}" if fifo_config else "every FIFO 32 deep"
    if isinstance(sized, dict) and isinstance(sized.get("fps_bounded"), (int, float)):
        return {"fps_as_built": float(sized["fps_bounded"]), "fps_basis": "sized",
                "fps_basis_note": f"FIFOs sized by `python -m flow fifos` ({fifo_config}); the design simulated with "
                                  f"them in Verilator at {sized['fps_bounded']} FPS (analytic: {analytic_fps})"}
    if simulated is not None:
        return {"fps_as_built": float(simulated["fps_at_clock"]), "fps_basis": "simulated",
                "fps_basis_note": f"{fifos}: the design simulated with them in Verilator (bounded, "
                                  f"{simulated['frames']} frames) at {simulated['fps_at_clock']} FPS (analytic: "
                                  f"{analytic_fps})"}
    return {"fps_as_built": None, "fps_basis": "analytic",
            "fps_basis_note": f"FINN's cycle estimate of the slowest layer, {fifos}, not simulated"
                              f"{f' ({not_simulated})' if not_simulated else ''}: FIFOs that stall their producer "
                              "make the built design slower; for an all-RTL build `estimate` and `bitstream` size "
                              "them in Verilator (`python -m flow fifos` alone) and report the design so built"}


def over_budget_message(summary: dict) -> str:
    parts = []
    for k in summary["over_budget"]:
        need = summary["total_with_overhead"][k]
        limit = int(PLANNING_LIMITS[k] * Z2_RESOURCES[k])
        top = sorted(summary["layers"].items(), key=lambda kv: -kv[1][k])[:3]
        parts.append(f"{k} {need} > {limit} ({PLANNING_LIMITS[k]:.0%} of {Z2_RESOURCES[k]}), by {need - limit}; "
                     f"most: " + ", ".join(f"{n} {v[k]}" for n, v in top))
    return "design over the PYNQ-Z2 budget: " + "; ".join(parts)


def plot_layers(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = {k: v for k, v in summary["layers"].items() if not k.startswith("StreamingFIFO")}
    names = list(layers)
    fig, axes = plt.subplots(1, 3, figsize=(16, max(4, 0.22 * len(names))), sharey=True)
    for ax, key in zip(axes, ("cycles", "LUT", "BRAM_18K"), strict=True):
        ax.barh(names, [layers[n][key] for n in names])
        ax.set_title(key)
        ax.invert_yaxis()
    fig.suptitle(f"{summary['variant']} {summary['img']}x{summary['img']}: {summary['fps']} FPS est. at "
                 f"{summary['clock_mhz']:.0f} MHz, fits={summary['fits']}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def print_summary(s: dict) -> None:
    from rich.table import Table

    from flow.terminal import console

    t = Table(title=f"FINN estimate {s['variant']} {s['img']}x{s['img']} @ {s['clock_mhz']:.0f} MHz (xc7z020)")
    for col in ("resource", "layers", "+ shell", "total", "Z2", "used", "limit"):
        t.add_column(col)
    for k in ("LUT", "BRAM_18K", "DSP"):
        t.add_row(k, str(s["total_layers"][k]), str(s["shell_overhead"][k]), str(s["total_with_overhead"][k]),
                  str(Z2_RESOURCES[k]), f"{s['utilisation'][k]:.1%}", f"{PLANNING_LIMITS[k]:.0%}")
    c = console(110)
    c.print(t)
    if s.get("fps_as_built") is not None:  # the design as it will be built first; FINN's figure beside it
        c.print(f"as built: {s['fps_as_built']} FPS ({s['fps_basis']}): {s['fps_basis_note']}")
    c.print(f"FINN's analytic estimate {s['fps']} FPS (slowest: {s['slowest_layer']}, {s['max_cycles']} cycles/frame); "
            f"fits: {s['fits']}; flow time {s['flow_seconds']} s; folding: {s['folding']}")
    if s.get("fps_as_built") is None and s.get("fps_basis"):
        c.print(f"FPS basis: analytic ({s['fps_basis_note']})")
