"""Every workaround lpyolo-flow needs to drive finn-plus 1.6.1 without Vivado, in one place.

1. finn-plus pins brevitas==0.13.0, which cannot install beside torch 2.13: the Makefile installs finn-plus with
   --no-deps and its runtime dependencies through our `finn` extra (it also forgets to declare psutil).
2. `finn.builder` loads Vivado's simulator interface (finn.xsi) when imported: SimEngine is set to None first.
3. The builder and several helpers read XILINX_VIVADO and FINN_BUILD_DIR; without Vivado a version-shaped
   placeholder path is set so that the pre-Vivado steps run (they never call Vivado). `flow.hw.vivado.vivado_tools()`
   tells the real situation, from the PATH and `vivado -version`, not from the variable.
4. Specialised `*_hls` / `*_rtl` nodes only execute as cppsim/rtlsim; `to_python_exec` renames them back to the
   generic op, which executes in python — how the HW-layer model becomes a cross-check backend without Vivado.
5. finn-plus has no RTL max pool: ours (flow/hw/rtl) is registered as a FINN op at init.
6. `MVAU_rtl.dsp_estimation` counts 4 products per DSP48E1 for every width; finn-rtllib's mvu.sv packs
   `dsp_lanes(W, A)` (4 for 4x4, 2 for 8-bit activations or weights), so for PE > 2 on an 8-bit layer FINN's
   estimate was half of what the RTL instantiates (Yosys counts them). Replaced at init by the RTL's own rule.
7. FINN estimates `MVAU_rtl` at 0 LUT ("DSP-based") and an RTL width converter at about its output width, so the
   folding search took a 416x416 design Yosys puts 1.3k LUT over the planning limit (19.4k LUT in the MVUs,
   ~200 in each 4:1 down-converter behind them). Both are replaced at init by fits to Yosys's synth_xilinx counts
   of this flow's all-RTL designs (`mvau_rtl_luts`, `dwc_rtl_luts`); up-converters keep FINN's estimate. Yosys is
   pre-place-and-route: a Vivado build (`make docker-bitstream`) has the last word.
8. finn-rtllib's `mvu_vvu_axi.sv` sizes its output queue for a core latency of 3+clog2(SIMD+1)+(SIMD==1) cycles,
   but `mvu.sv` (the DSP48 cores) takes 3+clog2(SIMD)+(SIMD==1)+1, one more whenever SIMD is not a power of two,
   and its lock on backpressure is registered, so one more input enters the cycle it is taken. An MVU with one
   input per output (SIMD = MW, e.g. the 8-bit first layer at SIMD 27) then overflows the queue under output
   backpressure: "Overflowing output queue" in simulation, outputs overwritten in hardware (the assertion is not
   synthesised). `fix_mvu_output_queue` gives the queue the core's real latency + 1 in the finn-rtllib every later
   consumer reads (our Verilator/Yosys runs, FINN's IP generation for Vivado): one more SRL slot per MVU. Found
   with `rtlsim --node MVAU_rtl_0 --stall 50`; bit-exact with the fix at 30/50/80 % stalls.
   FINN reads finn-rtllib from `get_settings().finn_rtllib` (FINN_RTLLIB), so the fix goes into a copy of the
   finn-rtllib FINN would read (the exported FINN_RTLLIB, else the installed one) in the user's cache, and
   FINN_RTLLIB points at that copy: an exported FINN_RTLLIB no longer bypasses it, site-packages may be read-only
   (the docker image's /opt/venv run as a non-root user), and a process FINN starts inherits it.
9. The `finn` CLI's start-up (`finn/interface/run_finn.py: prepare_finn`) exports FINN_RTLLIB, FINN_CUSTOM_HLS and
   XILINX_LOCAL_USER_DATA=no; FINN's generated Tcl reads the first two (`$::env(FINN_CUSTOM_HLS)` in every HLS IP's
   script, the IODMAs included; `$::env(FINN_RTLLIB)` in every stitched IP). We call the builder directly, so
   `init_finn` exports them and drops FINN's cached settings, which then re-read the environment (FINN_DEPS too).
10. Our max pool is registered in FINN's op registries of this process only; FINN's worker pools (IP generation,
   ZynqBuild's per-partition builds) would not find it in a `spawn`ed child. `init_finn` keeps `fork`, the Linux
   default before Python 3.14, for the processes FINN starts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PLACEHOLDER_VIVADO = "/opt/Xilinx/Vivado/2024.2"  # version-shaped: finn parses the version from the path


def init_finn(build_dir: Path) -> None:
    """Environment for importing finn's builder; call before any `finn.builder` import."""
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FINN_BUILD_DIR"] = str(build_dir)
    os.environ.setdefault("XILINX_VIVADO", PLACEHOLDER_VIVADO)
    os.environ.setdefault("NUM_DEFAULT_WORKERS", "1")
    os.environ.setdefault("XILINX_LOCAL_USER_DATA", "no")  # as prepare_finn: Vivado's Tcl store in a shared home
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) != "fork":  # item 10
        multiprocessing.set_start_method("fork", force=True)
    import finn
    import finn.util.settings
    import finn.xsi

    os.environ["FINN_CUSTOM_HLS"] = str(Path(finn.__file__).parent / "custom_hls")  # item 9
    os.environ["FINN_RTLLIB"] = str(patched_rtllib())  # items 8 and 9
    finn.util.settings._SETTINGS = None  # rebuilt from the environment at the next get_settings()

    finn.xsi.SimEngine = None
    from flow.hw.rtl.finn_letterbox import StreamLetterbox, StreamLetterbox_rtl
    from flow.hw.rtl.finn_op import register

    register()  # our RTL max pool (StreamMaxPool2x2[_rtl]) joins FINN's op registries
    register(StreamLetterbox, StreamLetterbox_rtl)  # and the letterbox in the fabric
    from finn.custom_op.fpgadataflow.rtl.matrixvectoractivation_rtl import MVAU_rtl

    if not hasattr(MVAU_rtl, "finn_dsp_estimation"):  # init_finn runs more than once per process
        MVAU_rtl.finn_dsp_estimation = MVAU_rtl.dsp_estimation
        MVAU_rtl.dsp_estimation = _mvau_rtl_dsps
        MVAU_rtl.lut_estimation = lambda self, fpgapart: mvau_rtl_luts(
            self.get_nodeattr("PE"), self.get_nodeattr("SIMD"), self.get_input_datatype(1).bitwidth(),
            self.get_input_datatype(0).bitwidth(), self.get_output_datatype().bitwidth())
    from finn.custom_op.fpgadataflow.rtl.streamingdatawidthconverter_rtl import StreamingDataWidthConverter_rtl as Dwc

    if not hasattr(Dwc, "finn_lut_estimation"):
        Dwc.finn_lut_estimation = Dwc.lut_estimation
        Dwc.lut_estimation = lambda self, fpgapart: dwc_rtl_luts(
            self.get_instream_width(), self.get_outstream_width(), self.finn_lut_estimation(fpgapart))


MVU_QUEUE_FIX = (  # (finn-plus 1.6.1's line, ours) in finn-rtllib/mvu/mvu_vvu_axi.sv
    ("/* else */    3 + $clog2(SIMD+1) + (SIMD == 1);",
     "/* else */    3 + $clog2(SIMD) + (SIMD == 1) + 1; // lpyolo-flow: mvu.sv's PIPELINE_DEPTH"),
    ("localparam int unsigned  MAX_IN_FLIGHT = CORE_PIPELINE_DEPTH;",
     "localparam int unsigned  MAX_IN_FLIGHT = CORE_PIPELINE_DEPTH + 1; // lpyolo-flow: the lock is registered"),
)


_RTLLIB_SOURCE: list[Path] = []  # the finn-rtllib FINN would read before init_finn pointed FINN_RTLLIB at the copy


def patched_rtllib() -> Path:
    """Item 8: a copy of the finn-rtllib FINN would read (an exported FINN_RTLLIB, else the installed one) with the
    MVU queue fix, in the user's cache (XDG_CACHE_HOME, else ~/.cache), made once per source and finn-plus version."""
    import hashlib
    from importlib.metadata import version

    import finn

    if not _RTLLIB_SOURCE:
        _RTLLIB_SOURCE.append(Path(os.environ.get("FINN_RTLLIB") or Path(finn.__file__).parent / "finn-rtllib"))
    src = _RTLLIB_SOURCE[0].resolve()
    if not (src / "mvu").is_dir():
        from flow.errors import FlowError

        raise FlowError(f"FINN_RTLLIB={src} is not a finn-rtllib (no mvu/ in it); unset it to use finn-plus's own")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lpyolo-flow"
    if src.parent == cache.resolve() and (src / ".complete").exists():  # inherited from a parent process: ours
        return src
    key = hashlib.sha256(f"{src}|{version('finn-plus')}|{MVU_QUEUE_FIX}".encode()).hexdigest()[:12]
    dest = cache / f"finn-rtllib-{key}"
    if not (dest / ".complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(shutil.copytree(src, cache / f".finn-rtllib-{key}-{os.getpid()}"))
        fix_mvu_output_queue(tmp)
        (tmp / ".complete").write_text(f"copy of {src} with lpyolo-flow's MVU output-queue fix (flow/hw/compat.py item 8)\n")
        try:
            os.rename(tmp, dest)  # atomic: a concurrent run sees no copy or a whole one
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def fix_mvu_output_queue(rtllib: Path) -> bool:
    """Item 8 on a finn-rtllib folder (idempotent); returns whether the file was changed. A finn-rtllib without the
    lines (changed upstream) is left alone; the backpressure test says if it still fails."""
    path = Path(rtllib) / "mvu" / "mvu_vvu_axi.sv"
    text = path.read_text()
    fixed = text
    for old, new in MVU_QUEUE_FIX:
        fixed = fixed.replace(old, new)
    if fixed == text:
        return False
    tmp = path.with_suffix(".sv.tmp")
    tmp.write_text(fixed)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the fixed one
    return True


def dsp_lanes(w_bits: int, a_bits: int, a_port: int = 25, narrow: bool = True) -> int:
    """Products one DSP48 computes per cycle in finn-rtllib's mvu.sv (its NUM_LANES): the A port (25 bits on a
    DSP48E1, 27 on a DSP48E2) holds lanes of W+A-1 bits and the top lane's W-bit weight, a bit more for weights
    that are not narrow-range (our exporter's weight quantizers are narrow-range; FINN's codegen checks the
    weights themselves and Yosys counts what it instantiates)."""
    return 1 if w_bits == a_port else 1 + (a_port - (not narrow) - w_bits) // (w_bits + a_bits - 1)


def _mvau_rtl_dsps(self, fpgapart):
    """DSPs of an MVAU_rtl as finn-rtllib builds it on DSP48s: ceil(PE / lanes) chains of SIMD slices."""
    import math

    from finn.util.basic import get_dsp_block

    block = get_dsp_block(fpgapart)
    if block == "DSP58":  # another core (mvu_vvu_8sx9_dsp58): FINN's rule
        return self.finn_dsp_estimation(fpgapart)
    lanes = dsp_lanes(self.get_input_datatype(1).bitwidth(), self.get_input_datatype(0).bitwidth(),
                      25 if block == "DSP48E1" else 27)
    return math.ceil(self.get_nodeattr("PE") / lanes) * self.get_nodeattr("SIMD")


def mvau_rtl_luts(pe: int, simd: int, w_bits: int, a_bits: int, acc_bits: int) -> int:
    """LUTs of a finn-rtllib MVU on DSP48E1s beside its DSPs: ~150 for control, then ~3.5 per bit of each product
    computed per cycle (lane extraction, correction and accumulation), however the products share DSPs. Least
    squares over the 30 MVUs Yosys synthesised in three 4w4a designs (64x64 PE=SIMD=1; 416x416 at 101.6 FPS, PE=1
    one lane per DSP; at 255.75 FPS, PE=4 four lanes): each design's MVU total within 6 %, each MVU of over
    500 LUT within 30 % (the ~150-LUT PE=SIMD=1 ones within 45 %). Plus item 8's deeper output queue, one
    PE x accumulator word more: +52 LUT (and FF) by Yosys on a PE=4 MVU with 13-bit accumulators."""
    return round(150 + 3.55 * pe * simd * (w_bits + a_bits)) + pe * acc_bits


def dwc_rtl_luts(in_width: int, out_width: int, finn_estimate: int) -> int:
    """LUTs of finn-rtllib's width converter: down-converters (an MVU's PE outputs to a narrower threshold
    stream) hold and shift the whole input word, about 3.3 LUT per input bit by Yosys (52->13: 192, 64->16: 231);
    up-converters are about FINN's estimate."""
    return round(20 + 3.3 * in_width) if in_width > out_width else finn_estimate


def to_python_exec(model):
    """Copy of a FINN HW model whose specialised nodes are renamed to their generic python-executable op."""
    model = model.transform(_Identity())
    for node in model.graph.node:
        for suffix in ("_hls", "_rtl"):
            if node.op_type.endswith(suffix):
                node.op_type = node.op_type[: -len(suffix)]
                node.domain = "finn.custom_op.fpgadataflow"
    return model


class _Identity:
    """A no-op qonnx transformation: `model.transform` copies the model, which is all we want here."""

    def apply(self, model):
        return model, False
