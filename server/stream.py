"""ExplainStream: a batch job over one bidirectional stream.

A reader thread takes the caller's items as they come (a bounded inbox, so
gRPC flow control slows a fast sender instead of the server buffering a whole
folder); the worker groups consecutive items that ask for the same
explanation into one device batch, explains it, and streams each item's
result back under the caller's id. An item that fails gets its error in its
own response and the stream goes on. A caller that goes away stops the work.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

from netscope.v1 import inspector_pb2 as pb

from .errors import status_of

_END = object()

Explain = Callable[[pb.ExplainRequest], pb.ExplainResponse]


def spec_key(request: pb.ExplainRequest) -> bytes:
    """What an item asks for, minus its images: items with equal keys batch together."""
    spec = pb.ExplainRequest()
    spec.CopyFrom(request)
    del spec.images[:]
    return spec.SerializeToString(deterministic=True)


class ExplainStream:
    def __init__(self, explain: Explain, *, max_images: int = 32, max_wait_s: float = 0.005, max_pending: int = 64):
        self.explain = explain
        self.max_images = max_images
        self.max_wait_s = max_wait_s
        self.max_pending = max_pending

    def run(self, requests: Iterator[pb.ExplainStreamRequest], context) -> Iterator[pb.ExplainStreamResponse]:
        inbox: queue.Queue = queue.Queue(maxsize=self.max_pending)
        stopped = threading.Event()
        context.add_callback(stopped.set)  # fires when the call ends, cancelled or not

        def read():
            try:
                for item in requests:
                    while not stopped.is_set():
                        try:
                            inbox.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stopped.is_set():
                        return
            except Exception:  # noqa: BLE001 - the caller cancelled or went away
                stopped.set()
            finally:
                inbox.put(_END)

        threading.Thread(target=read, name="explain-stream-reader", daemon=True).start()
        carry = None
        while not stopped.is_set():
            first = carry if carry is not None else inbox.get()
            carry = None
            if first is _END:
                return
            group, key = [first], spec_key(first.request)
            images = len(first.request.images)
            while images < self.max_images:
                try:
                    nxt = inbox.get(timeout=self.max_wait_s)
                except queue.Empty:
                    break
                if nxt is _END or spec_key(nxt.request) != key or images + len(nxt.request.images) > self.max_images:
                    carry = nxt
                    break
                group.append(nxt)
                images += len(nxt.request.images)
            if stopped.is_set():
                return
            yield from self._answer(group)

    def _answer(self, group: list[pb.ExplainStreamRequest]) -> Iterator[pb.ExplainStreamResponse]:
        if len(group) == 1:
            yield self._one(group[0])
            return
        merged = pb.ExplainRequest()
        merged.CopyFrom(group[0].request)
        del merged.images[:]
        for item in group:
            merged.images.extend(item.request.images)
        try:
            response = self.explain(merged)
        except Exception:  # noqa: BLE001 - find out which item it was
            for item in group:
                yield self._one(item)
            return
        offset = 0
        for item in group:
            n = len(item.request.images)
            part = pb.ExplainResponse(method=response.method, layers=response.layers, timing=response.timing)
            part.explanations.extend(response.explanations[offset : offset + n])
            offset += n
            yield pb.ExplainStreamResponse(id=item.id, response=part)

    def _one(self, item: pb.ExplainStreamRequest) -> pb.ExplainStreamResponse:
        try:
            return pb.ExplainStreamResponse(id=item.id, response=self.explain(item.request))
        except Exception as exc:  # noqa: BLE001 - the item's error, not the stream's
            code, message = status_of(exc)
            return pb.ExplainStreamResponse(id=item.id, error=pb.ItemError(code=code.value[0], message=message))
