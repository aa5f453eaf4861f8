"""`lpyolo_letterbox.sv`, the letterbox in the fabric: Verilator against board.preprocess.letterbox_fixed, Yosys.

`python -m flow.hw.rtl.letterbox --frame 640x480 --size 416` builds the module for that camera frame, streams a
real photo and a frame of random pixels through it, without and with random stalls on both streams, requires
every output pixel to equal letterbox_fixed's, and prints cycles per frame, FPS at 100 MHz and the Yosys
resources for the xc7z020 (synth_xilinx, with and without DSP48E1 inference) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
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

    def synth(self, dsp: bool) -> dict[str, int]:
        """Yosys synth_xilinx -family xc7 on the module with these parameters: LUT/FF/BRAM_18K/DSP."""
        from flow.hw.synth import resources, yosys

        with tempfile.TemporaryDirectory(prefix="lpyolo-yosys-") as d:
            (Path(d) / SOURCE.name).write_text(SOURCE.read_text())
            gs = " ".join(f"-G {k}={v}" for k, v in self.params().items())
            script = (f"read_slang -j 1 {gs} --top lpyolo_letterbox /synth/{SOURCE.name}\n"
                      "hierarchy -check -top lpyolo_letterbox\n"
                      f"synth_xilinx -family xc7 -flatten {'' if dsp else '-nodsp '}-top lpyolo_letterbox\n"
                      "tee -q -o /synth/stat.json stat -json\n")
            (Path(d) / "synth.ys").write_text(script)
            r = subprocess.run([*yosys(), "-q", "-l", "/synth/yosys.log", "-s", "/synth/synth.ys"], cwd=d,
                               env={**os.environ, "YOWASP_MOUNT": f"/synth={d}"}, capture_output=True, text=True)
            stat = Path(d) / "stat.json"
            if r.returncode or not stat.exists():
                log = Path(d) / "yosys.log"
                text = log.read_text() if log.exists() else r.stdout + r.stderr
                raise FlowError(f"Yosys failed on {SOURCE.name}: "
                                + "; ".join([ln for ln in text.splitlines() if "ERROR" in ln][:5] or [text[-500:]]))
            counts, unknown = resources(json.loads(stat.read_text()))
        if unknown:
            raise FlowError(f"Yosys mapped cells the report cannot count: {unknown}; extend flow.hw.synth.CELL_RESOURCES")
        return counts


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


def parse_frame(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"--frame {text!r}: expected WIDTHxHEIGHT, e.g. 640x480")
    return int(m[1]), int(m[2])


def run(w: int, h: int, size: int, stall_pct: int = 30, yosys: bool = True) -> dict:
    """Build, check bit for bit without and with stalls, time and size one letterbox; the CLI's report."""
    lb = Letterbox(w, h, size)
    frames = sample_frames(w, h)
    sim = lb.build()
    steady = lb.check(frames, 0, 0, sim)
    stalled = lb.check(frames, stall_pct, 1, sim)
    cycles = steady["cycles_per_frame"][0]
    report = {"frame": f"{w}x{h}", "size": size, "params": lb.params(), "bit_exact": True,
              "frames_checked": 2 * len(frames), "stall_pct": stall_pct, "cycles_per_frame": cycles,
              "first_frame_cycles": steady["frame_end_cycles"][0], "stalled_cycles_per_frame": stalled["cycles_per_frame"][0],
              "fps_at_100mhz": round(CLOCK_MHZ * 1e6 / cycles, 1)}
    if yosys:
        report["yosys_xc7z020"] = {"dsp": lb.synth(dsp=True), "nodsp": lb.synth(dsp=False)}
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flow.hw.rtl.letterbox", description=__doc__.splitlines()[0])
    p.add_argument("--frame", type=parse_frame, default=(640, 480), help="camera frame WIDTHxHEIGHT (640x480)")
    p.add_argument("--size", type=int, default=416, help="output side (the model's input size)")
    p.add_argument("--stall", type=int, default=30, help="percent of cycles each stream stalls in the second run")
    p.add_argument("--no-yosys", action="store_true", help="simulate only")
    a = p.parse_args(argv)
    try:
        print(json.dumps(run(*a.frame, a.size, a.stall, not a.no_yosys), indent=1))
    except FlowError as e:
        print(f"error: {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
