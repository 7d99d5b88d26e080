"""Every RPC that runs a model, through a real server, on a CUDA model against
the same seeded model on the CPU in the same server (needs CUDA: skipped
elsewhere; scripts/gpu_check.sh runs it on a lent GPU). The server keeps its
defaults (TF32 allowed on the GPU), so the tolerances are a GPU's, not bits.

NETSCOPE_TEST_GPU=cpu runs it with both models on the CPU: a check of the
test itself on a machine without a GPU.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from netscope.client import Client
from netscope.server.app import ModelSpec, Server, ServerConfig

from .conftest import encode

GPU = os.environ.get("NETSCOPE_TEST_GPU", "cuda")
pytestmark = pytest.mark.skipif(GPU == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """One server: `gpu` (resnet18 on the GPU, dynamic batching, pinned
    staging) and `cpu` (the same seeded weights on the CPU)."""
    store = tmp_path_factory.mktemp("cuda-store")
    srv = Server(ServerConfig(address="127.0.0.1:0", store=str(store), workers=8, models=[
        ModelSpec("gpu", "resnet18", device=GPU, max_batch_size=8, max_delay_ms=5.0),
        ModelSpec("cpu", "resnet18", device="cpu"),
    ])).start()
    try:
        with Client(srv.address, timeout=120) as c:
            c.wait_ready(timeout=120)
            yield c
    finally:
        srv.stop(grace=0)


@pytest.fixture(scope="module")
def jpegs(photos):
    return [encode(photos[n]) for n in ("chelsea", "coffee", "rocket", "astronaut")]


def test_predict_on_the_gpu_matches_the_cpu(both, jpegs):
    gpu = both.predict("gpu", jpegs, k=5, probabilities=True)
    cpu = both.predict("cpu", jpegs, k=5, probabilities=True)
    for g, c in zip(gpu, cpu):
        assert g.top1.index == c.top1.index
        np.testing.assert_allclose(g.probabilities, c.probabilities, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("method", ["grad_cam", "layer_cam", "integrated_gradients"])
def test_explain_on_the_gpu_matches_the_cpu(both, jpegs, method):
    options = dict(steps=8) if method == "integrated_gradients" else {}
    gpu = both.explain("gpu", jpegs[:2], method=method, overlay=True, **options)
    cpu = both.explain("cpu", jpegs[:2], method=method, **options)
    for g, c in zip(gpu, cpu):
        assert g[0].target == c[0].target and g[0].overlay_png.startswith(b"\x89PNG")
        a, b = (m[0].heatmap_upsampled / (np.abs(m[0].heatmap_upsampled).max() or 1.0) for m in (g, c))
        assert float(np.abs(a - b).mean()) < 1e-2, method


def test_a_stream_on_the_gpu_answers_every_item_like_explain(both, jpegs):
    items = [(f"img{i}", jpegs[i % len(jpegs)]) for i in range(40)]
    got = {r.id: r for r in both.explain_many(items, model="gpu", in_flight=16)}
    assert sorted(got) == sorted(i for i, _ in items) and all(r.error is None for r in got.values())
    alone = both.explain("gpu", jpegs[0])[0][0]
    np.testing.assert_allclose(got["img0"].classes[0].heatmap, alone.heatmap, rtol=1e-3, atol=1e-4)


def test_inspection_on_the_gpu_matches_the_cpu(both, jpegs):
    g = both.feature_maps("gpu", jpegs[:1], ["layer1", "layer4"])[0]
    c = both.feature_maps("cpu", jpegs[:1], ["layer1", "layer4"])[0]
    for layer in ("layer1", "layer4"):
        np.testing.assert_allclose(g[layer].channel_mean, c[layer].channel_mean, rtol=1e-2, atol=1e-3)
    gs = both.layer_stats("gpu", ["fc"], images=jpegs[:2])
    cs = both.layer_stats("cpu", ["fc"], images=jpegs[:2])
    assert gs.loss == pytest.approx(cs.loss, rel=1e-2)
    assert gs.layer("fc").grad_norm == pytest.approx(cs.layer("fc").grad_norm, rel=2e-2)
