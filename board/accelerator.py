"""The accelerator on the PYNQ-Z2: load the overlay, allocate DMA buffers once, pack, run, unpack, time.

Works with a real pynq Overlay (imported lazily: this module imports on any host) or with board.sim.SimOverlay,
which has the same interface. The DMA protocol is FINN's zynq-iodma shell: the input and output IODMA IPs take a
buffer address at register 0x10 and a batch size at 0x1C, start on a write of 1 to 0x00; the output IODMA sets bit
0x2 of register 0x00 when done and bit 0x4 when idle.

Buffers are cacheable, as FINN's drivers allocate them: the ARM writes and reads them at cache speed and
`flush()` / `invalidate()` move them to and from DRAM around each transfer (reading a non-cacheable buffer costs an
uncached DDR access per word).

A frame build (manifest input.frame) takes the camera's whole frame and letterboxes it in the fabric: the host
decodes each frame into one of a ring of input buffers (`frame_buffer(slot)`), and `run_slot(slot)` sends
it; the ring lets the next frames decode while one is in flight.

Waiting for the accelerator: FINN's zynq-iodma shell wires no interrupt to the PS (PYNQ's `Interrupt`, and so
`DMA.wait_async`, needs one on IRQ_F2P[0]), so the done bit is polled, as FINN's driver and PYNQ's `DMA.wait` do
(both spin). A spin holds the GIL; a sleep releases it, but every wake-up must take the GIL back from whichever
thread holds it, and CPython hands it over only at the holder's switch interval (5 ms by default): beside a pure-
Python thread, the simulated 3.97 ms wait took 24 ms (median; 5.8 ms at 0.5 ms, board/README.md). So the wait sleeps
most of the accelerator's known frame time once, then polls with short sleeps, and `gil_handover()` shortens the
switch interval while the pipeline runs (WAIT_SWITCH_S), so a woken wait takes the GIL back within 0.5 ms instead of
5 ms.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from board.manifest import Manifest, ManifestError, load_manifest
from board.packing import pack, unpack, word_bytes

BITFILE, HWH, MANIFEST = "finn-accel.bit", "finn-accel.hwh", "manifest.json"
REG_CTRL, REG_ADDR, REG_BATCH = 0x00, 0x10, 0x1C
START, DONE, IDLE, READY = 0x1, 0x2, 0x4, 0x8
POLL_S = 0.0002  # between status reads once the expected frame time has passed: ~5 % of a 4 ms frame
WAKE_EARLY = 0.8  # the first sleep's share of the fastest recent frame: the done bit is read a few times after it
WAIT_SWITCH_S = 0.0005  # the interpreter's switch interval while a pipeline runs (CPython's default: 0.005)
FRAME_BUFFERS = 6  # a frame build's ring: two frames decoding, two queued, one in flight, one at the sink


class BoardError(RuntimeError):
    """A deployment or runtime problem on the board side, named precisely."""


def read_manifest(deploy_dir: Path) -> Manifest:
    """The deploy folder's manifest.json, checked (board/manifest.py); its problems as a BoardError."""
    try:
        return load_manifest(Path(deploy_dir) / MANIFEST)
    except ManifestError as e:
        raise BoardError(str(e)) from e


class Accelerator:
    """One overlay, one set of buffers, batch size fixed at construction (allocation happens once)."""

    def __init__(self, deploy_dir, overlay=None, batch: int = 1, timeout_s: float = 1.0,
                 input_buffers: int | None = None):
        self.deploy_dir = Path(deploy_dir)
        self.manifest = read_manifest(self.deploy_dir)
        self.geom = self.manifest.geometry
        self.batch, self.timeout_s = batch, timeout_s
        if overlay is None:
            overlay = self._load_overlay()
        self.overlay = overlay
        try:
            self.idma, self.odma = overlay.idma0, overlay.odma0
        except AttributeError as e:
            raise BoardError(f"overlay has no FINN IODMA ({e}); is {BITFILE} a FINN zynq-iodma build of this model?") from e
        g, ishape, oshape = self.geom, self.manifest.input.accel_shape, self.manifest.output.accel_shape
        self.in_elems = int(np.prod(ishape[1:]))
        self.out_elems = int(np.prod(oshape[1:]))
        in_bytes = self.in_elems // g.in_fold * word_bytes(g.in_fold, g.in_bits)
        out_bytes = self.out_elems // g.out_fold * word_bytes(g.out_fold, g.out_bits)
        self.frame = self.manifest.input.frame  # (width, height): the fabric letterboxes; None: the host does
        n_in = input_buffers or (FRAME_BUFFERS if self.frame and batch == 1 else 1)
        self.ibufs = [overlay.allocate((batch, in_bytes), np.uint8, cacheable=True) for _ in range(n_in)]
        self.ibuf = self.ibufs[0]
        self.obuf = overlay.allocate((batch, out_bytes), np.uint8, cacheable=True)
        # 8-bit pixels one per byte (FINN's layout for a UINT8 input): packing is one copy into the DMA buffer
        self.copy_in = g.in_bits == 8 and g.in_fold == ishape[-1]
        self.timings: list[float] = []

    def _load_overlay(self):
        bit, hwh = self.deploy_dir / BITFILE, self.deploy_dir / HWH
        for f, what in ((bit, "bitfile"), (hwh, "hardware handoff (.hwh, must sit beside the bitfile)")):
            if not f.is_file():
                raise BoardError(f"{f}: {what} missing from the deploy folder")
        want = self.manifest.files.get("bitfile", {}).get("sha256")
        if want and hashlib.sha256(bit.read_bytes()).hexdigest() != want:
            raise BoardError(f"{bit}: does not match manifest.json (sha256 differs): bitfile and manifest are from "
                             "different builds")
        try:
            from pynq import Overlay, allocate
        except ImportError as e:
            raise BoardError("pynq is not installed: run on the board's Python, or use --sim on a host") from e
        ov = Overlay(str(bit))
        ov.allocate = lambda shape, dtype, cacheable: allocate(shape=shape, dtype=dtype, cacheable=cacheable)
        return ov

    # -- the three stages, separately callable so the pipeline can overlap them
    def pack_input(self, frames_nhwc: np.ndarray) -> None:
        frames = np.asarray(frames_nhwc)
        want = tuple(self.manifest.input.accel_shape[1:])
        if frames.dtype != np.uint8 or frames.shape[1:] != want or len(frames) != self.batch:
            raise BoardError(f"input must be uint8 {(self.batch, *want)}, got {frames.dtype}{frames.shape}")
        g = self.geom
        if self.copy_in:
            np.copyto(self.ibuf, frames.reshape(self.batch, -1))
        else:
            flat = frames.reshape(self.batch, -1, g.in_fold)
            self.ibuf[:] = pack(flat, g.in_bits, g.in_fold).reshape(self.batch, -1)
        self.ibuf.flush()

    def frame_buffer(self, slot: int) -> np.ndarray:
        """Input buffer `slot` as the (height, width, 3) uint8 frame the accelerator reads: the host decodes into it,
        no copy after. Only where a pixel is a byte (the copy_in layout) and the batch is 1."""
        if not (self.copy_in and self.batch == 1):
            raise BoardError(f"frame_buffer needs one 8-bit pixel per byte and batch 1 (packing {self.geom}, batch "
                             f"{self.batch}); use pack_input")
        return self.ibufs[slot].reshape(self.manifest.input.accel_shape[1:])

    def run_slot(self, slot: int) -> np.ndarray:
        """Send input buffer `slot` as it is (flushed), wait, unpack: -> (H, W, C) int32 codes of its frame."""
        self.ibufs[slot].flush()
        self.execute(slot)
        return self.unpack_output()[0]

    def dma_state(self) -> str:
        """Both IODMAs' ap_ctrl registers, decoded: what a stalled or wrong accelerator looks like."""
        def state(name, dma):
            v = dma.read(REG_CTRL)
            bits = [n for n, b in (("start", START), ("done", DONE), ("idle", IDLE), ("ready", READY)) if v & b]
            return f"{name} ap_ctrl=0x{v:02x} ({', '.join(bits) or 'busy'})"
        return f"{state('idma0 (input IODMA)', self.idma)}, {state('odma0 (output IODMA)', self.odma)}"

    def execute(self, slot: int = 0) -> float:
        """Start both IODMAs on input buffer `slot` and wait for the output one; returns seconds. Times out instead
        of hanging.

        The wait sleeps (which releases the GIL): first WAKE_EARLY of the fastest of the last frames (a dataflow
        accelerator takes the same time every frame), then POLL_S between status reads. Sleeping the whole last
        time instead feeds back: a wake-up delayed by another thread's hold of the GIL lengthens the next sleep."""
        t0 = time.perf_counter()
        if not self.odma.read(REG_CTRL) & IDLE:
            raise BoardError(f"output DMA is not idle: a previous run did not finish; {self.dma_state()} "
                             "(reload the overlay)")
        for dma, buf in ((self.odma, self.obuf), (self.idma, self.ibufs[slot])):
            dma.write(REG_ADDR, buf.device_address)
            dma.write(REG_BATCH, self.batch)
            dma.write(REG_CTRL, START)
        if self.timings:
            time.sleep(WAKE_EARLY * min(self.timings[-8:]))
        while not self.odma.read(REG_CTRL) & DONE:
            if time.perf_counter() - t0 > self.timeout_s:
                raise BoardError(f"DMA did not complete within {self.timeout_s} s: {self.dma_state()}; the accelerator "
                                 "stalled or the bitfile does not match the manifest (wrong input size/packing): "
                                 "reload the overlay, and rebuild the deploy folder if it happens again")
            time.sleep(POLL_S)
        dt = time.perf_counter() - t0
        self.timings.append(dt)
        return dt

    def unpack_output(self) -> np.ndarray:
        """-> (batch, H, W, C) int32 codes, the accelerator's NHWC output."""
        self.obuf.invalidate()
        g = self.geom
        raw = np.asarray(self.obuf).reshape(self.batch, -1)
        vals = np.stack([unpack(r, g.out_bits, g.out_fold, self.out_elems, g.out_signed) for r in raw])
        return vals.reshape(self.batch, *self.manifest.output.accel_shape[1:])

    def __call__(self, frames_nhwc: np.ndarray) -> np.ndarray:
        self.pack_input(frames_nhwc)
        self.execute()
        return self.unpack_output()

    def fps(self) -> float:
        """Accelerator-only frames per second over the calls so far."""
        return self.batch * len(self.timings) / sum(self.timings) if self.timings else 0.0


@contextlib.contextmanager
def gil_handover(interval_s: float = WAIT_SWITCH_S):
    """While it lasts, a thread holding the GIL hands it to a waiting one after `interval_s` instead of CPython's
    5 ms (sys.setswitchinterval): the accelerator's wait wakes and takes the GIL back on time beside a
    Python-bound thread. Restores the previous interval."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, interval_s))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def save_outputs(path, inputs: np.ndarray, outputs: np.ndarray, manifest: Manifest) -> None:
    """Raw board outputs for `python -m flow crosscheck --board-outputs`: inputs (N,H,W,3) uint8, outputs NHWC."""
    digest = hashlib.sha256(json.dumps(manifest.to_json(), sort_keys=True).encode()).hexdigest()
    np.savez(path, inputs=np.asarray(inputs, np.uint8), outputs=np.asarray(outputs, np.int32), manifest_sha256=digest)


def load_outputs(path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        return data["inputs"], data["outputs"]
