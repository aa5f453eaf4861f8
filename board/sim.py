"""A simulated overlay with the interface board.accelerator uses from pynq: `idma0`/`odma0` register access and
`allocate` for DMA buffers. Behind the registers it runs the golden integer model of the run (model.qcdq.onnx on
ONNX Runtime, host only) on exactly the bytes the hardware would receive, and writes back exactly the bytes the
hardware would send: packing, layout and scale are all exercised, only the arithmetic is the golden model's.

Cacheable buffers behave as on the board: the IODMAs read and write a separate DRAM copy, which only `flush()`
(CPU -> DRAM) and `invalidate()` (DRAM -> CPU) bring in step, so a runtime that forgets either gets stale data.
`frame_time_s` holds the done bit back for the accelerator's frame time (the simulated 3.97 ms of the 416x416
design), so the host's wait is exercised as on the board.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from board.accelerator import DONE, IDLE, REG_ADDR, REG_BATCH, REG_CTRL, START, BoardError, read_manifest
from board.packing import pack, unpack
from board.preprocess import letterbox_fixed


class SimBuffer(np.ndarray):
    """numpy array (the CPU's view) with pynq's buffer methods; `dram` is what the IODMAs see."""

    def flush(self):
        if self.dram is not self:
            self.dram[...] = self

    def invalidate(self):
        if self.dram is not self:
            self[...] = self.dram


class SimIODMA:
    def __init__(self, overlay: SimOverlay, role: str):
        self.overlay, self.role = overlay, role
        self.regs = {REG_CTRL: IDLE, REG_ADDR: 0, REG_BATCH: 0}
        self.done_at: float | None = None

    def read(self, reg: int) -> int:
        if reg == REG_CTRL and self.done_at is not None and time.perf_counter() >= self.done_at:
            self.regs[REG_CTRL], self.done_at = DONE | IDLE, None
        return self.regs.get(reg, 0)

    def write(self, reg: int, value: int) -> None:
        self.regs[reg] = value
        if reg == REG_CTRL and value & START:
            self.regs[REG_CTRL] = 0  # busy
            self.overlay.started(self.role)


class SimOverlay:
    """Golden-model stand-in for the FINN overlay. `stall=True` never completes (to test DMA timeouts)."""

    def __init__(self, deploy_dir: Path, stall: bool = False, frame_time_s: float = 0.0):
        self.deploy_dir = Path(deploy_dir)
        self.manifest = read_manifest(self.deploy_dir)
        self.geom = self.manifest.geometry
        integer = self.deploy_dir / "model.int.onnx"  # the hardware's integer arithmetic, where it was made
        self.sess = golden_session(integer if integer.is_file() else self.deploy_dir / "model.qcdq.onnx")
        self.buffers: dict[int, SimBuffer] = {}
        self.idma0, self.odma0 = SimIODMA(self, "in"), SimIODMA(self, "out")
        self.stall, self.frame_time_s, self._started = stall, frame_time_s, set()
        self.golden_cpu_s = 0.0  # CPU time the golden model took in the caller's thread (the bench subtracts it)

    def allocate(self, shape, dtype, cacheable: bool = False):
        buf = np.zeros(shape, dtype).view(SimBuffer)
        buf.dram = np.zeros(shape, dtype) if cacheable else buf
        buf.cacheable = cacheable
        buf.device_address = 0x1000_0000 + 0x100_0000 * len(self.buffers)
        self.buffers[buf.device_address] = buf
        return buf

    def started(self, role: str) -> None:
        self._started.add(role)
        if self._started == {"in", "out"} and not self.stall:
            t0, c0 = time.perf_counter(), time.thread_time()
            self._run()
            self.golden_cpu_s += time.thread_time() - c0
            self._started.clear()
            self.odma0.done_at = t0 + self.frame_time_s * self.idma0.regs[REG_BATCH]
            self.idma0.regs[REG_CTRL] = IDLE

    def _run(self) -> None:
        m, g = self.manifest, self.geom
        ibuf = self.buffers[self.idma0.regs[REG_ADDR]].dram
        obuf = self.buffers[self.odma0.regs[REG_ADDR]].dram
        batch = self.idma0.regs[REG_BATCH]
        ishape = m.input.accel_shape[1:]
        n_in = int(np.prod(ishape))
        frames = np.stack([unpack(ibuf[b], g.in_bits, g.in_fold, n_in, False) for b in range(batch)])
        frames = frames.reshape(batch, *ishape)
        if m.input.frame is not None:  # a frame build: the fabric's letterbox before the network, bit for bit
            frames = np.stack([letterbox_fixed(f.astype(np.uint8), m.input.size) for f in frames])
        x = frames.transpose(0, 3, 1, 2).astype(np.float32)  # the golden model is NCHW
        y = self.sess.run(None, {self.sess.get_inputs()[0].name: x})[0]
        codes = np.round(y.astype(np.float64) / m.output.scale).astype(np.int32).transpose(0, 2, 3, 1)
        flat = codes.reshape(batch, -1, g.out_fold)
        obuf[:batch] = pack(flat, g.out_bits, g.out_fold).reshape(batch, -1)


def golden_session(model: Path):
    """ONNX Runtime session on the golden QCDQ model, or a BoardError saying what is wrong and what to do."""
    if not model.is_file():
        raise BoardError(f"{model}: missing; the simulated overlay runs the golden QCDQ model, which "
                         "`python -m flow deploy --run RUN` puts in the deploy folder")
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BoardError("onnxruntime is not installed: the simulated overlay needs it (host only; on the board use "
                         "the real overlay)") from e
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.intra_op_num_threads = 1  # the "accelerator" runs in the calling thread: its CPU time is measurable there
    try:
        return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for unreadable models
        raise BoardError(f"{model}: not a loadable ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                         "copy it again from the run, or rebuild the deploy folder with `python -m flow deploy`") from e
