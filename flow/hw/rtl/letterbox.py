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
from pathlib import Path

from flow.errors import FlowError
from flow.hw.rtl.letterbox_model import CLOCK_MHZ, SOURCE, Letterbox, sample_frames  # noqa: F401 - this tool's model


def synth(lb: Letterbox, dsp: bool) -> dict[str, int]:
    """Yosys synth_xilinx -family xc7 on the module with these parameters: LUT/FF/BRAM_18K/DSP."""
    from flow.hw.synth import resources, yosys

    with tempfile.TemporaryDirectory(prefix="lpyolo-yosys-") as d:
        (Path(d) / SOURCE.name).write_text(SOURCE.read_text())
        gs = " ".join(f"-G {k}={v}" for k, v in lb.params().items())
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
        report["yosys_xc7z020"] = {"dsp": synth(lb, dsp=True), "nodsp": synth(lb, dsp=False)}
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
