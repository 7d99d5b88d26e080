"""Prometheus metrics, named in the style of Triton's nv_inference_*.

Each Server has its own CollectorRegistry (several servers in one process do
not mix), exported over HTTP on --metrics-port.

The `model` label only ever holds the id of a loaded model: a request naming
any other id is counted under UNKNOWN_MODEL, and a model's series go when it
is unloaded, so no client can grow the exposition with made-up ids.
"""
from __future__ import annotations

import platform
import threading
from importlib import metadata

import torch
import torchvision
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Milliseconds to minutes: loopback round trips up to score_cam on a CPU.
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PHASES = ("queue", "preprocess", "compute", "postprocess")
BATCHED_RPCS = ("Predict", "Explain")  # the RPCs that ride a model's dynamic batcher
UNKNOWN_MODEL = "_unknown"  # the model label of requests that name no loaded model


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
        build = Gauge("netscope_build_info", "1, labelled with the versions this server runs and its device kinds",
                      list(BUILD_INFO), registry=r)
        build.labels(**BUILD_INFO).set(1)
        # label values each model has series under, so they can go when it is unloaded
        self._series: dict[str, set[tuple]] = {}
        self._series_lock = threading.Lock()

    def _labelled(self, metric, *labels):
        """metric.labels(*labels), remembering the series under its model (labels[1])."""
        with self._series_lock:
            self._series.setdefault(labels[1], set()).add((metric, labels))
        return metric.labels(*labels)

    def model_label(self, model: str) -> str:
        """`model` if a model of that id is loaded, else UNKNOWN_MODEL."""
        return model if model and any(m.id == model for m in self._models()) else UNKNOWN_MODEL

    def observe(self, rpc: str, model: str, code: str, seconds: float, timing=None, images: int = 0) -> None:
        model = self.model_label(model)
        self._labelled(self.requests, rpc, model, code).inc()
        self._labelled(self.duration, rpc, model).observe(seconds)
        if images:
            self._labelled(self.images, rpc, model).inc(images)
        if timing is None:
            return
        phases = {p: getattr(timing, f"{p}_ms") for p in PHASES}
        if any(phases.values()):  # every RPC that runs the model splits its time
            for p, ms in phases.items():
                self._labelled(self.phase, rpc, model, p).observe(ms / 1e3)
        if timing.device_batch_size:
            self._labelled(self.batch, rpc, model).observe(timing.device_batch_size)

    def forget_unloaded(self) -> None:
        """Drop every series of a model that is no longer loaded (run at each
        scrape: an unloaded model's counts do not outlive it)."""
        loaded = {m.id for m in self._models()} | {UNKNOWN_MODEL}
        with self._series_lock:
            gone = [model for model in self._series if model not in loaded]
            series = [s for model in gone for s in self._series.pop(model)]
        for metric, labels in series:
            try:
                metric.remove(*labels)
            except KeyError:  # already gone
                pass

    def refresh(self) -> None:
        """Point-in-time values, read when Prometheus scrapes."""
        self.forget_unloaded()
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


def _build_info() -> dict[str, str]:
    try:
        version = metadata.version("netscope")
    except metadata.PackageNotFoundError:
        version = "unknown"
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return {"version": version, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda or "", "devices": ",".join(devices)}


BUILD_INFO = _build_info()


class _Refresh:
    """A collector with no metrics of its own that refreshes the gauges first."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        self.metrics.refresh()
        return []
