"""torch.compile of Predict's forward, through a real server.

The compile path (load-time compile and warm-up per batch size, padding to a
compiled size, eager above the largest, explanations on the eager module,
failures) runs with a cheap Dynamo backend chosen by the private
NETSCOPE_COMPILE_BACKEND knob; one test compiles with the real inductor (C++
on the CPU) and is slow (NETSCOPE_SLOW=1). CUDA graphs ("reduce-overhead"
on a GPU) are not exercised here: no GPU was lent to the session that wrote
this."""
from __future__ import annotations

import os

import grpc
import numpy as np
import pytest
import torch

from netscope.client import NetscopeError
from netscope.server.models.compiled import BACKEND_ENV


def batch(n: int, seed: int = 0, size: int = 224) -> np.ndarray:
    """n preprocessed images at the model's input size (simple_cnn: 3x224x224)."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)).numpy()


@pytest.fixture(scope="module")
def models(client):
    """simple_cnn twice, the same seeded weights: eager, and compiled for
    batch sizes 1 and 4 with dynamic batching up to 4."""
    saved = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = "aot_eager"
    try:
        client.load_model("cnn", "simple_cnn", num_classes=10)
        info = client.load_model("cnnc", "simple_cnn", num_classes=10, compile="default", max_batch_size=4,
                                 max_delay_ms=50)
    finally:
        if saved is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = saved
    yield info
    for m in ("cnn", "cnnc"):
        client.unload_model(m)


def probabilities(client, model: str, x: np.ndarray):
    preds, timing = client.predict_timed(model, x, probabilities=True)
    return np.stack([p.probabilities for p in preds]), timing


def test_compiled_model_reports_its_batch_sizes(models):
    assert models.compile == "default" and models.compile_batch_sizes == [1, 4]


@pytest.mark.parametrize("n, size", [(1, 224), (3, 224), (4, 224), (6, 224), (2, 96)])
def test_compiled_predictions_equal_eager(server, client, models, n, size):
    """A compiled size; padded up to 4; a compiled size; larger than any
    (eager); tensors of another size (eager, not recompiled)."""
    compiled = server.registry.get("cnnc").compiled
    before = compiled.batches
    x = batch(n, seed=n, size=size)
    want, _ = probabilities(client, "cnn", x)
    got, timing = probabilities(client, "cnnc", x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert timing.device_batch_size == n
    assert compiled.batches - before == (1 if n <= 4 and size == 224 else 0)


def test_explanations_of_a_compiled_model_use_the_eager_module(client, models):
    x = batch(2, seed=9)
    want = client.explain("cnn", x, method="grad_cam")
    got = client.explain("cnnc", x, method="grad_cam")
    for g, w in zip(got, want):
        np.testing.assert_allclose(g[0].heatmap, w[0].heatmap, rtol=1e-5, atol=1e-7)


def test_compile_options_out_of_range_are_invalid_argument(client, photos):
    for kwargs, words in [({"compile": "fastest"}, "unknown compile mode 'fastest'"),
                          ({"compile": "default", "compile_batch_sizes": [0]}, "out of range"),
                          ({"compile": "default", "compile_batch_sizes": list(range(1, 10))}, "at most 8"),
                          ({"compile_batch_sizes": [2]}, "without compile")]:
        with pytest.raises(NetscopeError) as err:
            client.load_model("nope", "simple_cnn", **kwargs)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and words in err.value.message, err.value.message
    assert "nope" not in [m.model for m in client.list_models()]
    assert client.predict("mnv3", photos["chelsea"])[0].top1.label  # still serving


def test_a_model_that_fails_to_compile_is_not_loaded(client, photos, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "no_such_backend")
    with pytest.raises(NetscopeError) as err:
        client.load_model("cnnbad", "simple_cnn", num_classes=10, compile="default")
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "torch.compile" in err.value.message and "without compile" in err.value.message
    assert "cnnbad" not in [m.model for m in client.list_models()]
    assert client.predict("mnv3", photos["chelsea"])[0].top1.label


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("NETSCOPE_SLOW"), reason="compiles with inductor (~1 min cold); NETSCOPE_SLOW=1")
def test_inductor_compiled_predictions_equal_eager(client, models):
    info = client.load_model("cnni", "simple_cnn", num_classes=10, compile="max-autotune-no-cudagraphs",
                             compile_batch_sizes=[2])
    try:
        assert info.compile_batch_sizes == [2]
        for n in (1, 2, 5):
            x = batch(n, seed=20 + n)
            want, _ = probabilities(client, "cnn", x)
            got, _ = probabilities(client, "cnni", x)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    finally:
        client.unload_model("cnni")
