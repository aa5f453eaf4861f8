import os
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
    export_run(d, "4w4a", 64)
    lower_to_qcdq(d / "model.qonnx.onnx", d / "model.qcdq.onnx")
    return d
