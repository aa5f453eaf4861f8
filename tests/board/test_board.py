"""Board runtime on a host: packing against FINN's own packer, the IODMA protocol on the simulated overlay,
bit-exactness against the golden model, and the failure modes a user meets on a real board."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from board.accelerator import Accelerator, BoardError, load_outputs, save_outputs
from board.packing import pack, pack_naive, unpack, unpack_naive
from board.pipeline import Pipeline, image_source, wider_prediction_text
from board.sim import SimOverlay
from flow.backends import QONNXBackend, load_manifest
from flow.deploy import make_deploy
from flow.samples import sample_images, to_nchw_float


@pytest.mark.parametrize("bits, signed", [(b, s) for b in (1, 2, 3, 4, 5, 8) for s in (False, True) if b > 1 or not s])
@pytest.mark.parametrize("fold", [1, 3, 18])
def test_packing_matches_finn_driver(bits, signed, fold):
    from finn.util.data_packing import finnpy_to_packed_bytearray
    from qonnx.core.datatype import DataType

    rng = np.random.default_rng(bits * 10 + fold)
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    v = rng.integers(lo, hi, (3, 4, 2 * fold))
    dt = DataType["BINARY"] if bits == 1 else DataType[("INT" if signed else "UINT") + str(bits)]
    ref = finnpy_to_packed_bytearray(v.reshape(3, 4, 2, fold).astype(np.float32), dt, reverse_inner=True,
                                     reverse_endian=True).reshape(-1)
    ours = pack(v.reshape(3, 4, 2, fold), bits, fold).reshape(-1)
    assert np.array_equal(ours, ref)
    assert bytes(ours) == pack_naive(v, bits, fold)
    assert np.array_equal(unpack(ours, bits, fold, v.size, signed), v.reshape(-1))
    assert unpack_naive(bytes(ours), bits, fold, v.size, signed) == v.reshape(-1).tolist()


@pytest.fixture(scope="module")
def deploy(tmp_path_factory, run_4w4a):
    d = tmp_path_factory.mktemp("deploy")
    run = d / "run"
    shutil.copytree(run_4w4a, run)
    info = make_deploy(run)
    return run, run / "deploy", info


def test_deploy_package_contents(deploy):
    run, dep, info = deploy
    assert info["bitfile"] is False and info["zip"].endswith(".zip")
    for f in ("manifest.json", "model.qcdq.onnx", "board/accelerator.py", "board/postprocess.py", "README.md",
              "pyproject.toml", "notebooks/inference.ipynb", "samples/astronaut.jpg"):
        assert (dep / f).exists(), f
    assert "torch" not in (dep / "board/accelerator.py").read_text()


def test_simulated_board_is_bit_exact_with_golden(deploy):
    run, dep, _ = deploy
    m = load_manifest(run)
    imgs = sample_images(64, 3, 2)
    golden = QONNXBackend(run / "model.qonnx.onnx", m).run(to_nchw_float(imgs)).transpose(0, 2, 3, 1)
    acc = Accelerator(dep, overlay=SimOverlay(dep))
    got = np.concatenate([acc(f[None]) for f in imgs])
    assert got.dtype == np.int32 and np.array_equal(got, golden)
    assert acc.fps() > 0 and len(acc.timings) == 5
    batch = Accelerator(dep, overlay=SimOverlay(dep), batch=5)  # one DMA transfer for five frames
    assert np.array_equal(batch(imgs), golden)


def test_board_outputs_round_trip_into_crosscheck(deploy, tmp_path):
    from flow.crosscheck import run_crosscheck

    run, dep, _ = deploy
    acc = Accelerator(dep, overlay=SimOverlay(dep))
    imgs = sample_images(64, 2, 1)
    save_outputs(tmp_path / "b.npz", imgs, np.concatenate([acc(f[None]) for f in imgs]), acc.manifest)
    inputs, outputs = load_outputs(tmp_path / "b.npz")
    assert inputs.shape == (3, 64, 64, 3) and outputs.shape == (3, 2, 2, 18)
    r = run_crosscheck(run, device="cpu", n_real=1, n_random=1, board_outputs=tmp_path / "b.npz")
    assert r["backends"]["board-outputs"]["bit_exact"] and r["backends"]["board-sim"]["bit_exact"]


def test_failure_modes_are_named(deploy, tmp_path):
    run, dep, _ = deploy
    with pytest.raises(BoardError, match="finn-accel.bit: bitfile missing"):
        Accelerator(dep)  # no bitfile in a Vivado-less build, and no overlay given
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BoardError, match="manifest.json missing"):
        Accelerator(empty)
    acc = Accelerator(dep, overlay=SimOverlay(dep))
    with pytest.raises(BoardError, match="input must be uint8"):
        acc(np.zeros((1, 32, 32, 3), np.uint8))
    stalled = Accelerator(dep, overlay=SimOverlay(dep, stall=True), timeout_s=0.2)
    with pytest.raises(BoardError, match="DMA did not complete within 0.2 s"):
        stalled(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(BoardError, match="not idle"):
        stalled(np.zeros((1, 64, 64, 3), np.uint8))  # the hung transfer is reported, not silently restarted
    bad = tmp_path / "bad.npz"
    save_outputs(bad, np.zeros((1, 64, 64, 3), np.uint8), np.zeros((1, 18, 2, 2)), acc.manifest)
    from flow.crosscheck import run_crosscheck
    from flow.errors import FlowError

    with pytest.raises(FlowError, match="wrong layout or output size"):
        run_crosscheck(run, device="cpu", n_real=1, n_random=0, board_outputs=bad)


def test_pipeline_skips_broken_images_and_reports_both_fps(deploy, tmp_path):
    run, dep, _ = deploy
    imgs = tmp_path / "imgs"
    shutil.copytree(dep / "samples", imgs)
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    acc = Accelerator(dep, overlay=SimOverlay(dep))
    seen = []
    with pytest.warns(UserWarning, match="broken.jpg: cannot decode image"):
        stats = Pipeline(acc, conf_thresh=0.0).run(image_source(imgs), lambda n, img, d: seen.append((n, img, d)))
    assert stats["frames"] == 3 and stats["undecodable"] == 1
    assert stats["accelerator_fps"] > 0 and stats["end_to_end_fps"] > 0
    for _, img, dets in seen:  # boxes are mapped back onto the original image
        assert dets.shape[1] == 6 and (dets[:, [0, 2]] <= img.shape[1]).all() and (dets[:, [1, 3]] <= img.shape[0]).all()

    def dying_camera():
        yield "f1", np.zeros((48, 64, 3), np.uint8)
        raise BoardError("camera 0 stopped delivering frames after 1 frames (unplugged?)")

    with pytest.raises(BoardError, match="stopped delivering frames"):
        Pipeline(acc).run(dying_camera())


def test_wider_prediction_text():
    dets = np.array([[10, 20, 40, 60, 0.9, 0], [0, 0, 5, 5, 0.1, 0]], np.float32)
    assert wider_prediction_text("0_Parade_1", dets) == "0_Parade_1\n2\n10.0 20.0 30.0 40.0 0.9000\n0.0 0.0 5.0 5.0 0.1000\n"


def test_cli_run_and_bench(deploy, tmp_path):
    run, dep, _ = deploy
    p = subprocess.run([sys.executable, "-m", "board", "run", "--sim", "--deploy", str(dep), "--images",
                        str(dep / "samples"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    out = json.loads((tmp_path / "o/detections.json").read_text())
    assert set(out["detections"]) == {"astronaut.jpg", "chelsea.jpg", "coffee.jpg"}
    assert (tmp_path / "o/astronaut.png").exists()
    b = subprocess.run([sys.executable, "-m", "board", "bench"], capture_output=True, text=True)
    assert b.returncode == 0 and "target < 10 ms" in b.stdout, b.stdout
    missing = subprocess.run([sys.executable, "-m", "board", "run", "--deploy", str(tmp_path), "--images", "x"],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "manifest.json missing" in missing.stderr


def test_board_package_imports_without_pynq_torch_or_onnx(tmp_path):
    code = ("import sys, board.accelerator, board.pipeline, board.postprocess, board.packing, board.sim; "
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'pynq') if m in sys.modules]; "
            "assert not bad, bad")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
