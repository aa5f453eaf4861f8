"""The letterbox in the fabric as a model: `Letterbox` (one lpyolo_letterbox.sv instance: parameters, cycles,
resources, python execution = board.preprocess.letterbox_fixed, Verilator build and check) and the frame-build
check. The build steps and the FINN op import it from here; `python -m flow.hw.rtl.letterbox` (the module's own
check, with Yosys) sits above them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from board.manifest import Manifest
from board.preprocess import PAD_VALUE, letterbox_fixed, letterbox_geometry
from flow.errors import FlowError

SOURCE = Path(__file__).parent / "lpyolo_letterbox.sv"
CLOCK_MHZ = 100
MAX_SIDE = 4095  # the module's counters


@dataclass(frozen=True)
class Letterbox:
    """One letterbox node: W x H camera frames (RGB, one pixel per beat) -> SIZE x SIZE canvases."""

    W: int
    H: int
    SIZE: int

    def __post_init__(self):
        if not (1 <= self.W <= MAX_SIDE and 1 <= self.H <= MAX_SIDE and 1 <= self.SIZE <= MAX_SIDE):
            raise FlowError(f"lpyolo_letterbox: frame {self.W}x{self.H} -> {self.SIZE}: sides must be 1..{MAX_SIDE}")

    def params(self) -> dict[str, int]:
        _, (rh, rw), _ = letterbox_geometry((self.H, self.W), self.SIZE)
        return {"H_IN": self.H, "W_IN": self.W, "SIZE": self.SIZE, "RH": rh, "RW": rw, "PAD": PAD_VALUE}

    def cycles(self) -> int:
        """Cycles per frame at one beat per clock on both sides: the W x H input beats plus the padding rows, which
        the output emits while the input waits (three lines cannot hold what would arrive meanwhile), or the SIZE x
        SIZE output beats where those are more (upscaling); plus one input line of fill. An upper bound within a few percent of the
        simulated module (640x480 -> 416: 349,376 of 351,104; 96x64 -> 64: 7,328 of 7,584; 64x96 -> 64: 6,198 of
        6,208)."""
        _, (rh, _), _ = letterbox_geometry((self.H, self.W), self.SIZE)
        return max(self.W * self.H + (self.SIZE - rh) * self.SIZE, self.SIZE ** 2) + self.W

    def resources(self) -> dict[str, int]:
        """Yosys synth_xilinx on the module (README): nine DSP48E1 (per channel two 9x9 products along x, one 9x18
        along y), six line memories of ceil(W/2) x 24 bits, one 512x36 BRAM18 per 512 words (Yosys maps them to
        block RAM at 96x64 too), ~570 LUTs of counters, steps and muxes (574 at 640x480 -> 416, 524 at 96x64 -> 64)."""
        words = (self.W + 1) // 2
        return {"LUT": 570, "BRAM_18K": 6 * ((words + 511) // 512), "DSP": 9}

    def execute(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, SIZE, SIZE, 3) uint8: the specification (letterbox_fixed)."""
        return np.stack([letterbox_fixed(f, self.SIZE) for f in frames])

    def build(self, sources: list[Path] | None = None) -> Path:
        from flow.hw.rtl.verilator import build

        return build("lpyolo_letterbox", sources or [SOURCE], self.params())

    def simulate(self, frames: np.ndarray, stall_pct: int = 0, seed: int = 0,
                 sim: Path | None = None) -> tuple[np.ndarray, dict]:
        """Stream (N, H, W, 3) frames through the RTL; returns (N, SIZE, SIZE, 3) and the testbench report with the
        cycles between consecutive frames' last output beats."""
        from flow.hw.rtl.verilator import run_stream

        frames = np.asarray(frames, np.uint8)
        if frames.shape[1:] != (self.H, self.W, 3):
            raise FlowError(f"lpyolo_letterbox {self.W}x{self.H}: frames of shape {frames.shape[1:]} given")
        n = len(frames)
        out, cycles, report = run_stream(sim or self.build(), frames.reshape(-1, 3), n * self.SIZE * self.SIZE, 3,
                                         stall_pct, seed, max_idle=10 * (self.W * self.H + self.SIZE ** 2))
        ends = cycles.reshape(n, -1)[:, -1].astype(np.int64)
        report["frame_end_cycles"] = ends.tolist()
        report["cycles_per_frame"] = np.diff(ends).tolist()
        return out.reshape(n, self.SIZE, self.SIZE, 3), report

    def check(self, frames: np.ndarray, stall_pct: int = 0, seed: int = 0, sim: Path | None = None) -> dict:
        """simulate() and require every pixel to equal letterbox_fixed's; raises FlowError at the first that does not."""
        got, report = self.simulate(frames, stall_pct, seed, sim)
        want = self.execute(frames)
        bad = np.argwhere(got != want)
        if len(bad):
            f, y, x, c = bad[0]
            raise FlowError(f"lpyolo_letterbox {self.W}x{self.H}->{self.SIZE}: {len(bad)} values differ from "
                            f"letterbox_fixed, first frame {f} row {y} column {x} channel {c}: RTL {got[f, y, x, c]}, "
                            f"letterbox_fixed {want[f, y, x, c]}")
        return report

def check_frame_build(manifest: Manifest, where: str) -> tuple[int, int] | None:
    """The manifest's frame (width, height) where the fabric letterboxes, None otherwise; refused where the model
    was trained on another resize than the one the fabric computes."""
    frame = manifest.input.frame
    if frame is not None and manifest.input.resample != "bilinear-exact":
        raise FlowError(f"{where}: input.frame {frame[0]}x{frame[1]} asks for the letterbox in the fabric, which "
                        f"computes resample 'bilinear-exact' (board.preprocess.letterbox_fixed), but this model was "
                        f"trained and exported with '{manifest.input.resample}'; train and export it with --resample "
                        "bilinear-exact, or build without a frame (remove input.frame: the host letterboxes)")
    if frame is not None:
        Letterbox(W=frame[0], H=frame[1], SIZE=manifest.input.size)  # sides the RTL's counters hold
    return frame


def sample_frames(w: int, h: int, seed: int = 0) -> np.ndarray:
    """(2, h, w, 3): a real photo (astronaut, sampled to w x h) and uniform random pixels (every value and edge)."""
    from flow.samples import photo

    img = photo("astronaut")
    rows = np.linspace(0, img.shape[0] - 1, h).astype(np.intp)
    cols = np.linspace(0, img.shape[1] - 1, w).astype(np.intp)
    noise = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return np.stack([img[rows][:, cols], noise])


