"""The tree reads as the pipeline and imports flow one way: every module of `flow/` imports (at top level or inside a
function) only modules below it in LAYERS, so there is no import cycle and no stage reaches up into a later one.
The string registries (`python -m flow` commands, benchmarks, cross-check backends) name real functions."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# bottom first: a module may import only modules listed before it
LAYERS = [
    # the bottom: errors, file writing, the board's facts, the sample photos
    "flow.errors", "flow.files", "flow.provenance", "flow.runlock", "flow.hw.z2", "flow.samples",
    # the training wing, below the export it ends with
    "flow.train.augment", "flow.train.data", "flow.train.loader", "flow.train.anchors", "flow.train.loss",
    # the spine
    "flow.export", "flow.backends", "flow.qcdq", "flow.importer",
    "flow.train.evaluate", "flow.train.loop",
    # the hardware wing, bottom to top
    "flow.hw.rtl.verilator", "flow.hw.rtl.maxpool", "flow.hw.rtl.finn_op", "flow.hw.compat", "flow.hw.foldings",
    "flow.hw.boundary", "flow.hw.report", "flow.hw.build", "flow.hw.finn_backend", "flow.hw.rtlgen", "flow.hw.synth",
    "flow.hw.rtl.letterbox",
    "flow.hw.rtlsim", "flow.hw.fold", "flow.hw.fifos", "flow.hw.vivado", "flow.hw.commands",
    # the spine's top and the edges
    "flow.crosscheck", "flow.deploy", "flow.cli", "flow.bench", "flow.demo", "flow.__main__",
]
PACKAGES = {"flow", "flow.train", "flow.hw", "flow.hw.rtl"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / "flow").rglob("*.py"))}


def flow_imports(path: Path) -> set[str]:
    """Every flow module `path` imports, anywhere in the file (`from flow.hw import z2` counts as flow.hw.z2)."""
    known = modules()
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "flow"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "flow":
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(known)
            out |= subs or {node.module}
    return out - PACKAGES


def test_every_module_has_a_layer():
    missing = sorted(set(modules()) - set(LAYERS) - PACKAGES)
    assert not missing, f"place these in LAYERS: {missing}"
    assert not set(LAYERS) - set(modules()), "LAYERS names modules that are gone"


@pytest.mark.parametrize("name", LAYERS)
def test_imports_go_down(name):
    rank = {m: i for i, m in enumerate(LAYERS)}
    up = sorted(m for m in flow_imports(modules()[name]) if rank.get(m, -1) >= rank[name])
    assert not up, f"{name} imports {up}, which are not below it"


def test_registries_name_real_functions():
    from flow.bench import BENCHES
    from flow.cli import COMMANDS
    from flow.crosscheck import PROVIDERS

    targets = [t for t, _ in COMMANDS.values()] + list(BENCHES.values()) + list(PROVIDERS)
    for target in targets:
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
