"""Whether the caller of some work still wants it: work never outlives its caller.

A `Caller` says whether the call a piece of work serves is still there: not
cancelled by the client, its deadline not passed, the server not shutting it
down. The caller of the work in hand lives in a ContextVar (`current()`), set
for each RPC by `call()` (the `rpc` wrapper in server/rpc/service.py) and carried
with the work wherever it goes: server/runtime/torch_thread.py captures it when work
is submitted and sets it again while the work runs on the torch thread; a
dynamic batch (server/runtime/batching.py) runs under `AnyOf` its callers; an
ExplainStream's stages run under the stream's.

Long work calls `check()` at its check points (the start of every block of a
forward pass, `torch_thread.yielding`; every chunk of the faithfulness
metrics; every image a feature map is drawn for): reading a flag and the
clock, so it costs about a microsecond. Once the caller is gone, `check()`
raises `Cancelled` or `DeadlineExceeded`, the work unwinds through its
context managers (hooks removed, nothing left on the model) and the torch
thread takes the next work. Outside any call (in-process use, startup)
`check()` does nothing.
"""
from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

from ..errors import Cancelled, DeadlineExceeded, ServerError

T = TypeVar("T")

POLL_S = 0.05  # how often a thread waiting for work looks whether its caller is still there
DEADLINE_SLACK_S = 0.1  # a cancel this close to the deadline is the deadline (gRPC's timer may fire first)


class Caller:
    """One call's liveness: `gone()` is None while the caller still wants the
    work, else the error to stop it with. `deadline` is on time.monotonic()'s
    clock (None: none); `ended` is set when the call ends (gRPC's callback:
    the client cancelled, the connection dropped, the deadline passed or the
    server cancelled it at shutdown). `on_progress`, when set, is called at
    every check point its work passes while it is there (ExplainStream's
    progress messages): it must be cheap and never block."""

    def __init__(self, deadline: float | None = None, ended: threading.Event | None = None, what: str = "call"):
        self.deadline = deadline
        self.ended = ended if ended is not None else threading.Event()
        self.what = what
        self.on_progress: Callable[[], None] | None = None
        self._started = time.monotonic()

    def progressed(self) -> None:
        if self.on_progress is not None:
            self.on_progress()

    def gone(self) -> ServerError | None:
        now = None
        if self.deadline is not None:
            now = time.monotonic()
            if now >= self.deadline:
                return self._deadline_error()
        if not self.ended.is_set():
            return None
        if self.deadline is not None and (now or time.monotonic()) >= self.deadline - DEADLINE_SLACK_S:
            return self._deadline_error()
        return Cancelled(f"the {self.what} ended before its work did (cancelled by the caller, the connection closed, "
                         f"or the server is shutting down); its work stopped",
                         reason="CALLER_CANCELLED")

    def _deadline_error(self) -> DeadlineExceeded:
        budget = self.deadline - self._started
        return DeadlineExceeded(f"the {self.what}'s deadline of {budget:.3g} s passed; its work stopped. "
                                f"Give it a longer timeout, or ask for less work (fewer images, steps or samples)",
                                reason="DEADLINE_PASSED", metadata={"deadline_s": f"{budget:.3g}"})

    def wait_s(self) -> float:
        """How long a waiting thread may sleep before it must look again."""
        if self.deadline is None:
            return POLL_S
        return max(0.0, min(POLL_S, self.deadline - time.monotonic()))


class AnyOf:
    """The callers of a shared device batch: there while any of them is.
    A None member (work with no caller: in-process use) is always there."""

    def __init__(self, callers: Iterable[Caller | AnyOf | None]):
        self.callers = list(callers)

    def gone(self) -> ServerError | None:
        first = None
        for c in self.callers:
            if c is None:
                return None
            err = c.gone()
            if err is None:
                return None
            first = first or err
        return first

    def wait_s(self) -> float:
        return POLL_S

    def progressed(self) -> None:
        for c in self.callers:
            if c is not None:
                c.progressed()


Liveness = Caller | AnyOf

_current: contextvars.ContextVar[Liveness | None] = contextvars.ContextVar("netscope_caller", default=None)


def current() -> Liveness | None:
    """The caller of the work running here (None: no caller, e.g. in-process use)."""
    return _current.get()


def check() -> None:
    """Raise Cancelled / DeadlineExceeded if the caller of the work running
    here is gone; otherwise (and outside any call) return at once."""
    caller = _current.get()
    if caller is not None:
        err = caller.gone()
        if err is not None:
            raise err
        caller.progressed()  # the work moves on: a stream that asked says so to its caller


@contextmanager
def serving(caller: Liveness | None) -> Iterator[None]:
    """Run the block on behalf of `caller` (None: no caller)."""
    token = _current.set(caller)
    try:
        yield
    finally:
        _current.reset(token)


def of_context(context, what: str = "call") -> Caller:
    """The Caller of a gRPC call: its deadline, and an event set when it ends."""
    remaining = context.time_remaining() if context is not None else None
    deadline = time.monotonic() + remaining if remaining is not None and remaining < 1e9 else None
    caller = Caller(deadline, what=what)
    if context is not None and not context.add_callback(caller.ended.set):
        caller.ended.set()  # the call already ended
    return caller


def call(context, fn: Callable[..., T], *args, what: str = "call", **kwargs) -> T:
    """fn(*args, **kwargs) on behalf of the gRPC call `context`: its torch
    work stops soon after the call is cancelled or its deadline passes."""
    with serving(of_context(context, what)):
        check()  # a call whose deadline passed while it waited for a worker thread does nothing
        return fn(*args, **kwargs)


def wait(future: Future, caller: Liveness | None = None) -> T:
    """future.result(), but only while `caller` (default: the current one) is
    there: once it is gone, the future is cancelled (work not yet started
    never starts) and Cancelled / DeadlineExceeded raised here, without
    waiting for running work, which stops at its own next check point."""
    caller = caller if caller is not None else _current.get()
    if caller is None:
        return future.result()
    while True:
        err = caller.gone()
        if err is not None and not future.done():
            future.cancel()
            raise err
        try:
            return future.result(timeout=caller.wait_s())
        except FutureTimeout:
            if future.done():
                raise  # the work's own TimeoutError
