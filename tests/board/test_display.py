"""The live view and the stream controls the notebooks use: JPEG bytes out, the newest frame shown and the rest
dropped without the pipeline ever waiting, a stream that runs until stopped (interrupt or a set duration), and
MJPEG files as a camera's frames."""

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from board.accelerator import BoardError
from board.bench import camera_frame
from board.bench import jpeg_bytes as camera_jpeg
from board.display import LiveView, jpeg_bytes
from board.manifest import InputSpec, Manifest, OutputSpec, Packing
from board.pipeline import Pipeline, jpeg_frames, mjpeg_source
from board.postprocess import DECODE_VERSION


def test_jpeg_bytes_is_a_jpeg_of_the_frame():
    rgb = camera_frame(640, 480)
    rgb[:240] = (200, 40, 90)
    data = jpeg_bytes(rgb, quality=95)
    assert data[:3] == b"\xff\xd8\xff"
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (640, 480) and im.mode == "RGB"
        back = np.asarray(im).astype(int)
    assert np.abs(back[:200].mean(axis=(0, 1)) - (200, 40, 90)).max() < 3  # RGB order: BGR would be off by 110
    assert np.abs(back - rgb).mean() < 6
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        jpeg_bytes(rgb[..., 0])


def test_live_view_shows_the_newest_frame_and_drops_the_rest_without_blocking():
    shown, slow = [], threading.Event()

    def show(jpeg):  # a browser that is slow to take a frame
        slow.wait(0.05)
        shown.append(jpeg)

    frames = [np.full((48, 64, 3), v, np.uint8) for v in range(0, 250, 5)]
    with LiveView(show, render=lambda f, k: f, fps=20) as view:
        offer_s = 0.0
        for k, f in enumerate(frames):  # a 200 FPS stream into a 20 FPS view
            t0 = time.perf_counter()
            view.offer(f, k)
            offer_s += time.perf_counter() - t0
            time.sleep(0.005)
    assert offer_s < 0.05  # 50 offers never waited for the display
    assert 2 <= view.shown == len(shown) < len(frames)
    assert view.shown + view.dropped == len(frames)
    with Image.open(io.BytesIO(shown[-1])) as im:  # the view ends on the last frame offered
        assert abs(int(np.asarray(im).mean()) - 245) <= 2


def test_live_view_display_error_reaches_the_pipeline_thread():
    def show(jpeg):
        raise OSError("display gone")

    view = LiveView(show, fps=50).start()
    view.offer(np.zeros((8, 8, 3), np.uint8))
    deadline = time.perf_counter() + 2
    while view.error is None and time.perf_counter() < deadline:
        time.sleep(0.01)
    with pytest.raises(OSError, match="display gone"):
        view.offer(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="fps"):
        LiveView(show, fps=0)


def test_mjpeg_file_gives_its_frames_in_order(tmp_path):
    frames = [camera_jpeg(np.full((32, 32, 3), v, np.uint8)) for v in (10, 120, 240)]
    f = tmp_path / "clip.mjpeg"
    f.write_bytes(b"".join(frames))
    assert jpeg_frames(f.read_bytes()) == frames
    got = [data for _, (_, data) in zip(range(7), mjpeg_source(f), strict=False)]
    assert got == frames * 2 + frames[:1]  # repeats until the pipeline stops reading
    assert [d for _, d in mjpeg_source(f, repeat=False)] == frames
    (tmp_path / "empty.mjpeg").write_bytes(b"not a jpeg")
    with pytest.raises(BoardError, match="empty.mjpeg: no JPEG frame"):
        next(mjpeg_source(tmp_path / "empty.mjpeg"))


class FixedAccelerator:
    """The accelerator's interface with a fixed all-background output: the stream controls are what is tested."""

    manifest = Manifest(variant="4w4a", input=InputSpec(size=64, resample="bilinear"),
                        output=OutputSpec(grid=2, channels=18, bits=8, signed=True, scale=1 / 127),
                        anchors=[[10, 14], [23, 27], [37, 58]], stride=32, classes=["face"], decode=DECODE_VERSION,
                        packing=Packing(input_bits=8, output_bits=8))

    def __call__(self, frames):
        return np.full((1, 2, 2, 18), -127, np.int32)

    def fps(self):
        return 0.0


def endless(jpg):
    n = 0
    while True:
        n += 1
        yield f"f{n}", jpg


def test_stream_runs_until_interrupted_and_counts_the_frames_so_far():
    jpg = camera_jpeg(camera_frame(64, 48))
    seen = []

    def sink(name, img, dets):  # Ctrl-C / Kernel > Interrupt arrives in the caller's thread, the sink's
        seen.append(name)
        if len(seen) == 5:
            raise KeyboardInterrupt
    stats = Pipeline(FixedAccelerator()).run(endless(jpg), sink)
    assert stats["interrupted"] and stats["frames"] == 5 and seen[:5] == ["f1", "f2", "f3", "f4", "f5"]


def test_stream_runs_for_the_duration_set():
    jpg = camera_jpeg(camera_frame(64, 48))
    t0 = time.perf_counter()
    stats = Pipeline(FixedAccelerator()).run(endless(jpg), seconds=0.5)
    assert 0.5 <= time.perf_counter() - t0 < 5 and stats["frames"] > 0 and not stats["interrupted"]
