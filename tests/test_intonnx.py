"""The integer golden model (model.int.onnx): FINN's streamlined integer semantics in standard ONNX, bit for bit
against FINN's own execution on every preset, as the cross-check's reference, and its refusals."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from board.manifest import load_manifest
from flow.backends import Backend, IntORTBackend
from flow.crosscheck import run_crosscheck
from flow.export import export_run
from flow.intonnx import IntegerRefusal, accumulator_bound, lower_to_integer, streamlined_model
from flow.samples import sample_images, to_nchw_float
from models import PRESETS

ROOT = Path(__file__).resolve().parents[1]
INTEGER_PRESETS = [p for p in PRESETS if p != "float"]
STANDARD_OPS = {"Conv", "Unsqueeze", "GreaterOrEqual", "Cast", "ReduceSum", "Add", "Mul", "Identity", "MaxPool"}


def finn_streamlined_backend(run: Path, tmp: Path):
    """FINN's python execution of the very model the lowering starts from."""
    from flow.hw.finn_backend import FinnPythonBackend

    model, manifest = streamlined_model(run / "model.qonnx.onnx")
    path = tmp / "intermediate_models" / "streamlined.onnx"  # FinnPythonBackend keeps FINN's tmp beside it
    path.parent.mkdir(parents=True)
    model.save(str(path))
    return FinnPythonBackend(path, "finn-streamlined-here", manifest)


@pytest.mark.parametrize("variant", INTEGER_PRESETS)
def test_integer_model_is_finns_arithmetic_on_every_preset(tmp_path, variant):
    run = tmp_path / "run"
    export_run(run, variant, 64)
    info = lower_to_integer(run / "model.qonnx.onnx", run / "model.int.onnx")
    assert info["layers"] == 10 and all(b["accumulator_bound"] < 2**24 for b in info["bounds"])
    assert {n.op_type for n in onnx.load(str(run / "model.int.onnx")).graph.node} <= STANDARD_OPS
    finn = finn_streamlined_backend(run, tmp_path / "finn")
    r = run_crosscheck(run, device="cpu", n_real=2, n_random=1, reference="int-ort", extra_backends=[finn])
    assert r["reference"] == "int-ort-cpu" and r["reference_kind"].startswith("integer")
    row = r["backends"][finn.name]
    assert row["compared_as"] == "integer (bit for bit)"
    assert row["bit_exact"] and row["tie_flips"] == 0 and row["detections_equal"], row
    assert row["elements"] == 3 * 18 * 2 * 2
    assert r["backends"]["board-sim"]["bit_exact"]  # the packing path around the integer golden
    assert not r["any_mismatch"], r["mismatching_backends"]


def test_integer_model_runs_any_batch_and_names_its_layers(run_4w4a, tmp_path):
    run = shutil.copytree(run_4w4a, tmp_path / "run")
    lower_to_integer(run / "model.qonnx.onnx", run / "model.int.onnx")
    m = load_manifest(run)
    b = IntORTBackend(run / "model.int.onnx", m)
    x = to_nchw_float(sample_images(64, 2, 3, 1, resample=m.input.resample))
    assert np.array_equal(b.run(x), np.concatenate([b.run(x[i : i + 1]) for i in range(len(x))]))
    names = {n.name for n in onnx.load(str(run / "model.int.onnx")).graph.node}
    assert {f"conv{i}" for i in range(10)} <= names and {f"act{i}" for i in range(10)} <= names


def test_accumulator_bound_and_refusal_name_the_layer(run_4w4a, tmp_path, monkeypatch):
    from qonnx.core.datatype import DataType

    w = np.array([[1, -2], [3, 4]], np.float32)
    assert accumulator_bound(w, DataType["UINT4"]) == 6 * 15  # column 1: |-2| + |4|, inputs up to 15
    assert accumulator_bound(w, DataType["INT4"]) == 6 * 8
    import flow.intonnx

    monkeypatch.setattr(flow.intonnx, "EXACT_LIMIT", 100_000)  # below layer 0's worst case (255 * sum |w|)
    run = shutil.copytree(run_4w4a, tmp_path / "run")
    with pytest.raises(IntegerRefusal, match=r"MatMul_0 \(MatMul\): layer 0: worst-case \|accumulator\| \d+ >= 2\^24"):
        lower_to_integer(run / "model.qonnx.onnx", run / "model.int.onnx")
    assert not (run / "model.int.onnx").exists()


def test_float_preset_is_refused(tmp_path):
    export_run(tmp_path, "float", 64)
    with pytest.raises(IntegerRefusal, match="model.qonnx.onnx"):
        lower_to_integer(tmp_path / "model.qonnx.onnx", tmp_path / "model.int.onnx")
    assert not (tmp_path / "model.int.onnx").exists()


def test_integer_reference_allows_no_tie_to_an_integer_backend(run_4w4a, tmp_path):
    """One code off in an integer backend is a mismatch against the integer golden, whatever the float graph says."""
    run = shutil.copytree(run_4w4a, tmp_path / "run")
    lower_to_integer(run / "model.qonnx.onnx", run / "model.int.onnx")
    golden = IntORTBackend(run / "model.int.onnx", load_manifest(run))

    class OffByOne(Backend):
        name, exact_integer = "off-by-one-hw", True

        def run(self, x):
            y = golden.run(x)
            y.flat[5] += 1
            return y

    r = run_crosscheck(run, device="cpu", n_real=1, n_random=1, reference="int-ort", extra_backends=[OffByOne()])
    row = r["backends"]["off-by-one-hw"]
    assert row["mismatches"] == 1 and row["tie_flips"] == 0 and r["mismatching_backends"] == ["off-by-one-hw"]
    # the default float reference keeps today's table, and now lists the integer golden beside the others
    r = run_crosscheck(run, device="cpu", n_real=1, n_random=1)
    assert r["reference"] == "qonnx" and r["backends"]["int-ort-cpu"]["bit_exact"]


def test_stale_integer_model_is_refused(run_4w4a, tmp_path):
    from flow.provenance import StaleError

    run = shutil.copytree(run_4w4a, tmp_path / "run")
    lower_to_integer(run / "model.qonnx.onnx", run / "model.int.onnx")
    proto = onnx.load(str(run / "model.int.onnx"))
    proto.producer_name = "edited by hand"
    onnx.save(proto, str(run / "model.int.onnx"))
    with pytest.raises(StaleError, match="qcdq --integer"):
        run_crosscheck(run, device="cpu", n_real=1, n_random=0, reference="int-ort")


def test_cli_qcdq_integer(run_4w4a, tmp_path):
    run = shutil.copytree(run_4w4a, tmp_path / "run")
    cmd = [sys.executable, "-m", "flow", "qcdq", "--integer", str(run / "model.qonnx.onnx"), str(run / "model.int.onnx")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "10 integer layers" in r.stdout and "< 2^24" in r.stdout and (run / "model.int.onnx").is_file()
    cc = [sys.executable, "-m", "flow", "crosscheck", "--run", str(run), "--device", "cpu", "--reference", "int-ort",
          "--real", "1", "--random", "0"]
    r = subprocess.run(cc, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join(r.stdout.split())
    assert "reference int-ort-cpu, integer:" in said and "verdict: all bit-exact" in said
    r = subprocess.run([*cmd[:5], str(tmp_path / "nowhere.onnx"), str(tmp_path / "o.onnx")], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 1 and "error:" in r.stderr and not (tmp_path / "o.onnx").exists()


@pytest.mark.slow
def test_416_calibrated_4w4a_hardware_matches_the_integer_golden(tmp_path):
    """At 416 the float executors flip ties against the hardware; FINN's HW model must match the integer golden
    bit for bit (0 tie flips) with the same boxes, and the float backends' differences be classified as ties."""
    from flow.hw.build import FinnConfig, run_estimate

    export_run(tmp_path, "4w4a", 416)
    run_estimate(FinnConfig(run_dir=str(tmp_path)), quiet=True)
    r = run_crosscheck(tmp_path, device="cpu", n_real=3, n_random=0, reference="int-ort")
    for name in ("finn-streamlined", "finn-hw", "board-sim"):
        row = r["backends"][name]
        assert row["bit_exact"] and row["tie_flips"] == 0 and row["detections_equal"], (name, row)
    assert not r["any_mismatch"], r["mismatching_backends"]
