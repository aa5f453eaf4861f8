"""A live view that never holds the pipeline back: frames are offered, a display thread shows the newest at most
`fps` times a second as JPEG, and every frame offered in between is dropped.

JPEG, not PNG: a notebook renders a PIL image as PNG, and a 640x480 PNG costs 40-360x a JPEG's encoding
(board/README.md, "Live view": measured); on the A9 a PNG is most of a second per frame. IPython's
`Image(data=..., format="jpeg")` and ipywidgets' `Image(format="jpeg")` pass JPEG bytes to the browser as they are.
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np


def jpeg_bytes(rgb: np.ndarray, quality: int = 80) -> bytes:
    """An HxWx3 RGB uint8 frame -> JPEG bytes (4:2:0) by PIL, which takes RGB as it is and releases the GIL while it
    encodes. Not OpenCV: with the PYNQ 3.0.1 image's versions (Pillow 9.0.1, OpenCV 4.5.4) its swap to BGR and
    imencode took 4-6x PIL's time for a 640x480 frame (board/README.md, "Live view")."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"jpeg_bytes takes an HxWx3 uint8 RGB frame, got {rgb.dtype}{rgb.shape}")
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=quality)
    return out.getvalue()


class LiveView:
    """`offer(*frame)` from the pipeline's sink costs a lock and an assignment; the display thread takes the newest
    frame offered, `render(*frame)` -> RGB array (e.g. drawing the boxes: only shown frames are drawn), encodes it
    as JPEG and hands the bytes to `show` (a notebook display handle's update, a widget's value), at most `fps`
    times a second. Use as a context manager; `shown` and `dropped` count frames."""

    def __init__(self, show, render=None, fps: float = 10.0, quality: int = 80):
        if fps <= 0:
            raise ValueError(f"LiveView fps must be > 0, got {fps}")
        self.show, self.render, self.period, self.quality = show, render, 1.0 / fps, quality
        self.shown = self.dropped = 0
        self.encode_s = 0.0
        self._latest = None
        self._lock = threading.Lock()
        self._new = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def offer(self, *frame) -> None:
        """Never blocks on the display: replaces a frame that was not shown yet. The picture is copied: a frame
        build's pipeline reuses its buffer for a later frame once the sink returns."""
        if self.error is not None:
            raise self.error
        if frame and isinstance(frame[0], np.ndarray):
            frame = (np.array(frame[0]), *frame[1:])
        with self._lock:
            if self._latest is not None:
                self.dropped += 1
            self._latest = frame
        self._new.set()

    def _take(self):
        with self._lock:
            frame, self._latest = self._latest, None
            self._new.clear()
        return frame

    def _show(self, frame) -> None:
        t0 = time.perf_counter()
        rgb = self.render(*frame) if self.render is not None else frame[0]
        jpeg = jpeg_bytes(rgb, self.quality)
        self.encode_s += time.perf_counter() - t0
        self.show(jpeg)
        self.shown += 1

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._new.wait(timeout=0.05):
                    continue
                t0 = time.perf_counter()
                frame = self._take()
                if frame is not None:
                    self._show(frame)
                self._stop.wait(max(0.0, self.period - (time.perf_counter() - t0)))
        except BaseException as e:  # noqa: BLE001 - handed to the pipeline's thread at its next offer
            self.error = e

    def start(self) -> LiveView:
        self._thread = threading.Thread(target=self._loop, name="live-view", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the thread, then shows the last frame offered, so the view ends on the stream's last frame."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        frame = self._take()
        if frame is not None and self.error is None:
            self._show(frame)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> LiveView:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def notebook_view(render=None, fps: float = 10.0, quality: int = 80, keep: list | None = None) -> LiveView:
    """A LiveView into a Jupyter output: one display handle, updated with JPEG bytes (IPython's Image with
    format='jpeg': no PNG anywhere). `keep`, a list, also collects every JPEG shown (for a clip)."""
    from IPython.display import Image, display

    handle = display(None, display_id=True)

    def show(jpeg: bytes) -> None:
        handle.update(Image(data=jpeg, format="jpeg"))
        if keep is not None:
            keep.append(jpeg)
    return LiveView(show, render, fps, quality)
