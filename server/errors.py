"""Domain exceptions, and the one place that maps them to gRPC status codes.

Domain code (registry, predict, inspect, explain, imaging) raises these and
knows nothing of gRPC; service.py turns any exception into a status with
`status_of` (code and message) and `rich_status` (the google.rpc.Status with
ErrorInfo and BadRequest details), so a client never sees UNKNOWN for a
mistake it can fix, and a program can read why without parsing text.
"""
from __future__ import annotations

import difflib

import grpc
import torch
from google.rpc import error_details_pb2, status_pb2


class ServerError(Exception):
    """Base of every error a client should see with a specific status.

    Beside the message, an error carries what the status details report
    (google.rpc.ErrorInfo and BadRequest, see `rich_status`): `reason`, an
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


class NotFound(ServerError):
    code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(ServerError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(ServerError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServerError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class AlreadyExists(ServerError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unavailable(ServerError):
    code = grpc.StatusCode.UNAVAILABLE


class Cancelled(ServerError):
    code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(ServerError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(ServerError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServerError):
    code = grpc.StatusCode.PERMISSION_DENIED


SHOWN_CHARS = 64  # at most this much of a client's own text is echoed in a message
DOMAIN = "netscope.dev"  # ErrorInfo.domain of every error netscope raises
# Status details travel in the trailers, whose size gRPC bounds (8 KiB by
# default): a message, and each metadata value, is cut to fit whatever it quotes.
MAX_MESSAGE_CHARS = 1024
MAX_METADATA_CHARS = 256
MAX_METADATA_ENTRIES = 16


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """A client's string as a message may quote it: repr'd, cut to `limit`
    characters (a 100,000-character id must not make the error itself too
    large for the trailers)."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def closest_names(name: str, candidates, n: int = 5) -> list[str]:
    """Up to n of `candidates` that look like `name` (difflib, then substring)."""
    candidates = list(candidates)
    near = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not near:
        near = [c for c in candidates if name and name in c][:n]
    return near


def closest(name: str, candidates, n: int = 5) -> str:
    """'Did you mean' text for an unknown name, for error messages."""
    near = closest_names(name, candidates, n)
    return "; closest: " + ", ".join(near) if near else ""


def closest_metadata(name: str, candidates, n: int = 5) -> dict[str, str]:
    """The same names for ErrorInfo metadata: {"closest": "a,b,c"} (empty if none),
    so a program can offer them without parsing the message."""
    near = closest_names(name, candidates, n)
    return {"closest": ",".join(near)} if near else {}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for `exc` (the message cut to
    MAX_MESSAGE_CHARS, so it always fits the trailers)."""
    if isinstance(exc, ServerError):
        code, message = exc.code, str(exc)
    elif isinstance(exc, torch.cuda.OutOfMemoryError):
        code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, f"device out of memory: {first_line(exc)}; send a smaller batch"
    elif isinstance(exc, MemoryError) or host_oom(exc):
        code, message = (grpc.StatusCode.RESOURCE_EXHAUSTED,
                         "out of host memory; send fewer images, or lower batch_size, steps or samples")
    else:
        code, message = grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}): {first_line(exc)}"
    return code, _cut(message, MAX_MESSAGE_CHARS)


def host_oom(exc: BaseException) -> bool:
    """torch's CPU allocator failing: a RuntimeError, not a MemoryError."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("DefaultCPUAllocator" in text or "can't allocate memory" in text)


def reason_of(exc: BaseException) -> str:
    """ErrorInfo.reason for `exc`: the error's own, else a fixed word per kind."""
    if isinstance(exc, ServerError):
        return exc.reason
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "DEVICE_OUT_OF_MEMORY"
    if isinstance(exc, MemoryError) or host_oom(exc):
        return "HOST_OUT_OF_MEMORY"
    return "INTERNAL"


def rich_status(exc: BaseException) -> status_pb2.Status:
    """`exc` as a google.rpc.Status: status_of's code and message, with an
    ErrorInfo (reason, DOMAIN, metadata) and, when the error names a request
    field, a BadRequest with that field's violation. The rpc wrapper sends it in
    the trailers (grpc-status-details-bin); ExplainStream items carry it in
    ItemError.status."""
    code, message = status_of(exc)
    status = status_pb2.Status(code=code.value[0], message=message)
    metadata = dict(list(getattr(exc, "metadata", {}).items())[:MAX_METADATA_ENTRIES])
    info = error_details_pb2.ErrorInfo(reason=reason_of(exc), domain=DOMAIN,
                                       metadata={_cut(k, 64): _cut(v, MAX_METADATA_CHARS) for k, v in metadata.items()})
    status.details.add().Pack(info)
    field = getattr(exc, "field", "")
    if field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=_cut(field, 128), description=message)
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return status


def code_of(value: int) -> grpc.StatusCode:
    """The grpc.StatusCode with this number (google.rpc.Status.code)."""
    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)


def _cut(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
