"""The board's per-frame host path without a model: letterbox (OpenCV and the numpy fallback) against the old float
path, image decoding, NMS against the per-candidate greedy loop it replaced, the one-class score, the bench's
measured report, and the board code on a Python without OpenCV."""

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import board.pipeline
import board.preprocess
from board.bench import float_letterbox_baseline, loop_nms_baseline, measure, summarize
from board.pipeline import decode_image
from board.postprocess import decode, detect, nms
from board.preprocess import letterbox, letterbox_fixed, nearest_index, resize_into, to_rgb8
from flow.samples import photo


@pytest.fixture(params=["opencv", "numpy"])
def resize_path(request, monkeypatch):
    """Both letterbox paths: OpenCV's (the PYNQ image has it) and the numpy fixed-point fallback."""
    if request.param == "opencv":
        pytest.importorskip("cv2")
    else:
        monkeypatch.setattr(board.preprocess, "cv2", None)
        monkeypatch.setattr(board.pipeline, "cv2", None)
    return request.param


def test_letterbox_deviation_from_the_old_float_path_in_lsb(resize_path):
    """OpenCV: at most 1 LSB from the old float32 bilinear letterbox; the numpy fallback: at most 2 (its 7-bit
    weights, rounded after each axis; 2 only on noise), on under 40 % of the pixels. The canvas layout (ratio, pad,
    grey) is the old one exactly."""
    rng = np.random.default_rng(0)
    images = [photo(n) for n in ("astronaut", "coffee", "chelsea")]
    images += [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), rng.integers(0, 256, (37, 91, 3), dtype=np.uint8)]
    worst = 0
    for img in images:
        for size in (64, 416, 1000):  # down and up
            new, ratio, pad = letterbox(img, size, resample="bilinear")
            old = float_letterbox_baseline(img, size)
            diff = np.abs(new.astype(int) - old.astype(int))
            worst = max(worst, int(diff.max()))
            assert (diff > 0).mean() < 0.4
            assert ratio == min(size / img.shape[0], size / img.shape[1])
            grey = old == 114
            assert (new[:, : pad[0]] == 114).all() and (new[: pad[1]] == 114).all() and grey[:, : pad[0]].all()
    assert worst <= (1 if resize_path == "opencv" else 2)
    assert worst >= 1  # the change is real: exact equality would mean the old path is still in use


def test_letterbox_never_converts_the_whole_frame(resize_path):
    """A 12 MP frame (36 MB): the old path made a 144 MB float32 copy of it first; now all the letterbox allocates
    is less than the frame itself (a 48 MP photo as float32 is 576 MB, more than a PYNQ-Z2 has)."""
    img = np.random.default_rng(1).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    tracemalloc.start()
    letterbox(img, 416, resample="bilinear")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < img.nbytes, peak


def test_to_rgb8_scales_16_bit_and_names_bad_shapes():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    out = to_rgb8(ramp)
    assert out.shape == (4, 256, 3) and out.dtype == np.uint8 and out[0, 0, 0] == 0 and out[0, -1, 0] == 255
    assert abs(float(out.mean()) - 127.5) < 1
    assert to_rgb8(np.ones((2, 2, 1), np.float32)).tolist() == [[[255] * 3] * 2] * 2
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert to_rgb8(rgba).shape == (2, 2, 3)
    with pytest.raises(ValueError, match=r"HxWx4 \(RGBA\) image, got shape \(2, 2, 2\)"):
        to_rgb8(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="got int64"):
        to_rgb8(np.zeros((2, 2), np.int64))


def test_16_bit_grey_png_is_scaled_not_clipped_white(resize_path, tmp_path):
    """Before: PIL's convert('RGB') clipped 16-bit values at 255, so a mid-grey 16-bit photo came out ~90 % white."""
    from PIL import Image

    ramp = np.tile(np.linspace(0, 65535, 200).astype(np.uint16), (50, 1))
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    img = decode_image((tmp_path / "grey16.png").read_bytes(), "grey16.png")
    assert img.shape == (50, 200, 3) and img.dtype == np.uint8
    assert (img == 255).mean() < 0.02 and abs(float(img.mean()) - 127.5) < 2


def test_corrupt_image_is_named(resize_path):
    with pytest.raises(board.accelerator.BoardError, match="broken.jpg: cannot decode image"):
        decode_image(b"\xff\xd8 not really a jpeg", "broken.jpg")


def test_nearest_resample_is_the_same_with_and_without_opencv():
    """The nearest letterbox (QuantSpec.resample = "nearest") gives the same pixels through cv2 and the numpy fallback,
    so a board without OpenCV and the host's evaluation agree bit for bit; nearest_index is INTER_NEAREST's rule
    (including where in/out and its reciprocal round differently, e.g. 20 -> 312)."""
    cv2 = pytest.importorskip("cv2")
    for n_in, n_out in ((20, 312), (14, 234), (640, 416), (480, 312), (1280, 416), (7, 3), (3, 7), (1, 5)):
        ramp = np.arange(n_in, dtype=np.uint16)[None, :]
        got = cv2.resize(ramp, (n_out, 1), interpolation=cv2.INTER_NEAREST)[0]
        np.testing.assert_array_equal(got, nearest_index(n_out, n_in), err_msg=f"{n_in} -> {n_out}")
    rng = np.random.default_rng(5)
    for shape in ((480, 640), (720, 1280), (333, 517), (50, 40)):
        img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        with_cv2 = letterbox(img, 416, resample="nearest")[0]
        board.preprocess.cv2 = None
        try:
            without = letterbox(img, 416, resample="nearest")[0]
        finally:
            board.preprocess.cv2 = cv2
        np.testing.assert_array_equal(with_cv2, without, err_msg=str(shape))
    ys, xs = nearest_index(312, 480), nearest_index(416, 640)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    canvas = letterbox(img, 416, resample="nearest")[0]
    np.testing.assert_array_equal(canvas[52:364], img[ys][:, xs])  # every pixel a source pixel, none blended
    assert (canvas[:52] == 114).all() and (canvas[364:] == 114).all()
    with pytest.raises(ValueError, match="unknown resample 'bicubic'; use one of: bilinear, nearest"):
        resize_into(img, np.empty((10, 10, 3), np.uint8), "bicubic")


def test_jpeg_decode_is_opencvs_pixels_in_rgb(tmp_path):
    """The board decodes with PIL (RGB straight from libjpeg-turbo, no BGR->RGB pass); OpenCV's decoder gives the same
    pixels, so switching decoders changed nothing the network sees."""
    cv2 = pytest.importorskip("cv2")
    from PIL import Image

    Image.fromarray(photo("astronaut")).save(tmp_path / "a.jpg", quality=90)
    data = (tmp_path / "a.jpg").read_bytes()
    rgb = decode_image(data)
    assert rgb.dtype == np.uint8 and rgb.shape == (512, 512, 3)
    np.testing.assert_array_equal(rgb, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1])


def test_nms_is_the_greedy_nms_it_replaced():
    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 7, 40, 300, 507):
        for trial in range(8):
            centre = rng.uniform(0, 416, (n, 2)) if trial % 2 else rng.normal(200, 30, (n, 2))  # spread / one crowd
            wh = rng.uniform(0 if trial == 3 else 4, 120, (n, 2))  # trial 3: zero-area boxes too
            boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1).astype(np.float32)
            scores = rng.choice(np.linspace(0, 1, 9), n).astype(np.float32)  # ties: order broken by index
            assert np.array_equal(nms(boxes, scores), loop_nms_baseline(boxes, scores)), (n, trial)
    assert len(nms(boxes, scores, max_det=5)) == 5


def test_multi_class_nms_keeps_classes_apart():
    box = np.array([[10, 10, 50, 50]], np.float32)
    codes = np.full((1, 1, 7), -127, np.int32)  # 1 anchor, 2 classes
    codes[0, 0, :4] = 0
    codes[0, 0, 4] = 127  # objectness 1
    codes[0, 0, 5], codes[0, 0, 6] = 127, -127  # class 0
    d = detect(np.concatenate([codes, codes], 2).reshape(1, 1, 14), 1 / 127, [[30, 30], [30, 30]], 32, 2)
    assert len(d) == 1  # the same class twice: one box
    other = codes.copy()
    other[0, 0, 5], other[0, 0, 6] = -127, 127  # class 1, same place
    d = detect(np.concatenate([codes, other], 2).reshape(1, 1, 14), 1 / 127, [[30, 30], [30, 30]], 32, 2)
    assert sorted(d[:, 5].tolist()) == [0.0, 1.0] and box.shape == (1, 4)


def test_one_class_score_is_objectness_alone():
    """The loss never trains the class channel of a one-class model: it must not scale the score (before: obj x an
    untrained class probability; with that channel at -1 every face scored 0)."""
    codes = np.full((2, 2, 18), -127, np.int32)  # 3 anchors x (5 + 1)
    codes[0, 1, 4] = 95  # anchor 0 objectness (95/127)/2 + 0.5 = 0.874
    codes[1, 0, 6 + 4] = 30  # anchor 1 objectness 0.618; every class channel stays at -127 (probability 0)
    boxes, scores, classes = decode(codes, 1 / 127, [[10, 14], [23, 27], [37, 58]], 32, 1, 0.25)
    assert np.allclose(sorted(scores), [30 / 254 + 0.5, 95 / 254 + 0.5]) and (classes == 0).all()
    two = np.full((1, 1, 7), -127, np.int32)
    two[0, 0, 4], two[0, 0, 5], two[0, 0, 6] = 127, 0, -127  # several classes: obj x class probability still
    assert np.allclose(decode(two, 1 / 127, [[10, 14]], 32, 2, 0.25)[1], [0.5])


def test_board_bench_reports_what_it_measured():
    """The board's bench: per-stage times where it runs and the frame they make, nothing estimated for another
    machine (that is the host's `python -m flow bench a9`)."""
    r = summarize(measure(None, reps=1), "nearest")
    assert r["stages"]["accelerator"]["x86_ms"] == 3.97 and not any("a9" in k for k in r)
    assert r["stages"]["letterbox_640x480_nearest"]["in_640x480_frame"] and r["path"] == "nearest"
    assert not r["stages"]["letterbox_640x480"]["in_640x480_frame"]
    assert not r["stages"]["frame_rgb_into_dma"]["in_640x480_frame"]
    f = summarize(measure(None, reps=1), "frame")  # a frame build: decoded into the DMA buffer, no host letterbox
    assert f["stages"]["frame_rgb_into_dma"]["in_640x480_frame"] and f["stages"]["dma_flush_640x480"]["in_640x480_frame"]
    assert not any(f["stages"][n]["in_640x480_frame"] for n in f["stages"] if n.startswith("letterbox"))
    assert r["stages"]["decoded_frame_to_array"]["holds_gil"]  # Pillow's pack to 3-byte pixels keeps the GIL
    in_frame = [n for n, st in r["stages"].items() if st.get("in_640x480_frame") and n != "accelerator"]
    assert r["x86_ms_per_frame"] == pytest.approx(sum(r["stages"][n]["x86_ms"] for n in in_frame), abs=0.01)
    assert r["x86_baseline_ms_per_frame"] > r["x86_ms_per_frame_without_capture_decode"] and r["x86_fps_estimate"] > 0


def test_board_code_runs_without_opencv_or_pynq(tmp_path):
    """A bare board image: no cv2 (blocked here), no pynq. Everything imports, letterbox, decode and draw work."""
    from PIL import Image

    Image.fromarray(photo("chelsea")).save(tmp_path / "c.jpg")
    code = f"""
import sys
sys.modules["cv2"] = None  # import cv2 now raises ImportError
import numpy as np
import board.accelerator, board.bench, board.packing, board.pipeline, board.postprocess, board.preprocess, board.sim
from board.pipeline import decode_image, draw, read_image
from board.preprocess import letterbox
assert board.preprocess.cv2 is None
img = read_image({str(tmp_path / "c.jpg")!r})
canvas, ratio, pad = letterbox(img, 416, resample="bilinear")
assert canvas.shape == (416, 416, 3) and pad == (0, (416 - round(300 * 416 / 451)) // 2)
out = draw(img, np.array([[10, 10, 100, 100, 0.9, 0]], np.float32), ["face"])
assert out.shape == img.shape and (out != img).any()
bad = [m for m in ("torch", "onnx", "onnxruntime", "pynq", "cv2") if sys.modules.get(m) is not None]
assert not bad, bad
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_the_exact_bilinear_resample_is_the_fabrics_letterbox():
    """resample "bilinear-exact" through the one letterbox that training, evaluation and the board call gives the
    canvas of letterbox_fixed, the specification of the RTL, pixel for pixel."""
    rng = np.random.default_rng(3)
    for shape in ((480, 640, 3), (300, 200, 3), (50, 90, 3)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(letterbox(img, 64, resample="bilinear-exact")[0], letterbox_fixed(img, 64))


def _exact_bilinear_formula(img, h, w):
    """The fabric letterbox's arithmetic written out: along x on each of the two source rows, then along y, one
    rounding (lpyolo_letterbox.sv's order, in int64)."""
    from board.preprocess import fixed_taps

    y0, y1, wy = fixed_taps(h, img.shape[0])
    x0, x1, wx = fixed_taps(w, img.shape[1])
    r0, r1 = img[y0].astype(np.int64), img[y1].astype(np.int64)
    wx = wx[None, :, None]
    h0 = (r0[:, x0] << 8) + wx * (r0[:, x1] - r0[:, x0])
    h1 = (r1[:, x0] << 8) + wx * (r1[:, x1] - r1[:, x0])
    return (((h0 << 8) + wy[:, None, None] * (h1 - h0) + (1 << 15)) >> 16).astype(np.uint8)


def test_the_fast_exact_resize_is_the_formula_in_both_orders():
    """resize_bilinear_exact (uint16/uint32 passes, x or y first by the output's width) against the formula, on
    downscales, upscales, mixed ones, single pixels and thin images, with extreme pixels (0 and 255) included."""
    from board.preprocess import resize_bilinear_exact

    rng = np.random.default_rng(7)
    cases = [((480, 640), (312, 416)), ((768, 1024), (312, 416)), ((312, 416), (400, 540)), ((31, 17), (64, 9)),
             ((9, 64), (31, 17)), ((1, 1), (5, 4)), ((3, 100), (50, 2)), ((100, 3), (2, 50)), ((64, 64), (64, 64))]
    for (ih, iw), (h, w) in cases:
        img = rng.integers(0, 256, (ih, iw, 3), dtype=np.uint8)
        img[0, 0], img[-1, -1] = 255, 0
        np.testing.assert_array_equal(resize_bilinear_exact(img, h, w), _exact_bilinear_formula(img, h, w),
                                      err_msg=f"{ih}x{iw} -> {h}x{w}")
    white = np.full((37, 53, 3), 255, np.uint8)  # the largest sums: 255 * 256 * 256 must not wrap
    np.testing.assert_array_equal(resize_bilinear_exact(white, 90, 20), np.full((90, 20, 3), 255, np.uint8))
