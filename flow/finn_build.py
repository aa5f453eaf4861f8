"""FINN (finn-plus) build of one run for the PYNQ-Z2 (xc7z020clg400-1, 100 MHz): our ordered step list.

Each step takes a model and returns a model; each result is saved as finn/intermediate_models/NN_<step>.onnx, which
the cross-check executes (python) as the `finn-*` backends. Steps left of the estimate reports run without
Vivado; `bitstream` continues with FINN's Vivado steps where Vivado/Vitis HLS are installed.

The accelerator boundary (DESIGN.md): UINT8 NHWC pixels in, integer output codes NHWC out. After streamlining,
the trailing scalar Mul (the output scale) and the trailing Transpose (NHWC->NCHW) are moved to the host, where
manifest.json already records them; otherwise FINN would build an ElementwiseMul (float) and a Shuffle for them.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flow.backends import Backend, check_input, load_manifest
from flow.errors import FlowError

# xc7z020clg400-1 and FINN's planning limits (FACTS.md)
Z2_RESOURCES = {"LUT": 53200, "FF": 106400, "BRAM_18K": 280, "DSP": 220}
PLANNING_LIMITS = {"LUT": 0.70, "FF": 0.50, "BRAM_18K": 0.80, "DSP": 0.80}
PART = "xc7z020clg400-1"
# What FINN's per-layer estimates leave out, sized from FINN's Zynq shell (two AXI DMAs + interconnect) and
# counted explicitly so the fit is not flattered. An assumption until a Vivado build replaces it.
SHELL_OVERHEAD = {"LUT": 4200, "BRAM_18K": 6, "DSP": 0}
FIFO_DEPTH = 32  # explicit inter-layer FIFO depth (no automatic sizing: LPYOLO rebuilds saw 1M-entry FIFOs)
HW_ATTRS = ["PE", "SIMD", "parallel_window", "ram_style", "resType", "mem_mode", "depth"]


@dataclass
class FinnConfig:
    """Everything that made one FINN build; written to finn/build_config.json."""

    run_dir: str
    folding: str | None = None  # folding JSON (ours, checked); None = FINN's target_fps heuristic
    target_fps: int = 60
    mvau_wwidth_max: int = 36
    standalone_thresholds: bool = False
    clk_ns: float = 10.0
    part: str = PART
    fifo_depth: int = FIFO_DEPTH
    fifo_config: str | None = None  # per-FIFO depth and RAM style (FINN's format, `python -m flow fifos`)
    steps: list[str] = field(default_factory=list)

    @property
    def build_dir(self) -> Path:
        return Path(self.run_dir) / "finn"


class FoldingError(FlowError):
    pass


# ---------------------------------------------------------------------------------------------- transformations
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


# ------------------------------------------------------------------------------------------------------- steps
def _finn():
    from finn.builder import build_dataflow_steps as S

    return S


def _dataflow_cfg(cfg: FinnConfig, target_fps: int | None):
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType

    return DataflowBuildConfig(
        output_dir=str(cfg.build_dir), synth_clk_period_ns=cfg.clk_ns, fpga_part=cfg.part, board="Pynq-Z2",
        generate_outputs=[DataflowOutputType.ESTIMATE_REPORTS], target_fps=target_fps,
        mvau_wwidth_max=cfg.mvau_wwidth_max, standalone_thresholds=cfg.standalone_thresholds, verify_steps=[],
        auto_fifo_depths=False, save_intermediate_models=False)


def step_boundary(model, cfg: FinnConfig, manifest: dict):
    t = MoveOutputScaleAndLayoutToHost(manifest["output"]["scale"])
    model = model.transform(t)
    if not t.removed and model.find_producer(model.graph.output[0].name).op_type != "MultiThreshold":
        raise FlowError("FINN could not streamline the output into integer thresholds: the graph ends in "
                        f"{model.find_producer(model.graph.output[0].name).op_type}")
    return model


def step_streamline_checked(model, dcfg):
    """FINN's streamline, then a check that nothing float is left between the integer layers."""
    model = _finn().step_streamline(model, dcfg)
    allowed = {"Transpose", "Im2Col", "MatMul", "MultiThreshold", "MaxPoolNHWC", "Mul"}
    bad = [f"{n.name} ({n.op_type})" for n in model.graph.node if n.op_type not in allowed]
    if bad:
        raise FlowError(f"FINN cannot streamline {', '.join(bad[:5])}: these would stay float ops in hardware "
                        "(check that every conv is followed by BN + a quantized activation)")
    return model


def step_convert_to_hw(model, cfg: FinnConfig, dcfg):
    """FINN's conversion; in the all-RTL mode the max pools (window + Pool_hls) become our RTL StreamMaxPool2x2,
    and the MVAUs ask for the RTL MVU also below FINN's default 4-bit activation cut-off (it takes >= 2 bits;
    FINN still falls back to HLS, with a warning, where the DSP datapath cannot hold the widths)."""
    model = _finn().step_convert_to_hw(model, dcfg)
    if cfg.standalone_thresholds:
        from qonnx.custom_op.registry import getCustomOp

        from flow.rtl.finn_op import InferStreamMaxPool

        model = model.transform(InferStreamMaxPool())
        for node in model.get_nodes_by_op_type("MVAU"):
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    return model


def step_folding(model, cfg: FinnConfig, dcfg):
    if cfg.folding:
        return apply_folding_checked(model, Path(cfg.folding))
    # our max pools first: FINN's SetFolding skips ops it does not know, counts them as missing the target and
    # then relaxes every layer down to their speed (measured: the all-RTL 416 design stuck at 72 FPS)
    model = fold_stream_maxpools(model, int(1e9 / cfg.clk_ns / cfg.target_fps))
    return _finn().step_target_fps_parallelization(model, dcfg)


def fold_stream_maxpools(model, target_cycles: int):
    """Each StreamMaxPool2x2 gets the fewest PE that meet target_cycles per frame (PE = C if none does)."""
    from qonnx.custom_op.registry import getCustomOp

    for node in model.get_nodes_by_op_type("StreamMaxPool2x2_rtl"):
        inst = getCustomOp(node)
        c = inst.get_nodeattr("NumChannels")
        for pe in (d for d in range(1, c + 1) if c % d == 0):
            inst.set_nodeattr("PE", pe)
            if inst.get_exp_cycles() <= target_cycles:
                break
    return model


def step_fifo_depths(model, cfg: FinnConfig):
    """Data-width converters where a producer's stream word differs from its consumer's, then an explicit FIFO on
    every stream: cfg.fifo_depth deep, or as cfg.fifo_config sizes each one (`python -m flow fifos`: from the
    simulated RTL, no Vivado). FINN's own sizing runs in Vivado's rtlsim and produced million-entry FIFOs in
    LPYOLO rebuilds. DWCs and FIFOs are both counted in the estimates."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveUniqueNodeNames

    model = model.transform(InsertDWC())
    model = model.transform(SpecializeLayers(cfg.part))
    for node in model.graph.node:
        inst = getCustomOp(node)
        inst.set_nodeattr("inFIFODepths", [cfg.fifo_depth] * len(node.input[:1]))
        inst.set_nodeattr("outFIFODepths", [cfg.fifo_depth] * len(node.output))
    model = model.transform(InsertFIFO(create_shallow_fifos=True))
    model = model.transform(SpecializeLayers(cfg.part))
    model = model.transform(GiveUniqueNodeNames())
    return apply_fifo_config_checked(model, Path(cfg.fifo_config)) if cfg.fifo_config else model


def fifo_config_of(model) -> dict:
    """The model's FIFOs in the format of FINN's fifo_config_file (what its set_fifo_depths reads when
    auto_fifo_depths is off), with each stream's width so that a config is only applied to the FIFOs it sized."""
    from qonnx.custom_op.registry import getCustomOp

    fifos = [getCustomOp(n) for n in model.get_nodes_by_op_type("StreamingFIFO_rtl")]
    return {key: {i.onnx_node.name: get(i) for i in fifos} for key, get in (
        ("fifo_depths", lambda i: i.get_nodeattr("depth")), ("impl_style", lambda i: i.get_nodeattr("impl_style")),
        ("ram_style", lambda i: i.get_nodeattr("ram_style")), ("stream_width", lambda i: i.get_instream_width_padded()))}


def apply_fifo_config_checked(model, path: Path):
    """Set every FIFO's depth and RAM style from a FIFO config; fail loudly where it was made for other FIFOs
    (another folding inserts other width converters, hence other FIFOs and names)."""
    from qonnx.custom_op.registry import getCustomOp

    try:
        conf = json.loads(Path(path).read_text())
        depths = dict(conf["fifo_depths"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise FoldingError(f"{path}: not a readable FIFO config (FINN's format, a fifo_depths map) ({e})") from e
    have = fifo_config_of(model)
    widths = conf.get("stream_width", have["stream_width"])
    wrong = sorted(set(depths) ^ set(have["fifo_depths"]))
    wrong += [n for n in depths if n in have["stream_width"] and widths.get(n) != have["stream_width"][n]]
    if wrong:
        raise FoldingError(f"{path}: sized other FIFOs than this build's {len(have['fifo_depths'])} "
                           f"(differs at {', '.join(wrong[:4])}); it was made for another folding. Size them again "
                           "(`python -m flow fifos --run DIR`), or move the file away for 32-deep FIFOs")
    for node in model.get_nodes_by_op_type("StreamingFIFO_rtl"):
        inst, depth = getCustomOp(node), depths[node.name]
        if not isinstance(depth, int) or depth < 2:
            raise FoldingError(f"{path}: {node.name} depth {depth!r}; a FIFO holds at least 2 words")
        inst.set_nodeattr("depth", depth)
        inst.set_nodeattr("ram_style", conf.get("ram_style", {}).get(node.name, "auto"))
    return model


def apply_folding_checked(model, path: Path):
    """Apply a folding JSON and fail loudly where it does not take: unknown node names (a config for another
    model), HW nodes the config leaves out (they would stay at PE=SIMD=1), or values that did not stick."""
    from finn.transformation.general import ApplyConfig
    from qonnx.custom_op.registry import getCustomOp

    try:
        conf = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FoldingError(f"{path}: not a readable folding JSON ({e})") from e
    names = {n.name for n in model.graph.node}
    hw = [n for n in model.graph.node if n.domain.startswith("finn.custom_op.fpgadataflow")]
    unknown = sorted(k for k in conf if k != "Defaults" and k not in names)
    if unknown:
        raise FoldingError(f"{path}: names nodes this model does not have ({', '.join(unknown[:5])}); it was "
                           f"made for another model or FINN version. This model's HW nodes: "
                           f"{', '.join(n.name for n in hw[:8])} ...")
    missing = [n.name for n in hw if n.name not in conf]
    if missing:
        raise FoldingError(f"{path}: leaves {', '.join(missing[:5])} unconfigured; they would run at PE=SIMD=1. "
                           "Regenerate it with `python -m flow fold`")
    model = model.transform(ApplyConfig(str(path)))
    for n in hw:
        inst = getCustomOp(model.get_node_from_name(n.name))
        for attr, want in conf[n.name].items():
            try:
                got = inst.get_nodeattr(attr)
            except AttributeError:
                raise FoldingError(f"{path}: {n.name} ({n.op_type}) has no attribute {attr}") from None
            if got != want:
                raise FoldingError(f"{path}: {n.name}.{attr} = {want} did not apply (node has {got})")
    return model


# ------------------------------------------------------------------------------------------------------ reports
def resource_summary(model, cfg: FinnConfig) -> dict:
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
            "device": {"part": cfg.part, **Z2_RESOURCES}, "FF": "not estimated by FINN (pre-synthesis)", "layers": layers}


def z2_fit(total: dict) -> dict:
    """Resources of the accelerator (FINN's estimate or Yosys's count) -> the shell allowance added, utilisation
    of the xc7z020 and what exceeds the planning limits."""
    with_overhead = {k: total[k] + SHELL_OVERHEAD.get(k, 0) for k in total}
    util = {k: with_overhead[k] / Z2_RESOURCES[k] for k in with_overhead}
    over = {k: round(util[k] - PLANNING_LIMITS[k], 4) for k in util if util[k] > PLANNING_LIMITS[k]}
    return {"shell_overhead": SHELL_OVERHEAD, "total_with_overhead": with_overhead,
            "utilisation": {k: round(v, 4) for k, v in util.items()}, "planning_limits": PLANNING_LIMITS,
            "fits": not over, "over_budget": over}


def over_budget_message(summary: dict) -> str:
    parts = []
    for k in summary["over_budget"]:
        need = summary["total_with_overhead"][k]
        limit = int(PLANNING_LIMITS[k] * Z2_RESOURCES[k])
        top = sorted(summary["layers"].items(), key=lambda kv: -kv[1][k])[:3]
        parts.append(f"{k} {need} > {limit} ({PLANNING_LIMITS[k]:.0%} of {Z2_RESOURCES[k]}), by {need - limit}; "
                     f"most: " + ", ".join(f"{n} {v[k]}" for n, v in top))
    return "design over the PYNQ-Z2 budget: " + "; ".join(parts)


# -------------------------------------------------------------------------------------------------------- build
ESTIMATE_STEPS = ["qonnx_to_finn", "tidy_up", "streamline", "boundary", "convert_to_hw", "minimize_bit_width_initial",
                  "create_dataflow_partition", "specialize_layers", "folding", "minimize_bit_width",
                  "fifo_depths", "generate_estimate_reports"]
VIVADO_STEPS = ["hw_codegen", "hw_ipgen", "set_fifo_depths", "create_stitched_ip", "measure_rtlsim_performance",
                "out_of_context_synthesis", "synthesize_bitfile", "deployment_package"]


PREFOLDING_STEPS = ESTIMATE_STEPS[: ESTIMATE_STEPS.index("folding")]


def intermediate_model(build_dir: Path, step: str) -> Path:
    """Where `run_estimate` saves the model after `step`: finn/intermediate_models/NN_<step>.onnx."""
    return Path(build_dir) / "intermediate_models" / f"{ESTIMATE_STEPS.index(step):02d}_{step}.onnx"


def prefolding_key(cfg: FinnConfig, qonnx_path: Path, manifest: dict) -> str:
    """Everything the steps before folding read: the model, its manifest, the build options they use and the code
    that runs them. A folding search re-estimates one model many times; only folding and what follows change."""
    import hashlib
    from importlib.metadata import version

    h = hashlib.sha256(qonnx_path.read_bytes())
    for part in (json.dumps(manifest, sort_keys=True), json.dumps([cfg.standalone_thresholds, cfg.part, cfg.clk_ns]),
                 version("finn-plus"), Path(__file__).read_text()):
        h.update(part.encode())
    return h.hexdigest()


def prepare_build_dir(cfg: FinnConfig, prefolding: str | None = None) -> bool:
    """A fresh build dir; a dir left by a crashed run (no build_done marker) is moved aside, not reused. When the
    finished build there had the same `prefolding_key`, its pre-folding models are kept; returns whether."""
    d = cfg.build_dir
    kept = False
    if d.exists() and not (d / "build_done.json").exists() and any(d.iterdir()):
        aside = d.with_name(f"finn.crashed-{int(time.time())}")
        d.rename(aside)
        print(f"note: {d} was left by an unfinished build; moved to {aside}")
    elif d.exists():
        done = json.loads((d / "build_done.json").read_text()) if (d / "build_done.json").exists() else {}
        kept = prefolding is not None and done.get("prefolding_key") == prefolding and all(
            intermediate_model(d, step).exists() for step in PREFOLDING_STEPS)
        for p in d.iterdir():
            if not (kept and p.name == "intermediate_models"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        if kept:  # the models of the steps from folding on go; the dataflow partitions stay with theirs
            for step in ESTIMATE_STEPS[len(PREFOLDING_STEPS):]:
                intermediate_model(d, step).unlink(missing_ok=True)
    (d / "intermediate_models").mkdir(parents=True, exist_ok=True)
    (d / "report").mkdir()
    return kept


def run_estimate(cfg: FinnConfig, quiet: bool = False) -> dict:
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.export import atomic_write_json
    from flow.finn_compat import init_finn

    run_dir = Path(cfg.run_dir)
    manifest = load_manifest(run_dir)
    from models import QuantSpec

    QuantSpec.from_json(manifest["spec"]).validate(for_finn=True)
    qonnx_path = run_dir / "model.qonnx.onnx"
    key = prefolding_key(cfg, qonnx_path, manifest)
    d = cfg.build_dir
    reused = prepare_build_dir(cfg, key)
    init_finn(d / "tmp")
    import contextlib
    import io

    dcfg = _dataflow_cfg(cfg, None if cfg.folding else cfg.target_fps)
    S = _finn()
    first = len(PREFOLDING_STEPS) if reused else 0
    model = ModelWrapper(str(intermediate_model(d, PREFOLDING_STEPS[-1]) if reused else qonnx_path))
    cfg.steps = list(ESTIMATE_STEPS)
    atomic_write_json(d / "build_config.json", asdict(cfg))
    impl = {
        "qonnx_to_finn": lambda m: S.step_qonnx_to_finn(m, dcfg),
        "tidy_up": lambda m: S.step_tidy_up(m, dcfg),
        "streamline": lambda m: step_streamline_checked(m, dcfg),
        "boundary": lambda m: step_boundary(m, cfg, manifest),
        "convert_to_hw": lambda m: step_convert_to_hw(m, cfg, dcfg),
        "minimize_bit_width_initial": lambda m: S.step_minimize_bit_width_initial(m, dcfg),
        "create_dataflow_partition": lambda m: S.step_create_dataflow_partition(m, dcfg),
        "specialize_layers": lambda m: S.step_specialize_layers(m, dcfg),
        "folding": lambda m: step_folding(m, cfg, dcfg),
        "minimize_bit_width": lambda m: S.step_minimize_bit_width(m, dcfg),
        "fifo_depths": lambda m: step_fifo_depths(m, cfg),
        "generate_estimate_reports": lambda m: S.step_generate_estimate_reports(m, dcfg),
    }
    times = {name: "reused" for name in ESTIMATE_STEPS[:first]}
    for name in ESTIMATE_STEPS[first:]:
        t0 = time.perf_counter()
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                model = impl[name](model)
        except FlowError:
            raise
        except Exception as e:  # noqa: BLE001 - FINN raises assorted types; name the step and keep the cause
            raise FlowError(f"FINN step {name} failed on {qonnx_path}: {type(e).__name__}: {e}") from e
        times[name] = round(time.perf_counter() - t0, 2)
        model.save(str(intermediate_model(d, name)))
        if name == "minimize_bit_width":  # the folding as applied, before FIFOs exist
            from qonnx.util.config import extract_model_config_to_json

            extract_model_config_to_json(model, str(d / "report" / "folding_used.json"), HW_ATTRS)
        if name == "fifo_depths":  # what FINN's Vivado half reads (run_vivado_steps)
            atomic_write_json(d / "report" / "fifo_config.json", fifo_config_of(model))
        if not quiet:
            print(f"  {name:<28} {times[name]:6.2f} s")
    summary = resource_summary(model, cfg)
    summary.update({"variant": manifest["variant"], "img": manifest["input"]["shape"][2], "step_seconds": times,
                    "flow_seconds": round(sum(t for t in times.values() if t != "reused"), 2), "folding": cfg.folding or
                    f"FINN target_fps heuristic (target {cfg.target_fps}, mvau_wwidth_max {cfg.mvau_wwidth_max})",
                    "folding_file": str(d / "report" / "folding_used.json"),
                    "estimates_only": "FINN analytic estimates; a Vivado build confirms them"})
    atomic_write_json(d / "report" / "estimate.json", summary)
    plot_layers(summary, d / "report" / "estimate_layers.png")
    atomic_write_json(d / "build_done.json", {"steps": ESTIMATE_STEPS, "seconds": summary["flow_seconds"],
                                              "prefolding_key": key})
    return summary


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
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"FINN estimate {s['variant']} {s['img']}x{s['img']} @ {s['clock_mhz']:.0f} MHz (xc7z020)")
    for col in ("resource", "layers", "+ shell", "total", "Z2", "used", "limit"):
        t.add_column(col)
    for k in ("LUT", "BRAM_18K", "DSP"):
        t.add_row(k, str(s["total_layers"][k]), str(s["shell_overhead"][k]), str(s["total_with_overhead"][k]),
                  str(Z2_RESOURCES[k]), f"{s['utilisation'][k]:.1%}", f"{PLANNING_LIMITS[k]:.0%}")
    c = Console(width=max(110, Console().width))
    c.print(t)
    c.print(f"estimated {s['fps']} FPS (slowest: {s['slowest_layer']}, {s['max_cycles']} cycles/frame); "
            f"fits: {s['fits']}; flow time {s['flow_seconds']} s; folding: {s['folding']}")


# ---------------------------------------------------------------------------------------------- cross-check hook
class FinnPythonBackend(Backend):
    """A saved FINN intermediate model executed in python (specialised HW nodes renamed to generic ones)."""

    exact_integer = True

    def __init__(self, path: Path, name: str, manifest: dict):
        from qonnx.core.modelwrapper import ModelWrapper

        from flow.finn_compat import init_finn, to_python_exec

        init_finn(Path(path).parents[1] / "tmp")
        self.path, self.name = Path(path), name
        self.model = to_python_exec(ModelWrapper(str(path)))
        self.manifest = manifest
        self.iname = self.model.graph.input[0].name
        self.oname = self.model.graph.output[0].name
        self.in_shape = self.model.get_tensor_shape(self.iname)
        self.out_shape = self.model.get_tensor_shape(self.oname)

    def run(self, x):
        from finn.core.onnx_exec import execute_onnx

        check_input(x, self.manifest["input"]["shape"], self.name)
        out = []
        nchw_in = list(self.in_shape[1:]) == list(self.manifest["input"]["shape"][1:])
        accel_out = list(self.out_shape[1:]) == list(self.manifest["output"]["accel_shape"][1:])
        for i in range(len(x)):
            xi = x[i : i + 1] if nchw_in else x[i : i + 1].transpose(0, 2, 3, 1)
            y = execute_onnx(self.model, {self.iname: np.ascontiguousarray(xi)})[self.oname]
            y = y.reshape(self.out_shape)
            if accel_out:  # integer codes, NHWC: the accelerator's boundary
                out.append(np.round(y).astype(np.int32).transpose(0, 3, 1, 2))
            else:  # before the boundary step: dequantized NCHW values
                out.append(np.round(y / self.manifest["output"]["scale"]).astype(np.int32))
        return np.concatenate(out)

    @functools.cached_property
    def activations(self) -> list:
        """The nodes that write each layer's codes, in graph order: thresholds, alone or inside an MVAU."""
        from qonnx.custom_op.registry import getCustomOp

        def writes_codes(n) -> bool:
            if n.op_type == "MultiThreshold" or n.op_type.startswith("Thresholding"):
                return True
            return n.op_type.startswith("MVAU") and getCustomOp(n).get_nodeattr("noActivation") == 0

        return [n for n in self.model.graph.node if writes_codes(n)]

    def _layer_span(self, index: int) -> tuple | None:
        """(first node, last node) of layer `index`: from just after the previous layer's max pool (or its
        activation, or the graph input) through its activation; tidy graphs start at the Conv and end on the
        dequantizing Add/Mul after the thresholds. None when the graph's layers do not line up with the index."""
        acts = self.activations
        if index >= len(acts):
            return None
        act, m = acts[index], self.model
        start = act
        while start.op_type != "Conv":
            prev = m.find_producer(start.input[0])
            if prev is None or prev in acts or prev.op_type == "Transpose" or "Pool" in prev.op_type:
                break
            start = prev
        end = act
        if start.op_type == "Conv":  # tidy: thresholds count from 0, an Add re-centres, a Mul dequantizes
            while (nxt := m.find_consumer(end.output[0])) is not None and nxt.op_type in ("Add", "Mul"):
                end = nxt
        return start, end

    def run_layer(self, layer, x):
        from finn.core.onnx_exec import execute_onnx

        span = self._layer_span(layer.index)
        if span is None:
            return None
        start, end = span
        feed = start.input[0]
        shape = self.model.get_tensor_shape(feed)
        tidy = start.op_type == "Conv"  # NCHW, dequantized values as in the reference
        out = []
        for xi in x:
            v = xi[None] if tidy else np.round(xi[None] / layer.in_scale).transpose(0, 2, 3, 1)
            ctx = execute_onnx(self.model, {feed: np.ascontiguousarray(v, np.float32).reshape(shape)}, True, start, end)
            y = np.asarray(ctx[end.output[0]], np.float64)
            out.append(y if tidy else y.transpose(0, 3, 1, 2) * layer.out_scale)  # NHWC codes -> NCHW values
        return np.concatenate(out)

    def info(self):
        return {"model": self.path.name, "executor": "finn python"}


CROSSCHECK_MODELS = {"finn-tidy": "tidy_up", "finn-streamlined": "boundary", "finn-hw": "fifo_depths"}


def crosscheck_backends(run_dir: Path, options: dict) -> list[Backend]:
    d = Path(run_dir) / "finn" / "intermediate_models"
    if not d.is_dir():
        return []
    out = []
    for name, step in CROSSCHECK_MODELS.items():
        found = sorted(d.glob(f"*_{step}.onnx"))
        if found:
            out.append(FinnPythonBackend(found[-1], name, options["manifest"]))
    return out


# ---------------------------------------------------------------------------------------------------------- CLI
def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="run directory (model.qonnx.onnx + manifest.json)")
    p.add_argument("--folding", type=Path, help="folding JSON (from `python -m flow fold` or flow/foldings/)")
    p.add_argument("--target-fps", type=int, default=60, help="FINN heuristic target when no --folding is given")
    p.add_argument("--mvau-wwidth-max", type=int, default=36)
    p.add_argument("--standalone-thresholds", action="store_true", help="MVAU_rtl + Thresholding_rtl (all-RTL)")
    p.add_argument("--no-committed-folding", action="store_true",
                   help="ignore flow/foldings/<variant>_<img>.json and use --folding or FINN's heuristic")
    p.add_argument("--fifos", type=Path, help="FIFO config (`python -m flow fifos`); default: RUN/fifos.json, else "
                   "the folding's own <folding>.fifos.json, else every FIFO 32 deep")
    return p


def _config(a) -> FinnConfig:
    from flow.folding import committed_folding, fifos_beside, read_meta

    folding = a.folding
    if folding is None and not a.no_committed_folding:
        m = load_manifest(a.run)
        committed = committed_folding(m["variant"], m["input"]["shape"][2], a.standalone_thresholds)
        folding = committed if committed.exists() else None
    # a folding names the nodes of the build mode it was made in; its meta file says which
    standalone = a.standalone_thresholds or bool(folding and read_meta(folding).get("standalone_thresholds"))
    # FIFO sizes: given, or this run's own (`python -m flow fifos`), or those sized with the folding
    found = [p for p in (Path(a.run) / "fifos.json", folding and fifos_beside(folding)) if p and p.exists()]
    fifos = a.fifos or (found[0] if found else None)
    return FinnConfig(run_dir=str(a.run), folding=str(folding) if folding else None, target_fps=a.target_fps,
                      mvau_wwidth_max=a.mvau_wwidth_max, standalone_thresholds=standalone,
                      fifo_config=str(fifos) if fifos else None)


def cli_estimate(argv: list[str]) -> int:
    a = _parser("python -m flow estimate").parse_args(argv)
    s = run_estimate(_config(a))
    print_summary(s)
    print(f"written {Path(a.run) / 'finn/report/estimate.json'}")
    if not s["fits"]:
        print("error: " + over_budget_message(s))
        return 1
    return 0


def cli_bitstream(argv: list[str]) -> int:
    from flow.finn_compat import vivado_available

    a = _parser("python -m flow bitstream").parse_args(argv)
    tools = vivado_available()
    s = run_estimate(_config(a))
    print_summary(s)
    if not s["fits"]:
        raise FlowError(over_budget_message(s) + "; no bitstream attempted")
    if not tools["usable"]:
        print("error: Vivado/Vitis HLS not found (vivado: {vivado}, vitis_hls: {vitis_hls}). Estimates are written to "
              "{run}/finn/report/estimate.json. Still to run, with Xilinx tools: {steps}.\n"
              "Run them in the FINN container with Vivado mounted from the host:\n"
              "  FINN_XILINX_PATH=/tools/Xilinx FINN_XILINX_VERSION=2024.2 make docker-bitstream RUN={run}"
              .format(**tools, run=a.run, steps=", ".join(VIVADO_STEPS)))
        return 2
    if tools["version"] is None:
        raise FlowError(f"Vivado at {tools['vivado']} is not a version FINN 1.6 supports "
                        f"({', '.join(('2022.2', '2024.2'))} are tested); set up a supported one")
    return run_vivado_steps(Path(a.run))


def run_vivado_steps(run_dir: Path) -> int:
    """The Vivado half through FINN's own builder on the folded model. Not exercised here (no Vivado)."""
    from finn.builder.build_dataflow import build_dataflow_cfg
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType

    d = run_dir / "finn"
    model = sorted((d / "intermediate_models").glob("*_generate_estimate_reports.onnx"))[-1]
    cfg = DataflowBuildConfig(
        output_dir=str(d / "vivado"), synth_clk_period_ns=10.0, board="Pynq-Z2", fpga_part=PART,
        shell_flow_type="vivado_zynq", auto_fifo_depths=False, fifo_config_file=d / "report" / "fifo_config.json",
        steps=["step_" + s for s in VIVADO_STEPS],
        generate_outputs=[DataflowOutputType.BITFILE, DataflowOutputType.PYNQ_DRIVER, DataflowOutputType.DEPLOYMENT_PACKAGE])
    rc = build_dataflow_cfg(str(model), cfg)
    if rc != 0:
        return rc
    deploy = run_dir / "deploy"
    deploy.mkdir(exist_ok=True)
    bit = next((d / "vivado" / "bitfile").glob("*.bit"))
    shutil.copy(bit, deploy / "finn-accel.bit")
    shutil.copy(bit.with_suffix(".hwh"), deploy / "finn-accel.hwh")
    shutil.copy(run_dir / "manifest.json", deploy / "manifest.json")
    return 0


def bench(argv: list[str]) -> int:
    """Best estimated FPS per preset at 416x416 and 100 MHz that fits the Z2 planning limits."""
    import tempfile

    from flow.export import export_run
    from flow.folding import search_folding

    p = argparse.ArgumentParser(prog="python -m flow bench finn", description=bench.__doc__)
    p.add_argument("--img", type=int, default=416)
    p.add_argument("--variants", default="4w4a,2w4a,3w5a,4w2a,6w4a,8w3a,8w8a")
    p.add_argument("--out", type=Path)
    p.add_argument("--standalone-thresholds", action="store_true", help="search the all-RTL build mode")
    p.add_argument("--write-foldings", action="store_true",
                   help="store each winner as flow/foldings/<variant>_<img>.json (+ .meta.json): the committed configs")
    a = p.parse_args(argv)
    from flow.folding import committed_folding, write_meta

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
