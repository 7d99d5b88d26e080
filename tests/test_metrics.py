"""Prometheus metrics over HTTP from a real server."""
from __future__ import annotations

import urllib.request

import pytest

from netscope.client import Client, NetscopeError
from netscope.server.app import ModelSpec, Server, ServerConfig

from .test_cli import free_port


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def test_requests_failures_latency_and_batches_are_counted(store, photos):
    port = free_port()
    srv = Server(ServerConfig(address="127.0.0.1:0", models=[ModelSpec("sq", "squeezenet1_1")], store=str(store),
                              device="cpu", workers=4, metrics_port=port)).start()
    try:
        with Client(srv.address, timeout=60) as c:
            for _ in range(3):
                c.predict("sq", [photos["chelsea"], photos["rocket"]])
            with pytest.raises(NetscopeError):
                c.predict("nope", photos["chelsea"])
        m = scrape(port)
        assert m['netscope_request_total{code="OK",model="sq",rpc="Predict"}'] == 3
        assert m['netscope_request_total{code="NOT_FOUND",model="nope",rpc="Predict"}'] == 1
        assert m['netscope_inference_count_total{model="sq",rpc="Predict"}'] == 6
        assert m['netscope_request_duration_seconds_count{model="sq",rpc="Predict"}'] == 3
        assert m['netscope_phase_duration_seconds_sum{model="sq",phase="compute",rpc="Predict"}'] > 0
        assert m['netscope_batch_size_sum{model="sq"}'] == 6
        assert m['netscope_queue_depth{model="sq"}'] == 0
    finally:
        srv.stop(grace=0)
