"""Send hostile requests to a server child process and judge every answer.

`Fuzzer` sends typed requests (generic `channel.unary_unary` with the
message's own serializer), raw bytes (no serializer: the fuzzer controls the
wire) and ExplainStream batches, and records for each answer a
`Violation` when one of the promises of docs/RELIABILITY.md is broken:

- the server process died (crashed, or was killed by the RSS watchdog);
- the status is UNKNOWN;
- the status is INTERNAL, except grpc's own "Exception deserializing
  request!" for bytes that do not parse as the request message;
- the answer is OK but holds a non-finite float (any float field, any float
  tensor);
- the message is longer than MAX_MESSAGE_CHARS (client text echoed whole),
  or is gRPC's raw "Sent message larger than max" instead of netscope's
  own RESOURCE_EXHAUSTED saying what to change;
- a stream item is answered twice or not at all, or its ItemError is
  UNKNOWN / INTERNAL.

Violations are collected, not raised, so one run lists every kind it finds;
each test asserts its list is empty at its end. The server is restarted
after a death so the run goes on.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field

import grpc
import numpy as np
from google.protobuf import descriptor, text_format

from netscope.v1 import inspector_pb2 as pb

from .server_process import ServerProcess

SERVICE = "netscope.v1.Inspector"
GRPC_PARSE_ERROR = "Exception deserializing request!"
MAX_MESSAGE_CHARS = 2048
UNARY = [m.name for m in pb.DESCRIPTOR.services_by_name["Inspector"].methods if not m.client_streaming]


@dataclass
class Violation:
    kind: str
    rpc: str
    code: str
    message: str
    request: str

    def line(self) -> str:
        return f"[{self.kind}] {self.rpc} -> {self.code}: {self.message[:240]!r}\n      request: {self.request[:400]}"


@dataclass
class Outcome:
    code: grpc.StatusCode
    message: str
    seconds: float
    response: object = None


def describe_image(image: pb.Image) -> str:
    if image.HasField("encoded"):
        return f"encoded[{len(image.encoded)} B: {image.encoded[:12].hex()}]"
    if image.HasField("tensor"):
        t = image.tensor
        return f"tensor[dtype={t.dtype} shape={list(t.shape)} {len(t.data)} B]"
    return "image[empty]"


def describe(request) -> str:
    """A short, printable description of a request (images summarised, strings cut)."""
    if isinstance(request, (bytes, bytearray)):
        return f"raw[{len(request)} B: {bytes(request[:48]).hex()}]"
    copy = type(request)()
    copy.CopyFrom(request)
    images = []
    inner = copy.request if isinstance(copy, pb.ExplainStreamRequest) else copy
    if hasattr(inner, "images"):
        images = [describe_image(i) for i in inner.images]
        del inner.images[:]
    for f, value in list(inner.ListFields()):
        if f.type == descriptor.FieldDescriptor.TYPE_STRING and not f.is_repeated:
            if len(value) > 80:
                setattr(inner, f.name, value[:40] + f"...({len(value)} chars)")
    text = text_format.MessageToString(copy, as_one_line=True, as_utf8=True)
    return f"{type(request).__name__}{{{text[:600]}}} images={images}"


def non_finite(message, path: str = "") -> list[str]:
    """Paths of the non-finite float fields and float tensors in a response."""
    bad = []
    if isinstance(message, pb.Tensor):
        a = tensor_array(message)
        if a is not None and a.size and not np.isfinite(a).all():
            bad.append(f"{path}(tensor {list(message.shape)}: {int((~np.isfinite(a)).sum())} non-finite)")
        return bad
    for f, value in message.ListFields():
        name = f"{path}.{f.name}" if path else f.name
        repeated = f.is_repeated
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            f = f.message_type.fields_by_name["value"]  # a map: judge its values, keyed by name
            value, repeated = [value[k] for k in sorted(value)], True
        if f.type in (descriptor.FieldDescriptor.TYPE_FLOAT, descriptor.FieldDescriptor.TYPE_DOUBLE):
            values = list(value) if repeated else [value]
            if not all(math.isfinite(v) for v in values):
                bad.append(name)
        elif f.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            for i, item in enumerate(value if repeated else [value]):
                bad += non_finite(item, f"{name}[{i}]" if repeated else name)
    return bad


FLOAT_DTYPES = {pb.FLOAT32: "<f4", pb.FLOAT16: "<f2", pb.FLOAT64: "<f8"}


def tensor_array(t: pb.Tensor):
    if t.dtype == pb.BFLOAT16:
        u = np.frombuffer(t.data[: len(t.data) // 2 * 2], "<u2").astype(np.uint32) << 16
        return u.view(np.float32)
    if t.dtype in FLOAT_DTYPES:
        size = np.dtype(FLOAT_DTYPES[t.dtype]).itemsize
        return np.frombuffer(t.data[: len(t.data) // size * size], FLOAT_DTYPES[t.dtype])
    return None


def message_violation(message: str, private=()) -> str:
    if len(message) > MAX_MESSAGE_CHARS:
        return "message-too-long"
    if message.startswith("Sent message larger than max") or message.startswith("Received message larger than max"):
        return "raw-size-error"
    if any(p and p in message for p in private):
        return "server-path-shown"
    return ""


@dataclass
class Fuzzer:
    server: ServerProcess
    deadline_s: float = 5.0
    counts: collections.Counter = field(default_factory=collections.Counter)  # (rpc, code name) -> n
    violations: list[Violation] = field(default_factory=list)
    slowest: tuple[float, str, str] = (0.0, "", "")
    deaths: int = 0
    peak_rss_mib: float = 0.0
    private: tuple[str, ...] = ()  # the server's absolute paths, never to be shown in a message
    seconds: collections.Counter = field(default_factory=collections.Counter)  # rpc -> seconds waited
    expired: list[str] = field(default_factory=list)  # requests that ran past the per-call deadline
    _channel: grpc.Channel | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------ plumbing

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.server.address, options=[
                ("grpc.max_receive_message_length", 256 * 1024 * 1024),
                ("grpc.max_send_message_length", 256 * 1024 * 1024)])
        return self._channel

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    @property
    def requests(self) -> int:
        """Calls made (an ExplainStream is one, however many items it carries)."""
        return sum(n for (rpc, _), n in self.counts.items() if not rpc.endswith(".item"))

    @property
    def stream_items(self) -> int:
        return sum(n for (rpc, _), n in self.counts.items() if rpc.endswith(".item"))

    def _violate(self, kind: str, rpc: str, code, message: str, request) -> None:
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        self.violations.append(Violation(kind, rpc, name, message, describe(request)))

    def _after(self, rpc: str, request, outcome: Outcome) -> None:
        """Count the answer, check the process, note the slowest."""
        self.counts[(rpc, outcome.code.name)] += 1
        self.seconds[rpc] += outcome.seconds
        if outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            self.expired.append(f"{rpc} {outcome.seconds:.1f} s: {describe(request)[:300]}")
        if outcome.seconds > self.slowest[0]:
            self.slowest = (outcome.seconds, rpc, describe(request)[:300])
        if not self.server.alive:
            self.deaths += 1
            why = (f"killed by the watchdog at {self.server.killed_for_rss} MiB RSS" if self.server.killed_for_rss
                   else f"exit code {self.server.proc.returncode}")
            self._violate("server-died", rpc, outcome.code, why, request)
            self.peak_rss_mib = max(self.peak_rss_mib, self.server.peak_rss_mib)
            self.close()
            self.server.start()
            return
        try:
            self.peak_rss_mib = max(self.peak_rss_mib, self.server.peak_mib())
        except (OSError, RuntimeError):
            pass

    def _judge(self, rpc: str, request, outcome: Outcome, unparseable: bool = False) -> None:
        code, message = outcome.code, outcome.message
        if code == grpc.StatusCode.UNKNOWN:
            self._violate("unknown", rpc, code, message, request)
        elif code == grpc.StatusCode.INTERNAL and not (unparseable and message == GRPC_PARSE_ERROR):
            self._violate("internal", rpc, code, message, request)
        kind = message_violation(message, self.private)
        if kind:
            self._violate(kind, rpc, code, message[:300] + f"... ({len(message)} chars)", request)
        if code == grpc.StatusCode.OK and outcome.response is not None and not isinstance(outcome.response, bytes):
            bad = non_finite(outcome.response)
            if bad:
                self._violate("non-finite-ok", rpc, code, ", ".join(bad[:5]), request)
        self._after(rpc, request, outcome)

    def _invoke(self, fn, request, timeout: float | None = None) -> Outcome:
        t0 = time.perf_counter()
        try:
            response = fn(request, timeout=timeout or self.deadline_s)
            return Outcome(grpc.StatusCode.OK, "", time.perf_counter() - t0, response)
        except grpc.RpcError as err:
            return Outcome(err.code(), err.details() or "", time.perf_counter() - t0)

    # ------------------------------------------------------------ calls

    def unary(self, rpc: str, request, service: str = SERVICE, response_type=None, timeout: float | None = None):
        """A typed unary call; judged. Returns the Outcome."""
        response_type = response_type or getattr(
            pb, pb.DESCRIPTOR.services_by_name["Inspector"].methods_by_name[rpc].output_type.name)
        fn = self.channel.unary_unary(f"/{service}/{rpc}", request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=response_type.FromString)
        outcome = self._invoke(fn, request, timeout)
        self._judge(rpc, request, outcome)
        return outcome

    def raw(self, rpc: str, data: bytes, request_type=None, service: str = SERVICE) -> Outcome:
        """Bytes on the wire as the request of `rpc`; INTERNAL is allowed only
        as grpc's own answer to bytes that do not parse as the message."""
        request_type = request_type or getattr(
            pb, pb.DESCRIPTOR.services_by_name["Inspector"].methods_by_name[rpc].input_type.name)
        try:
            request_type.FromString(data)
            unparseable = False
        except Exception:  # noqa: BLE001 - DecodeError, or a message too deep
            unparseable = True
        fn = self.channel.unary_unary(f"/{service}/{rpc}", request_serializer=None, response_deserializer=None)
        outcome = self._invoke(fn, data)
        self._judge(rpc + "[raw]", data, outcome, unparseable)
        return outcome

    def stream(self, items: list) -> Outcome:
        """ExplainStream with `items`: every id answered once, per-item errors judged too."""
        fn = self.channel.stream_stream(f"/{SERVICE}/ExplainStream",
                                        request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=pb.ExplainStreamResponse.FromString)
        t0 = time.perf_counter()
        answered: collections.Counter = collections.Counter()
        call = fn(iter(items), timeout=self.deadline_s * max(1, len(items)))
        code, message = grpc.StatusCode.OK, ""
        try:
            for response in call:
                answered[response.id] += 1
                if response.HasField("error"):
                    item_code = grpc.StatusCode.OK
                    for c in grpc.StatusCode:
                        if c.value[0] == response.error.code:
                            item_code = c
                    request = next((i for i in items if i.id == response.id), items[0])
                    self.counts[("ExplainStream.item", item_code.name)] += 1
                    if item_code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
                        self._violate("stream-item-" + item_code.name.lower(), "ExplainStream", item_code,
                                      response.error.message, request)
                    kind = message_violation(response.error.message, self.private)
                    if kind:
                        self._violate(kind, "ExplainStream", item_code, response.error.message[:300], request)
                else:
                    bad = non_finite(response.response)
                    if bad:
                        self._violate("non-finite-ok", "ExplainStream", "OK", ", ".join(bad[:5]),
                                      next((i for i in items if i.id == response.id), items[0]))
        except grpc.RpcError as err:
            code, message = err.code(), err.details() or ""
        outcome = Outcome(code, message, time.perf_counter() - t0)
        if code == grpc.StatusCode.OK:
            wanted = collections.Counter(i.id for i in items)
            if answered != wanted:
                self._violate("stream-answers", "ExplainStream", code,
                              f"sent ids {dict(wanted)}, answered {dict(answered)}", items[0])
        self._judge("ExplainStream", items[0], Outcome(code, message, outcome.seconds))
        return outcome

    def health(self, service: str = "") -> str:
        from grpc_health.v1 import health_pb2

        fn = self.channel.unary_unary("/grpc.health.v1.Health/Check",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=health_pb2.HealthCheckResponse.FromString)
        response = fn(health_pb2.HealthCheckRequest(service=service), timeout=30)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_idle(self, timeout: float = 120.0) -> float:
        """Wait until a trivial Predict answers promptly (work left behind by
        expired calls has drained); returns the seconds waited."""
        t0 = time.perf_counter()
        fn = self.channel.unary_unary(f"/{SERVICE}/ListModels", request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=pb.ListModelsResponse.FromString)
        tiny = pb.PredictRequest(model="tiny", images=[pb.Image(tensor=pb.Tensor(
            dtype=pb.FLOAT32, shape=[3, 32, 32], data=b"\x00" * (3 * 32 * 32 * 4)))])
        predict = self.channel.unary_unary(f"/{SERVICE}/Predict", request_serializer=lambda m: m.SerializeToString(),
                                           response_deserializer=pb.PredictResponse.FromString)
        while time.perf_counter() - t0 < timeout:
            try:
                fn(pb.ListModelsRequest(), timeout=5)
                predict(tiny, timeout=2)
                return time.perf_counter() - t0
            except grpc.RpcError:
                time.sleep(0.5)
        raise AssertionError(f"the server stayed busy for {timeout:.0f} s after the fuzzing stopped")

    # ------------------------------------------------------------ reporting

    def report(self, kinds: tuple[str, ...] = ()) -> str:
        """Violations grouped by (kind, rpc, code, message prefix), one example each."""
        groups: dict[tuple, list[Violation]] = collections.defaultdict(list)
        for v in self.violations:
            groups[(v.kind, v.rpc, v.code, v.message[:60])].append(v)
        lines = [f"{len(self.violations)} violations in {self.requests} requests, {len(groups)} kinds:"]
        for key, vs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  x{len(vs)} " + vs[0].line())
        return "\n".join(lines)

    def take(self, since: int) -> list[Violation]:
        return self.violations[since:]
