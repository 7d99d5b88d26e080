"""Dynamic batching: concurrent requests on one model share one device batch.

Each model with max_batch_size > 1 gets a Batcher: requests queue their
preprocessed images; one worker thread takes the oldest, waits at most
max_delay_ms for more (up to max_batch_size images), runs one forward pass and
hands each request its own rows. With batching off, requests run the forward
themselves: no queue hop, no added latency.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .errors import ResourceExhausted, Unavailable

if TYPE_CHECKING:
    from .registry import LoadedModel

DEFAULT_MAX_QUEUE = 256


@dataclass
class Batched:
    """One request's share of a device batch."""

    logits: torch.Tensor  # (n, classes) float32, CPU
    queue_ms: float
    compute_ms: float
    device_batch_size: int


@dataclass
class _Item:
    x: torch.Tensor
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)


def run_forward(model: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.forward(x).cpu()


class Batcher:
    def __init__(self, model: LoadedModel):
        self.model = model
        cfg = model.batching
        self.max_batch = max(1, cfg.max_batch_size)
        self.max_delay = max(0.0, cfg.max_delay_ms) / 1e3
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=cfg.max_queue or DEFAULT_MAX_QUEUE)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{model.id}", daemon=True)
        self._thread.start()

    def submit(self, x: torch.Tensor) -> Future:
        if self._closed:
            raise Unavailable(f"model {self.model.id!r} is being unloaded")
        item = _Item(x)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise ResourceExhausted(
                f"model {self.model.id!r} has {self._queue.maxsize} requests queued; retry later or raise max_queue"
            ) from None
        return item.future

    def depth(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)

    def _loop(self) -> None:
        carry: _Item | None = None
        while True:
            first = carry or self._queue.get()
            carry = None
            if first is None:
                return
            items, size = [first], first.x.shape[0]
            deadline = time.perf_counter() + self.max_delay
            while size < self.max_batch:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                if size + nxt.x.shape[0] > self.max_batch or nxt.x.shape[1:] != first.x.shape[1:]:
                    carry = nxt  # starts the next batch
                    break
                items.append(nxt)
                size += nxt.x.shape[0]
            self._run(items, size)

    def _run(self, items: list[_Item], size: int) -> None:
        start = time.perf_counter()
        try:
            logits = run_forward(self.model, torch.cat([i.x for i in items]) if len(items) > 1 else items[0].x)
        except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error
            for i in items:
                i.future.set_exception(exc)
            return
        compute_ms = (time.perf_counter() - start) * 1e3
        offset = 0
        for i in items:
            n = i.x.shape[0]
            i.future.set_result(Batched(logits[offset : offset + n], (start - i.queued) * 1e3, compute_ms, size))
            offset += n


def forward(model: LoadedModel, batcher: Batcher | None, x: torch.Tensor) -> Batched:
    """Logits for x, through the model's batcher when it has one."""
    if batcher is None or x.shape[0] >= batcher.max_batch:
        start = time.perf_counter()
        logits = run_forward(model, x)
        return Batched(logits, 0.0, (time.perf_counter() - start) * 1e3, x.shape[0])
    return batcher.submit(x).result()
