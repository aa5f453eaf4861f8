"""A frame build on the board's host path (manifest input.frame: the letterbox is in the fabric): frames decoded
into the accelerator's input buffers, nothing letterboxed on the host, the simulated overlay letterboxing
with letterbox_fixed, boxes mapped back through the frame's geometry, other sizes fitted with a warning; and the
accelerator's wait beside a Python-bound thread."""

import dataclasses
import io
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from board.accelerator import WAIT_SWITCH_S, Accelerator, BoardError
from board.manifest import load_manifest
from board.pipeline import Pipeline, decode_image, decode_into
from board.postprocess import detect_with_manifest
from board.preprocess import letterbox_fixed, letterbox_geometry, unletterbox_boxes
from board.sim import SimOverlay
from flow.backends import QONNXBackend
from flow.deploy import make_deploy
from flow.samples import to_nchw_float

FRAME = (96, 72)  # (width, height): the 64x64 test network's letterbox fits it to 64x48


@pytest.fixture(scope="module")
def frame_deploy(tmp_path_factory, run_4w4a):
    """(run, deploy): the 4w4a run deployed as a frame build: the deploy's manifest with input.frame and the exact
    resample (the network and its golden model are the same; only what the accelerator reads changes)."""
    d = tmp_path_factory.mktemp("frame")
    run = d / "run"
    shutil.copytree(run_4w4a, run)
    make_deploy(run)
    m = load_manifest(run / "deploy/manifest.json")
    m = m.replace(input=dataclasses.replace(m.input, frame=FRAME, resample="bilinear-exact"))
    m.write(run / "deploy/manifest.json")
    return run, run / "deploy"


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : FRAME[1], 0 : FRAME[0]]
    smooth = np.stack([xx * 2, yy * 3, xx + yy], axis=2)
    return [np.clip(smooth + rng.integers(-20, 20, smooth.shape), 0, 255).astype(np.uint8) for _ in range(n)]


def _jpeg(img):
    b = io.BytesIO()
    Image.fromarray(img).save(b, "JPEG", quality=90)
    return b.getvalue()


def _golden(run, frames):
    """The network on letterbox_fixed of each frame: what the fabric and the network compute, NHWC codes."""
    canvases = np.stack([letterbox_fixed(f, 64) for f in frames])
    return QONNXBackend(run / "model.qonnx.onnx", load_manifest(run / "deploy")).run(to_nchw_float(canvases)).transpose(0, 2, 3, 1)


def test_simulated_frame_board_letterboxes_in_the_fabric_bit_exact(frame_deploy):
    run, dep = frame_deploy
    acc = Accelerator(dep, overlay=SimOverlay(dep))
    assert acc.manifest.input.accel_shape == [1, FRAME[1], FRAME[0], 3] and len(acc.ibufs) > 2
    frames = _frames(3)
    golden = _golden(run, frames)
    assert np.array_equal(np.stack([acc(f[None])[0] for f in frames]), golden)  # the whole frame in, packed
    for k, f in enumerate(frames):  # decoded into a ring slot, sent as it is
        acc.frame_buffer(k)[...] = f
    assert np.array_equal(np.stack([acc.run_slot(k) for k in range(3)]), golden)
    acc.frame_buffer(0)[...] = 0  # a slot not flushed would send what the IODMA saw before: the flush is there
    assert not np.array_equal(acc.run_slot(0), golden[0])


def test_frame_pipeline_decodes_into_the_dma_buffer_and_maps_boxes_through_the_frame(frame_deploy):
    run, dep = frame_deploy
    acc = Accelerator(dep, overlay=SimOverlay(dep))
    m = acc.manifest
    jpegs = [_jpeg(f) for f in _frames(4, seed=1)]
    decoded = [decode_image(j) for j in jpegs]
    golden = _golden(run, decoded)
    ratio, _, pad = letterbox_geometry((FRAME[1], FRAME[0]), 64)
    want = []
    for codes, img in zip(golden, decoded, strict=True):
        dets = detect_with_manifest(codes, m, 0.0, None)
        dets[:, :4] = unletterbox_boxes(dets[:, :4], ratio, pad, img.shape[:2])
        want.append(dets)
    seen = []

    def sink(name, img, dets):
        buffers = [acc.frame_buffer(k) for k in range(len(acc.ibufs))]
        seen.append((name, img.copy(), dets, any(np.shares_memory(img, b) for b in buffers)))

    stats = Pipeline(acc, conf_thresh=0.0).run(((f"f{i}", j) for i, j in enumerate(jpegs)), sink)
    assert stats["frames"] == 4 and stats["undecodable"] == 0
    assert stats["stage_ms"]["letterbox"] < 0.05  # nothing letterboxed on the host: only the loop's clock reads
    for (name, img, dets, in_dma_buffer), d, w in zip(seen, decoded, want, strict=True):
        assert in_dma_buffer, name  # decoded straight into an input buffer: no copy of the frame on the host
        assert np.array_equal(img, d), name  # the decoded frame, as decode_image gives it
        np.testing.assert_allclose(dets, w, atol=1e-4, err_msg=name)
    assert sys.getswitchinterval() == 0.005  # the pipeline's shorter switch interval is gone after the run


def test_decode_into_writes_rgb_into_the_buffer_or_hands_back_another_size():
    frame = _frames(1)[0]
    out = np.zeros((FRAME[1], FRAME[0], 3), np.uint8)
    assert decode_into(_jpeg(frame), out) is None
    assert np.array_equal(out, decode_image(_jpeg(frame)))
    small = decode_into(_jpeg(frame[:40, :50]), out)
    assert small.shape == (40, 50, 3)
    with pytest.raises(BoardError, match="x.jpg: cannot decode image"):
        decode_into(b"\xff\xd8 not a jpeg", out, "x.jpg")


def test_picture_of_another_size_is_fitted_into_the_frame_with_one_warning_per_size(frame_deploy):
    run, dep = frame_deploy
    acc = Accelerator(dep, overlay=SimOverlay(dep))
    rng = np.random.default_rng(2)
    photos = [("a", rng.integers(0, 256, (120, 80, 3), dtype=np.uint8)),
              ("b", rng.integers(0, 256, (120, 80, 3), dtype=np.uint8)),
              ("c", _jpeg(rng.integers(0, 256, (30, 200, 3), dtype=np.uint8)))]
    seen = {}
    with pytest.warns(UserWarning) as warned:
        stats = Pipeline(acc, conf_thresh=0.0).run(iter(photos), lambda n, img, d: seen.update({n: (img.shape, d)}))
    msgs = [str(w.message) for w in warned]
    assert stats["frames"] == 3 and len(msgs) == 2, msgs  # once per size
    assert "a: 80x120 picture, but this build's accelerator reads 96x72 frames" in msgs[0] and "input.frame" in msgs[0]
    assert "c: 200x30 picture" in msgs[1]
    for name, (shape, dets) in seen.items():  # boxes in the picture's own coordinates
        assert shape[:2] == {"a": (120, 80), "b": (120, 80), "c": (30, 200)}[name]
        assert (dets[:, [0, 2]] <= shape[1]).all() and (dets[:, [1, 3]] <= shape[0]).all() and len(dets)


def test_frame_build_needs_the_fabrics_resample(frame_deploy, tmp_path):
    _, dep = frame_deploy
    d = tmp_path / "dep"
    shutil.copytree(dep, d)
    m = load_manifest(d / "manifest.json")
    m.replace(input=dataclasses.replace(m.input, resample="bilinear")).write(d / "manifest.json")
    with pytest.raises(BoardError, match="input.frame 96x72 with resample 'bilinear': the fabric letterboxes "
                                         "bilinear-exact only"):
        Pipeline(Accelerator(d, overlay=SimOverlay(d)))


def test_the_wait_takes_the_gil_back_beside_a_python_bound_thread(frame_deploy):
    """bench's measurement of execute() beside a pure-Python thread, at CPython's switch interval and the
    pipeline's; both reported (the figures, on a quiet machine: board/README.md)."""
    from board.bench import time_execute_beside_python

    _, dep = frame_deploy
    r = time_execute_beside_python(dep, frames=30)
    assert set(r) == {"switch_5ms", f"switch_{WAIT_SWITCH_S * 1e3:g}ms"}
    for v in r.values():
        assert v["median_ms"] >= 3.9 and v["p90_ms"] >= v["median_ms"] and v["frames"] == 30
