"""The host path's stages run on an armv7 (armhf) Python under qemu-user with flow/a9/insn_count.c loaded: for
each stage, the guest instructions `CALLS` warm calls execute, between two marks the plugin reports.

Run by `python -m flow bench a9 --a9 DIR` (flow/a9/estimate.py's count_on_armhf, on the root and plugin that
flow/a9/setup.sh DIR made; it turns the counts into A9 time); by hand: qemu-arm -cpu cortex-a9 -L DIR/root \\
-plugin DIR/insn_count.so -d plugin DIR/root/usr/bin/python3 -m flow.a9.count. Prints one JSON line: the stages
and calibration calls, in the order marked.

The calibration calls are the code public Zynq-7020 timings exist for (flow.a9.estimate.A9_CALIBRATION;
github.com/Xilinx/PYNQ-HelloWorld, github.com/Xilinx/finn-examples): PIL bilinear resizes as PYNQ-HelloWorld's
Pynq-Z2 notebook times them (C image code), FINN's driver unpacking and packing a batch of 1000 as finn-examples'
UNSW-NB15 notebook times them (Python-bound code; numpy over large arrays), and FINN's driver unpacking LPYOLO's
13x13x18 INT8 output as LPYOLO's PYNQ-Z2 notebook times it (Python-bound code, a second point). Counted here on the same armv7 Python,
numpy and Pillow, they give the A9's instructions per second on each kind of code.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import types

import numpy as np

MARK_MAGIC = 0x4C500000  # flow/a9/insn_count.c
CALLS = 5


def mark(i: int) -> None:
    """A mark for the plugin: a sched_get_priority_max call with a policy no kernel has (it changes nothing)."""
    try:
        os.sched_get_priority_max(MARK_MAGIC + i)
    except OSError:
        pass


def calibration_calls() -> dict:
    """flow.a9.estimate.A9_CALIBRATION's calls, as the board timed them."""
    from PIL import Image

    from board.bench import camera_frame

    # FINN's data packing imports onnx (through qonnx.util.basic) and bitstring for code paths these calls never
    # take; neither has an armhf build here, so stand-ins satisfy the imports (a call into one would fail).
    sys.modules.setdefault("onnx", types.SimpleNamespace(GraphProto=None, ModelProto=None))
    sys.modules.setdefault("bitstring", types.SimpleNamespace(BitArray=None))
    from finn.util.data_packing import finnpy_to_packed_bytearray, npbytearray2hexstring, unpack_innermost_dim_from_hex_string
    from qonnx.core.datatype import DataType

    def finn_unpack_output(obuf):
        # finn-examples' driver of 2023: packed_bytearray_to_finnpy(obuf, BIPOLAR, (1000, 1, 1), reverse_endian=True,
        # reverse_inner=True, fast_mode=True); a 1-bit output takes its hex-string path, whose steps these are.
        hexes = np.apply_along_axis(npbytearray2hexstring, obuf.ndim - 1, np.flip(obuf, axis=-1))
        return unpack_innermost_dim_from_hex_string(hexes, DataType["BIPOLAR"], obuf.shape, obuf.shape[-1] * 8, True)

    def lpyolo_unpack_output(obuf):
        # LPYOLO's PYNQ-Z2 driver (FINN of 2021): the same hex-string path for its INT8 13x13x18 output, one byte a word
        hexes = np.apply_along_axis(npbytearray2hexstring, obuf.ndim - 1, np.flip(obuf, axis=-1))
        return unpack_innermost_dim_from_hex_string(hexes, DataType["INT8"], obuf.shape, 8, True)

    rng = np.random.default_rng(0)
    obuf = rng.integers(0, 2, (1000, 1, 1)).astype(np.uint8)  # oshape_packed (1, 1, 1), batch 1000
    lpyolo_obuf = rng.integers(0, 256, (1, 13, 13, 18, 1)).astype(np.uint8)  # oshape_packed, batch 1
    ibuf = (2.0 * rng.integers(0, 2, (1000, 15, 40)) - 1).astype(np.float32)  # ishape_folded (1, 15, 40), +-1
    big, small = Image.fromarray(camera_frame(3840, 2160)), Image.fromarray(camera_frame(640, 360))
    return {"pil_resize_3840x2160_to_1920x1080": lambda: big.resize((1920, 1080), Image.BILINEAR),
            "pil_resize_640x360_to_320x180": lambda: small.resize((320, 180), Image.BILINEAR),
            "finn_unpack_output_1000x1_bipolar": lambda: finn_unpack_output(obuf),
            "lpyolo_unpack_output_13x13x18_int8": lambda: lpyolo_unpack_output(lpyolo_obuf),
            # the packbits path FINN's pack_input takes for a 1-bit input with both reverses (then and now)
            "finn_pack_input_1000x600_bipolar": lambda: finnpy_to_packed_bytearray(ibuf, DataType["BIPOLAR"], True, True)}


def main() -> int:
    from board.bench import stage_calls
    from board.preprocess import cv2

    calls = {name: c[0] for name, c in stage_calls()[0].items()}
    calls.update(calibration_calls())
    order = []
    for k, (name, fn) in enumerate(calls.items()):
        fn()  # warm: first-call costs (imports, caches) are not a frame's
        mark(2 * k)
        for _ in range(CALLS):
            fn()
        mark(2 * k + 1)
        order.append(name)
    print(json.dumps({"stages": order, "calls": CALLS, "machine": platform.machine(),
                      "python": platform.python_version(), "numpy": np.__version__,
                      "opencv": None if cv2 is None else cv2.__version__,
                      "pil": __import__("PIL").__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
