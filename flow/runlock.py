"""One writer per run folder: `with run_lock(run_dir, "estimate"):` holds an exclusive lock (`RUN/.flow.lock`,
fcntl.flock: the kernel drops it when the holder dies, even by SIGKILL, so a stale lock never blocks anyone). The
file names the holder (pid, command, start time) so a second writer is told who has the folder; the holder removes
it as it lets go, so a command leaves no file behind. Re-entrant within a process: a command that calls another
stage (fifos -> estimate -> rtlsim) takes it once."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from flow.errors import FlowError

LOCK = ".flow.lock"
_held: dict[str, list] = {}  # resolved run folder -> [open lock file, depth]


class RunLocked(FlowError):
    pass


def _open_lock(run_dir: Path, path: Path):
    """The lock file, opened without following a symlink (O_NOFOLLOW: a planted link would have every locking
    command write into the link's target), created if missing; a clear error where the folder is not writable."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP or path.is_symlink():
            raise RunLocked(f"{path}: is a symlink, not the flow's lock file; nothing was written through it. "
                            f"Remove the link (rm {path}) and run again") from None
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise RunLocked(f"{run_dir}: not writable ({path}: {e.strerror}); every flow command writes into its "
                            f"run folder: make it writable (chmod u+w {run_dir}) or copy the run folder somewhere "
                            "writable and run there") from None
        raise RunLocked(f"{path}: cannot open the run folder's lock file ({e.strerror}); move it away and run "
                        "again") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunLocked(f"{path}: not a regular file, not the flow's lock file; move it away and run again")
    return os.fdopen(fd, "r+")


@contextmanager
def run_lock(run_dir: Path, command: str | None = None, create: bool = False):
    """create: make the run folder (export, train); otherwise a missing folder is left for the command to report."""
    run_dir = Path(run_dir)
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    elif not run_dir.is_dir():
        yield
        return
    key = str(run_dir.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    path = run_dir / LOCK
    for _ in range(10):  # the holder removes the file as it lets go: lock the file that is there, not a removed one
        f = _open_lock(run_dir, path)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                holder = json.loads(f.read() or "{}")
            except json.JSONDecodeError:
                holder = {}
            f.close()
            raise RunLocked(f"{run_dir} is in use by another flow command (pid {holder.get('pid', '?')}: "
                            f"`{holder.get('command', '?')}`, since {holder.get('since', '?')}); wait for it to "
                            f"finish or stop it (kill {holder.get('pid', 'PID')}), then run again") from None
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()
    else:
        raise RunLocked(f"{path}: the lock file keeps changing under us; is another flow command starting there?")
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "command": command or " ".join(["python -m flow", *sys.argv[1:]]),
                        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    f.flush()
    _held[key] = [f, 1]
    try:
        yield
    finally:
        del _held[key]
        path.unlink(missing_ok=True)  # while still held: a command that was refused leaves the folder as it found it
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
