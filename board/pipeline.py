"""Threaded capture -> decode + letterbox -> accelerate -> decode/NMS -> sink, overlapping the ARM's work with the
accelerator's. Reports accelerator-only FPS, end-to-end FPS and each stage's mean time.

A frame build (manifest input.frame: the letterbox is in the fabric) leaves the host only the decode and one copy:
each JPEG is decoded and copied into one of the accelerator's input buffers (decode_into), nothing is letterboxed
on the host, and the boxes come back through the frame's letterbox geometry. A picture of another size than the
frame (a photo) is fitted into the frame on the host with the fabric's own resample (resize_bilinear_exact), with
a warning naming both sizes once per size: the network then sees it resampled twice, so a build for that size
(`input.frame`) is the exact way.

Four kinds of thread share the PYNQ-Z2's two A9 cores: the source (a camera read waits in the kernel), two
preprocess workers (JPEG decode and resize are C code that releases the GIL, so two frames decode at once), the
accelerator thread (one copy into the DMA buffer, then it sleeps until the IODMA is done) and the caller's thread
(decode + NMS, then the sink). Every queue wait is bounded and watches a stop flag: whichever stage fails, the
error reaches the caller at once and no thread is left blocked on a full queue.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from board.accelerator import BoardError, gil_handover
from board.postprocess import detect_with_manifest
from board.preprocess import cv2, fit_into_frame, letterbox, letterbox_geometry, to_rgb8, unletterbox_boxes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_END = object()
_WAIT_S = 0.05  # longest a queue wait blocks before it looks at the stop flag again
# the largest frame decoded: 40 MP take ~280 MB while decoding (PIL's 4-byte pixels, then the RGB array), about what
# the PYNQ-Z2's 512 MB leave beside the runtime; a larger one is skipped from its header, before any decode
MAX_FRAME_PIXELS = 40_000_000


def open_image(data, name: str = "image"):
    """Encoded image bytes (JPEG/PNG/BMP, e.g. a camera's MJPEG frame) -> the decoded PIL image.

    PIL's decoder (libjpeg-turbo, as OpenCV's), which releases the GIL while it decodes and hands over RGB, where
    cv2.imdecode gives BGR and the swap costs the A9 more than a third again of the decode (armhf counts, 640x480:
    PIL 10.0 M instructions to an RGB array, cv2 11.0 M + 4.0 M for cvtColor). The pixels are the same (tests/board).
    EXIF orientation is ignored, as a camera frame has none."""
    import io

    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        if im.width * im.height > MAX_FRAME_PIXELS:
            raise BoardError(f"{name}: {im.width}x{im.height} pixels, more than the {MAX_FRAME_PIXELS / 1e6:g} MP a "
                             "frame may have here; not decoded (scale it down first)")
        im.load()
        return im
    except BoardError:
        raise
    except MemoryError:
        raise BoardError(f"{name}: not enough memory left to decode it; skipped (scale it down first)") from None
    except Exception as e:  # noqa: BLE001 - PIL raises several types for broken files
        raise BoardError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from e


def image_array(im) -> np.ndarray:
    """A decoded PIL image -> HxWx3 RGB uint8, 16-bit files scaled to 8 bits. Read-only (`draw` copies it). Pillow
    packs its 4-byte pixels to 3 holding the GIL (1.6 M armhf instructions a 640x480 frame): the bench counts that
    apart from the decode."""
    if im.mode.startswith("I"):  # 16-bit grey ("I;16") or PIL's 32-bit container for it ("I")
        return to_rgb8(np.asarray(im).clip(0, 65535).astype(np.uint16))
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def decode_image(data, name: str = "image") -> np.ndarray:
    """Encoded image bytes -> HxWx3 RGB uint8 (open_image, then image_array)."""
    return image_array(open_image(data, name))


def rgb_into(im, out: np.ndarray) -> None:
    """A decoded RGB PIL image's pixels packed straight into the contiguous uint8 array `out` of its size: Pillow's
    raw encoder packs its 4-byte pixels to 3 in chunks, each copied into place (what `tobytes` does, less joining the
    chunks into one more copy of the frame: 0.3 M armv7 instructions a 640x480 frame). Holds the GIL, as tobytes."""
    from PIL import Image

    flat = out.reshape(-1)
    enc = Image._getencoder("RGB", "raw", "RGB")  # Pillow's own tobytes path, in every Pillow from 9.0 to 13
    enc.setimage(im.im, (0, 0, im.width, im.height))
    pos, err = 0, 0
    while not err:
        _, err, chunk = enc.encode(max(65536, im.width * 4))
        flat[pos : pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
        pos += len(chunk)
    if err < 0 or pos != flat.size:
        raise BoardError(f"packing a decoded {im.width}x{im.height} frame failed (encoder error {err}, {pos} bytes)")


def decode_into(data, out: np.ndarray, name: str = "image") -> np.ndarray | None:
    """Encoded image bytes decoded into the (height, width, 3) RGB frame `out` (a frame build's DMA buffer):
    Pillow's decode (libjpeg-turbo, the GIL released), its pixels packed straight into `out` (rgb_into). Counted on
    armv7 (board/README.md) that is the cheapest way in: OpenCV's decode to BGR and its conversion written into the
    buffer cost 15.0 M instructions a 640x480 frame, Pillow's decode and pack 10.0 M. Returns None when the picture
    had the frame's size, else the decoded HxWx3 picture itself (for the caller to fit into the frame)."""
    im = open_image(data, name)
    if im.mode == "RGB" and (im.height, im.width) == out.shape[:2] and out.flags.c_contiguous:
        rgb_into(im, out)
        return None
    img = image_array(im)
    if img.shape[:2] != out.shape[:2]:
        return img
    np.copyto(out, img)
    return None


def read_image(path: Path) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BoardError(f"{path}: cannot read ({e.strerror})") from e
    return decode_image(data, str(path))


def image_files(path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BoardError(f"{path}: no such image or folder")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BoardError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def image_source(path):
    """Yields (name, encoded bytes) for an image or every image under a folder; the pipeline decodes them.

    The name is the path relative to the folder (`a/x.jpg`, `b/x.jpg`), so same-named images in different folders
    keep apart; a file that cannot be read yields None (warned about and counted by the pipeline)."""
    root = Path(path)
    for f in image_files(root):
        name = f.name if f == root else f.relative_to(root).as_posix()
        try:
            yield name, f.read_bytes()
        except OSError as e:
            yield name, BoardError(f"{f}: cannot read ({e.strerror})")


def jpeg_frames(data: bytes) -> list[bytes]:
    """The JPEG frames of an MJPEG stream as a camera sends them (whole JPEGs back to back, each from its SOI
    marker FF D8 FF), or of one JPEG file. A photo with an EXIF thumbnail (a JPEG inside) would split in two; a
    camera's frames carry none."""
    starts, i = [], data.find(b"\xff\xd8\xff")
    while i >= 0:
        starts.append(i)
        i = data.find(b"\xff\xd8\xff", i + 3)
    ends = [*starts[1:], len(data)] if starts else []
    return [data[a:b] for a, b in zip(starts, ends, strict=True)]


def mjpeg_source(path, repeat: bool = True):
    """Yields (name, JPEG bytes) for each frame of an MJPEG file (or a single JPEG), over and over with `repeat`
    (stop it with the pipeline's `seconds`/`max_frames`): a camera's frames, without a camera."""
    path = Path(path)
    try:
        frames = jpeg_frames(path.read_bytes())
    except OSError as e:
        raise BoardError(f"{path}: cannot read ({e.strerror})") from e
    if not frames:
        raise BoardError(f"{path}: no JPEG frame in it (an MJPEG file is JPEG frames back to back)")
    n = 0
    while True:
        for f in frames:
            n += 1
            yield f"frame{n:06d}", f
        if not repeat:
            return


def camera_source(device=0, max_frames: int | None = None):
    """USB webcam (V4L2) or a video file through OpenCV. A webcam is asked for MJPEG and for the frames undecoded,
    so the pipeline's two workers decode them on both cores; a backend that decodes anyway gives RGB arrays."""
    if cv2 is None:
        raise BoardError("OpenCV (cv2) is not installed: the camera needs it (the PYNQ image ships it: use its Python)")
    cap = cv2.VideoCapture(device)
    if not cap.isOpened():
        raise BoardError(f"camera/video {device!r} could not be opened (plugged in? /dev/video* present? in use?)")
    if isinstance(device, int):
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, 640)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, 480)
        cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)  # V4L2: hand over the MJPEG bytes
    n = 0
    try:
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                if isinstance(device, str):
                    return  # end of the video file
                raise BoardError(f"camera {device!r} stopped delivering frames after {n} frames (unplugged?)")
            n += 1
            if frame.ndim == 2 and frame.shape[0] == 1:  # undecoded MJPEG
                yield f"frame{n:06d}", frame.tobytes()
            elif frame.ndim == 3 and frame.shape[2] == 2:  # a camera that only does YUYV, unconverted
                yield f"frame{n:06d}", cv2.cvtColor(frame, cv2.COLOR_YUV2RGB_YUYV)
            else:
                yield f"frame{n:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def draw(image: np.ndarray, dets: np.ndarray, classes) -> np.ndarray:
    """The image with boxes and scores drawn. With OpenCV on the image itself when it is a writable contiguous
    array (the pipeline hands each sink its own decoded frame: copying a 640x480 frame costs the A9 ~3 ms);
    otherwise, and with PIL, on a copy."""
    if cv2 is not None:
        ok = image.flags.writeable and image.flags.c_contiguous and image.dtype == np.uint8
        out = image if ok else np.array(image, np.uint8, order="C")
        for x1, y1, x2, y2, score, cls in dets:
            p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
            cv2.rectangle(out, p1, p2, (0, 255, 0), 2)
            cv2.putText(out, f"{classes[int(cls)]} {score:.2f}", (p1[0] + 2, max(10, p1[1] - 3)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0), 1)
        return out
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    d = ImageDraw.Draw(im)
    for x1, y1, x2, y2, score, cls in dets:
        d.rectangle([x1, y1, x2, y2], outline=(0, 255, 0), width=2)
        d.text((x1 + 2, max(0, y1 - 11)), f"{classes[int(cls)]} {score:.2f}", fill=(0, 255, 0))
    return np.asarray(im)


class Pipeline:
    """Capture, two preprocess workers, the accelerator thread and the caller's decode/NMS + sink, joined by
    bounded queues; the accelerator is only ever called from its own thread."""

    def __init__(self, accel, conf_thresh: float | None = None, iou_thresh: float | None = None, depth: int = 2,
                 workers: int = 2):
        self.accel, self.manifest = accel, accel.manifest
        self.size = self.manifest.input.size
        self.resample = self.manifest.input.resample
        self.conf, self.iou, self.depth, self.workers = conf_thresh, iou_thresh, depth, workers
        self.frame = self.manifest.input.frame  # (width, height) where the fabric letterboxes, else None
        if self.frame is not None:
            if self.resample != "bilinear-exact":
                raise BoardError(f"manifest input.frame {self.frame[0]}x{self.frame[1]} with resample "
                                 f"{self.resample!r}: the fabric letterboxes bilinear-exact only; re-export the run")
            if not hasattr(accel, "frame_buffer"):
                raise BoardError("a frame build needs the accelerator's frame buffers (board.accelerator.Accelerator)")
            self.frame_ratio, _, self.frame_pad = letterbox_geometry(self.frame[::-1], self.size)
        self._warned_sizes: set = set()

    def _prepare_frame(self, name: str, data, slot: int):
        """A frame build: decode one frame straight into input buffer `slot` (a picture of another size: fitted into
        it) -> (picture, slot, fit, seconds), fit = (ratio, pad) of the host's fit or None; or a BoardError."""
        t0 = time.perf_counter()
        out = self.accel.frame_buffer(slot)
        try:
            if isinstance(data, BaseException):
                raise data
            if isinstance(data, (bytes, bytearray, memoryview)):
                img = decode_into(data, out, name)
            else:
                img = to_rgb8(data)
                if img.shape[:2] == out.shape[:2]:
                    np.copyto(out, img)
                    img = None
            t1 = time.perf_counter()
            fit = None
            if img is not None:
                size = (img.shape[1], img.shape[0])
                if size not in self._warned_sizes:
                    self._warned_sizes.add(size)
                    warnings.warn(f"{name}: {size[0]}x{size[1]} picture, but this build's accelerator reads "
                                  f"{self.frame[0]}x{self.frame[1]} frames: fitted into the frame on the host "
                                  "(resampled twice; build with input.frame of the picture's size to avoid it)",
                                  stacklevel=2)
                fit = fit_into_frame(img, out)
        except (BoardError, ValueError) as e:
            return BoardError(f"{name}: {e}" if not str(e).startswith(name) else str(e))
        except MemoryError:
            return BoardError(f"{name}: not enough memory left for this frame; skipped (scale it down first)")
        return (out if img is None else img), slot, fit, (t1 - t0, time.perf_counter() - t1)

    def _prepare(self, name: str, data):
        """Decode (if encoded) and letterbox one frame -> (img, canvas, ratio, pad, seconds), or a BoardError that
        skips just this frame (a corrupt JPEG, an image of an unusable shape)."""
        t0 = time.perf_counter()
        try:
            if isinstance(data, BaseException):
                raise data
            img = decode_image(data, name) if isinstance(data, (bytes, bytearray, memoryview)) else to_rgb8(data)
            t1 = time.perf_counter()
            canvas, ratio, pad = letterbox(img, self.size, resample=self.resample)
        except (BoardError, ValueError) as e:
            return BoardError(f"{name}: {e}" if not str(e).startswith(name) else str(e))
        except MemoryError:  # the frame's arrays did not fit: this frame is lost, the batch is not
            return BoardError(f"{name}: not enough memory left for this frame; skipped (scale it down first)")
        return img, canvas, ratio, pad, (t1 - t0, time.perf_counter() - t1)

    def run(self, source, sink=None, max_frames: int | None = None, seconds: float | None = None) -> dict:
        """Runs until the source ends, `max_frames` frames or `seconds` have been read, or the caller's thread is
        interrupted (Ctrl-C, Jupyter's Kernel > Interrupt: a webcam runs until stopped): the stats count the frames
        finished by then, frames still in flight are dropped, and `interrupted` says so.

        `sink(name, picture, dets)`, in the caller's thread. In a frame build the picture is the frame in the
        accelerator's input buffer, reused for a later frame once the sink returns: a sink that keeps it keeps a
        copy (board.display.LiveView does)."""
        q_pre, q_post = queue.Queue(self.depth + self.workers), queue.Queue(self.depth)
        stop = threading.Event()
        errors: list[BaseException] = []  # fatal: from the accelerator or a thread's own bug
        source_error: list[BaseException] = []  # the source ended badly: frames already read still finish
        stats = {"frames": 0, "undecodable": 0, "detections": 0, "interrupted": False}
        stage_s = dict.fromkeys(("decode", "letterbox", "accelerator", "postprocess", "sink"), 0.0)

        def put(q, item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=_WAIT_S)
                    return True
                except queue.Full:
                    pass
            return False

        def get(q):
            while not stop.is_set():
                try:
                    return q.get(timeout=_WAIT_S)
                except queue.Empty:
                    pass
            return _END

        def guard(fn):
            def run():
                try:
                    fn()
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                    errors.append(e)
                    stop.set()
            return run

        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="preprocess")

        free = None  # a frame build: the accelerator's input buffers not in use, each frame decodes into one
        if self.frame is not None:
            free = queue.Queue()
            for k in range(len(self.accel.ibufs)):
                free.put(k)

        def produce():
            try:
                for i, (name, data) in enumerate(source):
                    if ((max_frames is not None and i >= max_frames) or stop.is_set()
                            or (seconds is not None and time.perf_counter() - t0 >= seconds)):
                        break
                    if free is None:
                        item = (name, None, pool.submit(self._prepare, name, data))
                    else:
                        if (slot := get(free)) is _END:
                            return
                        item = (name, slot, pool.submit(self._prepare_frame, name, data, slot))
                    if not put(q_pre, item):
                        return
            except BoardError as e:
                source_error.append(e)
            finally:
                if hasattr(source, "close"):  # a camera generator releases the device now, in the thread reading it
                    source.close()
            put(q_pre, _END)

        def accelerate():
            while (item := get(q_pre)) is not _END:
                name, slot, future = item
                prepared = future.result()
                if isinstance(prepared, BoardError):
                    if slot is not None:
                        free.put(slot)
                elif slot is None:
                    img, canvas, ratio, pad, (t_dec, t_lb) = prepared
                    stage_s["decode"] += t_dec
                    stage_s["letterbox"] += t_lb
                    t0 = time.perf_counter()
                    codes = self.accel(canvas[None])[0]
                    stage_s["accelerator"] += time.perf_counter() - t0
                    prepared = (img, codes, ((ratio, pad),))
                else:
                    img, slot, fit, (t_dec, t_fit) = prepared
                    stage_s["decode"] += t_dec
                    stage_s["letterbox"] += t_fit  # the host's fit of a picture of another size; else nothing
                    t0 = time.perf_counter()
                    codes = self.accel.run_slot(slot)
                    stage_s["accelerator"] += time.perf_counter() - t0
                    # canvas -> frame (the fabric's letterbox), then frame -> picture (the host's fit, if any)
                    prepared = (img, codes, ((self.frame_ratio, self.frame_pad),) + ((fit,) if fit else ()))
                if not put(q_post, (name, slot, prepared)):
                    return
            put(q_post, _END)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=guard(f), name=f.__name__, daemon=True) for f in (produce, accelerate)]
        handover = gil_handover()  # the accelerator's wait takes the GIL back on time (board/accelerator.py)
        handover.__enter__()
        for t in threads:
            t.start()
        try:
            while (item := get(q_post)) is not _END:
                name, slot, prepared = item
                if isinstance(prepared, BoardError):
                    warnings.warn(str(prepared), stacklevel=2)
                    stats["undecodable"] += 1
                    continue
                img, codes, geometries = prepared
                t1 = time.perf_counter()
                dets = detect_with_manifest(codes, self.manifest, self.conf, self.iou)
                shapes = [self.frame[::-1]] * (len(geometries) - 1) if len(geometries) > 1 else []
                shapes.append(img.shape[:2])  # the last geometry maps onto the picture itself
                for (ratio, pad), shape in zip(geometries, shapes, strict=True):
                    dets[:, :4] = unletterbox_boxes(dets[:, :4], ratio, pad, shape)
                t2 = time.perf_counter()
                stats["frames"] += 1
                stats["detections"] += len(dets)
                if sink is not None:
                    sink(name, img, dets)
                if slot is not None:  # the frame's buffer is free again once the sink has returned
                    free.put(slot)
                stage_s["postprocess"] += t2 - t1
                stage_s["sink"] += time.perf_counter() - t2
        except KeyboardInterrupt:
            stats["interrupted"] = True
        finally:
            stop.set()  # whatever ended the loop (the end, an error, the sink raising), every thread now leaves
            for t in threads:
                t.join(timeout=1)
            pool.shutdown(wait=False, cancel_futures=True)
            handover.__exit__(None, None, None)
        if errors or source_error:
            raise (errors or source_error)[0]
        wall = time.perf_counter() - t0
        n = max(stats["frames"], 1)
        stats.update({"seconds": round(wall, 4), "end_to_end_fps": round(stats["frames"] / wall, 2) if wall else 0.0,
                      "accelerator_fps": round(self.accel.fps(), 2),
                      "accelerator_call_fps": round(stats["frames"] / stage_s["accelerator"], 2)
                      if stage_s["accelerator"] else 0.0,
                      "stage_ms": {k: round(v / n * 1e3, 3) for k, v in stage_s.items()}})
        return stats


def wider_prediction_text(name: str, dets: np.ndarray) -> str:
    """One image's predictions in WIDER FACE's submission format: name, count, then `x y w h score` lines."""
    lines = [name, str(len(dets))]
    lines += [f"{x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f} {s:.4f}" for x1, y1, x2, y2, s, _ in dets]
    return "\n".join(lines) + "\n"
