"""The FINN steps of our build, registered by name as FINN's builder registers its own
(finn.builder.build_dataflow_steps: a name -> function lookup, and the config's ordered list of names).

Every step is `step(model, ctx) -> model`: FINN's own steps by name through `finn_step`, ours where FINN's needs a
check or an addition. `STEPS` is the registry, `ESTIMATE_STEPS` the order a build runs them in (up to FINN's
estimate reports; the Vivado half is `vivado.py`). The steps before `folding` depend only on the model, its manifest
and a few options: `build.prefolding_key` lets a folding search reuse their models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from board.manifest import Manifest
from flow.errors import FlowError
from flow.hw.boundary import MoveOutputScaleAndLayoutToHost
from flow.hw.z2 import BOARD, CLK_NS, PART

FIFO_DEPTH = 32  # explicit inter-layer FIFO depth (no automatic sizing: LPYOLO rebuilds saw 1M-entry FIFOs)


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
        """RUN/finn; where that is a symlink (the build on another disk), the folder it points to: a build is moved
        aside and back beside it there, and the link keeps pointing at the current one."""
        d = Path(self.run_dir) / "finn"
        return d.resolve() if d.is_symlink() else d


class FoldingError(FlowError):
    pass


# ------------------------------------------------------------------------------------------------------- steps
def _finn():
    from finn.builder import build_dataflow_steps as S

    return S


def dataflow_cfg(cfg: FinnConfig, target_fps: int | None):
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType

    return DataflowBuildConfig(
        output_dir=str(cfg.build_dir), synth_clk_period_ns=cfg.clk_ns, fpga_part=cfg.part, board=cfg.board,
        generate_outputs=[DataflowOutputType.ESTIMATE_REPORTS], target_fps=target_fps,
        mvau_wwidth_max=cfg.mvau_wwidth_max, standalone_thresholds=cfg.standalone_thresholds, verify_steps=[],
        auto_fifo_depths=False, save_intermediate_models=False)


@dataclass(frozen=True)
class StepContext:
    """What a step reads besides the model: the build's config, FINN's DataflowBuildConfig made from it (what FINN's
    own steps take), and the run's manifest."""

    cfg: FinnConfig
    dcfg: object
    manifest: Manifest


def finn_step(name: str):
    """FINN's own `step_<name>` (finn.builder.build_dataflow_steps), called with FINN's config."""

    def step(model, ctx: StepContext):
        return getattr(_finn(), f"step_{name}")(model, ctx.dcfg)

    step.__name__ = step.__qualname__ = f"step_{name}"
    return step


def step_input_thresholds(model, ctx: StepContext):
    """An input quantizer other than the identity on pixels becomes integer thresholds on the UINT8 pixels
    (`input_thresholds.py`): FINN builds them as a thresholding layer at the accelerator's input."""
    from flow.hw import input_thresholds

    return input_thresholds.step_input_thresholds(model)


def step_boundary(model, ctx: StepContext):
    """The trailing output scale and layout change move to the host (`boundary.py`); what is left must end in the
    integer thresholds."""
    t = MoveOutputScaleAndLayoutToHost(ctx.manifest.output.scale)
    model = model.transform(t)
    if not t.removed and model.find_producer(model.graph.output[0].name).op_type != "MultiThreshold":
        raise FlowError("FINN could not streamline the output into integer thresholds: the graph ends in "
                        f"{model.find_producer(model.graph.output[0].name).op_type}")
    return model


def step_streamline_checked(model, ctx: StepContext):
    """FINN's streamline, then a check that nothing float is left between the integer layers."""
    model = _finn().step_streamline(model, ctx.dcfg)
    allowed = {"Transpose", "Im2Col", "MatMul", "MultiThreshold", "MaxPoolNHWC", "Mul"}
    bad = [f"{n.name} ({n.op_type})" for n in model.graph.node if n.op_type not in allowed]
    if bad:
        raise FlowError(f"FINN cannot streamline {', '.join(bad[:5])}: these would stay float ops in hardware "
                        "(check that every conv is followed by BN + a quantized activation)")
    return model


def step_convert_to_hw(model, ctx: StepContext):
    """FINN's conversion; in the all-RTL mode the max pools (window + Pool_hls) become our RTL StreamMaxPool2x2,
    and the MVAUs ask for the RTL MVU also below FINN's default 4-bit activation cut-off (it takes >= 2 bits;
    FINN still falls back to HLS, with a warning, where the DSP datapath cannot hold the widths)."""
    model = _finn().step_convert_to_hw(model, ctx.dcfg)
    if ctx.cfg.standalone_thresholds:
        from qonnx.custom_op.registry import getCustomOp

        from flow.hw.rtl.finn_op import InferStreamMaxPool

        model = model.transform(InferStreamMaxPool())
        for node in model.get_nodes_by_op_type("MVAU"):
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    return model


def step_letterbox(model, ctx: StepContext):
    """Where the manifest sets input.frame, the letterbox in the fabric (`rtl/finn_letterbox.py`) goes in front of
    the dataflow: the accelerator's input becomes the camera's frame. Placed on the HW graph (NHWC UINT8 pixels in,
    after convert_to_hw), so that FINN partitions, specialises (to the RTL variant), folds and estimates it with
    the rest. Models with another resample than the fabric's are refused."""
    from flow.hw.rtl.finn_letterbox import InsertStreamLetterbox
    from flow.hw.rtl.letterbox_model import check_frame_build

    frame = check_frame_build(ctx.manifest, str(Path(ctx.cfg.run_dir) / "manifest.json"))
    return model if frame is None else model.transform(InsertStreamLetterbox(*frame, ctx.manifest.input.size))


def step_folding(model, ctx: StepContext):
    """The folding JSON, checked (`apply_folding_checked`), else FINN's target_fps heuristic."""
    cfg = ctx.cfg
    if cfg.folding:
        return apply_folding_checked(model, Path(cfg.folding))
    # our max pools first: FINN's SetFolding skips ops it does not know, counts them as missing the target and
    # then relaxes every layer down to their speed (measured: the all-RTL 416 design stuck at 72 FPS)
    model = fold_stream_maxpools(model, int(1e9 / cfg.clk_ns / cfg.target_fps))
    return _finn().step_target_fps_parallelization(model, ctx.dcfg)


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


def step_fifo_depths(model, ctx: StepContext):
    """Data-width converters where a producer's stream word differs from its consumer's, then an explicit FIFO on
    every stream: cfg.fifo_depth deep, or as cfg.fifo_config sizes each one (`python -m flow fifos`: from the
    simulated RTL, no Vivado). FINN's own sizing runs in Vivado's rtlsim and produced million-entry FIFOs in
    LPYOLO rebuilds. DWCs and FIFOs are both counted in the estimates."""
    cfg = ctx.cfg
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
    missing = [n.name for n in hw if n.name not in conf and not n.op_type.startswith("StreamLetterbox")]  # no folding
    if missing:
        raise FoldingError(f"{path}: leaves {', '.join(missing[:5])} unconfigured; they would run at PE=SIMD=1. "
                           "Regenerate it with `python -m flow fold`")
    model = model.transform(ApplyConfig(str(path)))
    for n in hw:
        inst = getCustomOp(model.get_node_from_name(n.name))
        try:  # FINN asserts later (no node named) where PE/SIMD do not divide the channels they fold
            for check in ("get_folded_input_shape", "get_folded_output_shape", "calc_wmem", "calc_tmem"):
                try:
                    getattr(inst, check, lambda: None)()
                except NotImplementedError:  # not defined for this node type
                    pass
        except Exception as e:  # noqa: BLE001 - AssertionError, FINNUserError, ZeroDivisionError alike
            got = {a: inst.get_nodeattr(a) for a in ("PE", "SIMD") if a in inst.get_nodeattr_types()}
            raise FoldingError(f"{path}: {n.name} ({n.op_type}) cannot fold with {got}: PE must divide its output "
                               f"channels and SIMD its input channels ({type(e).__name__}: {e or 'FINN assertion'})"
                               ) from None
        for attr, want in conf.get(n.name, {}).items():
            try:
                got = inst.get_nodeattr(attr)
            except AttributeError:
                raise FoldingError(f"{path}: {n.name} ({n.op_type}) has no attribute {attr}") from None
            if got != want:
                raise FoldingError(f"{path}: {n.name}.{attr} = {want} did not apply (node has {got})")
    return model


STEPS = {
    "input_thresholds": step_input_thresholds,
    "qonnx_to_finn": finn_step("qonnx_to_finn"),
    "tidy_up": finn_step("tidy_up"),
    "streamline": step_streamline_checked,
    "boundary": step_boundary,
    "convert_to_hw": step_convert_to_hw,
    "letterbox": step_letterbox,
    "minimize_bit_width_initial": finn_step("minimize_bit_width_initial"),
    "create_dataflow_partition": finn_step("create_dataflow_partition"),
    "specialize_layers": finn_step("specialize_layers"),
    "folding": step_folding,
    "minimize_bit_width": finn_step("minimize_bit_width"),
    "fifo_depths": step_fifo_depths,
    "generate_estimate_reports": finn_step("generate_estimate_reports"),
}
ESTIMATE_STEPS = list(STEPS)  # the order a build runs them in
PREFOLDING_STEPS = ESTIMATE_STEPS[: ESTIMATE_STEPS.index("folding")]
