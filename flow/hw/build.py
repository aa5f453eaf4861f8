"""FINN (finn-plus) build of one run for the PYNQ-Z2 (xc7z020clg400-1, 100 MHz), up to the estimate reports.

The steps of `steps.py` run in their order, in the build folder `build_dir.py` keeps.

Each step takes a model and returns a model; each result is saved as finn/intermediate_models/NN_<step>.onnx, which
the cross-check executes (python) as the `finn-*` backends. Steps left of the estimate reports run without
Vivado; `bitstream` continues with FINN's Vivado steps (`vivado.py`) where Vivado/Vitis HLS are installed.

The accelerator boundary (as in LPYOLO's released design): UINT8 NHWC pixels in, integer output codes NHWC out; `boundary.py` moves the
trailing output scale and layout change to the host. The board's facts come from `z2.py`, the report from `report.py`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from board.manifest import Manifest, load_manifest
from flow.errors import FlowError
from flow.hw.build_dir import finish_build_dir, intermediate_model, prepare_build_dir
from flow.hw.report import plot_layers, resource_summary
from flow.hw.steps import (
    ESTIMATE_STEPS,
    PREFOLDING_STEPS,
    STEPS,
    FinnConfig,
    FoldingError,
    StepContext,
    dataflow_cfg,
    fifo_config_of,
)

HW_ATTRS = ["PE", "SIMD", "parallel_window", "ram_style", "resType", "mem_mode", "depth"]


# the modules whose code runs in the steps before folding (with what they import from this checkout: flow.codekey)
PREFOLDING_MODULES = ["flow.hw.steps", "flow.hw.boundary", "flow.hw.rtl.finn_op", "flow.hw.rtl.finn_letterbox",
                      "flow.hw.compat"]


def prefolding_key(cfg: FinnConfig, qonnx_path: Path, manifest: Manifest) -> str:
    """Everything the steps before folding read: the model, its manifest, the build options they use and the code
    that runs them (the logic of PREFOLDING_MODULES' import closure: a comment edit keeps the key, a code change
    anywhere the steps reach changes it). A folding search re-estimates one model many times; only folding and what
    follows change."""
    import hashlib
    from importlib.metadata import version

    from flow.codekey import code_key

    h = hashlib.sha256(qonnx_path.read_bytes())
    for part in (json.dumps(manifest.to_json(), sort_keys=True), json.dumps([cfg.standalone_thresholds, cfg.part, cfg.clk_ns]),
                 version("finn-plus"), version("qonnx"), code_key(PREFOLDING_MODULES)):
        h.update(part.encode())
    return h.hexdigest()


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


def check_inputs(cfg: FinnConfig) -> tuple[Path, Manifest]:
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
    if manifest.spec is not None:  # an imported model (`flow import`) has no spec: FINN's steps judge it
        QuantSpec.from_json(manifest.spec).validate(for_finn=True)
    from flow.hw.rtl.letterbox_model import check_frame_build

    check_frame_build(manifest, str(run_dir / "manifest.json"))
    qonnx_path = run_dir / "model.qonnx.onnx"
    if not qonnx_path.is_file():
        raise FlowError(f"{qonnx_path}: missing; run `python -m flow export --out {run_dir}` first")
    try:
        onnx.load(str(qonnx_path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends: the file is not ONNX
        raise FlowError(f"{qonnx_path}: not a readable ONNX model ({type(e).__name__}: {e}); re-export it "
                        f"(`python -m flow export --out {run_dir}`)") from e
    from flow.provenance import check

    if manifest.files.get("qonnx", {}).get("sha256") not in (None, _sha(qonnx_path)):
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
            from flow.hw.build_dir import _previous, _set_aside_crashed
            from flow.hw.report import over_budget_message

            prev_kept = _previous(cfg.build_dir).exists()
            summary["build_dir"] = str(_set_aside_crashed(cfg.build_dir, over_budget_message(summary), "over-budget"))
            if prev_kept:
                _previous(cfg.build_dir).rename(cfg.build_dir)
                print(f"note: the last good build is kept in {cfg.build_dir}")
        else:
            finish_build_dir(cfg, ok=True)
    return summary


def _run_steps(cfg: FinnConfig, qonnx_path: Path, manifest: Manifest, key: str, reused: bool, quiet: bool) -> dict:
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.files import atomic_write_json
    from flow.hw.compat import init_finn
    from flow.provenance import record

    run_dir = Path(cfg.run_dir)
    d = cfg.build_dir
    init_finn(d / "tmp")
    import contextlib
    import io
    ctx = StepContext(cfg, dataflow_cfg(cfg, None if cfg.folding else cfg.target_fps), manifest)
    first = len(PREFOLDING_STEPS) if reused else 0
    model = ModelWrapper(str(intermediate_model(d, PREFOLDING_STEPS[-1]) if reused else qonnx_path))
    cfg.steps = list(ESTIMATE_STEPS)
    atomic_write_json(d / "build_config.json", asdict(cfg))
    times = {name: "reused" for name in cfg.steps[:first]}
    for name in cfg.steps[first:]:
        t0 = time.perf_counter()
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                model = STEPS[name](model, ctx)
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
    summary.update({"variant": manifest.variant, "img": manifest.input.size, "step_seconds": times,
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


