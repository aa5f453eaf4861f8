"""Writing, reading and identifying files: atomic writes (a reader never sees half a file, a kill never leaves one),
checkpoints read without running their code, and content hashes. The bottom of `flow/`: every stage writes its
artifacts through here."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

TMP_MARK = ".tmp-"  # temp files are `.<name>.tmp-XXXX` beside their target: ours by name, hidden, never a user's


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for orphan in path.parent.glob(f".{path.name}{TMP_MARK}*"):  # left by a writer killed (SIGKILL) mid-write
        orphan.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C or a full disk: no half-written temp file stays behind
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_torch(path: Path):
    """A torch checkpoint read with `weights_only=True`: tensors, numbers, strings and containers only, so a crafted
    pickle cannot run code (`torch.load(weights_only=False)` would run whatever the file asks). numpy arrays (the
    numpy RNG state of checkpoints written before 2026-12) are allowed: rebuilding one runs no user code."""
    import numpy as np
    import torch

    np_globals = [np.ndarray, np.dtype, np.dtype(np.uint32).__class__, np.dtype(np.float64).__class__]
    np_globals += [(getattr(np, "_core", None) or np.core).multiarray._reconstruct]
    with torch.serialization.safe_globals(np_globals):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint of ours, read without running code from it (`load_torch`); a clear error where it is not one."""
    from flow.errors import FlowError

    path = Path(path)
    if not path.is_file():
        raise FlowError(f"{path}: checkpoint not found")
    try:
        ckpt = load_torch(path)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        why = str(e).splitlines()[-1] if "Weights only load failed" in str(e) else f"{type(e).__name__}: {e}"
        raise FlowError(f"{path}: not a readable torch checkpoint ({why}); checkpoints are read with "
                        "weights_only=True, so one that needs code to load is refused") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise FlowError(f"{path}: not an lpyolo-flow checkpoint (no 'model' entry)")
    return ckpt
