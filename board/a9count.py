"""The host path's stages run on an armv7 (armhf) Python under qemu-user with board/a9/insn_count.c loaded: for
each stage, the guest instructions `CALLS` warm calls execute, between two marks the plugin reports.

Run by `python -m board bench --a9 DIR` (board/bench.py's count_on_armhf, on the root and plugin that
board/a9/setup.sh DIR made; it turns the counts into A9 time); by hand: qemu-arm -cpu cortex-a9 -L DIR/root \\
-plugin DIR/insn_count.so -d plugin DIR/root/usr/bin/python3 -m board.a9count. Prints one JSON line: the stages
and calibration calls, in the order marked.

The calibration calls are the code public Zynq-7020 timings exist for (FACTS.md, "The PYNQ-Z2's host side"): PIL
bilinear resizes as PYNQ-HelloWorld's Pynq-Z2 notebook times them (3840x2160 -> 1920x1080: 1.02 s; 640x360 ->
320x180: 24.6 ms). Counted here on the same armv7 code, they give the A9's instructions per second on C image code.
"""

from __future__ import annotations

import json
import os
import platform
import sys

import numpy as np

MARK_MAGIC = 0x4C500000  # board/a9/insn_count.c
CALLS = 5


def mark(i: int) -> None:
    """A mark for the plugin: a sched_get_priority_max call with a policy no kernel has (it changes nothing)."""
    try:
        os.sched_get_priority_max(MARK_MAGIC + i)
    except OSError:
        pass


def calibration_calls() -> dict:
    from PIL import Image

    from board.bench import camera_frame

    big, small = Image.fromarray(camera_frame(3840, 2160)), Image.fromarray(camera_frame(640, 360))
    return {"pil_resize_3840x2160_to_1920x1080": lambda: big.resize((1920, 1080), Image.BILINEAR),
            "pil_resize_640x360_to_320x180": lambda: small.resize((320, 180), Image.BILINEAR)}


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
