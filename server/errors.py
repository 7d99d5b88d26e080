"""Domain exceptions, and the one place that maps them to gRPC status codes.

Domain code (registry, predict, inspect, explain, imaging) raises these and
knows nothing of gRPC; service.py turns any exception into a status with
`status_of`, so a client never sees UNKNOWN for a mistake it can fix.
"""
from __future__ import annotations

import difflib

import grpc
import torch


class NetscopeError(Exception):
    """Base of every error a client should see with a specific status.

    Beside the message, an error carries what the status details report
    (google.rpc.ErrorInfo and BadRequest, see `status_of`): `reason`, an
    UPPER_SNAKE_CASE word a program can switch on (default: the status code's
    name); `field`, the request field at fault (e.g. "options.steps",
    "images[3]"), reported as a BadRequest field violation; `metadata`, short
    string pairs such as the limit that was passed or the closest names."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str = "", *, reason: str = "", field: str = "",
                 metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.reason = reason or self.code.name
        self.field = field
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}


class NotFound(NetscopeError):
    code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(NetscopeError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(NetscopeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(NetscopeError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class AlreadyExists(NetscopeError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unavailable(NetscopeError):
    code = grpc.StatusCode.UNAVAILABLE


class Cancelled(NetscopeError):
    code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(NetscopeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(NetscopeError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(NetscopeError):
    code = grpc.StatusCode.PERMISSION_DENIED


SHOWN_CHARS = 64  # at most this much of a client's own text is echoed in a message


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """A client's string as a message may quote it: repr'd, cut to `limit`
    characters (a 100,000-character id must not make the error itself too
    large for the trailers)."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def closest(name: str, candidates, n: int = 5) -> str:
    """'Did you mean' text for an unknown name, for error messages."""
    candidates = list(candidates)
    near = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not near:
        near = [c for c in candidates if name and name in c][:n]
    if not near:
        return ""
    return "; closest: " + ", ".join(near)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for `exc`."""
    if isinstance(exc, NetscopeError):
        return exc.code, str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"device out of memory: {first_line(exc)}; send a smaller batch"
    if isinstance(exc, MemoryError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "out of host memory; send a smaller batch"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}): {first_line(exc)}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
