"""Serving speed, one benchmark pair per goal of issue 7, each pair taken in
one run on the same model and inputs:

- overhead:   batch-1 JPEG Predict over gRPC on loopback vs the same request
              through the server's own code in-process;
- batching:   CALLERS concurrent callers of one JPEG each, dynamic batching on,
              vs one in-process request of CALLERS JPEGs (throughput);
- the fast path, each piece on vs off: decode_pool (a pool of threads vs
  serial OpenCV), device_decode (torchvision's decoder on the device and
  preprocessing there vs OpenCV), pinned (pinned staging + non-blocking copy
  vs pageable), compile (torch.compile vs eager), half_channels_last
  (float16 + channels-last vs float32; bfloat16 on the CPU).

CI runs each once as a test on the CPU with small models (pyproject:
--benchmark-disable). To measure, on the CPU or a GPU:

    NETSCOPE_BENCH_DEVICE=cuda .venv/bin/python -m pytest tests/bench/test_serving_bench.py \\
        --benchmark-enable --benchmark-json=serving.json
    .venv/bin/python tests/bench/serving_ratios.py serving.json

Knobs: NETSCOPE_BENCH_DEVICE (cpu; cuda when available), NETSCOPE_BENCH_MODEL
(mobilenet_v3_small on the CPU, resnet50 on CUDA), NETSCOPE_BENCH_BATCH (8 on
the CPU, 64 on CUDA: the fast-path batch), NETSCOPE_BENCH_CALLERS (64),
NETSCOPE_BENCH_DELAY_MS (10: the batching model's max delay),
NETSCOPE_BENCH_COMPILE_BACKEND (aot_eager on the CPU so CI does not wait
for inductor; inductor on CUDA: set it to inductor to measure on the CPU),
NETSCOPE_BENCH_COMPILE_MODE (default on the CPU, reduce-overhead on CUDA).
On the CPU pinning is a no-op, so its pair measures nothing but the noise.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import pytest
import torch

from netscope.client import Client
from netscope.server.rpc import convert
from netscope.server.models import transfer
from netscope.server.app import ModelSpec, Server, ServerConfig
from netscope.server.models.compiled import BACKEND_ENV
from netscope.server.imaging import DEFAULT_MAX_PIXELS, Preprocessing
from netscope.server.models.registry import Batching, Registry
from netscope.server.rpc.service import InspectorService
from netscope.v1 import inspector_pb2 as pb

from ..conftest import encode

DEVICE = torch.device(os.environ.get("NETSCOPE_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
ON_GPU = DEVICE.type == "cuda"
ARCH = os.environ.get("NETSCOPE_BENCH_MODEL", "resnet50" if ON_GPU else "mobilenet_v3_small")
BATCH = int(os.environ.get("NETSCOPE_BENCH_BATCH", "64" if ON_GPU else "8"))
CALLERS = int(os.environ.get("NETSCOPE_BENCH_CALLERS", "64"))
DELAY_MS = float(os.environ.get("NETSCOPE_BENCH_DELAY_MS", "10"))
COMPILE_BACKEND = os.environ.get("NETSCOPE_BENCH_COMPILE_BACKEND", "inductor" if ON_GPU else "aot_eager")
COMPILE_MODE = os.environ.get("NETSCOPE_BENCH_COMPILE_MODE", "reduce-overhead" if ON_GPU else "default")
HALF = "float16" if ON_GPU else "bfloat16"
OVERHEAD_MODELS = {"mnv3": "mobilenet_v3_small", "r18": "resnet18"}  # the session server's


def sync(result=None):
    if ON_GPU:
        torch.cuda.synchronize()
    return result


def label(benchmark, goal: str, variant: str, arch: str = ARCH, **extra) -> None:
    """serving_ratios.py pairs benchmarks by goal and variant."""
    benchmark.group = goal
    benchmark.extra_info.update(goal=goal, variant=variant, device=DEVICE.type, arch=arch, **extra)


@pytest.fixture(scope="module")
def jpeg(photos):
    return pb.Image(encoded=encode(photos["chelsea"], ".jpg"))


@pytest.fixture(scope="module")
def jpegs(photos):
    """BATCH JPEGs of the test photos (300x451 to 512x512)."""
    files = [encode(rgb, ".jpg") for rgb in photos.values()]
    return [pb.Image(encoded=files[i % len(files)]) for i in range(BATCH)]


# ---------------------------------------------------------------- overhead


@pytest.mark.parametrize("model", list(OVERHEAD_MODELS))
def test_predict_in_process(benchmark, server, jpeg, model):
    request = pb.PredictRequest(model=model, images=[jpeg], top_k=5)
    label(benchmark, f"overhead {model}", "in-process", OVERHEAD_MODELS[model])
    response = benchmark(server.service.predict_response, request)
    assert len(response.predictions[0].top_k) == 5


@pytest.mark.parametrize("model", list(OVERHEAD_MODELS))
def test_predict_over_grpc(benchmark, client, jpeg, model):
    request = pb.PredictRequest(model=model, images=[jpeg], top_k=5)
    label(benchmark, f"overhead {model}", "service", OVERHEAD_MODELS[model])
    response = benchmark(client.call, "Predict", request)
    assert len(response.predictions[0].top_k) == 5


# ---------------------------------------------------------------- dynamic batching


@pytest.fixture(scope="module")
def batching_server(store):
    """A server of its own, with an RPC worker per caller (the session's has 16)."""
    spec = ModelSpec("bench-batched", ARCH, device=DEVICE.type, max_batch_size=CALLERS, max_delay_ms=DELAY_MS,
                     max_queue=4 * CALLERS)
    srv = Server(ServerConfig(address="127.0.0.1:0", models=[spec], store=str(store), workers=CALLERS + 4,
                              max_images=max(256, CALLERS))).start()
    with Client(srv.address, timeout=300) as c:
        c.wait_ready()
        yield srv, c
    srv.stop(grace=1)


def test_batching_service_concurrent_callers(benchmark, batching_server, jpeg):
    """CALLERS callers with one JPEG each, all at once: the time until the last answer."""
    _, client = batching_server
    request = pb.PredictRequest(model="bench-batched", images=[jpeg], top_k=5)
    with ThreadPoolExecutor(CALLERS) as pool:
        def burst():
            futures = [pool.submit(client.call, "Predict", request) for _ in range(CALLERS)]
            wait(futures)
            return [f.result().timing.device_batch_size for f in futures]

        label(benchmark, "batching", "service", callers=CALLERS, delay_ms=DELAY_MS)
        sizes = benchmark(burst)
    assert len(sizes) == CALLERS and max(sizes) > 1


def test_batching_in_process_one_batch(benchmark, batching_server, jpeg):
    """The same CALLERS JPEGs as one request, through the same server's code in-process."""
    srv, _ = batching_server
    request = pb.PredictRequest(model="bench-batched", images=[jpeg] * CALLERS, top_k=5)
    label(benchmark, "batching", "in-process", callers=CALLERS, delay_ms=DELAY_MS)
    response = benchmark(srv.service.predict_response, request)
    assert response.timing.device_batch_size == CALLERS


# ---------------------------------------------------------------- the fast path, piece by piece


@pytest.mark.parametrize("variant", ["on", "off"])
def test_decode_pool(benchmark, jpegs, variant):
    r = Preprocessing()
    with ThreadPoolExecutor(convert.DEFAULT_DECODE_THREADS) as pool:
        label(benchmark, "decode_pool", variant, images=len(jpegs), threads=convert.DEFAULT_DECODE_THREADS)
        x = benchmark(convert.images_to_batch, jpegs, r, max_pixels=DEFAULT_MAX_PIXELS, max_images=len(jpegs),
                      pool=pool if variant == "on" else None)
    assert x.shape == (len(jpegs), 3, 224, 224)


@pytest.mark.parametrize("variant", ["on", "off"])
def test_device_decode(benchmark, jpegs, variant):
    """Decode + preprocess + (for off) the copy to the device: what a request pays before the forward."""
    r = Preprocessing()
    with ThreadPoolExecutor(convert.DEFAULT_DECODE_THREADS) as pool:
        def work():
            if variant == "on":
                return sync(convert.images_to_batch(jpegs, r, max_pixels=DEFAULT_MAX_PIXELS, max_images=len(jpegs),
                                                    pool=pool, device=DEVICE))
            x = convert.images_to_batch(jpegs, r, max_pixels=DEFAULT_MAX_PIXELS, max_images=len(jpegs), pool=pool,
                                        pin=transfer.can_pin(DEVICE))
            return sync(x.to(DEVICE, non_blocking=x.is_pinned()))

        label(benchmark, "device_decode", variant, images=len(jpegs))
        x = benchmark(work)
    assert x.device.type == DEVICE.type and x.shape == (len(jpegs), 3, 224, 224)


@pytest.mark.parametrize("variant", ["on", "off"])
def test_pinned(benchmark, variant):
    """Stack BATCH preprocessed images on the host and copy them to the device."""
    images = [torch.randn(3, 224, 224) for _ in range(BATCH)]
    pin = variant == "on" and transfer.can_pin(DEVICE)

    def work():
        x = transfer.stack(images, pin=pin)
        return sync(transfer.to_device(x, DEVICE, torch.float32, torch.contiguous_format))

    label(benchmark, "pinned", variant, images=BATCH, pinned=pin)
    assert benchmark(work).shape == (BATCH, 3, 224, 224)


@pytest.fixture(scope="module")
def registry(store):
    return Registry(store)


def _loaded(registry, name, **options):
    """A model of ARCH on DEVICE, warmed once at BATCH."""
    model = registry.load(name, ARCH, device=DEVICE.type, **options)
    x = torch.randn(BATCH, *model.input_size)
    model.infer(x)
    return model, x


@pytest.mark.parametrize("variant", ["on", "off"])
def test_compile(benchmark, registry, variant, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, COMPILE_BACKEND)
    options = {"compile": COMPILE_MODE, "compile_batch_sizes": [BATCH]} if variant == "on" else {}
    model, x = _loaded(registry, f"bench-compile-{variant}", **options)
    try:
        label(benchmark, "compile", variant, batch=BATCH, mode=COMPILE_MODE if variant == "on" else "eager",
              backend=COMPILE_BACKEND if variant == "on" else "eager")
        logits = benchmark(model.infer, x)
        assert logits.shape == (BATCH, model.num_classes)
        assert variant == "off" or model.compiled.batches > 0
    finally:
        registry.unload(model.id)


@pytest.mark.parametrize("variant", ["on", "off"])
def test_half_channels_last(benchmark, registry, variant):
    options = {"dtype": HALF, "channels_last": True} if variant == "on" else {}
    model, x = _loaded(registry, f"bench-half-{variant}", **options)
    try:
        label(benchmark, "half_channels_last", variant, batch=BATCH, dtype=HALF if variant == "on" else "float32")
        assert benchmark(model.infer, x).shape == (BATCH, model.num_classes)
    finally:
        registry.unload(model.id)


def test_the_fast_path_together_answers_like_the_plain_model(registry, jpegs):
    """Not a benchmark: device decode, channels-last, pinning and batching
    together give the plain model's answer (half precision aside), so the
    pairs above compare like with like."""
    service = InspectorService(registry)
    _loaded(registry, "bench-all-on", channels_last=True, device_decode=True, batching=Batching(BATCH, 5.0))
    _loaded(registry, "bench-all-off", pin_memory=False)
    try:
        request = pb.PredictRequest(model="bench-all-on", images=jpegs, top_k=1, return_probabilities=True)
        got = service.predict_response(request)
        request.model = "bench-all-off"
        want = service.predict_response(request)
        for g, w in zip(got.predictions, want.predictions):
            p, q = (convert.proto_to_numpy(x.probabilities) for x in (g, w))
            np.testing.assert_allclose(p, q, rtol=1e-3, atol=1e-3 * float(q.max()))
    finally:
        for m in ("bench-all-on", "bench-all-off"):
            registry.unload(m)
        service.close()
