"""The FINN build folder's lifecycle (`<run>/finn/`): a build never destroys the last good one.

A new build sets the finished one aside (finn.previous/) until it has succeeded; a failed or interrupted build is
moved to finn.crashed-<time>/ with a note (the newest MAX_CRASHED kept) and the last good build comes back; the
pre-folding models of a finished build with the same pre-folding key are copied into the new one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from flow.hw.steps import ESTIMATE_STEPS, PREFOLDING_STEPS, FinnConfig

MAX_CRASHED = 2  # failed builds kept for inspection (finn.crashed-<time>/, newest first); older ones are deleted
CRASH_NOTE = "crashed.json"  # written into every crashed build we keep: only folders holding it are ever pruned


def intermediate_model(build_dir: Path, step: str) -> Path:
    """Where `run_estimate` saves the model after `step`: finn/intermediate_models/NN_<step>.onnx."""
    return Path(build_dir) / "intermediate_models" / f"{ESTIMATE_STEPS.index(step):02d}_{step}.onnx"


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
