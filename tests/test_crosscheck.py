import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from flow.crosscheck import TIE_TOL, classify, run_crosscheck
from flow.export import export_run
from flow.qcdq import lower_to_qcdq
from models import PRESETS

FOUR_BIT = {"4w4a", "2w4a", "4w2a", "6w4a", "3w5a"}


def test_classify_tells_ties_from_mismatches():
    ref = np.array([3, 5, 7, 9])
    pre = np.array([3.5 - 1e-6, 5.2, 7.5 + TIE_TOL / 2, 9.0])  # first and third sit on a rounding boundary
    got = np.array([4, 6, 7, 9])
    c = classify(ref, got, pre)
    assert (c.tie_flips, c.mismatches, c.max_abs_diff) == (1, 1, 1)
    assert c.examples[0]["index"] == [1]
    c = classify(ref, np.array([5, 5, 7, 9]), np.array([3.5, 5, 7, 9]))  # off by two at a tie: still a mismatch
    assert (c.tie_flips, c.mismatches) == (0, 1)
    assert classify(ref, ref, None).bit_exact


@pytest.mark.parametrize("variant", list(PRESETS))
def test_every_preset_crosschecks_at_64(tmp_path, variant):
    export_run(tmp_path, variant, 64)
    lower_to_qcdq(tmp_path / "model.qonnx.onnx", tmp_path / "model.qcdq.onnx")
    r = run_crosscheck(tmp_path, device="cpu", n_real=3, n_random=1)
    assert not r["any_mismatch"], r
    assert r["backends"]["qcdq-ort-cpu"]["bit_exact"]  # QONNX == QCDQ/ORT-CPU for every preset
    assert r["backends"]["qcdq-ort-cpu"]["info"]["ort_optimization_level"] == "ORT_ENABLE_BASIC"
    if variant in FOUR_BIT:
        assert r["all_bit_exact"]
    for row in r["backends"].values():
        if not row.get("reference"):
            assert row["detections_equal"] or row["tie_flips"]
    assert json.loads((tmp_path / "crosscheck.json").read_text())["variant"] == variant


def test_planted_fault_is_caught_and_located(tmp_path, run_4w4a):
    import shutil

    from flow.provenance import record

    for f in ("model.qonnx.onnx", "model.qcdq.onnx", "manifest.json", "model.pt", "provenance.json"):
        shutil.copy(run_4w4a / f, tmp_path / f)
    model = onnx.load(str(tmp_path / "model.qcdq.onnx"))
    w = next(i for i in model.graph.initializer if i.name == "Quant_2_param0")  # conv2's float weights
    arr = onnx.numpy_helper.to_array(w).copy()
    i = int(np.abs(arr).argmax())
    arr.flat[i] = -arr.flat[i]  # one weight changed (its code flips sign), in one backend only
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(model, str(tmp_path / "model.qcdq.onnx"))
    # as a faulty lowering of this very model would have written it (a file changed by hand is refused instead)
    record(tmp_path / "model.qcdq.onnx", [tmp_path / "model.qonnx.onnx"], "planted fault")
    r = run_crosscheck(tmp_path, device="cpu", n_real=2, n_random=1)
    row = r["backends"]["qcdq-ort-cpu"]
    # board-sim's golden model is the same model.qcdq.onnx, so it must inherit the fault; nothing else may
    assert r["any_mismatch"] and row["mismatches"] > 0
    assert set(r["mismatching_backends"]) == {"qcdq-ort-cpu"} | ({"board-sim"} & set(r["backends"]))
    assert r["backends"]["brevitas"]["bit_exact"]  # the untouched backend stays exact
    div = row["first_divergence"]
    assert div["tensor"] == "Quant_2_out0" and div["node"] == "Quant_2"  # conv2's weight quantizer
    assert "DequantizeLinear" in div["backend_node"]
    assert row["first_mismatching_layer"] == "conv2"  # the layer-isolated run blames the same layer
    assert row["isolated_layers"]["conv1"]["mismatches"] == 0


def test_board_outputs_compare_and_reject(tmp_path, run_4w4a):
    from board.manifest import load_manifest
    from flow.backends import QONNXBackend
    from flow.samples import sample_images, to_nchw_float

    m = load_manifest(run_4w4a)
    imgs = sample_images(64, 2, 1, resample="bilinear")
    codes = QONNXBackend(run_4w4a / "model.qonnx.onnx", m).run(to_nchw_float(imgs)).transpose(0, 2, 3, 1)
    np.savez(tmp_path / "good.npz", inputs=imgs, outputs=codes.astype(np.int8))
    r = run_crosscheck(run_4w4a, device="cpu", n_real=1, n_random=0, board_outputs=tmp_path / "good.npz")
    assert r["backends"]["board-outputs"]["bit_exact"]
    bad = codes.copy()
    bad[0, 0, 0, 4] += 1  # one code off on the board: no tie excuse for integer hardware
    np.savez(tmp_path / "bad.npz", inputs=imgs, outputs=bad.astype(np.int8))
    r = run_crosscheck(run_4w4a, device="cpu", n_real=1, n_random=0, board_outputs=tmp_path / "bad.npz")
    assert r["any_mismatch"] and r["backends"]["board-outputs"]["mismatches"] == 1
    np.savez(tmp_path / "nchw.npz", inputs=imgs, outputs=codes.transpose(0, 3, 1, 2))  # wrong layout
    from flow.errors import FlowError

    with pytest.raises(FlowError, match="wrong layout or output size"):
        run_crosscheck(run_4w4a, device="cpu", n_real=1, n_random=0, board_outputs=tmp_path / "nchw.npz")


def test_cli_exit_codes(run_4w4a):
    ok = subprocess.run([sys.executable, "-m", "flow", "crosscheck", "--run", str(run_4w4a), "--real", "1",
                         "--random", "1", "--device", "cpu"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "all bit-exact" in ok.stdout
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        no_gpu = subprocess.run([sys.executable, "-m", "flow", "crosscheck", "--run", str(run_4w4a), "--device",
                                 "cuda"], capture_output=True, text=True)
        assert no_gpu.returncode == 1 and "no CUDA EP" in no_gpu.stderr
    missing = subprocess.run([sys.executable, "-m", "flow", "crosscheck", "--run", "/nonexistent"],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "no manifest" in missing.stderr


def test_8w8a_tie_flips_are_ties_layer_by_layer(tmp_path):
    """8W8A: Brevitas (oneDNN) and QONNX (ORT per node) sum in different orders, so values on a rounding boundary
    land on either side (all round half to even). Seed 0 at 128x128 shows such flips; each layer run alone must differ only at
    ties, which proves the end-to-end +-1 differences are propagated ties, not a fault."""
    export_run(tmp_path, "8w8a", 128)
    r = run_crosscheck(tmp_path, device="cpu", n_real=4, n_random=4)  # OpenCV's letterbox left the photos tie-free
    row = r["backends"]["brevitas"]
    assert not r["any_mismatch"] and not r["all_bit_exact"] and not row["bit_exact"]
    assert row["propagated_tie_flips"] > 0 and row["max_abs_diff"] == 1
    layers = row["isolated_layers"]
    assert sum(v["tie_flips"] for v in layers.values()) > 0
    assert all(v["mismatches"] == 0 for v in layers.values())
    assert r["backends"]["qcdq-ort-cpu"]["bit_exact"]


def test_zero_ties_cannot_explain_a_difference():
    from flow.crosscheck import explained_by_ties

    exact = {"conv0": {"tie_flips": 0, "mismatches": 0}, "conv1": {"tie_flips": 0, "mismatches": 0}}
    assert not explained_by_ties(exact)  # every layer alone is exact, yet the outputs differ: unexplained
    assert not explained_by_ties(None)
    assert explained_by_ties({**exact, "conv2": {"tie_flips": 3, "mismatches": 0}})
    assert not explained_by_ties({"conv0": {"tie_flips": 3, "mismatches": 1}})


@pytest.fixture(scope="module")
def frame_run(tmp_path_factory):
    """A 64x64 4w4a run whose accelerator takes 96x72 camera frames (the letterbox in the fabric): small and fast."""
    d = tmp_path_factory.mktemp("frame_run")
    export_run(d, "4w4a", 64, frame="96x72")
    lower_to_qcdq(d / "model.qonnx.onnx", d / "model.qcdq.onnx")
    return d


def test_a_frame_run_is_crosschecked_on_frames(frame_run):
    """Backends whose model starts at the canvas get letterbox_fixed's canvas of each frame; the simulated board
    (whose accelerator reads the frame) and a model whose input has the frame's shape (a FINN build with the fabric
    letterbox in front) get the frame; every one bit-exact, and the report says which input each got."""
    from board.manifest import load_manifest
    from board.preprocess import letterbox_fixed
    from flow.backends import Backend, ORTBackend

    m = load_manifest(frame_run)
    seen = {}

    class LetterboxInFront(Backend):
        """Stands for a model that starts with the letterbox: NHWC frame in, letterbox_fixed, then the network."""

        name, exact_integer = "letterbox-in-front", True
        in_shape = [1, 72, 96, 3]

        def __init__(self):
            self.net = ORTBackend(frame_run / "model.qcdq.onnx", m, "cpu")

        def run(self, x):
            seen["shape"] = x.shape
            frames = x.transpose(0, 2, 3, 1).astype(np.uint8)
            canvas = np.stack([letterbox_fixed(f, 64) for f in frames]).transpose(0, 3, 1, 2).astype(np.float32)
            return self.net.run(canvas)

    r = run_crosscheck(frame_run, device="cpu", n_real=2, n_random=1, extra_backends=[LetterboxInFront()])
    assert not r["any_mismatch"] and r["all_bit_exact"], r
    assert r["frame"] == [96, 72] and "as 96x72 frames" in r["inputs"]
    rows = r["backends"]
    assert seen["shape"] == (3, 3, 72, 96)
    assert rows["letterbox-in-front"]["input"] == rows["board-sim"]["input"] == "frame 96x72"
    canvas = "canvas 64x64 (letterbox_fixed of the 96x72 frame)"
    assert rows["qcdq-ort-cpu"]["input"] == rows["brevitas"]["input"] == rows["qonnx"]["input"] == canvas


def test_frame_inputs_are_the_photos_as_frames_and_their_canvases_letterbox_fixed(frame_run):
    from board.manifest import load_manifest
    from board.preprocess import letterbox_fixed
    from flow.crosscheck import input_batch, input_frames

    m = load_manifest(frame_run)
    frames, source = input_frames(m, 2, 1, 0)
    assert frames.shape == (3, 72, 96, 3) and frames.dtype == np.uint8 and "2 real" in source
    x, _ = input_batch(m, 2, 1, 0)
    for f, c in zip(frames, x, strict=True):
        np.testing.assert_array_equal(c, letterbox_fixed(f, 64).transpose(2, 0, 1).astype(np.float32))


def test_board_outputs_of_a_frame_build_are_compared_on_their_canvases(tmp_path, frame_run):
    from board.manifest import load_manifest
    from board.preprocess import letterbox_fixed
    from flow.backends import QONNXBackend
    from flow.samples import sample_frames, to_nchw_float

    m = load_manifest(frame_run)
    frames = sample_frames((96, 72), 1, 1)
    canvas = np.stack([letterbox_fixed(f, 64) for f in frames])
    codes = QONNXBackend(frame_run / "model.qonnx.onnx", m).run(to_nchw_float(canvas)).transpose(0, 2, 3, 1)
    np.savez(tmp_path / "board.npz", inputs=frames, outputs=codes.astype(np.int8))
    r = run_crosscheck(frame_run, device="cpu", n_real=1, n_random=0, board_outputs=tmp_path / "board.npz")
    assert r["backends"]["board-outputs"]["bit_exact"]
