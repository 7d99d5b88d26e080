"""Dynamic batching: concurrent requests on one model share one device batch.

Each model with max_batch_size > 1 gets a Batcher. A request hands it its
preprocessed images and a `Work`: what to compute on a batch (the forward
pass for Predict, one explanation for Explain) and a key saying which
requests may share a batch (Predict with Predict; Explain only with Explain
calls asking for the same explanation). A worker takes the oldest waiting
request, waits until max_delay_ms after that request arrived for more of the
same key (up to max_batch_size images), runs the work once on the
concatenated batch and hands each request its own rows. Requests of other
keys keep their place in line.

Two workers per model: while one runs a batch (or a long explanation), the
other gathers the next one, so the device gets the next batch as soon as it
is free, and on a GPU a Predict is not stuck behind a Score-CAM. A CPU
model's batches all run on the server's one torch thread
(server/runtime/torch_thread.py), where Predict's go first and also run between the
forward passes of a long explanation.

With batching off, or for a request already as large as a batch, the work
runs in the caller's thread: no queue hop, no added latency. If a shared
batch fails, each of its requests runs again alone, so one request's bad
input (or a batch too large for device memory) fails only that request.

A batch serves several callers (server/runtime/cancel.py): a request whose caller
has gone is dropped before its rows join a batch, a caller that goes away
stops waiting at once, and a batch's torch work runs on behalf of all its
callers, so it stops only when every one of them has gone.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Hashable

import torch

from . import cancel, torch_thread
from ..errors import Cancelled, DeadlineExceeded, ResourceExhausted, Unavailable
from ..models.transfer import cat

if TYPE_CHECKING:
    from ..models.registry import Batching, LoadedModel

DEFAULT_MAX_QUEUE = 256
WORKERS = 2


@dataclass(frozen=True)
class Work:
    """What to compute on a batch of preprocessed images.

    `run` takes an (N, C, H, W) batch and returns a result covering its N
    images; `rows(result, start, stop)` cuts one request's share out of it.
    Requests whose `key`s are equal (and whose images have one shape) may
    share a batch; key None means: never batch this one, run it alone.
    `urgent` work (Predict) goes ahead of the rest on the torch thread.
    `row_args`, when set, holds one entry per image (Explain's per-image
    targets): a batch concatenates them in the images' order and calls
    `run(batch, args)`, so each image keeps its own."""

    rpc: str
    key: Hashable | None
    run: Callable[..., Any]
    rows: Callable[[Any, int, int], Any]
    urgent: bool = False
    row_args: tuple | None = None
    # False: `run` is not torch work (an ONNX Runtime session): it runs in the
    # caller's or the batcher's thread, never queued on the torch thread.
    torch_thread: bool = True


@dataclass
class Batched:
    """One request's share of a device batch."""

    value: Any  # Work.rows of the batch's result
    queue_ms: float
    compute_ms: float
    device_batch_size: int


@dataclass(eq=False)  # identity: the queue removes exactly this request
class _Item:
    x: torch.Tensor
    work: Work
    key: tuple
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)
    caller: cancel.Liveness | None = field(default_factory=cancel.current)  # who waits for it

    @property
    def n(self) -> int:
        return self.x.shape[0]


class Batcher:
    """The batcher of one model. `pin`: concatenate host batches in pinned memory;
    `device`: the model's (a CPU model's batches run on the torch thread)."""

    def __init__(self, model_id: str, cfg: Batching, *, pin: bool = False, device: torch.device | str = "cpu"):
        self.model_id = model_id
        self.pin = pin
        self.device = device
        self.max_batch = max(1, cfg.max_batch_size)
        self.max_delay = max(0.0, cfg.max_delay_ms) / 1e3
        self.max_queue = cfg.max_queue or DEFAULT_MAX_QUEUE
        self._pending: list[_Item] = []  # oldest first, not yet in a batch
        self._gathering: set[tuple] = set()  # keys a worker is filling a batch for
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"batcher-{model_id}-{i}", daemon=True)
                         for i in range(WORKERS)]
        for t in self._threads:
            t.start()

    def submit(self, x: torch.Tensor, work: Work) -> Future:
        item = _Item(x, work, (work.rpc, work.key, tuple(x.shape[1:]), x.dtype, x.device))
        with self._cond:
            if self._closed:
                raise Unavailable(f"model {self.model_id!r} is being unloaded")
            if len(self._pending) >= self.max_queue:
                raise ResourceExhausted(f"model {self.model_id!r} has {len(self._pending)} requests queued; "
                                        f"retry later or raise max_queue")
            self._pending.append(item)
            self._cond.notify_all()
        return item.future

    def depth(self) -> dict[str, int]:
        """Requests waiting for a batch, by RPC."""
        with self._cond:
            return dict(Counter(i.work.rpc for i in self._pending))

    def close(self) -> None:
        """Stop taking requests; the workers finish what is queued, then exit."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            items = self._gather()
            if items is None:
                return
            self._run(items)
            del items  # an idle worker holds no finished batch (its work closes over the model)

    def _gather(self) -> list[_Item] | None:
        with self._cond:
            while True:
                self._pending = [i for i in self._pending if not i.future.done()]  # callers that gave up
                first = next((i for i in self._pending if i.key not in self._gathering), None)
                if first is not None:
                    break
                if self._closed and not self._pending:
                    return None
                self._cond.wait()
            self._pending.remove(first)
            self._gathering.add(first.key)
            items, size = [first], first.n
            deadline = first.queued + self.max_delay
            try:
                while size < self.max_batch:
                    full = False
                    for item in [i for i in self._pending if i.key == first.key]:
                        if size + item.n > self.max_batch:
                            full = True  # it starts the next batch
                            break
                        self._pending.remove(item)
                        items.append(item)
                        size += item.n
                    left = deadline - time.perf_counter()
                    if full or size >= self.max_batch or left <= 0 or self._closed:
                        break
                    self._cond.wait(left)
            finally:
                self._gathering.discard(first.key)
                self._cond.notify_all()
            return items

    def _run(self, items: list[_Item]) -> None:
        items = [i for i in items if not _dropped(i)]  # a caller that has gone drops its rows
        if not items:
            return
        start = time.perf_counter()
        work = items[0].work
        size = sum(i.n for i in items)
        try:
            xs = [i.x for i in items]
            # On behalf of every caller in the batch: it stops only when all have gone.
            with cancel.serving(cancel.AnyOf(i.caller for i in items)):
                args = () if work.row_args is None else ([a for i in items for a in i.work.row_args],)
                result = _run_work(self.device, work,
                                   lambda: work.run(cat(xs, pin=self.pin) if len(xs) > 1 else xs[0], *args))
        except BaseException as exc:  # noqa: BLE001 - a shared batch failed: find out whose it was
            if len(items) == 1 or isinstance(exc, (Cancelled, DeadlineExceeded)):
                for i in items:
                    _settle(i.future, exc=exc)
                return
            for i in items:
                self._run([i])
            return
        compute_ms = (time.perf_counter() - start) * 1e3
        offset = 0
        for i in items:
            try:
                share = work.rows(result, offset, offset + i.n)
            except BaseException as exc:  # noqa: BLE001
                _settle(i.future, exc=exc)
            else:
                _settle(i.future, Batched(share, (start - i.queued) * 1e3, compute_ms, size))
            offset += i.n


def _run_work(device, work: Work, call: Callable[[], Any]) -> Any:
    """`call` where its work belongs: the torch thread for a CPU model's torch work, else here."""
    if work.torch_thread:
        return torch_thread.run(device, call, urgent=work.urgent)
    return call()


def _dropped(item: _Item) -> bool:
    """Whether the item's caller has gone (then its future says so)."""
    gone = item.caller.gone() if item.caller is not None else None
    if gone is not None:
        _settle(item.future, exc=gone)
    return gone is not None or item.future.done()


def _settle(future: Future, value: Any = None, *, exc: BaseException | None = None) -> None:
    """Hand a request its share, unless it already has its answer (its caller gave up on it)."""
    if future.done():
        return
    try:
        future.set_exception(exc) if exc is not None else future.set_result(value)
    except Exception:  # noqa: BLE001 - InvalidStateError: settled meanwhile
        pass


def run(model: LoadedModel, x: torch.Tensor, work: Work) -> Batched:
    """`work` on x, through the model's batcher when it has one and the work
    may be batched; otherwise right here."""
    batcher = model.batcher
    if batcher is None or work.key is None or x.shape[0] >= batcher.max_batch:
        start = time.perf_counter()
        args = () if work.row_args is None else (list(work.row_args),)
        result = _run_work(model.device, work, lambda: work.run(x, *args))
        return Batched(work.rows(result, 0, x.shape[0]), 0.0, (time.perf_counter() - start) * 1e3, x.shape[0])
    return cancel.wait(batcher.submit(x, work))
