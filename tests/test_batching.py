"""Dynamic batching through a real server: same answers, shared device batches, bounded queue."""
from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
import torch

from netscope.client import NetscopeError


def concurrently(n, fn):
    results, errors = [None] * n, []

    def run(i):
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


@pytest.fixture(scope="module")
def batched(client):
    client.load_model("mnv3b", "mobilenet_v3_small", max_batch_size=8, max_delay_ms=100)
    yield "mnv3b"
    client.unload_model("mnv3b")


def test_batched_answers_equal_unbatched(client, batched):
    torch.manual_seed(3)
    xs = torch.randn(8, 3, 224, 224).numpy()
    expected = [client.predict("mnv3", x, k=5)[0] for x in xs]
    results, errors = concurrently(8, lambda i: client.predict_timed(batched, xs[i], k=5))
    assert not errors
    for (preds, _), exp in zip(results, expected):
        assert [s.index for s in preds[0].top_k] == [s.index for s in exp.top_k]
        np.testing.assert_allclose([s.logit for s in preds[0].top_k], [s.logit for s in exp.top_k], rtol=1e-4, atol=1e-4)
    sizes = [t.device_batch_size for _, t in results]
    assert max(sizes) > 1, sizes  # requests really shared a device batch
    assert all(t.queue_ms >= 0 for _, t in results)


def test_a_request_larger_than_the_batch_runs_alone(client, batched):
    preds, timing = client.predict_timed(batched, torch.randn(9, 3, 224, 224).numpy())
    assert len(preds) == 9 and timing.device_batch_size == 9


def test_full_queue_is_resource_exhausted_and_the_model_recovers(client, photos):
    client.load_model("tiny-queue", "resnet18", max_batch_size=2, max_delay_ms=200, max_queue=1)
    try:
        x = photos["chelsea"]
        results, errors = concurrently(24, lambda i: client.predict("tiny-queue", x, k=1))
        codes = {e.code for e in errors if isinstance(e, NetscopeError)}
        assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}, errors[:3]
        assert "queued" in errors[0].message
        assert any(r is not None for r in results)
        assert client.predict("tiny-queue", x, k=1)[0].top1.label  # serves again once drained
    finally:
        client.unload_model("tiny-queue")
