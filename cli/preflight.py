"""Every command's paths and ports, checked before any work (issue 17).

A mistake in a path should cost a second, not a minute of training or a job's
worth of requests: each sub-command declares what it reads and writes
(`declare(parser, OutFolder("--out"), Images("images"), ...)`), and `check(args)`
runs once, in `netscope.cli.main`, between parsing and the command. A problem is a
`UsageError`: exit 2, one line naming the flag, the path and what is wrong.
Nothing is created here, so a refused command leaves nothing behind; the
command creates its output folder only once everything has passed.

Writability is the write probe of `netscope.training.paths` (a temporary file
where the result will go), which `netscope train` uses for its own outputs, so
root and read-only file systems are told right.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path


class UsageError(ValueError):
    """A flag's value cannot work (a path, a port): the CLI prints it and exits 2 before any work."""


@dataclass(frozen=True)
class Check:
    """One argument to check: `dest` in the parsed args, shown as `flag`;
    `env` is the variable the command reads when the flag is unset."""

    kind: str
    flag: str
    dest: str = ""
    env: str = ""

    def values(self, args) -> list[tuple[str, str]]:
        """(shown name, value) for each value given (a list for nargs, none when unset)."""
        value = getattr(args, self.dest or _dest(self.flag), None)
        if value is None and self.env and os.environ.get(self.env):
            return [(f"${self.env}", os.environ[self.env])]
        if value is None or value == "" or value is False:
            return []
        items = value if isinstance(value, (list, tuple)) else [value]
        return [(self.flag, str(v)) for v in items]


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def OutFolder(flag: str = "--out", dest: str = "") -> Check:  # noqa: N802 - reads as a type in declarations
    """A folder the command writes into, created (with its parents) when it starts."""
    return Check("out_folder", flag, dest)


def ReadFile(flag: str, dest: str = "", env: str = "") -> Check:  # noqa: N802
    """A file the command reads: it must exist, be a file and be readable."""
    return Check("read_file", flag, dest, env)


def Images(flag: str, dest: str = "", allow: tuple[str, ...] = ()) -> Check:  # noqa: N802
    """Image files (the server decodes them; here: they exist and can be read). `allow`: words taken as is."""
    return Check("image" if not allow else "image:" + ",".join(allow), flag, dest)


def ImagesOrFolders(flag: str, dest: str = "") -> Check:  # noqa: N802
    """Image files and folders walked for images."""
    return Check("image_or_folder", flag, dest)


def ReadFolder(flag: str, dest: str = "") -> Check:  # noqa: N802
    """A folder the command reads."""
    return Check("read_folder", flag, dest)


def declare(parser, *checks: Check) -> None:
    """Add `checks` to those `check(args)` runs for this sub-command."""
    parser.set_defaults(preflight=[*(parser.get_default("preflight") or []), *checks])


def check(args) -> None:
    """Run the checks the sub-command declared. Raises UsageError naming the first problem."""
    for c in getattr(args, "preflight", None) or ():
        for shown, value in c.values(args):
            if c.kind == "image_or_folder" and "://" in value:
                if getattr(args, "engine", "") == "ray":
                    continue  # s3://, gs://, ...: Ray's readers open them, on the workers
                raise UsageError(f"{shown} {value}: a URI; local paths only here, or --engine ray, which reads URIs")
            why = _problem(c.kind, shown, value)
            if why:
                raise UsageError(why)


def _problem(kind: str, flag: str, value: str) -> str | None:
    if kind == "out_folder":
        from .out_folder import out_folder_problem

        return out_folder_problem(value, flag)
    if kind.startswith("image:") and value in kind[len("image:"):].split(","):
        return None
    why = {"read_file": read_file_problem, "image": read_file_problem, "read_folder": read_folder_problem,
           "image_or_folder": read_path_problem}[kind.split(":")[0]](value)
    return f"{flag} {value}: {why}" if why else None


def _reason(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))


def read_file_problem(path: str | os.PathLike) -> str | None:
    """Why the file at `path` cannot be read, or None."""
    p = Path(path).expanduser()
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return "no such file" + _missing_hint(p)
    except OSError as exc:
        return f"cannot be used ({_reason(exc)})"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a file"
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as exc:
        return f"cannot be read ({_reason(exc)})"
    return None


def read_folder_problem(path: str | os.PathLike) -> str | None:
    """Why the folder at `path` cannot be listed, or None."""
    p = Path(path).expanduser()
    try:
        if not p.exists():
            return "no such folder" + _missing_hint(p)
        if not p.is_dir():
            return "is a file, not a folder"
        with os.scandir(p):
            pass
    except OSError as exc:
        return f"cannot be read ({_reason(exc)})"
    return None


def read_path_problem(path: str | os.PathLike) -> str | None:
    """Why `path` is neither a readable file nor a listable folder, or None."""
    p = Path(path).expanduser()
    try:
        if p.is_dir():
            return read_folder_problem(p)
    except OSError as exc:
        return f"cannot be used ({_reason(exc)})"
    return read_file_problem(p) if os.path.lexists(p) else "no such file or folder" + _missing_hint(p)


def _missing_hint(p: Path) -> str:
    """Where a missing path's first missing part is, when that is not the path itself."""
    parent = p.absolute().parent
    while parent != parent.parent and not parent.exists():
        parent = parent.parent
    missing = p.absolute().relative_to(parent).parts
    return f" ({parent / missing[0]} does not exist)" if len(missing) > 1 else ""


def bind_problem(address: str, what: str) -> str | None:
    """Why a TCP listener cannot be bound at `address` ("host:port"; port 0: any), or None.

    Binds and closes a socket with SO_REUSEADDR, as the gRPC server and the
    metrics server do, so a port left in TIME_WAIT passes and one in use fails."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        return f"{what} {address}: give HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:50051"
    host, port = host.strip("[]") or "0.0.0.0", int(port_text)
    if port == 0:
        return None
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        return f"{what} {address}: cannot resolve {host!r} ({exc.strerror})"
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as exc:
            hint = " (is another netscope serve running there?)" if exc.errno == errno.EADDRINUSE else ""
            return f"{what} {address}: cannot listen there ({_reason(exc)}){hint}"
    return None
