"""The board's runtime path as a cross-check backend: board.accelerator's pack -> IODMA registers -> unpack around
board.sim's simulated overlay (the golden QCDQ model behind the registers). Host side: it is the flow's
Backend, so it lives here and board/ stays free of flow imports. For a frame build the accelerator reads camera
frames (manifest input.accel_shape) and the overlay letterboxes them as the fabric does: the backend takes frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from board.accelerator import Accelerator
from board.sim import SimOverlay
from flow.backends import Backend, check_input


class BoardSimBackend(Backend):
    name = "board-sim"
    exact_integer = True

    def __init__(self, src: Path):
        self.src = Path(src)
        self.acc = Accelerator(self.src, overlay=SimOverlay(self.src))
        self.takes_frame = self.acc.manifest.input.frame is not None

    def run(self, x):
        n, h, w, c = self.acc.manifest.input.accel_shape  # what the accelerator reads: the canvas, or the frame
        check_input(x, [n, c, h, w], self.name)
        frames = np.clip(np.round(x), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        return np.concatenate([self.acc(f[None]).transpose(0, 3, 1, 2) for f in frames])

    def info(self):
        return {"overlay": "simulated (golden QCDQ on ORT behind the IODMA protocol)", "deploy": str(self.src)}


def crosscheck_backends(run_dir: Path, options: dict) -> list:
    """The run's deploy folder (or the run itself, once lowered to QCDQ) behind the simulated overlay; [] if neither."""
    run_dir = Path(run_dir)
    deploy = run_dir / "deploy"
    src = deploy if (deploy / "model.qcdq.onnx").exists() else run_dir
    if not (src / "model.qcdq.onnx").exists() or not (src / "manifest.json").exists():
        return []
    return [BoardSimBackend(src)]
