"""Commands that take many image files (predict, features): each file is
judged on its own, so one that cannot be read or decoded is reported by its
path and the rest still get their answer."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import grpc

from netscope.client.client import NetscopeError
from netscope.client.jobs import find_images

_IMAGE_FIELD = re.compile(r"^images\[(\d+)\]")
_POSITION = re.compile(r"^image \d+: ")  # the server names an image by its place in the request


@dataclass
class PerImage:
    """`results[i]` for each file that worked, `errors[i]` (a one-line reason)
    for each that did not; `paths` in the order given (folders expanded)."""
    paths: list[str]
    results: dict[int, object] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)


def expand(inputs: Sequence[str]) -> list[str]:
    """Files as given; a folder becomes the image files under it
    (.jpg .jpeg .png .webp .bmp, recursively), sorted by path."""
    paths = []
    for item in inputs:
        if Path(item).is_dir():
            paths += [str(p) for _, p in find_images([item])]
        else:
            paths.append(item)
    return paths


def per_image(paths: Sequence[str], call: Callable[[list[bytes]], list], chunk: int = 64) -> PerImage:
    """Run `call(encoded images) -> one result per image` over `paths`, at
    most `chunk` images per request. A file that cannot be read, or that the
    server refuses for itself (an INVALID_ARGUMENT naming images[i]: not an
    image, truncated, too large), becomes `errors[i]` naming its path, and the
    request goes again without it; any other error (the model is unknown, the
    server is down) is the whole command's and is raised (NetscopeError)."""
    out = PerImage(list(paths))
    todo: list[tuple[int, bytes]] = []
    for i, p in enumerate(out.paths):
        try:
            todo.append((i, Path(p).read_bytes()))
        except OSError as exc:
            out.errors[i] = f"cannot be read ({exc.strerror or exc})"
    for start in range(0, len(todo), max(1, chunk)):
        batch = todo[start:start + max(1, chunk)]
        while batch:
            try:
                results = call([data for _, data in batch])
            except NetscopeError as exc:
                bad = _image_at_fault(exc, len(batch))
                if bad is None:
                    raise
                out.errors[batch[bad][0]] = f"{exc.code.name}: {_POSITION.sub('', exc.message)}"
                del batch[bad]
                continue
            out.results.update({i: r for (i, _), r in zip(batch, results)})
            break
    return out


def _image_at_fault(exc: NetscopeError, n: int) -> int | None:
    """The request position of the one image an error is about, or None when it is about the whole request."""
    if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
        return None
    for name, _ in exc.field_violations:
        m = _IMAGE_FIELD.match(name)
        if m and int(m.group(1)) < n:
            return int(m.group(1))
    return None


def report_errors(command: str, result: PerImage) -> None:
    """One stderr line per file that failed, by its path."""
    import sys

    for i in sorted(result.errors):
        print(f"netscope {command}: {result.paths[i]}: {result.errors[i]}", file=sys.stderr)
