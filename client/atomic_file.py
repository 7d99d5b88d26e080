"""Replacing a file all at once (write a temporary file beside it, then
os.replace), with the permissions a plain open() would give it: the one
helper for every atomic write (checkpoints, job indexes)."""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Callable, IO

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's umask (e.g. 0o022). Read from /proc on Linux; elsewhere
    set and restored under a lock (os.umask has no read-only form)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_atomically(path: str | Path, write: Callable[[IO], None], *, binary: bool = True,
                     fsync: bool = False) -> Path:
    """Replace `path` with what `write(file)` writes: a reader sees the old
    file or the new one, never half. The file gets mode 0o666 & ~umask (0644
    under the usual umask) as open() would give it; mkstemp's 0600 would hide
    outputs from the rest of a group or a web server. `fsync`: flush to disk
    before the rename (checkpoints). Raises what `write` or the file system
    raises (OSError), leaving no temporary file behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
