"""The tested environment: constraints.txt (every package's exact version, what `make install` installs) and
constraints-conflicts.txt (what `pip check` may still report there, each with why and the test of that path)."""

import hashlib
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from flow import env
from flow.errors import FlowError

ROOT = Path(__file__).resolve().parents[1]


def installed_from_constraints() -> bool:
    """`make install` writes the hash of the constraints it installed from into the venv's .installed."""
    stamp = Path(sys.prefix) / ".installed"
    digest = hashlib.sha256((ROOT / "constraints.txt").read_bytes()).hexdigest()
    return stamp.is_file() and stamp.read_text().split()[:1] == [digest]


pinned_venv = pytest.mark.skipif(not installed_from_constraints(), reason=(
    f"{sys.prefix} was not installed from this constraints.txt by `make install` (a prepared LPYOLO_VENV, or one "
    "installed before the pins changed): its versions are its own"))


@pinned_venv
def test_the_venv_is_the_tested_one():
    """Every installed version is the pinned one, and `pip check` reports exactly the listed conflicts."""
    assert env.differences(env.read_constraints(), env.installed()) == []
    assert env.check() == []  # and `pip check` reports exactly the listed conflicts


@pinned_venv
def test_lock_writes_back_the_same_pins(tmp_path):
    out = tmp_path / "constraints.txt"
    assert env.lock(Path(sys.prefix), out) == []  # no pip check line beyond the listed ones
    assert out.read_text() == (ROOT / "constraints.txt").read_text()


def test_the_pins_meet_every_finn_plus_requirement_but_the_listed_one():
    pins = env.read_constraints()
    unmet = {}
    for line in env.finn_requirements():
        req = Requirement(line)
        name = env.canonical(req.name)
        assert name in pins, f"finn-plus needs {name}, which constraints.txt does not pin"
        if not req.specifier.contains(env.public(pins[name]), prereleases=True):
            unmet[name] = (str(req.specifier), pins[name])
    assert unmet == {}
    assert pins["brevitas"] == "0.13.4" and env.NOT_HONOURED == {"brevitas"}
    listed = env.read_conflicts()
    assert listed == [f"finn-plus {pins['finn-plus']} has requirement brevitas==0.13.0, but you have brevitas 0.13.4."]


def test_each_listed_conflict_names_a_test_of_its_path():
    text = (ROOT / "constraints-conflicts.txt").read_text()
    for block in re.split(r"\n\s*\n", text.split("\n\n", 1)[1]):
        why = [line for line in block.splitlines() if line.startswith("#")]
        conflicts = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
        assert why and conflicts, f"a conflict without its reason, or a reason without its conflict:\n{block}"
        tests = re.findall(r"(tests/[\w/]+\.py)::(\w+)", " ".join(why))
        assert tests, f"no test named for:\n{block}"
        for path, name in tests:
            assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), f"{path}::{name} does not exist"


def test_differences_name_each_kind_of_drift():
    pins = {"onnx": "1.21.0", "torch": "2.13.0", "mip": "1.17.0"}
    have = {"onnx": "1.23.2", "torch": "2.13.0+cpu", "pandas": "3.1.1"}
    assert env.differences(pins, have) == ["mip: pinned 1.17.0, not installed", "onnx: pinned 1.21.0, installed 1.23.2",
                                           "pandas 3.1.1: installed, not in constraints.txt"]


def test_a_line_that_is_not_a_pin_is_refused_with_its_place(tmp_path):
    f = tmp_path / "constraints.txt"
    f.write_text("# comment\nonnx==1.21.0\nOnnx_Runtime==1.25.1  # why\npandas<2.4\n")
    with pytest.raises(FlowError, match=r"constraints.txt:4: 'pandas<2.4' is not `name==version`"):
        env.read_constraints(f)
    f.write_text("onnx==1.21.0\nOnnx_Runtime==1.25.1  # why\n")
    assert env.read_constraints(f) == {"onnx": "1.21.0", "onnx-runtime": "1.25.1"}


def test_check_says_what_differs(monkeypatch, capsys):
    from flow.cli import main

    monkeypatch.setattr(env, "installed", lambda: {**env.read_constraints(), "onnx": "1.23.2"})
    monkeypatch.setattr(env, "pip_check", lambda python=None: [
        *env.read_conflicts(), "finn-plus 1.6.1 has requirement onnx==1.21.0, but you have onnx 1.23.2."])
    assert main(["env", "check"]) == 1
    err = capsys.readouterr().err
    assert "onnx: pinned 1.21.0, installed 1.23.2" in err
    assert "pip check: finn-plus 1.6.1 has requirement onnx==1.21.0, but you have onnx 1.23.2. (not in" in err
