"""Prometheus metrics over HTTP from a real server."""
from __future__ import annotations

import threading
import time
import urllib.request

import pytest
import torch

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
            c.feature_maps("sq", photos["chelsea"], "features.0")
        m = scrape(port)
        assert m['netscope_request_total{code="OK",model="sq",rpc="Predict"}'] == 3
        assert m['netscope_request_total{code="NOT_FOUND",model="_unknown",rpc="Predict"}'] == 1  # no such model
        assert m['netscope_inference_count_total{model="sq",rpc="Predict"}'] == 6
        assert m['netscope_request_duration_seconds_count{model="sq",rpc="Predict"}'] == 3
        assert m['netscope_phase_duration_seconds_sum{model="sq",phase="compute",rpc="Predict"}'] > 0
        assert m['netscope_batch_size_sum{model="sq",rpc="Predict"}'] == 6
        assert m['netscope_phase_duration_seconds_count{model="sq",phase="compute",rpc="GetFeatureMaps"}'] == 1
        assert m['netscope_queue_depth{model="sq",rpc="Predict"}'] == 0
        assert m['netscope_queue_depth{model="sq",rpc="Explain"}'] == 0
    finally:
        srv.stop(grace=0)


def test_explain_batches_and_their_queue_are_exported(store, photos):
    port = free_port()
    spec = ModelSpec("sqb", "squeezenet1_1", max_batch_size=4, max_delay_ms=1500)
    srv = Server(ServerConfig(address="127.0.0.1:0", models=[spec], store=str(store), device="cpu", workers=8,
                              metrics_port=port)).start()
    try:
        with Client(srv.address, timeout=60) as c:
            # Two workers each hold a batch open for 1.5 s (two different
            # explanations); a third explanation has to wait in the queue.
            asks = ["grad_cam", "grad_cam", "eigen_cam", "xgrad_cam"]
            threads = [threading.Thread(target=c.explain, args=("sqb", photos["chelsea"]), kwargs={"method": m})
                       for m in asks]
            for t in threads:
                t.start()
                time.sleep(0.1)
            time.sleep(0.3)
            waiting = scrape(port)['netscope_queue_depth{model="sqb",rpc="Explain"}']
            for t in threads:
                t.join()
        assert waiting == 1
        m = scrape(port)
        assert m['netscope_queue_depth{model="sqb",rpc="Explain"}'] == 0
        assert m['netscope_request_total{code="OK",model="sqb",rpc="Explain"}'] == 4
        assert m['netscope_batch_size_count{model="sqb",rpc="Explain"}'] == 4
        assert m['netscope_batch_size_sum{model="sqb",rpc="Explain"}'] == 2 + 2 + 1 + 1  # the grad_cams shared one
        assert m['netscope_phase_duration_seconds_count{model="sqb",phase="queue",rpc="Explain"}'] == 4
        assert m['netscope_phase_duration_seconds_sum{model="sqb",phase="queue",rpc="Explain"}'] > 1.0
    finally:
        srv.stop(grace=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_memory_in_use_is_exported(store):
    port = free_port()
    srv = Server(ServerConfig(address="127.0.0.1:0", models=[ModelSpec("sq", "squeezenet1_1", device="cuda")],
                              store=str(store), workers=2, metrics_port=port)).start()
    try:
        assert scrape(port)['netscope_gpu_memory_used_bytes{device="cuda:0"}'] > 1e6  # squeezenet's weights
    finally:
        srv.stop(grace=0)


def test_model_label_is_bounded_by_the_loaded_models(store, photos):
    """Made-up ids all count as one `_unknown` model; an unloaded model's
    series go; build info is exported."""
    port = free_port()
    srv = Server(ServerConfig(address="127.0.0.1:0", models=[ModelSpec("sq", "squeezenet1_1")], store=str(store),
                              device="cpu", workers=4, metrics_port=port)).start()
    try:
        with Client(srv.address, timeout=60) as c:
            c.predict("sq", photos["chelsea"])
            with pytest.raises(NetscopeError):
                c.predict("bogus-0", photos["chelsea"])
            before = scrape(port)
            for i in range(40):
                with pytest.raises(NetscopeError):
                    c.predict(f"bogus-{i}-{'x' * i}", photos["chelsea"])
            with pytest.raises(NetscopeError):
                c.predict("y" * 100_000, photos["chelsea"])
            after = scrape(port)
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
            assert set(after) - set(before) == {'netscope_request_total{code="INVALID_ARGUMENT",model="_unknown",rpc="Predict"}',
                                                'netscope_request_created{code="INVALID_ARGUMENT",model="_unknown",rpc="Predict"}'}
            assert len(text) < 64_000 and b"bogus" not in text and b"yyyy" not in text
            assert after['netscope_request_total{code="NOT_FOUND",model="_unknown",rpc="Predict"}'] == 41

            c.load_model("sq2", "squeezenet1_1")
            c.predict("sq2", photos["chelsea"])
            assert scrape(port)['netscope_request_total{code="OK",model="sq2",rpc="Predict"}'] == 1
            c.unload_model("sq2")
            gone = scrape(port)
            assert not [k for k in gone if 'model="sq2"' in k]
            assert gone['netscope_request_total{code="OK",model="sq",rpc="Predict"}'] == 1

        info = [k for k in gone if k.startswith("netscope_build_info{")]
        assert len(info) == 1 and gone[info[0]] == 1
        for label in ("version=", f'torch="{torch.__version__}"', "torchvision=", "python=", 'devices="cpu'):
            assert label in info[0]
    finally:
        srv.stop(grace=0)
