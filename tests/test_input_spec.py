"""The resample (manifest.json's input.resample, from the model's QuantSpec) reaches every resize below the CLI
as a required argument: a call that forgets it fails instead of silently getting bilinear."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# where a default is the point: the preset constructor beside QuantSpec's own field (models/)
DEFAULT_ALLOWED = {("models/presets.py", "spec_for")}


def resample_defaults(root: Path) -> list[str]:
    """Every function under flow/, board/, models/ of root whose `resample` parameter has a default."""
    found = []
    for pkg in ("flow", "board", "models"):
        for f in sorted((root / pkg).rglob("*.py")):
            rel = f.relative_to(root).as_posix()
            for node in ast.walk(ast.parse(f.read_text(), rel)):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (rel, node.name) in DEFAULT_ALLOWED:
                    continue
                a = node.args
                positional = a.posonlyargs + a.args
                with_default = positional[len(positional) - len(a.defaults):]
                with_default += [k for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None]
                if any(arg.arg == "resample" for arg in with_default):
                    found.append(f"{rel}:{node.lineno} {node.name}")
    return found


def test_no_function_below_the_cli_defaults_the_resample():
    assert resample_defaults(REPO) == []


def test_the_checker_finds_a_planted_default(tmp_path):
    for pkg in ("flow", "board", "models"):
        (tmp_path / pkg).mkdir()
    (tmp_path / "board" / "x.py").write_text('def fit(img, size, resample="bilinear"):\n    return img\n'
                                             'def ok(img, *, resample):\n    return img\n')
    (tmp_path / "flow" / "y.py").write_text('\n\ndef pics(n, *, resample="nearest"):\n    return n\n')
    assert sorted(resample_defaults(tmp_path)) == ["board/x.py:1 fit", "flow/y.py:3 pics"]


def test_a_call_that_forgets_the_resample_fails():
    from board.preprocess import letterbox, resize_into
    from flow.samples import sample_images
    from flow.train.augment import augment
    from flow.train.data import val_images

    img = np.zeros((30, 40, 3), np.uint8)
    for call in (lambda: letterbox(img, 64), lambda: resize_into(img, np.empty((8, 8, 3), np.uint8)),
                 lambda: sample_images(64, 1, 0), lambda: val_images(64, 1),
                 lambda: augment([(img, np.zeros((0, 4)))], 64, np.random.default_rng(0), None)):
        with pytest.raises(TypeError, match="resample"):
            call()
