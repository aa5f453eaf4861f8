"""The tested environment: constraints.txt pins every package of the venv `make install` builds, and
constraints-conflicts.txt lists each requirement `pip check` still reports there, with why it is safe.

    python -m flow env check                 installed versions == constraints.txt, `pip check` == the listed conflicts
    python -m flow env finn-requirements     finn-plus's own pins, less brevitas (`make lock` resolves against them)
    python -m flow env lock --venv DIR       write DIR's exact versions to constraints.txt (what `make lock` ends with)

finn-plus 1.6.1 pins brevitas==0.13.0, which cannot install beside torch 2.13, so `make install` adds finn-plus with
--no-deps; every other finn-plus pin is honoured, which is why `make lock` resolves with finn-plus's requirements.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from flow.errors import FlowError

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints.txt"
CONFLICTS = REPO / "constraints-conflicts.txt"
FINN = "finn-plus"
# finn-plus requirements `make install` does not honour; each is a conflict listed in constraints-conflicts.txt
NOT_HONOURED = {"brevitas"}
HEADER = """\
# The exact versions `make install` installs (pip install -c constraints.txt), tested together: `make test`.
# Refresh: `make lock` resolves the newest versions the project and finn-plus's own pins allow in a fresh venv and
# rewrites this file; run `make test` before committing it. Move one package by hand: edit its line, `make test`.
# Written by `python -m flow env lock`; the conflicts `pip check` still reports are in constraints-conflicts.txt.
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    """The version without its local label: torch's CPU wheel is 2.13.0+cpu, which `torch==2.13.0` accepts."""
    return version.split("+")[0]


def read_constraints(path: Path = CONSTRAINTS) -> dict[str, str]:
    """{canonical name: version} of every `name==version` line; anything else is a clear error naming the line."""
    pins = {}
    for k, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if not m:
            raise FlowError(f"{path}:{k}: {line!r} is not `name==version` (a constraints file pins exact versions)")
        pins[canonical(m[1])] = m[2]
    return pins


def read_conflicts(path: Path = CONFLICTS) -> list[str]:
    """The `pip check` lines accepted, each preceded in the file by comment lines saying why it is safe."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip() and not line.startswith("#")]


def installed() -> dict[str, str]:
    """{canonical name: version} of what this interpreter's environment holds, the project itself left out. Only its
    site-packages: once setuptools is imported (pytest, torch), its vendored copies (setuptools/_vendor: older
    importlib-metadata, packaging, ...) are on sys.path too, and they are not installed packages."""
    import sysconfig

    where = list(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions(path=where)
            if canonical(d.metadata["Name"]) != "lpyolo-flow"}


def differences(pins: dict[str, str], have: dict[str, str]) -> list[str]:
    """One line per package that is pinned but missing, installed but unpinned, or at another version."""
    out = []
    for name in sorted(pins.keys() | have.keys()):
        want, got = pins.get(name), have.get(name)
        if got is None:
            out.append(f"{name}: pinned {want}, not installed")
        elif want is None:
            out.append(f"{name} {got}: installed, not in constraints.txt")
        elif public(got) != public(want):
            out.append(f"{name}: pinned {want}, installed {got}")
    return out


def pip_check(python: str = sys.executable) -> list[str]:
    r = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    lines = [line.strip() for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    return [] if lines == ["No broken requirements found."] else lines


def finn_requirements() -> list[str]:
    """finn-plus's install requirements (no extras) as written in its metadata, less those not honoured."""
    try:
        reqs = metadata.requires(FINN) or []
    except metadata.PackageNotFoundError:
        raise FlowError(f"{FINN} is not installed in {sys.prefix}: `make install` first") from None
    keep = []
    for r in reqs:
        if "extra ==" in r:
            continue
        name = re.match(r"[A-Za-z0-9._-]+", r)[0]
        if canonical(name) not in NOT_HONOURED:
            keep.append(re.sub(r"\s*\((.*)\)", r"\1", r))  # old-style "name (>=1,<2)" -> "name>=1,<2"
    return keep


def freeze(venv: Path) -> list[str]:
    """`name==version` of every package in `venv` (pip and setuptools too), the project's editable install left
    out, sorted by name."""
    r = subprocess.run([str(Path(venv) / "bin" / "python"), "-m", "pip", "freeze", "--all", "--exclude-editable"],
                       capture_output=True, text=True)
    if r.returncode:
        raise FlowError(f"pip freeze in {venv} failed: {r.stderr.strip()[-300:]}")
    lines = [line for line in r.stdout.splitlines() if "==" in line and not line.startswith("#")
             and canonical(line.split("==")[0]) != "lpyolo-flow"]
    return sorted((public(line) if line.lower().startswith("torch==") else line for line in lines),
                  key=lambda s: canonical(s.split("==")[0]))


def lock(venv: Path, out: Path = CONSTRAINTS) -> list[str]:
    """Writes `venv`'s exact versions to `out`; returns the `pip check` lines there that are not listed conflicts."""
    from flow.files import atomic_write_bytes

    atomic_write_bytes(Path(out), (HEADER + "\n".join(freeze(venv)) + "\n").encode())
    known = set(read_conflicts()) if CONFLICTS.exists() else set()
    return [line for line in pip_check(str(Path(venv) / "bin" / "python")) if line not in known]


def check() -> list[str]:
    """Every way this environment differs from the tested one; empty when it is the tested one."""
    problems = differences(read_constraints(), installed())
    known = read_conflicts()
    found = pip_check()
    problems += [f"pip check: {line} (not in {CONFLICTS.name})" for line in found if line not in known]
    problems += [f"{CONFLICTS.name}: {line!r} no longer reported by pip check: delete it" for line in known if line not in found]
    return problems


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow env", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("check", help="this environment against constraints.txt and constraints-conflicts.txt")
    sub.add_parser("finn-requirements", help="finn-plus's requirements less brevitas, one a line")
    lk = sub.add_parser("lock", help="write a venv's exact versions to constraints.txt")
    lk.add_argument("--venv", type=Path, required=True)
    lk.add_argument("--out", type=Path, default=CONSTRAINTS)
    a = p.parse_args(argv)
    if a.what == "finn-requirements":
        print("\n".join(finn_requirements()))
        return 0
    if a.what == "lock":
        new = lock(a.venv, a.out)
        print(f"wrote {a.out}: {len(read_constraints(a.out))} packages")
        for line in new:
            print(f"pip check in {a.venv}: {line} — resolve it, or list it with why it is safe in {CONFLICTS.name}",
                  file=sys.stderr)
        return 1 if new else 0
    problems = check()
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print(f"{sys.prefix}: the tested environment ({len(read_constraints())} pins; "
              f"{len(read_conflicts())} listed conflict(s))")
    return 1 if problems else 0
