"""Dynamic batching of Explain through a real server: concurrent calls asking
for the same explanation share one device batch, each caller gets its own
maps (equal to what it gets alone), other explanations and bad inputs stay
apart, seeded random methods run alone; and the Batcher's failure rule."""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import torch

from netscope.client import NetscopeError
from netscope.server.runtime.batching import Batcher, Work
from netscope.server.explain import Options
from netscope.server.runtime.explain_batching import batchable
from netscope.server.models.registry import Batching

from .conftest import encode
from .test_batching import concurrently

NAMES = ("chelsea", "astronaut", "coffee", "rocket")


@pytest.fixture(scope="module")
def batched(client):
    # The same seeded untrained weights as the session's unbatched "mnv3".
    client.load_model("mnv3x", "mobilenet_v3_small", max_batch_size=8, max_delay_ms=400)
    yield "mnv3x"
    client.unload_model("mnv3x")


def assert_same_maps(got, want):
    assert [c.target for c in got] == [c.target for c in want]
    for g, w in zip(got, want):
        scale = float(np.abs(w.heatmap).max()) or 1.0
        np.testing.assert_allclose(g.heatmap, w.heatmap, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(g.heatmap_upsampled, w.heatmap_upsampled, rtol=1e-4, atol=1e-5 * scale)
        assert g.score == pytest.approx(w.score, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("method, options", [
    ("grad_cam", {}),                                         # a gradient CAM
    ("eigen_cam", {}),                                        # gradient-free, an SVD per image
    ("integrated_gradients", {"steps": 8, "baseline": "blur"}),  # Captum, a per-image baseline
])
def test_concurrent_explains_ride_one_batch_and_match_alone(client, batched, photos, method, options):
    images = [photos[n] for n in NAMES]
    alone = [client.explain("mnv3", image, method=method, top_k=2, **options)[0] for image in images]
    results, errors = concurrently(len(images), lambda i: client.explain_timed(batched, images[i], method=method,
                                                                               top_k=2, **options))
    assert not errors, errors
    sizes = [t.device_batch_size for _, t in results]
    assert max(sizes) > 1, sizes  # the calls really shared a device batch
    for (classes, timing), want in zip(results, alone):
        assert len(classes) == 1  # its own image only, not the batch's
        assert_same_maps(classes[0], want)
        assert timing.queue_ms >= 0 and timing.compute_ms > 0


def test_different_explanations_never_share_a_batch(client, batched, photos):
    asks = [("grad_cam", "chelsea"), ("eigen_cam", "chelsea"), ("grad_cam", "coffee"), ("eigen_cam", "coffee")]
    alone = [client.explain("mnv3", photos[name], method=method)[0] for method, name in asks]
    results, errors = concurrently(4, lambda i: client.explain_timed(batched, photos[asks[i][1]], method=asks[i][0]))
    assert not errors, errors
    for (classes, timing), want in zip(results, alone):
        assert timing.device_batch_size <= 2
        assert_same_maps(classes[0], want)


def test_a_bad_image_fails_only_its_caller(client, batched, photos):
    good = [encode(photos[n]) for n in NAMES[:3]]
    requests = [[good[0]], [good[1], b"not an image at all"], [good[2]], [good[0], good[2]]]

    def call(i):
        return client.explain_timed(batched, requests[i], method="grad_cam")

    results, _ = concurrently(4, lambda i: _outcome(call, i))
    bad = results[1]
    assert isinstance(bad, NetscopeError) and bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "image 1" in bad.message
    ok = [r for i, r in enumerate(results) if i != 1]
    assert all(not isinstance(r, Exception) for r in ok), ok
    assert max(t.device_batch_size for _, t in ok) > 1
    for (classes, _), request in zip(ok, [requests[0], requests[2], requests[3]]):
        assert len(classes) == len(request)
        want = client.explain("mnv3", request, method="grad_cam")
        for got_image, want_image in zip(classes, want):
            assert_same_maps(got_image, want_image)


def _outcome(call, i):
    try:
        return call(i)
    except NetscopeError as exc:
        return exc


def test_seeded_random_methods_run_alone_and_reproduce(client, batched, photos):
    images = [photos[n] for n in NAMES[:3]]
    opts = dict(method="smooth_grad_cam_plus_plus", samples=2, seed=7)
    alone = [client.explain("mnv3", image, **opts)[0] for image in images]
    results, errors = concurrently(3, lambda i: client.explain_timed(batched, images[i], **opts))
    assert not errors, errors
    for (classes, timing), want in zip(results, alone):
        # Alone and at once: not held in the batcher's 400 ms window (the
        # microseconds between the explain stages still count as queue time).
        assert timing.device_batch_size == 1 and timing.queue_ms < 50
        assert_same_maps(classes[0], want)


def test_which_explanations_batch():
    assert batchable("grad_cam", Options())
    assert batchable("score_cam", Options(batch_size=8))
    assert batchable("integrated_gradients", Options(baseline="blur", seed=3))  # seed unused: no noise drawn
    assert batchable("smooth_grad_cam_plus_plus", Options())  # fresh noise per image either way
    for method, options in [("smooth_grad_cam_plus_plus", Options(seed=1)), ("ss_cam", Options(seed=1)),
                            ("gradient_shap", Options(seed=1)), ("saliency", Options(noise_tunnel="smoothgrad", seed=1)),
                            ("integrated_gradients", Options(baseline="noise", seed=1))]:
        assert not batchable(method, options), method


def test_every_method_declared_to_draw_noise_runs_alone_when_seeded():
    """Read from the registry, not a hand-kept list: a new random method
    (random_cam) is kept out of seeded batches by its declaration alone."""
    from netscope.server.explain.methods import methods

    assert methods()["random_cam"].draws_noise
    for name, spec in methods().items():
        assert batchable(name, Options()), name  # unseeded: fresh noise per image either way
        assert batchable(name, Options(seed=1)) == (spec.may_batch and not spec.draws_noise), name


# ---------------------------------------------------------------- the Batcher itself


def rows_work(rpc: str, key, log: list | None = None) -> Work:
    """Work that doubles a batch, and refuses any batch holding a negative row."""

    def compute(x: torch.Tensor) -> torch.Tensor:
        if log is not None:
            log.append(x.shape[0])
        if (x < 0).any():
            raise ValueError("a negative row")
        return x * 2

    return Work(rpc, key, compute, lambda out, start, stop: out[start:stop])


def test_a_failed_shared_batch_is_rerun_alone_so_only_the_bad_request_fails():
    batcher = Batcher("unit", Batching(max_batch_size=8, max_delay_ms=300))
    try:
        log: list[int] = []
        work = rows_work("Predict", "k", log)
        xs = [torch.full((1, 2), float(i)) for i in range(4)]
        xs[2] = -xs[2] - 1
        futures = [batcher.submit(x, work) for x in xs]
        for i, f in enumerate(futures):
            if i == 2:
                with pytest.raises(ValueError):
                    f.result(timeout=10)
            else:
                assert torch.equal(f.result(timeout=10).value, xs[i] * 2)
        assert log[0] == 4 and log[1:] == [1, 1, 1, 1]  # one shared try, then each alone
    finally:
        batcher.close()


def test_keys_keep_their_place_and_never_mix():
    batcher = Batcher("unit", Batching(max_batch_size=4, max_delay_ms=200))
    try:
        a, b = rows_work("Explain", "a"), rows_work("Explain", "b")
        futures = [batcher.submit(torch.full((1, 2), float(i)), a if i % 2 == 0 else b) for i in range(6)]
        results = [f.result(timeout=10) for f in futures]
        assert [r.device_batch_size for r in results] == [3, 3, 3, 3, 3, 3]
        assert [float(r.value[0, 0]) for r in results] == [2.0 * i for i in range(6)]
        assert batcher.depth() == {}
    finally:
        batcher.close()


def test_a_full_queue_refuses_at_once():
    batcher = Batcher("unit", Batching(max_batch_size=4, max_delay_ms=1000, max_queue=1))
    try:
        # Both workers take one and wait up to 1 s for company; the third waits in line.
        first = []
        for key in ("a", "b"):
            first.append(batcher.submit(torch.ones(1, 2), rows_work("Predict", key)))
            wait_until(lambda: batcher.depth() == {})
        third = batcher.submit(torch.ones(1, 2), rows_work("Explain", "c"))
        assert batcher.depth() == {"Explain": 1}
        start = time.perf_counter()
        with pytest.raises(Exception) as refused:
            batcher.submit(torch.ones(1, 2), rows_work("Predict", "d"))
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queued" in str(refused.value)
        assert time.perf_counter() - start < 0.5  # refused at once, not after the batch delay
        assert [f.result(timeout=10).device_batch_size for f in [*first, third]] == [1, 1, 1]
        assert batcher.depth() == {}
    finally:
        batcher.close()


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_close_finishes_what_is_queued_then_refuses():
    batcher = Batcher("unit", Batching(max_batch_size=4, max_delay_ms=100))
    future = batcher.submit(torch.ones(1, 2), rows_work("Predict", "k"))
    batcher.close()
    assert torch.equal(future.result(timeout=10).value, torch.full((1, 2), 2.0))
    with pytest.raises(Exception) as refused:
        batcher.submit(torch.ones(1, 2), rows_work("Predict", "k"))
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    for t in batcher._threads:
        t.join(timeout=5)
        assert not t.is_alive()
