"""Board runtime on a host: packing against FINN's own packer, the IODMA protocol on the simulated overlay,
bit-exactness against the golden model, and the failure modes a user meets on a real board."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from board.accelerator import Accelerator, BoardError, load_outputs, save_outputs
from board.manifest import load_manifest
from board.packing import pack, pack_naive, unpack, unpack_naive
from board.pipeline import Pipeline, image_source, wider_prediction_text
from board.preprocess import letterbox
from board.sim import SimOverlay
from flow.backends import QONNXBackend
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
    for f in ("manifest.json", "model.qcdq.onnx", "board/accelerator.py", "board/postprocess.py", "board/bench.py",
              "README.md", "setup.py", "notebooks/inference.ipynb", "samples/astronaut.jpg"):
        assert (dep / f).exists(), f
    assert "torch" not in (dep / "board/accelerator.py").read_text()


def test_deploy_package_installs_offline_with_the_boards_setuptools(deploy, tmp_path):
    """PYNQ 3.0.1: pip 22.0.2, setuptools 59.6, no internet. A pyproject.toml turns on build isolation (pip then
    downloads setuptools) and a [project] table needs setuptools >= 61: the package has neither, only a setup.py
    that setuptools 59 reads, and installs with no index at all."""
    _, dep, _ = deploy
    assert not (dep / "pyproject.toml").exists()
    setup_py = (dep / "setup.py").read_text()
    assert "[project]" not in setup_py and "setup(" in setup_py
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-deps",
                        "--target", str(tmp_path / "site"), str(dep)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "site/board/pipeline.py").exists() and (tmp_path / "site/board/bench.py").exists()


def test_simulated_board_is_bit_exact_with_golden(deploy):
    run, dep, _ = deploy
    m = load_manifest(run)
    imgs = sample_images(64, 3, 2, resample="bilinear")
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
    imgs = sample_images(64, 2, 1, resample="bilinear")
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
    with pytest.raises(BoardError, match=r"DMA did not complete within 0.2 s: idma0 \(input IODMA\) ap_ctrl=0x00 "
                                         r"\(busy\), odma0 \(output IODMA\) ap_ctrl=0x00 \(busy\)"):
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
    assert set(stats["stage_ms"]) == {"decode", "letterbox", "accelerator", "postprocess", "sink"}
    assert [n for n, _, _ in seen] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]  # in order, from 2 workers
    for _, img, dets in seen:  # boxes are mapped back onto the original image
        assert dets.shape[1] == 6 and (dets[:, [0, 2]] <= img.shape[1]).all() and (dets[:, [1, 3]] <= img.shape[0]).all()


def test_pipeline_frames_of_any_size_and_channel_count(deploy):
    """A frame of another size or channel count is letterboxed, or (an unusable shape) skipped with its name."""
    _, dep, _ = deploy
    acc = Accelerator(dep, overlay=SimOverlay(dep))
    frames = [("grey", np.full((30, 90), 7, np.uint8)), ("rgba", np.zeros((200, 100, 4), np.uint8)),
              ("two-channel", np.zeros((20, 20, 2), np.uint8)), ("hd", np.zeros((720, 1280, 3), np.uint8)),
              ("16-bit", np.full((50, 50), 65535, np.uint16))]
    seen = []
    with pytest.warns(UserWarning, match=r"two-channel: expected an HxW \(grey\), HxWx3 \(RGB\) or HxWx4"):
        stats = Pipeline(acc).run(iter(frames), lambda n, img, d: seen.append((n, img.shape, int(img.max()))))
    assert stats["frames"] == 4 and stats["undecodable"] == 1
    assert seen == [("grey", (30, 90, 3), 7), ("rgba", (200, 100, 3), 0), ("hd", (720, 1280, 3), 0),
                    ("16-bit", (50, 50, 3), 255)]


def test_pipeline_letterboxes_with_the_models_resample(deploy, tmp_path):
    """manifest.json's input.resample (the model's, from its QuantSpec) picks the board's letterbox; a deploy folder
    without it is bilinear (older manifests), one this runtime does not know is refused by name."""
    import dataclasses

    _, dep, _ = deploy
    acc = Accelerator(dep, overlay=SimOverlay(dep))
    assert acc.manifest.input.resample == "bilinear-exact" and Pipeline(acc).resample == "bilinear-exact"  # the default
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    size = acc.manifest.input.size
    d = tmp_path / "dep"
    d.mkdir()
    shutil.copy(dep / "model.qcdq.onnx", d / "model.qcdq.onnx")
    acc.manifest.replace(input=dataclasses.replace(acc.manifest.input, resample="nearest")).write(d / "manifest.json")
    canvas = Pipeline(Accelerator(d, overlay=SimOverlay(d)))._prepare("f", frame)[1]
    np.testing.assert_array_equal(canvas, letterbox(frame, size, resample="nearest")[0])
    older = acc.manifest.to_json()
    del older["contract_sha256"]  # as a manifest from before the contract hashes, which is not checked
    (d / "manifest.json").write_text(json.dumps({**older, "input": {**older["input"], "resample": "lanczos"}}))
    with pytest.raises(BoardError, match=r"manifest.json: input.resample = \"lanczos\" \(unknown resample; use one of"):
        Accelerator(d, overlay=SimOverlay(d))
    del older["input"]["resample"]
    (d / "manifest.json").write_text(json.dumps(older))
    older_acc = Accelerator(d, overlay=SimOverlay(d))
    np.testing.assert_array_equal(Pipeline(older_acc)._prepare("f", frame)[1],
                                  letterbox(frame, size, resample="bilinear")[0])


def test_camera_that_disappears_stops_the_stream_cleanly(deploy):
    _, dep, _ = deploy
    acc = Accelerator(dep, overlay=SimOverlay(dep))

    def dying_camera():
        for i in range(3):
            yield f"f{i}", np.zeros((48, 64, 3), np.uint8)
        raise BoardError("camera 0 stopped delivering frames after 3 frames (unplugged?)")

    seen = []
    with pytest.raises(BoardError, match="stopped delivering frames"):
        Pipeline(acc).run(dying_camera(), lambda n, img, d: seen.append(n))
    assert seen == ["f0", "f1", "f2"]  # what the camera delivered still came out


@pytest.mark.parametrize("queued", [1, 2, 12])
def test_stalled_accelerator_is_reported_within_2s_with_frames_queued(deploy, queued):
    """Before: with >= 2 frames queued the dying accelerator thread's guard blocked forever on a full queue."""
    import threading
    import time

    _, dep, _ = deploy
    acc = Accelerator(dep, overlay=SimOverlay(dep, stall=True))
    frames = [(f"f{i}", np.zeros((64, 64, 3), np.uint8)) for i in range(queued)]
    outcome = []

    def run():
        t0 = time.perf_counter()
        try:
            Pipeline(acc).run(iter(frames))
        except BoardError as e:
            outcome.append((time.perf_counter() - t0, str(e)))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "the pipeline hung"
    (seconds, message), = outcome
    assert seconds < 2.0, seconds
    assert "DMA did not complete" in message and "odma0 (output IODMA) ap_ctrl=0x00 (busy)" in message


def test_dma_buffers_are_cacheable_and_the_runtime_flushes_and_invalidates(deploy):
    """As FINN's driver: cacheable buffers, flush before the transfer, invalidate after. The simulated overlay's
    IODMAs see only the DRAM copy, so a runtime that skipped the flush would send the previous (here: zero) frame."""
    run, dep, _ = deploy
    img = sample_images(64, 1, 0, resample="bilinear")
    golden = QONNXBackend(run / "model.qonnx.onnx", load_manifest(run)).run(to_nchw_float(img)).transpose(0, 2, 3, 1)
    acc = Accelerator(dep, overlay=SimOverlay(dep))
    assert acc.ibuf.cacheable and acc.obuf.cacheable and acc.copy_in
    assert np.array_equal(acc(img), golden)
    unflushed = Accelerator(dep, overlay=SimOverlay(dep))
    unflushed.ibuf.flush = lambda: None
    zeros = QONNXBackend(run / "model.qonnx.onnx", load_manifest(run)).run(np.zeros((1, 3, 64, 64), np.float32))
    assert np.array_equal(unflushed(img), zeros.transpose(0, 2, 3, 1)) and not np.array_equal(golden, zeros.transpose(0, 2, 3, 1))


def test_waiting_for_the_accelerator_sleeps_instead_of_spinning(deploy):
    """The wait releases the GIL: over a 50 ms frame the waiting thread uses a few ms of CPU (a busy poll: ~50)."""
    import time

    _, dep, _ = deploy
    acc = Accelerator(dep, overlay=SimOverlay(dep, frame_time_s=0.05))
    frame = np.zeros((1, 64, 64, 3), np.uint8)
    acc(frame)
    acc.pack_input(frame)
    c0, t0 = time.thread_time(), time.perf_counter()
    acc.execute()
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    assert wall >= 0.05 and cpu < 0.2 * wall, (wall, cpu)


def test_same_names_in_different_folders_keep_their_own_results(deploy, tmp_path):
    from board.__main__ import main

    _, dep, _ = deploy
    for sub, photo in (("a", "astronaut"), ("b", "coffee")):
        (tmp_path / "imgs" / sub).mkdir(parents=True)
        shutil.copy(dep / "samples" / f"{photo}.jpg", tmp_path / "imgs" / sub / "x.jpg")
    assert main(["run", "--sim", "--deploy", str(dep), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o"),
                 "--conf", "0"]) == 0
    out = json.loads((tmp_path / "o/detections.json").read_text())["detections"]
    assert set(out) == {"a/x.jpg", "b/x.jpg"} and out["a/x.jpg"] != out["b/x.jpg"]
    assert (tmp_path / "o/a/x.png").exists() and (tmp_path / "o/b/x.png").exists()


def test_simulated_overlay_without_a_usable_model_says_so(deploy, tmp_path):
    _, dep, _ = deploy
    d = tmp_path / "dep"
    d.mkdir()
    shutil.copy(dep / "manifest.json", d / "manifest.json")
    with pytest.raises(BoardError, match=r"model.qcdq.onnx: missing; .*python -m flow deploy"):
        SimOverlay(d)
    (d / "model.qcdq.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(BoardError, match="model.qcdq.onnx: not a loadable ONNX model"):
        SimOverlay(d)
    p = subprocess.run([sys.executable, "-m", "board", "run", "--sim", "--deploy", str(d), "--images",
                        str(dep / "samples"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert p.returncode == 1 and "not a loadable ONNX model" in p.stderr and "Traceback" not in p.stderr, p.stderr


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
    b = subprocess.run([sys.executable, "-m", "board", "bench", "--sim", "--deploy", str(dep), "--json",
                        str(tmp_path / "b.json"), "--reps", "1", "--frames", "8"], capture_output=True, text=True)
    assert b.returncode == 0, b.stdout + b.stderr
    r = json.loads((tmp_path / "b.json").read_text())
    for key in ("x86_ms_per_frame", "x86_fps_estimate", "x86_bound_stage", "stages"):
        assert key in r, key
    assert r["stages"]["accelerator"]["execute_measured_on_sim"] and r["pipeline_x86"]["frames"] == 8
    assert "FPS from the stage times" in b.stdout and not any("a9" in k for k in r)  # the board measures only
    # the host's A9 estimate of the same loop: `python -m flow bench a9`, on the same measurements
    e = subprocess.run([sys.executable, "-m", "flow", "bench", "a9", "--sim", "--deploy", str(dep), "--json",
                        str(tmp_path / "e.json"), "--reps", "1", "--frames", "8"], capture_output=True, text=True)
    assert e.returncode == 0, e.stdout + e.stderr
    r = json.loads((tmp_path / "e.json").read_text())
    for key in ("x86_ms_per_frame", "a9_ms_per_frame", "a9_fps_estimate", "bound_stage", "stages"):
        assert key in r, key
    assert r["stages"]["accelerator"]["execute_measured_on_sim"] and r["pipeline_x86"]["frames"] == 8
    assert r["a9_fps_range"][0] <= r["a9_fps_estimate"] <= r["a9_fps_range"][1]
    assert "A9 estimate" in e.stdout
    missing = subprocess.run([sys.executable, "-m", "board", "run", "--deploy", str(tmp_path), "--images", "x"],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "manifest.json missing" in missing.stderr


def test_board_package_imports_without_pynq_torch_or_onnx(tmp_path):
    code = ("import sys, board.accelerator, board.pipeline, board.postprocess, board.packing, board.sim; "
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'pynq') if m in sys.modules]; "
            "assert not bad, bad")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
