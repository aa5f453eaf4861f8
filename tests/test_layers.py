"""The tree reads as the pipeline and imports flow one way, across the three packages and inside each.

Packages, bottom first: `board` (what ships to the board: imports no other package of ours), `models` (may import
`board`'s facts), `flow` (the host tools: may import both). Modules: every module of the three (at top level or
inside a function) imports only modules below it in LAYERS, so there is no import cycle and no stage reaches up
into a later one. The string registries (`python -m flow` commands, benchmarks, cross-check backends) name real
functions. The checkers are themselves checked on planted violations.
"""

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# bottom first: a package may import only the packages listed before it
PACKAGE_ORDER = ["board", "models", "flow"]
# bottom first: a module may import only modules listed before it
LAYERS = [
    # board/: the runtime that ships, numpy-only; the manifest (the contract) at its bottom
    "board.manifest", "board.packing", "board.postprocess", "board.preprocess", "board.accelerator", "board.sim",
    "board.pipeline", "board.display", "board.bench", "board.__main__",
    # models/: the network and its presets (the input facts from board)
    "models.lpyolo", "models.presets",
    # the bottom: errors, file writing, the board's facts, the sample photos
    "flow.errors", "flow.files", "flow.terminal", "flow.env", "flow.codekey",
    "flow.provenance", "flow.runlock", "flow.hw.z2", "flow.samples",
    "flow.hw.input_thresholds",
    # the A9 estimate of the board's loop (host side, on board/bench.py's measurements)
    "flow.a9.count", "flow.a9.estimate",
    # the training wing, below the export it ends with
    "flow.train.augment", "flow.train.wider", "flow.train.builtin", "flow.train.data", "flow.train.loader",
    "flow.train.anchors", "flow.train.loss",
    # the spine
    "flow.export", "flow.backends", "flow.importer", "flow.boardsim",
    "flow.train.evaluate", "flow.train.loop", "flow.train.bench",
    # the hardware wing, bottom to top
    "flow.hw.rtl.verilator", "flow.hw.rtl.maxpool", "flow.hw.rtl.finn_op", "flow.hw.rtl.letterbox_model",
    "flow.hw.rtl.finn_letterbox", "flow.hw.compat", "flow.hw.foldings",
    "flow.hw.boundary", "flow.hw.report", "flow.hw.steps", "flow.hw.build_dir", "flow.hw.build",
    "flow.intonnx", "flow.qcdq", "flow.hw.finn_backend", "flow.hw.rtlgen", "flow.hw.synth",
    "flow.hw.rtl.letterbox",
    "flow.hw.rtlsim", "flow.hw.fold", "flow.hw.fifos", "flow.hw.vivado", "flow.hw.commands",
    # the spine's top and the edges
    "flow.crosscheck", "flow.deploy", "flow.cli", "flow.bench", "flow.demo", "flow.__main__",
]
PACKAGES = {"board", "models", "flow", "flow.a9", "flow.train", "flow.hw", "flow.hw.rtl", "flow.hw.foldings"}


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in PACKAGE_ORDER for p in sorted((root / pkg).rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every module name of ours `path` imports, anywhere in the file, as written (`from flow.hw import z2` gives
    flow.hw and flow.hw.z2; `from models import spec_for` gives models and models.spec_for)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGE_ORDER}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in PACKAGE_ORDER:
                out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def project_imports(path: Path, root: Path = ROOT) -> set[str]:
    """The modules of ours (not packages) `path` imports."""
    known = set(modules(root))
    out = set()
    for name in imported_names(path):
        if name in known:
            out.add(name)
        elif name.rsplit(".", 1)[0] in known:  # `from flow.x import function`: the module flow.x
            out.add(name.rsplit(".", 1)[0])
    return out - PACKAGES


def package_edges(root: Path = ROOT) -> dict[str, set[str]]:
    """package -> the other packages of ours its modules (package __init__ files included) import."""
    edges = {pkg: set() for pkg in PACKAGE_ORDER}
    for name, path in modules(root).items():
        pkg = name.split(".")[0]
        edges[pkg] |= {n.split(".")[0] for n in imported_names(path)} - {pkg}
    return edges


def upward_package_imports(root: Path = ROOT) -> list[str]:
    """`module imports module` for every import of a package at or above the importer's own in PACKAGE_ORDER."""
    rank = {p: i for i, p in enumerate(PACKAGE_ORDER)}
    bad = []
    for name, path in modules(root).items():
        pkg = name.split(".")[0]
        bad += [f"{name} imports {n}" for n in sorted(imported_names(path))
                if n.split(".")[0] != pkg and rank[n.split(".")[0]] > rank[pkg]]
    return bad


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle in a directed graph (node -> successors) as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_board_imports_neither_flow_nor_models_and_the_packages_form_no_cycle():
    assert upward_package_imports() == []
    edges = package_edges()
    assert edges["board"] == set(), edges
    assert find_cycle(edges) is None, find_cycle(edges)


def test_board_modules_import_alone():
    """At run time too: every board module imported leaves flow and models unimported (they do not ship)."""
    code = ("import importlib, pkgutil, sys, board\n"
            "for m in pkgutil.iter_modules(board.__path__):\n"
            "    importlib.import_module('board.' + m.name)\n"
            "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('flow', 'models'))\n"
            "assert not bad, bad\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]


def test_the_checkers_catch_planted_violations(tmp_path):
    """A copy of the three packages with a board module importing flow (and flow.errors importing flow.cli) is
    refused by each check; the cycle finder finds a planted package cycle and passes the real order."""
    for pkg in PACKAGE_ORDER:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb", "*.c"))
    assert upward_package_imports(tmp_path) == [] and find_cycle(package_edges(tmp_path)) is None
    sim = tmp_path / "board" / "sim.py"
    sim.write_text(sim.read_text() + "\n\ndef planted():\n    from flow.backends import Backend\n\n    return Backend\n")
    assert upward_package_imports(tmp_path) == ["board.sim imports flow.backends", "board.sim imports flow.backends.Backend"]
    edges = package_edges(tmp_path)
    assert edges["board"] == {"flow"} and find_cycle(edges) == ["board", "flow", "board"]
    errors = tmp_path / "flow" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom flow.cli import main  # noqa\n")
    rank = {m: i for i, m in enumerate(LAYERS)}
    assert "flow.cli" in project_imports(errors, tmp_path) and rank["flow.cli"] > rank["flow.errors"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"board": set(), "models": {"board"}, "flow": {"board", "models"}}) is None


def test_every_module_has_a_layer():
    missing = sorted(set(modules()) - set(LAYERS) - PACKAGES)
    assert not missing, f"place these in LAYERS: {missing}"
    assert not set(LAYERS) - set(modules()), "LAYERS names modules that are gone"


@pytest.mark.parametrize("name", LAYERS)
def test_imports_go_down(name):
    rank = {m: i for i, m in enumerate(LAYERS)}
    up = sorted(m for m in project_imports(modules()[name]) if rank.get(m, -1) >= rank[name])
    assert not up, f"{name} imports {up}, which are not below it"


def test_registries_name_real_functions():
    from flow.bench import BENCHES
    from flow.cli import COMMANDS
    from flow.crosscheck import PROVIDERS

    targets = [t for t, _ in COMMANDS.values()] + list(BENCHES.values()) + list(PROVIDERS)
    for target in targets:
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
