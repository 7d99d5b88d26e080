"""Prometheus metrics, named in the style of Triton's nv_inference_*.

Each Server has its own CollectorRegistry (several servers in one process do
not mix), exported over HTTP on --metrics-port.
"""
from __future__ import annotations

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Milliseconds to minutes: loopback round trips up to score_cam on a CPU.
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PHASES = ("queue", "preprocess", "compute", "postprocess")
BATCHED_RPCS = ("Predict", "Explain")  # the RPCs that ride a model's dynamic batcher


class Metrics:
    def __init__(self, models=lambda: []):
        self.registry = CollectorRegistry()
        r = self.registry
        self._models = models
        r.register(_Refresh(self))  # first, so gauges are fresh when the rest are collected
        self.requests = Counter("netscope_request", "RPCs answered, by method, model and status code",
                                ["rpc", "model", "code"], registry=r)
        self.duration = Histogram("netscope_request_duration_seconds", "server time of an RPC, end to end",
                                  ["rpc", "model"], buckets=_SECONDS, registry=r)
        self.phase = Histogram("netscope_phase_duration_seconds",
                               "server time of an RPC by phase (queue, preprocess, compute, postprocess)",
                               ["rpc", "model", "phase"], buckets=_SECONDS, registry=r)
        self.images = Counter("netscope_inference_count", "images processed", ["rpc", "model"], registry=r)
        self.batch = Histogram("netscope_batch_size", "images in the device batch a request rode in",
                               ["rpc", "model"], buckets=_BATCH, registry=r)
        self._queue = Gauge("netscope_queue_depth", "requests waiting for a dynamic batch, by RPC (Predict, Explain)",
                            ["rpc", "model"], registry=r)
        self._gpu = Gauge("netscope_gpu_memory_used_bytes", "device memory held by torch", ["device"], registry=r)

    def observe(self, rpc: str, model: str, code: str, seconds: float, timing=None, images: int = 0) -> None:
        self.requests.labels(rpc, model, code).inc()
        self.duration.labels(rpc, model).observe(seconds)
        if images:
            self.images.labels(rpc, model).inc(images)
        if timing is None:
            return
        phases = {p: getattr(timing, f"{p}_ms") for p in PHASES}
        if any(phases.values()):  # every RPC that runs the model splits its time
            for p, ms in phases.items():
                self.phase.labels(rpc, model, p).observe(ms / 1e3)
        if timing.device_batch_size:
            self.batch.labels(rpc, model).observe(timing.device_batch_size)

    def refresh(self) -> None:
        """Point-in-time values, read when Prometheus scrapes."""
        self._queue.clear()  # unloaded models drop out
        for m in self._models():
            depth = m.batcher.depth() if m.batcher is not None else {}
            for rpc in BATCHED_RPCS:
                self._queue.labels(rpc, m.id).set(depth.get(rpc, 0))
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                self._gpu.labels(f"cuda:{i}").set(torch.cuda.memory_allocated(i))

    def serve_http(self, port: int, address: str = "0.0.0.0"):
        return start_http_server(port, addr=address, registry=self.registry)


class _Refresh:
    """A collector with no metrics of its own that refreshes the gauges first."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        self.metrics.refresh()
        return []
