"""`python -m flow bench NAME`: benchmarks. Each prints its figures as ratios against a baseline run in the same
process (same machine, same moment), so numbers from different machines are not compared by accident."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "crosscheck": "flow.crosscheck:bench",  # backend throughput vs float ORT; 416 cross-check verdict
    "train": "flow.train.bench:bench_train",  # QAT step vs float step images/s
    "loader": "flow.train.bench:bench_loader",  # data loader images/s per worker count vs the training step
    "accuracy": "flow.train.bench:bench_accuracy",  # built-in val AP50: float vs 4w4a vs 2w4a
    "finn": "flow.hw.commands:bench_finn",  # best estimated FPS per preset that fits the Z2
    "rtlsim": "flow.hw.commands:bench_rtlsim",  # all-RTL 4w4a at 416: simulated FPS on the RTL vs the estimate
    "a9": "flow.a9.estimate:cli",  # the board loop's stages here and on the PYNQ-Z2's A9 (ratios or armhf counts)
}


def cli(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        print(f"usage: python -m flow bench {{{'|'.join(BENCHES)}}} [options]", file=sys.stderr)
        return 2
    module, func = BENCHES[argv[0]].split(":")
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
