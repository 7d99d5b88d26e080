"""One thread for the server's CPU torch work.

Torch's CPU kernels run on OpenMP (libgomp), and every thread that starts
parallel work gets a team of helper threads of its own. Once the process holds
more team threads than cores, libgomp stops spinning between parallel regions,
so every region of a forward pass pays a wake-up. A server that runs forwards
in whichever gRPC worker took the request ends up there: on 2 cores a resnet18
forward at batch 1 took about 45 ms in the server against 33 ms from the only
thread that ever ran torch (docs/PERFORMANCE.md, "One torch thread").

So a CPU model is built, warmed up, run, explained and inspected on one
long-lived thread: one team, always warm. Requests still decode in their own
threads (OpenCV and numpy, no OpenMP). Work for a CUDA model runs in the
caller's thread: the GPU computes, the host only launches kernels.

One thread means one line, and a Predict must not wait out a Score-CAM.
So work comes in two lanes: urgent work (Predict) is taken before the rest
(but never more than URGENT_BURST in a row while other work waits, so a
stream of Predicts cannot starve a LoadModel or an explanation), and long
work lets it in: an explanation runs its model `yielding()`, so at
the start of each block of each forward pass `serve_urgent()` runs the
urgent work waiting, right there, on this thread, in a fresh context (the
explanation's captures and output replacements are ContextVars,
server/inspection/hooks.py: they neither see nor touch it). Modules are stateless in
eval mode, so a forward pass may start inside another one's block
boundary; a Predict waits for at most one block, not one explanation.

Work never outlives its caller (server/runtime/cancel.py): `run` captures the
submitting call's liveness with the work and sets it while the work runs
here; work whose caller has gone is dropped before it starts; a caller that
goes away stops waiting at once; and the same block boundaries (`yielding`),
on every device, are check points where work whose caller has gone stops.
"""
from __future__ import annotations

import contextvars
import threading
from collections import deque
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch
from torch import nn

from . import cancel

T = TypeVar("T")

URGENT_BURST = 8  # urgent items taken in a row before waiting other work gets its turn

_inside = threading.local()


class _Line:
    """The torch thread and its two lanes of waiting work."""

    def __init__(self):
        self._cond = threading.Condition()
        self._urgent: deque = deque()
        self._normal: deque = deque()
        self._thread: threading.Thread | None = None
        self._in_a_row = 0  # urgent items taken since other work last got its turn
        self._busy = False  # the thread is running work now

    def submit(self, call: Callable[[], T], urgent: bool, caller: cancel.Liveness | None = None) -> Future:
        """Queue `call`, to run on behalf of `caller` (its liveness travels with it)."""
        future: Future = Future()
        with self._cond:
            (self._urgent if urgent else self._normal).append((future, call, caller))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="netscope-torch", daemon=True)
                self._thread.start()
            self._cond.notify_all()  # the loop, and any wait_idle
        return future

    def serve_urgent(self) -> None:
        """The urgent work waiting now; work arriving meanwhile waits for the
        next call, so the long work goes on between rounds."""
        if getattr(_inside, "serving", False):
            return  # urgent work never waits for more urgent work
        _inside.serving = True
        try:
            with self._cond:
                waiting = len(self._urgent)
            for _ in range(waiting):
                with self._cond:
                    future, call, caller = self._urgent.popleft()
                contextvars.Context().run(_execute, future, call, caller)
        finally:
            _inside.serving = False

    def _loop(self) -> None:
        _inside.active = True
        while True:
            with self._cond:
                while not self._urgent and not self._normal:
                    self._cond.wait()
                if self._urgent and (not self._normal or self._in_a_row < URGENT_BURST):
                    future, call, caller = self._urgent.popleft()
                    self._in_a_row = self._in_a_row + 1 if self._normal else 0
                else:
                    future, call, caller = self._normal.popleft()
                    self._in_a_row = 0
                self._busy = True
            try:
                _execute(future, call, caller)
            finally:
                # An idle thread must not hold its last work: its closure (and
                # the result) can be an unloaded model, kept alive until the next call.
                del future, call, caller
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` s until no work runs or waits; whether it is so."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy and not self._urgent and not self._normal, timeout)


def _execute(future: Future, call: Callable[[], T], caller: cancel.Liveness | None = None) -> None:
    if not future.set_running_or_notify_cancel():
        return  # its caller stopped waiting before it started
    gone = caller.gone() if caller is not None else None
    if gone is not None:
        future.set_exception(gone)  # queued work whose caller has gone never starts
        return
    try:
        with cancel.serving(caller):
            result = call()
    except BaseException as exc:  # noqa: BLE001 - handed to the caller
        future.set_exception(exc)
    else:
        future.set_result(result)


_line = _Line()


def on_torch_thread() -> bool:
    return getattr(_inside, "active", False)


def run(device: torch.device | str | None, fn: Callable[..., T], *args, urgent: bool = False, **kwargs) -> T:
    """fn(*args, **kwargs) on the torch thread when `device` is the CPU (None:
    CPU work whatever the model's device, such as building weights), else here.
    Its result is returned and its exception raised here; called from the
    torch thread itself, fn just runs. `urgent` work (Predict) goes ahead of
    the waiting rest, and runs inside long work at its next `serve_urgent()`.

    fn runs on behalf of the current caller (server/runtime/cancel.py): if it goes
    away, fn is dropped if it has not started, stops at its next check point
    if it has, and Cancelled / DeadlineExceeded is raised here at once."""
    if on_torch_thread() or (device is not None and torch.device(device).type != "cpu"):
        cancel.check()
        return fn(*args, **kwargs)
    caller = cancel.current()
    if caller is not None:
        cancel.check()
    return cancel.wait(_line.submit(lambda: fn(*args, **kwargs), urgent, caller), caller)


def wait_idle(timeout: float) -> bool:
    """Wait up to `timeout` seconds for the torch thread to have no work
    running or waiting (at shutdown, once every call is cancelled, its work
    stops at the next check point; a process must not exit while the thread
    is inside torch's C++). Whether it is idle."""
    return _line.wait_idle(timeout)


def serve_urgent() -> None:
    """Long work calls this between its forward passes: on the torch thread,
    urgent work waiting now runs here first (elsewhere it does nothing)."""
    if on_torch_thread():
        _line.serve_urgent()


def checkpoint() -> None:
    """A check point of long work, between forward passes or chunks: raises
    Cancelled / DeadlineExceeded if the work's caller has gone (on any
    thread, cheap: a flag and the clock), then, on the torch thread, runs
    the urgent work waiting now."""
    cancel.check()
    if on_torch_thread():
        _line.serve_urgent()


@contextmanager
def yielding(model: nn.Module) -> Iterator[None]:
    """Within the block, each forward pass of `model` has a `checkpoint()` at
    the start of every block (the modules one and two levels down: a
    ResNet's stages and their blocks, a VGG's layers): work whose caller has
    gone stops there (on any device, in-process too), and on the torch
    thread the urgent work waiting runs there. A module tree copied inside
    the block (Captum's private copy) keeps the check points. The hooks are
    gone on exit, whatever happened."""
    blocks = [m for name, m in model.named_modules() if name and name.count(".") <= 1]
    handles = [m.register_forward_pre_hook(_checkpoint_hook) for m in blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _checkpoint_hook(module: nn.Module, args) -> None:
    checkpoint()
