"""`lpyolo_maxpool.sv`: its python execution model, cycle and resource estimates, and a Verilator run of it.

The model is the golden reference the RTL is tested against (tests/test_rtl.py); the estimates follow FINN's
conventions for HW custom ops (cycles per frame at one beat per clock, LUTs for comparators and LUT-RAM lines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flow.errors import FlowError

SOURCE = Path(__file__).parent / "lpyolo_maxpool.sv"


@dataclass(frozen=True)
class MaxPool:
    """One 2x2/2 max pool node on an H x W x C stream of BITS-bit values, PE channels per beat."""

    H: int
    W: int
    C: int
    PE: int
    BITS: int
    SIGNED: bool = False

    def __post_init__(self):
        if self.H % 2 or self.W % 2:
            raise FlowError(f"lpyolo_maxpool: input {self.H}x{self.W} must have even sides (2x2 windows, stride 2)")
        if self.C % self.PE:
            raise FlowError(f"lpyolo_maxpool: PE={self.PE} does not divide C={self.C}; pick a divisor")
        if not 1 <= self.BITS <= 32:
            raise FlowError(f"lpyolo_maxpool: {self.BITS}-bit values are not supported (1..32)")

    def execute(self, x: np.ndarray) -> np.ndarray:
        """(N, H, W, C) -> (N, H/2, W/2, C): the python execution model."""
        n = x.shape[0]
        return x.reshape(n, self.H // 2, 2, self.W // 2, 2, self.C).max(axis=(2, 4))

    def cycles(self) -> int:
        """Cycles per frame at one input beat per clock (the output never stalls the input when drained)."""
        return self.H * self.W * self.C // self.PE

    def resources(self) -> dict[str, int]:
        """LUT: two comparator+mux lanes per PE (~1.5 LUT per bit each) and the line of W/2 * C/PE words in
        RAM64X1S LUT-RAM (one LUT per 64 entries per bit); no BRAM, no DSP."""
        line_words = self.W // 2 * self.C // self.PE
        lut = 2 * self.PE * math.ceil(1.5 * self.BITS) + self.PE * self.BITS * math.ceil(line_words / 64)
        return {"LUT": lut, "BRAM_18K": 0, "DSP": 0}

    def params(self) -> dict[str, int]:
        return {"H": self.H, "W": self.W, "C": self.C, "PE": self.PE, "BITS": self.BITS, "SIGNED": int(self.SIGNED)}

    def simulate(self, x: np.ndarray, stall_pct: int = 0, seed: int = 0, sim: Path | None = None) -> tuple[np.ndarray, dict]:
        """Run (N, H, W, C) frames through the RTL in Verilator (this module built with params(), or `sim`, e.g. the
        wrapper FINN's flow generates); returns (output, report with cycles per frame)."""
        from flow.hw.rtl.verilator import build, run_frames

        sim = sim or build("lpyolo_maxpool", [SOURCE], self.params())
        y, report = run_frames(sim, x, self.BITS, self.PE, self.BITS, self.PE, (self.H // 2, self.W // 2, self.C),
                               self.SIGNED, stall_pct, seed)
        report["cycles_per_frame"] = np.diff(report["frame_end_cycles"]).tolist()
        return y, report
