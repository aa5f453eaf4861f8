"""A key for "the code that made this": the logic of some modules and of everything they import from this checkout.

A cached artifact (the FINN build's pre-folding models) may be reused only while the code that made it is the same.
Hashing the text of one file misses the modules it imports and changes on a comment; here each module of the import
closure is parsed and its syntax tree (no comments, no docstrings, no line numbers) is hashed, so an edit that
changes what runs changes the key and one that only changes how it reads does not.

The closure follows every `import` statement anywhere in a module (also those inside functions, where this project
imports its heavy dependencies) but only into the first-party packages `PACKAGES`; third-party code is pinned by
version elsewhere.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGES = ("flow", "models", "board")
ROOT = Path(__file__).resolve().parent.parent  # the checkout holding PACKAGES


def module_path(name: str, root: Path) -> Path | None:
    """The source file of first-party module `name` (a package's __init__.py), or None (third-party, missing)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = Path(root, *name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imported(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """Every module name an import statement of module `name` may load: `a.b`, and `a.b.c` for `from a.b import c`
    (which names a module or an attribute; module_path tells them apart)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    # importing a.b.c runs a/__init__.py and a/b/__init__.py first
    return {".".join(m.split(".")[:k]) for m in out for k in range(1, m.count(".") + 2)}


def _logic(tree: ast.Module) -> str:
    """The tree without docstrings, dumped without positions: what the module does, not how its text reads."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def closure(modules: list[str], root: Path | None = None) -> dict[str, Path]:
    """Module name -> source file for `modules` and every first-party module they import, transitively (in the
    checkout `root`, default this one)."""
    root = ROOT if root is None else root
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen or (path := module_path(name, root)) is None:
            continue
        seen[name] = path
        todo += _imported(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py")
    return dict(sorted(seen.items()))


def code_key(modules: list[str], root: Path | None = None) -> str:
    """sha256 over the logic of `modules`' import closure (see the module doc)."""
    h = hashlib.sha256()
    for name, path in closure(modules, root).items():
        h.update(f"{name}\0{_logic(ast.parse(path.read_text(), str(path)))}\0".encode())
    return h.hexdigest()
