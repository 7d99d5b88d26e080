"""Latency and throughput: drive servers (or the same work in-process) with
concurrent callers and report percentiles, rates, errors and the server's
own time split."""
from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from netscope.v1 import inspector_pb2 as pb

from netscope.client.client import DEFAULT_SERVER, Client, NetscopeError, to_image

from .connection import client_parser, connection
from .deprecated import add_renamed_flag
from .option_flags import add_option_flags, chosen_options, option_flag
from .output import print_json, print_table
from .preflight import Images, UsageError, declare
from .bench_oip import oip_caller


@dataclass
class BenchResult:
    target: str
    rpc: str
    images_per_request: int
    concurrency: int
    requests: int
    seconds: float
    latency_ms: dict = field(default_factory=dict)  # p50, p90, p99, max, mean
    requests_per_s: float = 0.0
    images_per_s: float = 0.0
    errors: dict = field(default_factory=dict)      # status code name -> count
    server_ms: dict = field(default_factory=dict)   # mean queue/preprocess/compute/postprocess
    method: str = ""                                # the explanation, for rpc explain
    options: dict = field(default_factory=dict)     # its ExplainOptions, for rpc explain
    model: dict = field(default_factory=dict)       # how the model ran: device, dtype, batching, fast path


def load_inputs(spec: list[str], size: int = 224) -> list[pb.Image]:
    """Image files, or `random` for one random JPEG-sized noise image."""
    if not spec or spec == ["random"]:
        import cv2

        noise = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".jpg", noise)
        return [pb.Image(encoded=buf.tobytes())]
    return [to_image(Path(p)) for p in spec]


def summarize(target, rpc, images_per_request, concurrency, latencies, seconds, errors, timings) -> BenchResult:
    lat = np.asarray(latencies) * 1e3
    res = BenchResult(target, rpc, images_per_request, concurrency, len(latencies), seconds, errors=dict(errors))
    if len(lat):
        res.latency_ms = {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                          "p99": float(np.percentile(lat, 99)), "max": float(lat.max()), "mean": float(lat.mean())}
        res.requests_per_s = len(lat) / seconds
        res.images_per_s = len(lat) * images_per_request / seconds
    if timings:
        res.server_ms = {k: float(np.mean([getattr(t, f"{k}_ms") for t in timings]))
                         for k in ("queue", "preprocess", "compute", "postprocess")}
        res.server_ms["device_batch_size"] = float(np.mean([t.device_batch_size for t in timings]))
    return res


def drive(call, *, concurrency: int, duration: float, requests: int, warmup: int):
    """Run `call()` from `concurrency` threads; returns latencies, wall time,
    error counts by code and the server timings the calls returned."""
    for _ in range(warmup):
        call()
    latencies, timings, errors = [], [], Counter()
    lock = threading.Lock()
    counter = itertools.count()
    stop_at = time.perf_counter() + duration if not requests else float("inf")

    def worker():
        while time.perf_counter() < stop_at and (not requests or next(counter) < requests):
            start = time.perf_counter()
            try:
                timing = call()
            except NetscopeError as exc:
                with lock:
                    errors[exc.code.name] += 1
                continue
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if timing is not None:
                    timings.append(timing)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - start, errors, timings


def make_request(model: str, rpc: str, images: list[pb.Image], method: str, options: dict | None = None):
    """The one request both ways send: Predict top-5, or Explain with `method` and its `options`."""
    if rpc == "predict":
        return pb.PredictRequest(model=model, images=images, top_k=5)
    return pb.ExplainRequest(model=model, images=images, method=method, options=pb.ExplainOptions(**(options or {})))


def rpc_caller(clients: list[Client], model: str, rpc: str, images: list[pb.Image], method: str,
               options: dict | None = None):
    """A call that rotates over the servers, returning the server's Timing."""
    turn = itertools.cycle(clients)
    request = make_request(model, rpc, images, method, options)
    name = "Predict" if rpc == "predict" else "Explain"

    def call():
        return next(turn).call(name, request).timing

    return call


@dataclass
class InProcessModel:
    """How to load the in-process copy of a served model (by default as the
    server loaded it: GetModelInfo reports its settings)."""

    source: str
    weights: str = ""
    device: str = ""
    dtype: str = ""
    batching: dict = field(default_factory=dict)
    channels_last: bool = False
    compile: str = ""
    compile_batch_sizes: list[int] = field(default_factory=list)
    device_decode: bool = False
    pin_memory: bool = True
    backend: str = ""  # what runs Predict: torch or onnxruntime

    @classmethod
    def of(cls, info) -> "InProcessModel":
        weights = "" if info.weights == "checkpoint" else info.weights
        return cls(info.source, weights, info.device, info.dtype, dict(info.batching), info.channels_last,
                   info.compile, list(info.compile_batch_sizes), info.device_decode, info.pin_memory,
                   (info.backend or {}).get("name", ""))


class InProcess:
    """The same request through the server's own code (decode, preprocess,
    batching, forward or explanation, response message), in this process,
    with no gRPC in between. Call it for one request's Timing; close() after."""

    def __init__(self, model_id: str, spec: InProcessModel, store: str, rpc: str, images: list[pb.Image],
                 method: str, options: dict | None = None):
        from netscope.server.errors import ServerError
        from netscope.server.models.registry import Batching, Registry
        from netscope.server.rpc.service import InspectorService, Limits

        b = spec.batching
        self.model_id = model_id
        self.registry = Registry(store)
        try:
            self.registry.load(model_id, spec.source, weights=spec.weights, device=spec.device, dtype=spec.dtype,
                               batching=Batching(b.get("max_batch_size", 0), b.get("max_delay_ms", 0.0),
                                                 b.get("max_queue", 0)),
                               channels_last=spec.channels_last, compile=spec.compile,
                               compile_batch_sizes=spec.compile_batch_sizes, device_decode=spec.device_decode,
                               pin_memory=spec.pin_memory, backend=spec.backend)
        except ServerError as exc:  # the server's model, loaded here: say which flag points it elsewhere
            raise UsageError(f"--in-process could not load {spec.source!r} as the server did: {exc} "
                             f"(checkpoints are read from --store, here {store!r}: give the server's store; "
                             f"--device/--dtype/--backend change how it is loaded)") from None
        self.service = InspectorService(self.registry, Limits(max_images=max(256, len(images))))
        self.request = make_request(model_id, rpc, images, method, options)
        self.answer = self.service.predict_response if rpc == "predict" else self.service.explain_response

    def __call__(self):
        from netscope.server.errors import ServerError

        try:
            return self.answer(self.request).timing
        except ServerError as exc:  # counted by status code, as over the wire
            raise NetscopeError(exc.code, str(exc)) from None

    def close(self) -> None:
        self.registry.unload(self.model_id)
        self.service.close()


def run(servers: list[str], model: str, *, rpc="predict", method="grad_cam", images_per_request=1, concurrency=1,
        duration=10.0, requests=0, inputs=(), warmup=5, in_process=False, source="", store="models",
        device="", dtype="", in_process_images_per_request=0, in_process_concurrency=0, options=None,
        connect=None, backend="", protocol="netscope", ready_timeout=120.0) -> list[BenchResult]:
    """Benchmark each way asked for; with in_process, the in-process run comes
    first in the list and the server run after, from the same inputs. The
    in-process model is loaded as the server's is (GetModelInfo), on `device`
    as `dtype` when given; it may run its own images per request and number
    of callers (e.g. one caller of 64 images against 64 callers of one).
    `connect`: Client keywords for every server (tls, root_certificates,
    client_cert, client_key, token, server_name_override). `protocol`:
    netscope (Predict / Explain), oip (ModelInfer, the same images, top-5 by
    Triton's classification) or both (netscope, then oip, in this run).
    `ready_timeout`: seconds to wait for every server to be SERVING (`--timeout`)."""
    pool = load_inputs(list(inputs))
    images = [pool[i % len(pool)] for i in range(images_per_request)]
    results = []
    clients = [Client(s, timeout=300, **(connect or {})) for s in servers]
    try:
        for c in clients:
            c.wait_ready(timeout=ready_timeout)
        served = InProcessModel.of(clients[0].model_info(model))
        if in_process:
            spec = InProcessModel.of(clients[0].model_info(model))
            spec.source = source or spec.source
            spec.device, spec.dtype = device or spec.device, dtype or spec.dtype
            if backend:  # the in-process model's own Predict runtime; compile belongs to torch
                spec.backend = backend
                if backend != "torch":
                    spec.compile, spec.compile_batch_sizes = "", []
            local_n = in_process_images_per_request or images_per_request
            local_callers = in_process_concurrency or concurrency
            local_images = [pool[i % len(pool)] for i in range(local_n)]
            local = InProcess(model, spec, store, rpc, local_images, method, options)
            try:
                lat, secs, errs, timings = drive(local, concurrency=local_callers, duration=duration,
                                                 requests=requests, warmup=warmup)
            finally:
                local.close()
            results.append(summarize("in-process", rpc, local_n, local_callers, lat, secs, errs, timings))
            results[-1].model = asdict(spec)
        for way in (("netscope", "oip") if protocol == "both" else (protocol,)):
            call = (oip_caller(clients, model, images) if way == "oip"
                    else rpc_caller(clients, model, rpc, images, method, options))
            lat, secs, errs, timings = drive(call, concurrency=concurrency, duration=duration, requests=requests,
                                             warmup=warmup)
            target = ",".join(servers) + (" (OIP ModelInfer)" if way == "oip" else "")
            results.append(summarize(target, rpc, images_per_request, concurrency, lat, secs, errs, timings))
            results[-1].model = asdict(served)
        if rpc == "explain":
            for r in results:
                r.method, r.options = method, dict(options or {})
    finally:
        for c in clients:
            c.close()
    return results


# ---------------------------------------------------------------- the `netscope bench` command

def add_commands(sub) -> None:
    p = client_parser(sub, "bench", "measure latency and throughput", cmd_bench, fleet=True)
    p.add_argument("--model", required=True)
    p.add_argument("--rpc", choices=["predict", "explain"], default="predict")
    p.add_argument("--protocol", choices=["netscope", "oip", "both"], default="netscope",
                   help="netscope.v1 Predict/Explain, the Open Inference Protocol's ModelInfer (--rpc predict), or "
                        "both in this run")
    p.add_argument("--method", default="grad_cam", help="explanation method for --rpc explain")
    option_flag(p, "an option of that explanation (repeatable), e.g. batch_size=64")
    add_option_flags(p, "explanation options, for --rpc explain")
    p.add_argument("--images-per-request", type=int, default=1, metavar="N", help="images in each request")
    add_renamed_flag(p, "--batch", "--images-per-request", type=int, why="images in each request")
    p.add_argument("--concurrency", type=int, default=1, help="concurrent callers")
    p.add_argument("--duration", type=float, default=10.0, help="seconds to run (unless --requests)")
    p.add_argument("--requests", type=int, default=0, help="run exactly this many requests")
    p.add_argument("--warmup", type=int, default=5, help="requests before measuring")
    p.add_argument("--input", nargs="*", default=["random"], help="image files, or `random` (default)")
    p.add_argument("--in-process", action="store_true",
                   help="also run the same decode + preprocess + forward in this process, and print the ratio")
    p.add_argument("--source", default="", help="model source for --in-process (default: the server's)")
    p.add_argument("--store", default="models", help="model store for --in-process checkpoints")
    p.add_argument("--device", default="", help="device of the --in-process model (default: the server's)")
    p.add_argument("--dtype", default="", help="dtype of the --in-process model (default: the server's)")
    p.add_argument("--backend", default="", choices=("", "torch", "onnxruntime"),
                   help="what runs Predict in the --in-process model: torch or onnxruntime (default: the server's)")
    p.add_argument("--in-process-images-per-request", type=int, default=0, metavar="N",
                   help="images in each in-process request (default --images-per-request), e.g. 64 against 64 "
                        "callers of one image")
    add_renamed_flag(p, "--in-process-batch", "--in-process-images-per-request", type=int,
                     why="images in each in-process request")
    p.add_argument("--in-process-concurrency", type=int, default=0, metavar="N",
                   help="in-process callers (default --concurrency)")
    declare(p, Images("--input", allow=("random",)))


def cmd_bench(args) -> int:
    servers = args.servers or [DEFAULT_SERVER]
    for flag, value, low in (("--images-per-request", args.images_per_request, 1),
                             ("--concurrency", args.concurrency, 1),
                             ("--in-process-images-per-request", args.in_process_images_per_request, 0),
                             ("--in-process-concurrency", args.in_process_concurrency, 0)):
        if value < low:
            print(f"netscope bench: {flag} must be >= {low}; got {value}", file=sys.stderr)
            return 2
    if args.protocol != "netscope" and args.rpc != "predict":
        print("netscope bench: --protocol oip times ModelInfer, netscope.v1's Predict; use --rpc predict",
              file=sys.stderr)
        return 2
    results = run(servers, args.model, rpc=args.rpc, method=args.method, images_per_request=args.images_per_request,
                        concurrency=args.concurrency, duration=args.duration, requests=args.requests,
                        inputs=args.input, warmup=args.warmup, in_process=args.in_process, source=args.source,
                        store=args.store, device=args.device, dtype=args.dtype,
                        in_process_images_per_request=args.in_process_images_per_request,
                        in_process_concurrency=args.in_process_concurrency,
                        options=chosen_options(args), connect=connection(args), backend=args.backend,
                        protocol=args.protocol, ready_timeout=args.timeout)
    if args.json:
        print_json(results)
        return 0
    rows = []
    for r in results:
        lat = r.latency_ms or {}
        rows.append([r.target, r.images_per_request, r.concurrency, r.requests, f"{lat.get('p50', 0):.2f}",
                     f"{lat.get('p90', 0):.2f}", f"{lat.get('p99', 0):.2f}", f"{lat.get('max', 0):.2f}", f"{r.requests_per_s:.1f}",
                     f"{r.images_per_s:.1f}", ", ".join(f"{k}={v}" for k, v in r.errors.items()) or "-"])
    print(f"{args.rpc}{' ' + args.method if args.rpc == 'explain' else ''} on {args.model}")
    print_table(rows, ["target", "images/req", "callers", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms", "req/s",
                       "img/s", "errors"])
    for r in results:
        if r.server_ms:
            split = ", ".join(f"{k} {v:.2f}" for k, v in r.server_ms.items() if k != "device_batch_size")
            print(f"{r.target}: time per request (ms): {split}; mean device batch "
                  f"{r.server_ms['device_batch_size']:.1f}")
    local = results[0] if args.in_process and results[0].latency_ms else None
    for remote in (results[1:] if local else []):
        if not remote.latency_ms:
            continue
        way = "OIP" if remote.target.endswith("(OIP ModelInfer)") else "service"
        if (local.images_per_request, local.concurrency) == (remote.images_per_request, remote.concurrency):
            print(f"{way} / in-process p50: {remote.latency_ms['p50'] / local.latency_ms['p50']:.3f}x")
        print(f"{way} / in-process images/s: {remote.images_per_s / local.images_per_s:.3f}x")
    if args.protocol == "both" and results[-1].latency_ms and results[-2].latency_ms:
        v1, ours = results[-2], results[-1]
        print(f"OIP / netscope.v1 p50: {ours.latency_ms['p50'] / v1.latency_ms['p50']:.3f}x; "
              f"images/s: {ours.images_per_s / v1.images_per_s:.3f}x")
    return 0
