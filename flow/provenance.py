"""What each artifact of a run folder was made from, and the check that it still is.

`record(artifact, inputs, command)` writes, into `provenance.json` beside the artifact, the artifact's sha256, the
sha256 of every input it was made from (paths relative to the artifact's folder, so a run folder can be moved) and
the command that makes it. `check(artifact, inputs, remake)` is what a consumer calls before it trusts an
artifact: the artifact must be the one recorded (not replaced by hand) and every input must still be what it was
made from; otherwise a `StaleError` names the stale file, the input that changed and the command that remakes it.
A folder-sized artifact (a FINN build) is identified by its marker file (`finn/build_done.json`, unique per build).

It is also the one answer to "did the flow write this file, so that it may replace it": `ours(path)` is true only for
a file whose record is in its folder's provenance.json with its current content (every writer records what it
writes: export, import, qcdq, the FINN build, eval reports, the deploy package, the demo's marker). An artifact's
recorded path is relative to the folder that holds the record, checked to lie inside it, and never followed through
a symbolic link (a link is never ours).

The chain of one run: checkpoint -> model.qonnx.onnx -> {model.pt, manifest.json, model.qcdq.onnx, finn/ build,
fifos.json} ; finn/ build -> {finn/report/rtlsim.json, synth.json, the bitfile} ; -> deploy/manifest.json.
Other stages (e.g. `flow import` of a user's QONNX) record their artifacts with the same two calls.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flow.errors import FlowError
from flow.files import atomic_write_json, sha256

RECORD = "provenance.json"


class StaleError(FlowError):
    pass


def _rel(path: Path, folder: Path) -> str:
    return os.path.relpath(Path(path).resolve(), folder.resolve())


def artifact_key(artifact: Path, folder: Path) -> str:
    """`artifact`'s path relative to `folder` (posix), refused unless it lies inside the folder through no symbolic
    link: a record can only name a file of its own folder."""
    artifact, folder = Path(artifact), Path(folder)
    try:
        rel = Path(os.path.abspath(artifact)).relative_to(os.path.abspath(folder))
    except ValueError:
        raise FlowError(f"{artifact}: not inside {folder}, whose {RECORD} would record it") from None
    if not rel.parts or ".." in rel.parts:
        raise FlowError(f"{artifact}: not a file inside {folder}")
    for k in range(1, len(rel.parts) + 1):
        if (folder / Path(*rel.parts[:k])).is_symlink():
            raise FlowError(f"{folder / Path(*rel.parts[:k])}: a symbolic link; the flow records and replaces only "
                            "files it wrote, never through links")
    return rel.as_posix()


def _records(folder: Path) -> dict:
    """provenance.json, read as untrusted input: not through a symlink, and only records of the shape `record`
    writes (a copied or handed-over run folder may carry any file)."""
    path = folder / RECORD
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as e:
        why = "a symlink" if path.is_symlink() else e.strerror
        raise FlowError(f"{path}: not readable ({why}); move it away and remake the run's artifacts") from None
    try:
        with os.fdopen(fd, "rb") as f:
            records = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise FlowError(f"{path}: not readable JSON ({e}); move it away and remake the run's artifacts") from e
    if not isinstance(records, dict) or not all(
            isinstance(r, dict) and isinstance(r.get("sha256"), str) and isinstance(r.get("made_from", {}), dict)
            for r in records.values()):
        raise FlowError(f"{path}: not a provenance record of ours (each entry holds a sha256, made_from and command); "
                        "move it away and remake the run's artifacts")
    return records


def record(artifact: Path, inputs: list[Path] = (), command: str = "", folder: Path | None = None, **facts) -> dict:
    """Record that `artifact` (just written) was made from `inputs` (files) by `command`, in the provenance.json of
    `folder` (default the artifact's own; a folder above it for a tree of files, e.g. a deploy package)."""
    artifact = Path(artifact)
    folder = artifact.parent if folder is None else Path(folder)
    key = artifact_key(artifact, folder)
    entry = {"sha256": sha256(artifact), "made_from": {_rel(p, folder): sha256(p) for p in inputs},
             "command": command, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **facts}
    if paths := _run_paths(command, folder):
        entry["paths"] = paths
    records = _records(folder)
    records[key] = entry
    atomic_write_json(folder / RECORD, records)
    return entry


def recorded(artifact: Path, folder: Path | None = None) -> dict | None:
    artifact = Path(artifact)
    folder = artifact.parent if folder is None else Path(folder)
    try:
        key = artifact_key(artifact, folder)
    except FlowError:  # outside the folder or behind a link: no record can be about it
        return None
    return _records(folder).get(key)


def ours(path: Path, folder: Path | None = None, made_by: tuple[str, ...] = ()) -> bool:
    """Did the flow write `path` (a regular file, not a link), with the content it has now, and (given `made_by`)
    with a command that starts with one of those? What every "may I replace this" check asks."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    entry = recorded(path, folder)
    return (entry is not None and entry.get("sha256") == sha256(path)
            and (not made_by or str(entry.get("command", "")).startswith(made_by)))


def recorded_paths(folder: Path) -> list[str]:
    """The paths (relative to `folder`) its provenance.json holds records of."""
    return sorted(_records(Path(folder)))


def forget(folder: Path, keys) -> None:
    """Drop the records of `keys` (paths relative to `folder`), e.g. of files just deleted."""
    records = _records(Path(folder))
    if any(k in records for k in keys):
        for k in keys:
            records.pop(k, None)
        atomic_write_json(Path(folder) / RECORD, records)


def _run_root(folder: Path) -> Path:
    """The run folder an artifact's folder belongs to: itself, or its parent for finn/ and deploy/."""
    up = folder.parent
    return up if (up / "model.qonnx.onnx").exists() or (up / "manifest.json").exists() else folder


def _run_paths(command: str, folder: Path) -> dict:
    """The words of command that name the run folder or something in it -> that path relative to folder: so the
    command can be told from where the folder is now, after it was copied or moved (`command_here`)."""
    root, here = _run_root(folder).resolve(), folder.resolve()
    out = {}
    for word in command.split(" "):
        if "/" in word or word in (".", ".."):
            p = Path(word).resolve()
            if p == root or root in p.parents:
                out[word] = os.path.relpath(p, here)
    return out


def command_here(entry: dict, folder: Path) -> str:
    """The recorded command with its run paths pointing at where folder is now (not where it was made)."""
    paths = entry.get("paths") if isinstance(entry.get("paths"), dict) else {}
    words = []
    for word in str(entry.get("command", "")).split(" "):
        rel = paths.get(word)
        if isinstance(rel, str):
            now = Path(os.path.normpath(Path(folder).absolute() / rel))
            if Path(word).resolve() != now.resolve():
                word = os.path.relpath(now) if Path.cwd() in now.parents else str(now)
        words.append(word)
    return " ".join(words)


def check(artifact: Path, inputs: list[Path], remake: str | None = None) -> dict:
    """Raise StaleError unless `artifact` is the recorded one and was made from `inputs` as they are now.
    remake: the command to tell the user (default: the recorded one that made it)."""
    artifact = Path(artifact)
    folder = artifact.parent
    entry = recorded(artifact)
    if entry is None:
        how = f": `{remake}`" if remake else " with the command that makes it"
        raise StaleError(f"{artifact}: no provenance record ({folder / RECORD}), so nothing says which model it was "
                         f"made from; remake it{how}")
    made_by = command_here(entry, folder)
    remake = remake or made_by
    if entry["sha256"] != sha256(artifact):
        raise StaleError(f"{artifact}: changed since `{made_by}` wrote it (not the recorded file); "
                         f"remake it: `{remake}`")
    for p in inputs:
        key = _rel(p, folder)
        if key not in entry["made_from"]:
            raise StaleError(f"{artifact}: was not made from {p} (made from {', '.join(entry['made_from']) or 'nothing recorded'}); "
                             f"remake it: `{remake}`")
        if not Path(p).exists() or entry["made_from"][key] != sha256(p):
            raise StaleError(f"{artifact} is stale: it was made from an earlier {p} (sha256 "
                             f"{entry['made_from'][key][:12]}…, now {sha256(p)[:12] if Path(p).exists() else 'gone'}); "
                             f"remake it: `{remake}`")
    return entry
