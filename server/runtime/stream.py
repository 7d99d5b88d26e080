"""ExplainStream: a job of many items over one bidirectional stream.

A reader thread takes the caller's items as they come (a bounded inbox, so
gRPC flow control slows a fast sender instead of the server buffering a whole
folder). Then a pipeline, one thread per stage, so the device never waits
for the CPU work around it:

    group + prepare    consecutive items that ask for the same explanation
                       become one device batch, sized by what an image costs
                       (`batch_limit`: the method's cost class and the
                       faithfulness metrics asked for), decoded and preprocessed
    compute            the maps, on the device
    render             overlays, metrics and messages, item by item: each
                       item's answer leaves as soon as it is drawn and scored,
                       not when its whole device batch is
    (the handler)      sends what render puts in the outbox, and, when the
                       caller asked for them (ExplainStreamRequest.progress),
                       a StreamProgress at most every PROGRESS_S while the
                       work under way reaches its check points and no answer
                       leaves (server/runtime/cancel.py's Caller.on_progress)

While one batch computes, the next is decoded and the last one drawn; queues
of one batch between the stages keep memory bounded. An item that fails gets
its error in its own response and the stream goes on; a batch that fails is
retried item by item to find out whose error it was. A caller that cancels
or goes away (or whose deadline passes) stops every stage, and the torch work
under way stops at its next check point: the compute and render stages run
on behalf of the stream's caller (server/runtime/cancel.py).
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Iterator, Protocol

import grpc

from netscope.v1 import inspector_pb2 as pb

from . import cancel
from ..explain import faithfulness
from ..rpc import convert
from ..errors import Cancelled, DeadlineExceeded, rich_status

_END = object()
_POLL_S = 0.1  # how often a blocked stage looks whether the call has ended
PROGRESS_S = 1.0  # at most one StreamProgress this often, and only while nothing else was sent


class Stages(Protocol):
    """The three stages of explaining a request (InspectorService provides them)."""

    def prepare_explanation(self, request: pb.ExplainRequest): ...
    def compute_explanation(self, job): ...
    def render_explanation(self, job) -> pb.ExplainResponse: ...

# A job between the stages has `part(request, start, stop)`: the job of its images start:stop.


def spec_key(request: pb.ExplainRequest) -> bytes:
    """What an item asks for, minus its images: items with equal keys batch
    together. A request for one class per image (`targets`, or a `target`
    index, label or top-1) is keyed without its targets too, so images with
    different targets share a batch, each with its own (`merged`)."""
    spec = pb.ExplainRequest()
    spec.CopyFrom(request)
    del spec.images[:]
    per_image = convert.per_image_target_messages(request) is not None
    if per_image:
        spec.ClearField("target")
        del spec.targets[:]
    return (b"per-image:" if per_image else b"") + spec.SerializeToString(deterministic=True)


def merged(items: list[pb.ExplainStreamRequest]) -> pb.ExplainRequest:
    """One request holding the images of items that share a spec_key (and,
    when they ask for one class per image, each image's target)."""
    if len(items) == 1:
        return items[0].request
    out = pb.ExplainRequest()
    out.CopyFrom(items[0].request)
    del out.images[:]
    targets = [convert.per_image_target_messages(item.request) for item in items]
    if targets[0] is not None:
        out.ClearField("target")
        del out.targets[:]
    for item, own in zip(items, targets):
        out.images.extend(item.request.images)
        if own is not None:
            out.targets.extend(own)
    return out


def batches_well(request: pb.ExplainRequest) -> bool:
    """Whether items asking for this explanation should share a device batch.

    Not when the method's forward passes already hold batch_size inputs
    (MethodSpec.sampled: Score-CAM, Ablation-CAM, occlusion, integrated
    gradients, the Shapley and LIME samplers; any noise tunnel): a shared batch
    runs no fewer passes, it only makes one indivisible piece of work of them,
    minutes long for a few Score-CAMs on a CPU. The torch thread runs one
    such piece at a time, so every other caller's work waited behind the
    whole batch, the stream's first answer waited for its last item, and a
    caller that stopped after its first answers could not stop the rest
    (seen as a 4-item stream waiting out its 30 s deadline in the soak).
    Item by item, the stream's next item queues behind work that came
    meanwhile and each answer leaves as soon as it is ready. A method that is
    no method is refused at prepare; it batches with nothing."""
    from ..explain.methods import method  # here: the registry imports every method's implementation

    if request.options.noise_tunnel:
        return False
    try:
        return not method(request.method).sampled
    except Exception:  # noqa: BLE001 - an unknown method: its own error, at prepare
        return False


def batch_limit(request: pb.ExplainRequest, stream_batch: int) -> int:
    """Most images in one device batch of items asking for this explanation.

    A batch holds about stream_batch forward passes' worth of work per image
    of a cheap method: stream_batch images of a cheap method without
    metrics, stream_batch // passes as each image costs more passes (its
    method's cost class, methods.COSTS, plus the faithfulness metrics' passes:
    44 for the default set), and one when the method fills its own passes
    (`batches_well`). So the first answers come within seconds however
    costly each image is: a batch of 32 Grad-CAMs scored by every metric was
    ten minutes of a CPU before its first answer, and a caller's `--timeout`
    ran out first. Little is lost: an image's metrics cost many times its map."""
    from ..explain.methods import COSTS, method

    if not batches_well(request):
        return 1
    try:
        passes = COSTS[method(request.method).cost] + faithfulness.passes(convert.faithfulness_metrics(request))
    except Exception:  # noqa: BLE001 - an unknown metric: its own error, at prepare
        return 1
    return max(1, stream_batch // passes)


def item_error(item: pb.ExplainStreamRequest, exc: BaseException) -> pb.ExplainStreamResponse:
    """One item's error: code and message, and the google.rpc.Status (ErrorInfo,
    BadRequest) a unary Explain would have carried in its trailers."""
    status = rich_status(exc)
    return pb.ExplainStreamResponse(id=item.id, error=pb.ItemError(code=status.code, message=status.message,
                                                                   status=status))


class Batch:
    """Items on their way through the pipeline as one device batch (`job`, what
    the stages pass along), or the errors of items that failed."""

    def __init__(self, model: str, started: float, items=(), job=None, errors=()):
        self.model = model
        self.started = started
        self.items: list[pb.ExplainStreamRequest] = list(items)
        self.job = job
        self.errors: list[pb.ExplainStreamResponse] = list(errors)

    @classmethod
    def failed(cls, item: pb.ExplainStreamRequest, exc: BaseException, started: float) -> "Batch":
        return cls(item.request.model, started, errors=[item_error(item, exc)])


class ExplainStream:
    def __init__(self, stages: Stages, *, stream_batch: int = 32, max_wait_s: float = 0.005, max_pending: int = 64,
                 metrics=None):
        self.stages = stages
        self.stream_batch = stream_batch  # most images in one device batch (serve --stream-batch)
        self.max_wait_s = max_wait_s
        self.max_pending = max_pending
        self.metrics = metrics

    def run(self, requests: Iterator[pb.ExplainStreamRequest], context) -> Iterator[pb.ExplainStreamResponse]:
        caller = cancel.of_context(context, "ExplainStream")  # its event fires when the call ends, cancelled or not
        stopped = caller.ended
        state = _State()
        caller.on_progress = state.progressed  # the work's check points say it moves on
        inbox: queue.Queue = queue.Queue(maxsize=self.max_pending)
        prepared: queue.Queue = queue.Queue(maxsize=1)
        computed: queue.Queue = queue.Queue(maxsize=1)
        idle = threading.Event()  # the compute stage waits for a batch
        stages = [(self._read, (requests, inbox, stopped, state)), (self._prepare, (inbox, prepared, stopped, idle)),
                  (self._compute, (prepared, computed, stopped, idle)), (self._render, (computed, stopped, state))]
        for target, args in stages:
            threading.Thread(target=lambda t=target, a=args: self._on_behalf(caller, t, a),
                             name=f"explain-stream{target.__name__}", daemon=True).start()
        try:
            while True:
                resp = take(state.outbox, stopped)
                if resp is _END or resp is None:
                    return
                state.sent(resp)
                yield resp
        finally:
            stopped.set()  # the handler is done (or was abandoned): every stage stops

    @staticmethod
    def _on_behalf(caller: cancel.Caller, target, args) -> None:
        with cancel.serving(caller):
            target(*args)

    # ---------------------------------------------------------------- stages

    def _read(self, requests, inbox: queue.Queue, stopped: threading.Event, state: "_State") -> None:
        try:
            for item in requests:
                state.received(item)
                if not give(inbox, item, stopped):
                    return
        except Exception:  # noqa: BLE001 - the caller cancelled or went away
            stopped.set()
        finally:
            give(inbox, _END, stopped)

    def _prepare(self, inbox: queue.Queue, out: queue.Queue, stopped: threading.Event, idle: threading.Event) -> None:
        carry = None
        while not stopped.is_set():
            first = carry if carry is not None else take(inbox, stopped)
            carry = None
            if first is None:
                return
            if first is _END:
                give(out, _END, stopped)
                return
            group, key, images = [first], spec_key(first.request), len(first.request.images)
            limit = batch_limit(first.request, self.stream_batch)
            while images < limit and not stopped.is_set():
                try:  # what is already waiting joins at once
                    nxt = inbox.get(timeout=self.max_wait_s)
                except queue.Empty:
                    # Nothing came for max_wait_s. If the device waits, go with what there
                    # is; while it computes, the batch may still fill at no cost.
                    if idle.is_set():
                        break
                    continue
                if nxt is _END or spec_key(nxt.request) != key or images + len(nxt.request.images) > limit:
                    carry = nxt
                    break
                group.append(nxt)
                images += len(nxt.request.images)
            for batch in self._decode(group):
                if not give(out, batch, stopped):
                    return

    def _decode(self, group: list[pb.ExplainStreamRequest]) -> list[Batch]:
        started, model = time.perf_counter(), group[0].request.model
        try:
            return [Batch(model, started, group, self.stages.prepare_explanation(merged(group)))]
        except Exception as exc:  # noqa: BLE001 - one bad image, or a spec no item can have
            if len(group) == 1:
                return [Batch.failed(group[0], exc, started)]
        batches = []  # whose was it? each alone, the good ones still explained (one by one)
        for item in group:
            try:
                batches.append(Batch(model, started, [item], self.stages.prepare_explanation(item.request)))
            except Exception as exc:  # noqa: BLE001
                batches.append(Batch.failed(item, exc, started))
        return batches

    def _compute(self, inbox: queue.Queue, out: queue.Queue, stopped: threading.Event, idle: threading.Event) -> None:
        while not stopped.is_set():
            idle.set()
            batch = take(inbox, stopped)
            idle.clear()
            if batch is None:
                return
            if batch is _END:
                give(out, _END, stopped)
                return
            for done in self._explain(batch):
                if not give(out, done, stopped):
                    return

    def _explain(self, batch: Batch) -> list[Batch]:
        if batch.job is None:
            return [batch]
        try:
            batch.job = self.stages.compute_explanation(batch.job)
            return [batch]
        except (Cancelled, DeadlineExceeded):
            return []  # the stream's caller has gone: nothing more to explain
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory at this batch size: try each alone
            if len(batch.items) == 1:
                return [Batch.failed(batch.items[0], exc, batch.started)]
        out = []
        for item in batch.items:
            try:
                job = self.stages.compute_explanation(self.stages.prepare_explanation(item.request))
                out.append(Batch(batch.model, batch.started, [item], job))
            except Exception as exc:  # noqa: BLE001
                out.append(Batch.failed(item, exc, batch.started))
        return out

    def _render(self, inbox: queue.Queue, stopped: threading.Event, state: "_State") -> None:
        while not stopped.is_set():
            batch = take(inbox, stopped)
            if batch is None:
                return
            if batch is _END:
                give(state.outbox, _END, stopped)
                return
            for resp in self._answers(batch):
                if not give(state.outbox, resp, stopped):
                    return

    def _answers(self, batch: Batch) -> Iterator[pb.ExplainStreamResponse]:
        """Each item's answer as soon as it is drawn and scored (the errors first)."""
        for resp in batch.errors:
            self._observe(resp, batch.model, time.perf_counter() - batch.started)
            yield resp
        if batch.job is None:
            return
        offset = 0
        for item in batch.items:
            n = len(item.request.images)
            job = batch.job if len(batch.items) == 1 else batch.job.part(item.request, offset, offset + n)
            offset += n
            try:
                resp = pb.ExplainStreamResponse(id=item.id, response=self.stages.render_explanation(job))
            except (Cancelled, DeadlineExceeded):
                return  # the stream's caller has gone
            except Exception as exc:  # noqa: BLE001 - this item's own error
                resp = item_error(item, exc)
            self._observe(resp, batch.model, time.perf_counter() - batch.started)
            yield resp

    def _observe(self, resp: pb.ExplainStreamResponse, model: str, seconds: float) -> None:
        """Each item counts like a request in the server's metrics (rpc ExplainStream)."""
        if self.metrics is None:
            return
        if resp.HasField("error"):
            code = next((c.name for c in grpc.StatusCode if c.value[0] == resp.error.code), "UNKNOWN")
            self.metrics.observe("ExplainStream", model, code, seconds)
        else:
            self.metrics.observe("ExplainStream", model, "OK", seconds, resp.response.timing,
                                 len(resp.response.explanations))


class _State:
    """One stream's outbox and what its progress messages say."""

    def __init__(self):
        # Bounded: a caller that reads slowly slows the render stage (gRPC flow control).
        self.outbox: queue.Queue = queue.Queue(maxsize=4)
        self._lock = threading.Lock()
        self._wanted = False  # the caller asked for progress messages
        self._pending = 0  # items received, not yet answered
        self._last = time.monotonic()  # when something last left, or the last progress was queued

    def received(self, item: pb.ExplainStreamRequest) -> None:
        with self._lock:
            self._wanted = self._wanted or item.progress
            self._pending += 1

    def sent(self, resp: pb.ExplainStreamResponse) -> None:
        with self._lock:
            if not resp.HasField("progress"):
                self._pending -= 1
            self._last = time.monotonic()

    def progressed(self) -> None:
        """Called at the work's check points (often: each block of a forward
        pass): a StreamProgress when asked for, PROGRESS_S after whatever
        was last sent, never blocking (a full outbox has answers to send)."""
        if not self._wanted or time.monotonic() - self._last < PROGRESS_S:
            return
        with self._lock:
            if time.monotonic() - self._last < PROGRESS_S:
                return
            self._last = time.monotonic()
            pending = self._pending
        try:
            self.outbox.put_nowait(pb.ExplainStreamResponse(progress=pb.StreamProgress(pending=pending)))
        except queue.Full:
            pass


def take(q: queue.Queue, stopped: threading.Event):
    """The next thing from q, or None once the call has ended."""
    while not stopped.is_set():
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue
    return None


def give(q: queue.Queue, thing, stopped: threading.Event) -> bool:
    """Put thing on q, waiting for room; False (dropped) once the call has ended."""
    while not stopped.is_set():
        try:
            q.put(thing, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False
