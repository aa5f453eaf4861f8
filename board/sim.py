"""A simulated overlay with the interface board.accelerator uses from pynq: `idma0`/`odma0` register access and
`allocate` for DMA buffers. Behind the registers it runs the golden integer model of the run (model.qcdq.onnx on
ONNX Runtime, host only) on exactly the bytes the hardware would receive, and writes back exactly the bytes the
hardware would send: packing, layout and scale are all exercised, only the arithmetic is the golden model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from board.accelerator import DONE, IDLE, REG_ADDR, REG_BATCH, REG_CTRL, Accelerator, load_manifest, stream_geometry
from board.packing import pack, unpack


class SimBuffer(np.ndarray):
    """numpy array with the two pynq buffer methods the runtime calls; device_address is fake but unique."""

    def flush(self):
        pass

    def invalidate(self):
        pass


class SimIODMA:
    def __init__(self, overlay: SimOverlay, role: str):
        self.overlay, self.role = overlay, role
        self.regs = {REG_CTRL: IDLE, REG_ADDR: 0, REG_BATCH: 0}

    def read(self, reg: int) -> int:
        return self.regs.get(reg, 0)

    def write(self, reg: int, value: int) -> None:
        self.regs[reg] = value
        if reg == REG_CTRL and value & 1:
            self.regs[REG_CTRL] = 0  # busy
            self.overlay.started(self.role)


class SimOverlay:
    """Golden-model stand-in for the FINN overlay. `stall=True` never completes (to test DMA timeouts)."""

    def __init__(self, deploy_dir: Path, stall: bool = False):
        import onnxruntime as ort

        self.deploy_dir = Path(deploy_dir)
        self.manifest = load_manifest(self.deploy_dir)
        self.geom = stream_geometry(self.manifest)
        model = self.deploy_dir / "model.qcdq.onnx"
        if not model.is_file():
            raise FileNotFoundError(f"{model}: the simulated overlay runs the golden QCDQ model; it is missing")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        self.sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        self.buffers: dict[int, SimBuffer] = {}
        self.idma0, self.odma0 = SimIODMA(self, "in"), SimIODMA(self, "out")
        self.stall, self._started = stall, set()

    def allocate(self, shape, dtype):
        buf = np.zeros(shape, dtype).view(SimBuffer)
        buf.device_address = 0x1000_0000 + 0x100_0000 * len(self.buffers)
        self.buffers[buf.device_address] = buf
        return buf

    def started(self, role: str) -> None:
        self._started.add(role)
        if self._started == {"in", "out"} and not self.stall:
            self._run()
            self._started.clear()

    def _run(self) -> None:
        m, g = self.manifest, self.geom
        ibuf = self.buffers[self.idma0.regs[REG_ADDR]]
        obuf = self.buffers[self.odma0.regs[REG_ADDR]]
        batch = self.idma0.regs[REG_BATCH]
        ishape = m["input"]["accel_shape"][1:]
        n_in = int(np.prod(ishape))
        frames = np.stack([unpack(ibuf[b], g["in_bits"], g["in_fold"], n_in, False) for b in range(batch)])
        x = frames.reshape(batch, *ishape).transpose(0, 3, 1, 2).astype(np.float32)  # the golden model is NCHW
        y = self.sess.run(None, {self.sess.get_inputs()[0].name: x})[0]
        codes = np.round(y.astype(np.float64) / m["output"]["scale"]).astype(np.int32).transpose(0, 2, 3, 1)
        flat = codes.reshape(batch, -1, g["out_fold"])
        obuf[:batch] = pack(flat, g["out_bits"], g["out_fold"]).reshape(batch, -1)
        self.odma0.regs[REG_CTRL] = DONE | IDLE
        self.idma0.regs[REG_CTRL] = IDLE


def crosscheck_backends(run_dir: Path, options: dict) -> list:
    """The board path (pack -> IODMA registers -> golden model -> unpack) as a cross-check backend."""
    from flow.backends import Backend, check_input

    run_dir = Path(run_dir)
    deploy = run_dir / "deploy"
    src = deploy if (deploy / "model.qcdq.onnx").exists() else run_dir
    if not (src / "model.qcdq.onnx").exists() or not (src / "manifest.json").exists():
        return []

    class BoardSimBackend(Backend):
        name = "board-sim"
        exact_integer = True

        def __init__(self):
            self.acc = Accelerator(src, overlay=SimOverlay(src))

        def run(self, x):
            check_input(x, self.acc.manifest["input"]["shape"], self.name)
            frames = np.clip(np.round(x), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
            return np.concatenate([self.acc(f[None]).transpose(0, 3, 1, 2) for f in frames])

        def info(self):
            return {"overlay": "simulated (golden QCDQ on ORT behind the IODMA protocol)", "deploy": str(src)}

    return [BoardSimBackend()]
