"""Latency and throughput: drive servers (or the same work in-process) with
concurrent callers and report percentiles, rates, errors and the server's
own time split."""
from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netscope.v1 import inspector_pb2 as pb

from .client import Client, NetscopeError, to_image


@dataclass
class BenchResult:
    target: str
    rpc: str
    batch: int
    concurrency: int
    requests: int
    seconds: float
    latency_ms: dict = field(default_factory=dict)  # p50, p90, p99, max, mean
    requests_per_s: float = 0.0
    images_per_s: float = 0.0
    errors: dict = field(default_factory=dict)      # status code name -> count
    server_ms: dict = field(default_factory=dict)   # mean queue/preprocess/compute/postprocess


def load_inputs(spec: list[str], size: int = 224) -> list[pb.Image]:
    """Image files, or `random` for one random JPEG-sized noise image."""
    if not spec or spec == ["random"]:
        import cv2

        noise = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".jpg", noise)
        return [pb.Image(encoded=buf.tobytes())]
    return [to_image(Path(p)) for p in spec]


def summarize(target, rpc, batch, concurrency, latencies, seconds, errors, timings) -> BenchResult:
    lat = np.asarray(latencies) * 1e3
    res = BenchResult(target, rpc, batch, concurrency, len(latencies), seconds, errors=dict(errors))
    if len(lat):
        res.latency_ms = {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                          "p99": float(np.percentile(lat, 99)), "max": float(lat.max()), "mean": float(lat.mean())}
        res.requests_per_s = len(lat) / seconds
        res.images_per_s = len(lat) * batch / seconds
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


def rpc_caller(clients: list[Client], model: str, rpc: str, images: list[pb.Image], method: str):
    """A call that rotates over the servers, returning the server's Timing."""
    turn = itertools.cycle(clients)

    def call():
        c = next(turn)
        if rpc == "predict":
            return c.call("Predict", pb.PredictRequest(model=model, images=images, top_k=5)).timing
        return c.call("Explain", pb.ExplainRequest(model=model, images=images, method=method)).timing

    return call


def in_process_caller(model_id: str, source: str, store: str, images: list[pb.Image], device: str, dtype: str):
    """The same decode + preprocess + forward + top-k, with no gRPC in between."""
    from netscope.server import convert, predict
    from netscope.server.imaging import DEFAULT_MAX_PIXELS
    from netscope.server.registry import Registry

    model = Registry(store).load(model_id, source, device=device, dtype=dtype)

    def call():
        x = convert.images_to_batch(images, model.recipe, max_pixels=DEFAULT_MAX_PIXELS, max_batch=len(images) + 1)
        predict.predict(model, x, 5)

    return call


def run(servers: list[str], model: str, *, rpc="predict", method="grad_cam", batch=1, concurrency=1,
        duration=10.0, requests=0, inputs=(), warmup=5, in_process=False, source="", store="models",
        device="", dtype="") -> list[BenchResult]:
    """Benchmark each way asked for; with in_process, the in-process run comes
    first in the list and the server run after, from the same inputs."""
    pool = load_inputs(list(inputs))
    images = [pool[i % len(pool)] for i in range(batch)]
    results = []
    clients = [Client(s, timeout=300) for s in servers]
    try:
        for c in clients:
            c.wait_ready(timeout=120)
        if in_process:
            if not source:
                info = clients[0].model_info(model)
                source, device, dtype = info.source, device or info.device, dtype or info.dtype
            call = in_process_caller(model, source, store, images, device, dtype)
            lat, secs, errs, _ = drive(call, concurrency=concurrency, duration=duration, requests=requests, warmup=warmup)
            results.append(summarize("in-process", rpc, batch, concurrency, lat, secs, errs, []))
        call = rpc_caller(clients, model, rpc, images, method)
        lat, secs, errs, timings = drive(call, concurrency=concurrency, duration=duration, requests=requests,
                                         warmup=warmup)
        results.append(summarize(",".join(servers), rpc, batch, concurrency, lat, secs, errs, timings))
    finally:
        for c in clients:
            c.close()
    return results
