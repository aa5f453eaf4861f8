"""`python -m flow bench a9`: what the board's loop costs on the PYNQ-Z2's Cortex-A9, estimated on a host from
board/bench.py's measurements (no board here).

Method: each stage's x86 time, measured in this run (least of many timed calls), times
a board-to-host ratio measured on public Zynq-7020 timings of the same kind of code re-run on this project's
2-core x86 (github.com/Xilinx/PYNQ-HelloWorld, github.com/Xilinx/finn-examples,
github.com/sefaburakokcu/finn-quantized-yolo):
  python  Python-bound numpy on small arrays (FINN's unpack_output: finn-examples 355-371 ms board / 9.6-10.4 ms
          here, 35x; LPYOLO's 574.5 ms board / ~60 ms here, 9.6x)                                         9.6-37x
  memory  numpy over large arrays, memory-bound (FINN's pack_input: 71-74 ms board / ~1 ms here)              70x
  c_image C image code, PIL/OpenCV (PIL bilinear resizes in PYNQ-HelloWorld: 1.02 s / 63-73 ms, 24.6 / 0.9)   14-28x
The low/high ends are the spread of those measurements, widened where our stage is not the measured code:
python 9-45x (central 18.5x, the two points' geometric mean), memory 55-90x, c_image 14-28x (central 20x).
Further error the ratios cannot see: OpenCV on x86 uses AVX2 where the A9 has NEON (both SIMD; OpenCV runs single-
threaded here, as it effectively does on a core the pipeline already uses), and pynq's MMIO register reads cost more
than the simulated overlay's (the wait reads the status register a few times a frame). The accelerator's own frame
time (3.97 ms, Verilator simulation of the 416x416 design with its sized FIFOs) is taken as is, not scaled.

The x86 side should run the board's libraries: the JPEG decode, most of a frame's CPU, is ~1.6x faster here
with libjpeg-turbo 3.1 (opencv-python 4.13 wheels) than with 2.1.2 (opencv-python 4.5.5 wheels, and the PYNQ
3.0.1 image's OpenCV 4.5.4), and numpy 1.x costs more per call than 2.x; the report names what it ran with.

With `--a9 DIR` (flow/a9/setup.sh DIR: an armhf Debian userland and a qemu-user plugin), every stage is instead
counted: flow/a9/count.py runs the same stage calls on armv7 Python/numpy/OpenCV/Pillow under `qemu-arm -cpu
cortex-a9`, and each stage's instructions are divided by the A9's instruction rate on its kind of code, measured by
counting, the same way, calls whose Zynq-7020 timings are public (A9_CALIBRATION): PIL resizes for C image code
(479/558 M instructions/s), FINN's driver unpacking outputs for Python-bound code (finn-examples' batch: 221 M/s;
LPYOLO's 13x13x18 INT8 output: 550 M/s; the spread between them is the range), FINN's packing a batch for numpy
over large arrays (269 M/s). That removes the x86 side (AVX2 and other library builds here vs the
armhf builds' code, which for OpenCV's resize has no NEON path; the host's load); what remains is how far a stage's
code differs from its kind's calibration code (a9_from_counts says how the range is made) and what qemu-user does
not count: kernel time (futex wake-ups, page faults) and the memory system beyond what the calibration code met.

Not counted but measured on a board: the copy into the cacheable DMA buffer and its flush (pynq's cache
maintenance, in the kernel), from LPYOLO's PYNQ-Z2 (board_measured; a frame build's flush scaled by bytes); assumed:
the USB camera's kernel share (CAPTURE_KERNEL_MS). A frame build's accelerator is paced by the slower of the
network (3.97 ms) and the fabric letterbox on the 640x480 frame (3.49 ms: its RTL's 286.2 FPS in Verilator).

On the board itself the measured column is the A9's and the ratios do not apply (`python -m board bench` there).
The frames per second from stage times: board/bench.py's frame_cost, with A9 stage times.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from board.bench import (
    accelerator_s,
    frame_cost,
    frame_stages,
    measure,
    model_path,
    path_stages,
    print_frame,
    print_measured,
    print_pipeline,
    print_wait,
    summarize,
    write_json,
)
from flow.errors import FlowError

# Python: two public board timings of FINN's hex-string unpack disagree by 3.7x in board/host ratio: finn-examples'
# 355.5 ms / ~10 ms here (35x) and LPYOLO's 574.5 ms / ~60 ms here (9.6x; same code, other shape): central their
# geometric mean, the range both and the earlier widening (45x).
RATIOS = {"python": (18.5, 9.0, 45.0), "memory": (70.0, 55.0, 90.0), "c_image": (20.0, 14.0, 28.0)}
A9_HZ = 650e6
# The calibration calls flow/a9/count.py counts, each with the kind of code it stands for and its seconds on a
# Zynq-7020 board (github.com/Xilinx/PYNQ-HelloWorld, github.com/Xilinx/finn-examples): PIL resizes in
# PYNQ-HelloWorld's Pynq-Z2 notebook; FINN's
# driver in finn-examples' saved UNSW-NB15 notebook output (throughput_test, batch 1000, BIPOLAR in and out).
A9_CALIBRATION = {"pil_resize_3840x2160_to_1920x1080": ("c_image", 1.02),
                  "pil_resize_640x360_to_320x180": ("c_image", 0.0246),
                  "finn_unpack_output_1000x1_bipolar": ("python", 0.3555),
                  "lpyolo_unpack_output_13x13x18_int8": ("python", 0.5745),
                  "finn_pack_input_1000x600_bipolar": ("memory", 0.0711)}
# LPYOLO's PYNQ-Z2 (github.com/sefaburakokcu/finn-quantized-yolo, src/deploy/inference.ipynb, the saved output of
# the detection loop cell, execution count 5: FINN's throughput_test, four images): `unpack_output` 573.0-578.7 ms
# for its 13x13x18 INT8 output (574.5 the first; FINN's hex-string path, as FINN's unpack of a 1-bit output), and
# `copy_input_data_to_device` 3.19-3.37 ms: np.copyto of the 416x416x3 UINT8 input into the cacheable DMA buffer
# and its flush(), measured on the board. That copy + flush stands for ours on the host-letterbox paths (the same
# 519,168 bytes); a frame build writes its 921,600 bytes while decoding (counted with the decode) and flushes them.
LPYOLO_COPY_FLUSH_MS = (3.3236, 3.3700, 3.1919, 3.2902)
LPYOLO_COPY_BYTES = 416 * 416 * 3
FRAME_BYTES = 640 * 480 * 3
# The USB camera's share in the kernel (uvcvideo copies each packet's payload into the V4L2 buffer; the USB host
# controller's interrupts): neither counted nor measured here, taken as 0.5 ms a frame (0.2-1.5), an assumption.
CAPTURE_KERNEL_MS = (0.5, 0.2, 1.5)
# A kind with one calibration point (numpy over large arrays) has no spread of its own: it takes the C image
# points' spread, as different kinds of compiled code differ. Python has two points, whose spread is its range.


def board_measured(a9_copy_s: dict) -> dict:
    """stage -> A9 seconds (central, low, high) taken from board measurements rather than counted: the copy + flush
    into the DMA buffer as LPYOLO's PYNQ-Z2 measured it; a frame build's flush: the same measurement scaled by bytes
    to the 640x480 frame, less a plain copy of those bytes (`a9_copy_s`: its A9 seconds), since the frame build
    writes the buffer in a stage of its own (the high end keeps the whole measurement); the USB capture's kernel
    share (assumed)."""
    ms = LPYOLO_COPY_FLUSH_MS
    copy_flush = {"central": statistics.mean(ms) / 1e3, "low": min(ms) / 1e3, "high": max(ms) / 1e3}
    scale = FRAME_BYTES / LPYOLO_COPY_BYTES
    flush = {"central": max(0.0, copy_flush["central"] * scale - a9_copy_s["central"]),
             "low": max(0.0, copy_flush["low"] * scale - a9_copy_s["high"]), "high": copy_flush["high"] * scale}
    c, lo, hi = CAPTURE_KERNEL_MS
    return {"pack_copy_to_dma": copy_flush, "dma_flush_640x480": flush,
            "capture_usb_kernel": {"central": c / 1e3, "low": lo / 1e3, "high": hi / 1e3}}


PATHS = ("frame", "bilinear", "nearest", "bilinear-exact")  # the fabric letterbox, then the host's three


def estimate(m: dict, counts: dict | None, path: str) -> dict:
    """The JSON report: board/bench.py's measured figures (x86_*) and the A9's (central, low, high) per stage and
    per frame. With `counts` (armhf instructions per call, count_on_armhf), each counted stage's A9 time comes from
    its instructions and its kind's A9 rate instead of x86 time x ratio; the copy + flush into the DMA buffer comes
    from a board measurement (board_measured). The frame takes `path` (the model's: "frame" where the fabric
    letterboxes, else the host letterbox's resample); `a9_by_path` gives the frame on each path."""
    r = summarize(m, path)
    a9 = {"central": {}, "low": {}, "high": {}}
    kinds = {name: kind for name, (_, kind, _, _) in m["stages"].items()}
    gil_stages = {name for name, (_, _, holds, _) in m["stages"].items() if holds}
    counted_a9 = a9_from_counts(counts, kinds) if counts else {}
    for name, (sec, kind, _gil, _counted) in m["stages"].items():
        ratio, lo, hi = RATIOS[kind]
        a9_s = {"central": sec * ratio, "low": sec * lo, "high": sec * hi}
        stage = r["stages"][name]
        stage.update(ratio=kind, ratio_value=ratio, ratio_range=[lo, hi], a9_method="x86 time x ratio")
        if name in counted_a9:
            a9_s = counted_a9[name]
            stage.update(a9_method=f"armhf instructions / A9 rate on {kind} code", armhf_insns=counts[name]["insns"],
                         armhf_neon_insns=counts[name]["neon"], a9_ms_by_ratio=round(sec * ratio * 1e3, 3))
        for key in a9:
            a9[key][name] = a9_s[key]
    measured = board_measured({k: a9[k]["copy_640x480_frame"] for k in a9})
    for name, a9_s in measured.items():
        stage = r["stages"].setdefault(name, {"in_640x480_frame": name in path_stages(path), "holds_gil": False})
        if name in counted_a9 or "ratio" in stage:
            stage["a9_ms_counted_or_scaled"] = round(a9[("central")][name] * 1e3, 3)
        stage.update(a9_method="measured on a PYNQ-Z2 (LPYOLO's saved notebook), scaled by bytes"
                     if name != "capture_usb_kernel" else "assumed (not measured, not counted)")
        for key in a9:
            a9[key][name] = a9_s[key]
    for name, stage in r["stages"].items():
        if name in a9["central"]:
            stage.update(a9_ms=round(a9["central"][name] * 1e3, 3),
                         a9_ms_range=[round(a9["low"][name] * 1e3, 3), round(a9["high"][name] * 1e3, 3)])
    r["stages"]["accelerator"].update(ratio="hardware (simulated, not scaled)",
                                      a9_ms=round(accelerator_s(path) * 1e3, 3))
    by_path = {}
    for p in PATHS:
        acc_s = accelerator_s(p)
        f, lane, top = frame_cost(frame_stages(m, a9["central"], p), acc_s, gil_stages)
        lo_f = frame_cost(frame_stages(m, a9["low"], p), acc_s, gil_stages)[0]
        hi_f = frame_cost(frame_stages(m, a9["high"], p), acc_s, gil_stages)[0]
        cpu = sum(frame_stages(m, a9["central"], p).values())
        by_path[p] = {"a9_ms_per_frame": round(f * 1e3, 3), "a9_ms_per_frame_range": [round(lo_f * 1e3, 3), round(hi_f * 1e3, 3)],
                      "a9_fps_estimate": round(1 / f, 1), "a9_fps_range": [round(1 / hi_f, 1), round(1 / lo_f, 1)],
                      "a9_cpu_ms_per_frame": round(cpu * 1e3, 3), "accelerator_ms": round(acc_s * 1e3, 3),
                      "bound_stage": top, "bound_by": lane}
    r.update(by_path[path])
    r.update({
        "a9_by_path": by_path,
        "method": ("armhf instruction counts under qemu-user / the A9's instructions per second on the same kind of "
                   "code (calibration calls with public Zynq-7020 timings, counted the same way); stages not counted: "
                   if counts else "")
                  + "x86 stage time x board/host ratio of the same kind of code (flow/a9/estimate.py docstring: "
                    "PYNQ-HelloWorld, finn-examples and LPYOLO notebook timings); the copy + flush into the DMA "
                    "buffer: LPYOLO's PYNQ-Z2 measurement, scaled by bytes",
        "a9_calibration": a9_rates(counts) if counts else None,
        "armhf_software": counts.get("_software") if counts else None,
    })
    return r


# -- the A9 from instruction counts: the stages run on an armhf Debian userland under qemu-user --
def a9_rates(counts: dict) -> dict:
    """kind of code -> {calibration call: the A9's instructions per second on it}: the calls' armhf counts over their
    public board timings."""
    rates: dict = {}
    for name, (kind, sec) in A9_CALIBRATION.items():
        rates.setdefault(kind, {})[name] = counts[name]["insns"] / sec
    return rates


def a9_from_counts(counts: dict, kinds: dict) -> dict:
    """stage -> A9 seconds (central, low, high) from its armhf instructions and the A9 rate on its kind of code
    (`kinds`: stage -> "c_image" / "python" / "memory"). Central: the geometric mean of the kind's calibration
    rates. Two or more points: low from the fastest, high from the slowest plus one more cycle per NEON instruction
    (the calibration code is scalar; the A9's NEON unit is 64 bits wide, so a quad-register operation takes two).
    One point: central divided and multiplied by the C image points' spread."""
    rates = a9_rates(counts)
    c_image = rates["c_image"].values()
    out = {}
    for name, c in counts.items():
        if name.startswith("_") or name in A9_CALIBRATION or kinds.get(name) not in rates:
            continue
        r = list(rates[kinds[name]].values())
        central = c["insns"] / statistics.geometric_mean(r)
        if len(r) > 1:
            out[name] = {"central": central, "low": c["insns"] / max(r),
                         "high": c["insns"] / min(r) + c["neon"] / A9_HZ}
        else:
            f = max(c_image) / min(c_image)
            out[name] = {"central": central, "low": central / f, "high": central * f}
    return out


def parse_marks(text: str) -> dict[int, tuple[int, int]]:
    """insn_count.c's log: "mark <id> <instructions> <neon>" lines -> {id: (instructions, neon)}."""
    marks = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 4 and f[0] == "mark":
            marks[int(f[1])] = (int(f[2]), int(f[3]))
    return marks


def counts_per_call(info: dict, marks: dict) -> dict:
    """{name: {"insns", "neon"}} per call, from flow/a9/count.py's stage order (stage k between marks 2k, 2k+1)."""
    out = {}
    for k, name in enumerate(info["stages"]):
        if 2 * k not in marks or 2 * k + 1 not in marks:
            raise FlowError(f"armhf count: no marks around stage {name!r} in the plugin's log")
        (i0, n0), (i1, n1) = marks[2 * k], marks[2 * k + 1]
        out[name] = {"insns": (i1 - i0) // info["calls"], "neon": (n1 - n0) // info["calls"]}
    out["_software"] = {k: info[k] for k in ("machine", "python", "numpy", "opencv", "pil")}
    return out


def count_on_armhf(a9_dir: Path, timeout: float = 3600) -> dict:
    """Run flow/a9/count.py on the armhf root `a9_dir`/root under qemu-user with `a9_dir`/insn_count.so (both made
    by flow/a9/setup.sh) and return the instructions per call of every stage and calibration call."""
    root, plugin, qemu = a9_dir / "root", a9_dir / "insn_count.so", shutil.which("qemu-arm")
    python = root / "usr" / "bin" / "python3"
    for need, what in ((python, "an armhf root with Python, numpy, OpenCV and Pillow"), (plugin, "the count plugin")):
        if not need.exists():
            raise FlowError(f"{need}: missing ({what}); make it with `bash flow/a9/setup.sh {a9_dir}`")
    if qemu is None:
        raise FlowError("qemu-arm not on the PATH: `apt-get install qemu-user` (flow/a9/setup.sh does)")
    repo = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        # FINN's data packing (the Python calibration code) and qonnx's DataType are pure Python: the guest imports
        # this host's installed copies through links, beside the armhf root's own numpy.
        shim = Path(tmp) / "pure"
        shim.mkdir()
        for pkg in ("finn", "qonnx"):
            spec = importlib.util.find_spec(pkg)
            if spec is None or not spec.submodule_search_locations:
                raise FlowError(f"{pkg} is not installed here: the armhf count imports its data packing "
                                 "(`make install` installs finn-plus and qonnx)")
            (shim / pkg).symlink_to(spec.submodule_search_locations[0], target_is_directory=True)
        # libjpeg-turbo turns NEON on from /proc/cpuinfo, which qemu-user 7.2 passes through from this x86 host (no
        # "neon" there); the board's lists it, so the guest is told to use it as the board does.
        env = dict(os.environ, PYTHONPATH=f"{repo}{os.pathsep}{shim}", JSIMD_FORCENEON="1")
        log = Path(tmp) / "marks.log"
        cmd = [qemu, "-cpu", "cortex-a9", "-L", str(root), "-plugin", str(plugin), "-d", "plugin", "-D", str(log),
               str(python), "-m", "flow.a9.count"]
        print("counting armhf instructions per stage under qemu-user (about a minute): " + " ".join(cmd))
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FlowError(f"armhf count: no result within {timeout:.0f} s") from None
        if p.returncode:
            raise FlowError(f"armhf count failed (exit {p.returncode}): {p.stderr.strip()[-600:]}")
        info = json.loads(p.stdout.strip().splitlines()[-1])
        return counts_per_call(info, parse_marks(log.read_text()))


def report(deploy: Path | None, json_path: Path | None, reps: int = 5, frames: int = 40,
           a9_dir: Path | None = None) -> dict:
    counts = count_on_armhf(a9_dir) if a9_dir else None
    path = model_path(deploy)
    r = estimate(measure(deploy, reps), counts, path)
    print_measured(r)
    if counts:
        a = r["armhf_software"]
        print(f"armhf (qemu-user, Cortex-A9 ISA): Python {a['python']}, numpy {a['numpy']}, OpenCV {a['opencv']}, "
              f"Pillow {a['pil']}; A9 rate, M instructions/s: "
              + "; ".join(f"{kind} " + ", ".join(f"{v / 1e6:.0f} ({k})" for k, v in per.items())
                          for kind, per in r["a9_calibration"].items()))
    print(f"{'stage':<34} {'here ms':>8} {'ratio':>8} {'A9 ms (low-high)':>22}")
    for name, s in r["stages"].items():
        if name == "accelerator":
            print(f"{name:<34} {s['x86_ms']:8.3f} {'hw':>8} {s['a9_ms']:10.3f} (simulated frame time)")
            continue
        mark = "" if s["in_640x480_frame"] else "  (not in this model's frame)"
        how = ("board" if s["a9_method"].startswith(("measured", "assumed")) else
               f"{s['ratio_value']:7.0f}x" if "armhf_insns" not in s else f"{s['armhf_insns'] / 1e6:6.1f}Mi")
        here = f"{s['x86_ms']:8.3f}" if "x86_ms" in s else f"{'-':>8}"
        print(f"{name:<34} {here} {how:>8} {s['a9_ms']:9.2f} ({s['a9_ms_range'][0]:.2f}-{s['a9_ms_range'][1]:.2f}){mark}")
    print_frame(r)
    print_wait(r)
    names = {"frame": "letterbox in the fabric", "bilinear": "host bilinear letterbox",
             "nearest": "host nearest letterbox", "bilinear-exact": "host bilinear-exact letterbox (numpy)"}
    for p, e in r["a9_by_path"].items():
        print(f"A9 estimate, {names[p]}{' (this model)' if p == path else ''}: {e['a9_ms_per_frame']:.2f} ms per "
              f"frame, {e['a9_fps_estimate']} FPS (range {e['a9_fps_range'][0]}-{e['a9_fps_range'][1]}), bound by "
              f"{e['bound_by']}: {e['bound_stage']}")
    print_pipeline(r, deploy, frames)
    write_json(r, json_path)
    return r


def cli(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m flow bench a9", description=__doc__.splitlines()[0])
    p.add_argument("--sim", action="store_true", help="time the accelerator wait and the real pipeline on the "
                   "simulated overlay (needs --deploy)")
    p.add_argument("--deploy", type=Path, help="deploy folder (`python -m flow deploy`): its model's letterbox")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--frames", type=int, default=40, help="frames through the real pipeline")
    p.add_argument("--reps", type=int, default=5, help="repeats per stage (the least of its timed calls is kept)")
    p.add_argument("--a9", type=Path, metavar="DIR", help="armhf root + count plugin (flow/a9/setup.sh DIR): every "
                   "stage's A9 time from its instruction count under qemu-user instead of a ratio")
    a = p.parse_args(argv)
    if a.deploy and not a.sim:
        raise FlowError("the bench times the accelerator on the simulated overlay: add --sim")
    report(a.deploy, a.json, a.reps, a.frames, a.a9)
    return 0
