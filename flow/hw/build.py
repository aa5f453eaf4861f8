"""FINN (finn-plus) build of one run for the PYNQ-Z2 (xc7z020clg400-1, 100 MHz): our ordered step list.

Each step takes a model and returns a model; each result is saved as finn/intermediate_models/NN_<step>.onnx, which
the cross-check executes (python) as the `finn-*` backends. Steps left of the estimate reports run without
Vivado; `bitstream` continues with FINN's Vivado steps (`vivado.py`) where Vivado/Vitis HLS are installed.

The accelerator boundary (DESIGN.md): UINT8 NHWC pixels in, integer output codes NHWC out; `boundary.py` moves the
trailing output scale and layout change to the host. The board's facts come from `z2.py`, the report from `report.py`.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flow.backends import load_manifest
from flow.errors import FlowError
from flow.hw import boundary
from flow.hw.boundary import MoveOutputScaleAndLayoutToHost
from flow.hw.report import plot_layers, resource_summary
from flow.hw.z2 import BOARD, CLK_NS, PART

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
    clk_ns: float = CLK_NS
    part: str = PART
    board: str = BOARD  # FINN's board name: its PYNQ shell and board files, in the Vivado half
    fifo_depth: int = FIFO_DEPTH
    fifo_config: str | None = None  # per-FIFO depth and RAM style (FINN's format, `python -m flow fifos`)
    steps: list[str] = field(default_factory=list)

    @property
    def build_dir(self) -> Path:
        return Path(self.run_dir) / "finn"


class FoldingError(FlowError):
    pass


# ------------------------------------------------------------------------------------------------------- steps
def _finn():
    from finn.builder import build_dataflow_steps as S

    return S


def _dataflow_cfg(cfg: FinnConfig, target_fps: int | None):
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType

    return DataflowBuildConfig(
        output_dir=str(cfg.build_dir), synth_clk_period_ns=cfg.clk_ns, fpga_part=cfg.part, board=cfg.board,
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

        from flow.hw.rtl.finn_op import InferStreamMaxPool

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


# -------------------------------------------------------------------------------------------------------- build
ESTIMATE_STEPS = ["qonnx_to_finn", "tidy_up", "streamline", "boundary", "convert_to_hw", "minimize_bit_width_initial",
                  "create_dataflow_partition", "specialize_layers", "folding", "minimize_bit_width",
                  "fifo_depths", "generate_estimate_reports"]


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
                 version("finn-plus"), *(Path(m.__file__).read_text() for m in (sys.modules[__name__], boundary))):
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

    from flow.files import atomic_write_json
    from flow.hw.compat import init_finn

    run_dir = Path(cfg.run_dir)
    manifest = load_manifest(run_dir)
    from models import QuantSpec

    if manifest.get("spec") is not None:  # an imported model (`flow import`) has no spec: FINN's steps judge it
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


