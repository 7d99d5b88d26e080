"""The one rule for every command's `--out`: it is a folder, created if
missing (with its parents), checked before any request is sent.

Why a folder, always: every command that writes can write several files (a
grid per image and layer, .npy arrays beside PNGs, an index and overlays),
so a folder is the only answer that holds for all of them, and a rule that
never guesses from a suffix is one a user can predict. The files inside are
named by what they hold: IMAGE.LAYER.png / .npy (features),
MODEL.LAYER.kernels.png / .npy (kernels), overlays/ and index.csv (explain).

A value that names a file (a suffix such as .png) and is not an existing
folder is refused rather than made into a folder called "kern.png": before
this rule `kernels --out` took a file, so that is most likely what was meant.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from netscope.training.paths import folder_problem

from .preflight import UsageError

# Suffixes of the files the commands write (or that a user may mean): a path
# ending in one of these is a file name, not a folder.
FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy", ".npz", ".json", ".csv", ".txt")


class OutPathError(UsageError):
    """--out cannot be used as the output folder; the CLI exits 2 (a usage error)."""


def out_folder_problem(value: str | os.PathLike, flag: str = "--out") -> str | None:
    """Why `value` cannot be the output folder (the whole message, naming `flag`),
    or None. Creates nothing: a refused command leaves no empty folder behind."""
    path = Path(value).expanduser()
    if path.is_dir():
        why = folder_problem(path)
        return f"{flag} {path}: the folder is not writable ({why}); choose another folder" if why else None
    if path.exists():
        return (f"{flag} {path} is a file; {flag} is always a folder (the files in it are named by what "
                f"they hold): give a folder")
    if path.suffix.lower() in FILE_SUFFIXES:
        return (f"{flag} {path} looks like a file name; {flag} is always a folder, created if missing, and "
                f"the files in it are named by what they hold: give the folder, e.g. {flag} "
                f"{path.parent if str(path.parent) != '.' else '.'}")
    why = folder_problem(path)
    return f"{flag} {path}: cannot create the folder ({why}); choose a folder you can write" if why else None


def out_folder(value: str | os.PathLike, flag: str = "--out") -> Path:
    """`value` as an output folder that exists and is writable, created
    (with its parents) if missing. Raises OutPathError saying what to change:
    a file-like name, a path through or onto a file, a folder that cannot be
    created or written."""
    why = out_folder_problem(value, flag)
    if why:
        raise OutPathError(why)
    path = Path(value).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutPathError(f"{flag} {path}: cannot create the folder ({exc.strerror or exc}); choose a folder you "
                           f"can write") from None
    return path


def file_part(name: str) -> str:
    """A model id or layer name made safe as part of a file name (no path
    separators or control characters; dots stay, as in layer names)."""
    return re.sub(r"[^\w.\-+=@]", "_", name) or "_"
