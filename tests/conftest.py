"""Shared fixtures: one 64x64 4w4a run folder (exported, lowered to QCDQ) and one FINN estimate of it per session.
A test that changes a run works on its own copy (`copy_run`); cases that cannot be small (every preset through
FINN or Verilator) are marked `slow`: `make test` leaves them out, `make test-slow` (and CI) runs them."""

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def run_4w4a(tmp_path_factory):
    """A 64x64 4w4a run directory: fresh calibrated model exported to QONNX + manifest + QCDQ."""
    from flow.export import export_run
    from flow.qcdq import lower_to_qcdq

    d = tmp_path_factory.mktemp("run_4w4a")
    export_run(d, "4w4a", 64, frame="none")  # the ARM letterboxes: the canvas path (frame runs: their own tests)
    lower_to_qcdq(d / "model.qonnx.onnx", d / "model.qcdq.onnx")
    return d


def copy_run(src: Path, dst: Path) -> Path:
    """A test's own copy of a shared run folder (what other tests' runs wrote there left behind)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".flow.lock", "crosscheck.json", "deploy"), dirs_exist_ok=True)
    return dst


@pytest.fixture(scope="session")
def estimated_4w4a(tmp_path_factory, run_4w4a):
    """(run folder, estimate summary): run_4w4a through FINN's estimate steps, default folding. Read it; change a copy."""
    from flow.hw.build import FinnConfig, run_estimate

    d = copy_run(run_4w4a, tmp_path_factory.mktemp("estimated_4w4a") / "run")
    return d, run_estimate(FinnConfig(run_dir=str(d)), quiet=True)
