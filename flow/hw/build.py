"""FINN (finn-plus) build of one run for the PYNQ-Z2 (xc7z020clg400-1, 100 MHz): our ordered step list.

Each step takes a model and returns a model; each result is saved as finn/intermediate_models/NN_<step>.onnx, which
the cross-check executes (python) as the `finn-*` backends. Steps left of the estimate reports run without
Vivado; `bitstream` continues with FINN's Vivado steps (`vivado.py`) where Vivado/Vitis HLS are installed.

The accelerator boundary (as in LPYOLO's released design): UINT8 NHWC pixels in, integer output codes NHWC out; `boundary.py` moves the
trailing output scale and layout change to the host. The board's facts come from `z2.py`, the report from `report.py`.
"""

from __future__ import annotations

import json
import os
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


MAX_CRASHED = 2  # failed builds kept for inspection (finn.crashed-<time>/, newest first); older ones are deleted
CRASH_NOTE = "crashed.json"  # written into every crashed build we keep: only folders holding it are ever pruned


def build_key(cfg: FinnConfig, prefolding: str) -> str:
    """The build's identity: everything it is made of (the pre-folding key plus folding, FIFO config and options).
    Written into build_done.json, so an estimate remade from the same inputs is recognisably the same build and the
    reports made from it (rtlsim.json, synth.json) stay valid."""
    import hashlib

    h = hashlib.sha256(prefolding.encode())
    opts = {k: v for k, v in asdict(cfg).items() if k not in ("run_dir", "steps")}
    h.update(json.dumps(opts, sort_keys=True).encode())
    h.update(Path(cfg.folding).read_bytes() if cfg.folding else b"-")
    if cfg.fifo_config:  # what sets the FIFOs; `fifos` adds a `sized_by` note to the file after building with it
        conf = json.loads(Path(cfg.fifo_config).read_text())
        h.update(json.dumps({k: conf.get(k) for k in ("fifo_depths", "impl_style", "ram_style")}, sort_keys=True).encode())
    return h.hexdigest()


def estimate_command(cfg: FinnConfig) -> str:
    """The command line that remakes this build (what provenance errors tell the user to run)."""
    cmd = f"python -m flow estimate --run {cfg.run_dir}"
    if cfg.standalone_thresholds:
        cmd += " --standalone-thresholds"
    if cfg.folding:
        cmd += f" --folding {cfg.folding}"
    if cfg.fifo_config:
        cmd += f" --fifos {cfg.fifo_config}"
    return cmd


def _previous(d: Path) -> Path:
    return d.with_name(d.name + ".previous")


def _set_aside_crashed(d: Path, why: str, kind: str = "crashed") -> Path:
    """Move a failed build to finn.<kind>-<time>/ with a note, and prune our builds of that kind to MAX_CRASHED
    (kind "over-budget": a build that finished but does not fit the board, never left where deploy reads)."""
    from flow.files import atomic_write_json

    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = next(p for k in range(1000) if not (p := d.with_name(f"{d.name}.{kind}-{stamp}-{os.getpid()}-{k}")).exists())
    d.rename(aside)
    atomic_write_json(aside / CRASH_NOTE, {"why": why, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    crashed = sorted((p for p in d.parent.glob(f"{d.name}.{kind}-*") if (p / CRASH_NOTE).is_file()),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in crashed[MAX_CRASHED:]:
        shutil.rmtree(old)
    print(f"note: the {'failed' if kind == 'crashed' else kind} build is kept in {aside} for inspection (the newest "
          f"{MAX_CRASHED} are kept)")
    return aside


def recover_build_dir(cfg: FinnConfig) -> None:
    """After a build killed mid-way (SIGKILL, power): the finished build it set aside comes back."""
    d, prev = cfg.build_dir, _previous(cfg.build_dir)
    if not prev.exists():
        return
    if (d / "build_done.json").exists():  # the new build had finished; only the old one's removal was cut short
        shutil.rmtree(prev)
        return
    if d.exists():
        _set_aside_crashed(d, "interrupted (the process was killed)")
    prev.rename(d)
    print(f"note: an interrupted build was set aside; the last good build is back in {d}")


def prepare_build_dir(cfg: FinnConfig, prefolding: str | None = None) -> bool:
    """A fresh build dir. The finished build there is set aside (finn.previous/) until the new one succeeds; a dir
    left by a crashed run (no build_done marker) is moved aside, not reused. When the finished build had the same
    `prefolding_key`, its pre-folding models are copied into the new one; returns whether."""
    d, prev = cfg.build_dir, _previous(cfg.build_dir)
    recover_build_dir(cfg)
    kept = False
    if d.exists() and not (d / "build_done.json").exists() and any(d.iterdir()):
        _set_aside_crashed(d, "left unfinished by an earlier run")
    elif d.exists() and (d / "build_done.json").exists():
        done = json.loads((d / "build_done.json").read_text())
        d.rename(prev)
        kept = prefolding is not None and done.get("prefolding_key") == prefolding and all(
            intermediate_model(prev, step).exists() for step in PREFOLDING_STEPS)
    elif d.exists():
        shutil.rmtree(d)  # empty
    (d / "intermediate_models").mkdir(parents=True, exist_ok=True)
    (d / "report").mkdir()
    if kept:  # the dataflow partitions stay with their models
        for step in PREFOLDING_STEPS:
            shutil.copy2(intermediate_model(prev, step), intermediate_model(d, step))
        parts = prev / "intermediate_models" / "supported_op_partitions"
        if parts.is_dir():
            shutil.copytree(parts, d / "intermediate_models" / "supported_op_partitions")
    return kept


def finish_build_dir(cfg: FinnConfig, ok: bool, why: str = "") -> None:
    """After the steps: on success the set-aside previous build goes; on failure the new one is set aside as
    crashed and the previous one comes back."""
    d, prev = cfg.build_dir, _previous(cfg.build_dir)
    if ok:
        if prev.exists():
            shutil.rmtree(prev)
        return
    if d.exists():
        _set_aside_crashed(d, why)
    if prev.exists():
        prev.rename(d)
        print(f"note: the last good build is kept in {d}")


def check_build(run_dir: Path) -> dict:
    """The run's FINN build must have been made from the run's current model.qonnx.onnx and manifest.json:
    returns its build_done record, else a StaleError naming the build and the command that remakes it."""
    from flow.provenance import check

    run_dir = Path(run_dir)
    done = run_dir / "finn" / "build_done.json"
    if not done.exists():
        raise FlowError(f"{run_dir}: no finished FINN estimate build (finn/build_done.json); run "
                        f"`python -m flow estimate --run {run_dir}` first")
    check(done, [run_dir / "model.qonnx.onnx", run_dir / "manifest.json"], remake=None)
    return json.loads(done.read_text())


def check_inputs(cfg: FinnConfig) -> tuple[Path, dict]:
    """Everything an estimate reads, checked before the build dir is touched: a refused estimate leaves the last
    good build as it was. Returns (QONNX path, manifest)."""
    import onnx

    from models import QuantSpec

    run_dir = Path(cfg.run_dir)
    link = run_dir / "finn"
    if link.is_symlink() and not cfg.build_dir.is_dir():
        raise FlowError(f"{link}: a symlink to {os.readlink(link)}, which is not a folder here (is that disk "
                        f"mounted?); mount it, or remove the link (rm {link}) to build inside the run folder")
    manifest = load_manifest(run_dir)
    if manifest.get("spec") is not None:  # an imported model (`flow import`) has no spec: FINN's steps judge it
        QuantSpec.from_json(manifest["spec"]).validate(for_finn=True)
    qonnx_path = run_dir / "model.qonnx.onnx"
    if not qonnx_path.is_file():
        raise FlowError(f"{qonnx_path}: missing; run `python -m flow export --out {run_dir}` first")
    try:
        onnx.load(str(qonnx_path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends: the file is not ONNX
        raise FlowError(f"{qonnx_path}: not a readable ONNX model ({type(e).__name__}: {e}); re-export it "
                        f"(`python -m flow export --out {run_dir}`)") from e
    from flow.provenance import check

    if manifest.get("files", {}).get("qonnx", {}).get("sha256") not in (None, _sha(qonnx_path)):
        raise FlowError(f"{run_dir / 'manifest.json'}: describes another model.qonnx.onnx than the one in {run_dir}; "
                        f"re-export both (`python -m flow export --out {run_dir}`)")
    for what, f in (("folding", cfg.folding), ("FIFO config", cfg.fifo_config)):
        if f and not Path(f).is_file():
            raise FoldingError(f"{f}: {what} file not found")
    if cfg.fifo_config and Path(cfg.fifo_config).resolve() == (run_dir / "fifos.json").resolve():
        check(Path(cfg.fifo_config), [qonnx_path], remake=f"python -m flow fifos --run {run_dir}")
    return qonnx_path, manifest


def _sha(path: Path) -> str:
    from flow.files import sha256

    return sha256(path)


def run_estimate(cfg: FinnConfig, quiet: bool = False) -> dict:
    """The estimate build of cfg.run_dir into finn/: inputs checked first, the previous good build kept until
    this one has succeeded, the run folder locked against a second writer."""
    from flow.runlock import run_lock

    qonnx_path, manifest = check_inputs(cfg)
    with run_lock(cfg.run_dir, estimate_command(cfg)):
        key = prefolding_key(cfg, qonnx_path, manifest)
        reused = prepare_build_dir(cfg, key)
        try:
            summary = _run_steps(cfg, qonnx_path, manifest, key, reused, quiet)
        except BaseException as e:
            finish_build_dir(cfg, ok=False, why=f"{type(e).__name__}: {e}"[:2000])
            raise
        if not summary["fits"]:  # finished, but not a design for the board: the last good build stays in finn/
            from flow.hw.report import over_budget_message

            prev_kept = _previous(cfg.build_dir).exists()
            summary["build_dir"] = str(_set_aside_crashed(cfg.build_dir, over_budget_message(summary), "over-budget"))
            if prev_kept:
                _previous(cfg.build_dir).rename(cfg.build_dir)
                print(f"note: the last good build is kept in {cfg.build_dir}")
        else:
            finish_build_dir(cfg, ok=True)
    return summary


def _run_steps(cfg: FinnConfig, qonnx_path: Path, manifest: dict, key: str, reused: bool, quiet: bool) -> dict:
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.files import atomic_write_json
    from flow.hw.compat import init_finn
    from flow.provenance import record

    run_dir = Path(cfg.run_dir)
    d = cfg.build_dir
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
    # build_done.json holds only what the build is made of: remade from the same inputs it is byte-identical
    atomic_write_json(d / "build_done.json", {"steps": ESTIMATE_STEPS, "prefolding_key": key,
                                              "build_key": build_key(cfg, key)})
    inputs = [qonnx_path, run_dir / "manifest.json", *(Path(f) for f in (cfg.folding, cfg.fifo_config) if f)]
    record(d / "build_done.json", inputs, estimate_command(cfg))
    return summary


