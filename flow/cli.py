"""`python -m flow COMMAND ...`: one subcommand per stage, mirroring the Make targets.

Each command lives in its stage's module as `NAME(argv) -> exit code` and is imported only when called, so
`python -m flow --help` is instant and a stage's heavy dependencies (torch, finn) load only where needed.
"""

from __future__ import annotations

import importlib
import sys

# command -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("flow.train.data:cli", "build/inspect datasets (`data synth` makes the built-in WIDER-format set)"),
    "anchors": ("flow.train.anchors:cli", "k-means anchors from a dataset's training boxes"),
    "train": ("flow.train.loop:cli", "Brevitas QAT training (checkpoints, --resume, ends with export)"),
    "eval": ("flow.train.evaluate:cli", "WIDER FACE AP as eval_tools computes it, for a run or any detector's prediction txts"),
    "export": ("flow.export:cli", "Brevitas -> QONNX (cleaned) + manifest.json"),
    "import": ("flow.importer:cli", "a QONNX model exported elsewhere -> a run folder (pixel input, manifest.json)"),
    "qcdq": ("flow.qcdq:cli", "lower a QONNX file to QuantizeLinear/Clip/DequantizeLinear for ONNX Runtime"),
    "crosscheck": ("flow.crosscheck:cli", "run every backend on the same inputs and compare integer outputs"),
    "estimate": ("flow.hw.commands:cli_estimate", "FINN steps up to the estimate reports (no Vivado needed)"),
    "bitstream": ("flow.hw.commands:cli_bitstream", "FINN steps through bitfile + deploy folder (needs Vivado)"),
    "fold": ("flow.hw.fold:cli", "search a folding that maximises FPS within the PYNQ-Z2 budget"),
    "fifos": ("flow.hw.fifos:cli", "size every FIFO from the simulated RTL (all-RTL builds; no Vivado)"),
    "rtlsim": ("flow.hw.rtlsim:cli", "stitch the generated RTL and simulate it in Verilator"),
    "synth": ("flow.hw.synth:cli", "Yosys synth_xilinx on the stitched RTL: post-synthesis resources"),
    "deploy": ("flow.deploy:cli", "package bitfile + manifest + board runtime + notebooks for the PYNQ-Z2"),
    "demo": ("flow.demo:cli", "the main job: train briefly -> export -> QCDQ -> cross-check -> estimate -> board sim"),
    "bench": ("flow.bench:cli", "benchmarks (crosscheck | train | accuracy | finn), ratios against a baseline"),
    "presets": ("flow.cli:presets", "the bit-width presets (models.PRESETS), one a line: the Makefile's train-<preset>"),
    "env": ("flow.env:cli", "this environment against the tested one (constraints.txt); `make lock` refreshes it"),
}


def preset_names() -> list[str]:
    """The keys of the `PRESETS` dict literal in models/presets.py, read from its syntax tree rather than imported:
    importing `models` imports torch (seconds, and absent before `make install`), and the Makefile asks for this
    list on every run, with the system Python. tests/test_make.py checks it equals list(models.PRESETS)."""
    import ast
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "models" / "presets.py"
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, (ast.AnnAssign, ast.Assign)) and "PRESETS" in [
                t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]:
            if isinstance(node.value, ast.Dict) and all(isinstance(k, ast.Constant) for k in node.value.keys):
                return [k.value for k in node.value.keys]
    raise SystemExit(f"{path}: PRESETS is not a dict literal with constant names; `python -m flow presets` reads it "
                     "without importing torch")


def presets(argv: list[str]) -> int:
    """`python -m flow presets`: the preset names, one a line."""
    import argparse

    argparse.ArgumentParser(prog="python -m flow presets", description=COMMANDS["presets"][1]).parse_args(argv)
    print("\n".join(preset_names()))
    return 0


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m flow COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`python -m flow COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    target = COMMANDS[name][0]
    module, func = target.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            print(f"`{name}` is not implemented in this checkout yet ({module} missing)", file=sys.stderr)
            return 3
        raise
    from board.manifest import ManifestError
    from flow.errors import FlowError

    try:
        return int(getattr(mod, func)(rest) or 0)
    except OSError as e:  # the system's refusal (a full disk, a read-only file): every stage writes atomically
        if e.errno is None:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror}; what `{name}` had not finished was not kept (each file is written whole "
              f"or not at all): fix that and run the same command again", file=sys.stderr)
        return 1
    except Exception as e:
        # a SpecError can only come from a command that imported models (importing it here would import torch)
        spec = sys.modules.get("models.lpyolo")
        if not isinstance(e, (FlowError, ManifestError, *((spec.SpecError,) if spec else ()))):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # every stage writes atomically and keeps its last good state: no traceback needed
        print(f"\ninterrupted: `{name}` stopped; what it had finished is kept (`train --resume` continues a "
              "training run)", file=sys.stderr)
        return 130
