"""Output paths checked before any work starts: a run that cannot write its result
should fail in its first second with the path and the reason, not after training
with a raw errno (issue 17).

Writability is probed by creating (and removing) a temporary file where the
result will go, not by `os.access`: that also catches read-only file systems,
and root, for whom `os.access` says yes to everything.
"""
from __future__ import annotations

import errno
import os
import pathlib
import tempfile

_PROBE_PREFIX = ".netscope-write-check-"


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
    """`path` or its closest ancestor that exists (the folder creation would start in)."""
    p = path.absolute()
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _reason(e: OSError) -> str:
    return e.strerror or errno.errorcode.get(e.errno or 0, str(e))


def _name_max(folder: pathlib.Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _folder_problem(folder: pathlib.Path, probe_name: str = "") -> str | None:
    """Why files cannot be created in `folder` (created with its parents if missing), or None.

    `probe_name` is the name the caller will write there: its length is checked too.
    """
    start = _nearest_existing(folder)
    if not start.is_dir():
        return f"{start} is a file, not a folder" if start.is_file() else f"{start} is not a folder"
    missing = folder.absolute().relative_to(start).parts
    limit = _name_max(start)
    for name in (*missing, probe_name):
        if len(os.fsencode(name)) > limit:
            shown = name[:64] + ("..." if len(name) > 64 else "")
            kept = " with the temporary name it is written under" if name == probe_name else ""
            return f"the name {shown!r} is longer{kept} than this file system allows ({limit} bytes)"
    try:
        fd, probe = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=start)
    except OSError as e:
        return f"cannot create files in {start} ({_reason(e)})"
    os.close(fd)
    os.unlink(probe)
    return None


def file_problem(path: str | os.PathLike) -> str | None:
    """Why a file cannot be written (or replaced) at `path`, or None when it can.

    The file is written as a temporary file beside it and renamed over it, so what
    matters is its folder (created if missing) and that `path` is not a folder.
    """
    p = pathlib.Path(path)
    if not p.name or p.name in (".", ".."):
        return "names a folder; name a file, e.g. model.pt"
    try:
        if p.is_dir():
            return f"is a folder; name a file inside it, e.g. {p / 'model.pt'}"
        if os.path.lexists(p) and not p.is_file():
            return "exists and is not a regular file"
        # The writer's own temporary name is ".<name>.<random>.tmp": leave room for it.
        return _folder_problem(p.parent, f".{p.name}.XXXXXXXX.tmp")
    except OSError as e:  # a name too long, a symlink loop: the path cannot even be looked at
        return f"cannot be used ({_reason(e)})"


def folder_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be used as a folder to write into (created if missing), or None."""
    p = pathlib.Path(path)
    try:
        if os.path.lexists(p) and not p.is_dir():
            return "is a file, not a folder" if p.is_file() else "is not a folder"
        return _folder_problem(p)
    except OSError as e:
        return f"cannot be used ({_reason(e)})"
