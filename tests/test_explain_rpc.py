"""Explain and ExplainStream through a real server (`netscope explain` over folders: tests/jobs)."""
from __future__ import annotations

import threading
import time

import cv2
import grpc
import numpy as np
import pytest
import torch

from netscope.client import NetscopeError
from netscope.server import explain as domain
from netscope.server import imaging
from netscope.server.models.registry import build_architecture, default_recipe
from netscope.v1 import inspector_pb2 as pb

from .conftest import encode
from .test_predict import expect


@pytest.fixture(scope="module")
def mnv3():
    return build_architecture("mobilenet_v3_small", 1000).eval()


@pytest.fixture(autouse=True)
def still_serving(client):
    yield
    assert client.health() == "SERVING"


def test_grad_cam_equals_in_process(client, mnv3, photos):
    rgb = [photos["chelsea"], photos["astronaut"]]
    got = client.explain("mnv3", rgb, method="grad_cam", overlay=True, heatmap_png=True)
    recipe = default_recipe("mobilenet_v3_small")
    x = torch.stack([imaging.preprocess(imaging.as_rgb(r), recipe) for r in rgb])
    ref = domain.explain(mnv3, x, "grad_cam", arch="mobilenet_v3_small", class_names=[str(i) for i in range(1000)])
    for image, expected in zip(got, ref.images):
        (cls,), (exp,) = image, expected
        assert cls.target == exp.target
        np.testing.assert_allclose(cls.heatmap, exp.heatmap.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cls.heatmap_upsampled, exp.upsampled.numpy(), rtol=1e-5, atol=1e-6)
        overlay = cv2.imdecode(np.frombuffer(cls.overlay_png, np.uint8), cv2.IMREAD_COLOR)
        assert overlay.shape == (224, 224, 3)
        assert cv2.imdecode(np.frombuffer(cls.heatmap_png, np.uint8), cv2.IMREAD_COLOR).shape == (224, 224, 3)


def test_top_k_targets_and_a_captum_method(client, photos):
    (classes,) = client.explain("mnv3", photos["rocket"], method="grad_cam", top_k=3)
    assert len(classes) == 3 and classes[0].probability >= classes[1].probability >= classes[2].probability
    (sal,) = client.explain("mnv3", photos["rocket"], method="saliency", target=7)
    assert sal[0].target == 7 and sal[0].heatmap.shape == (224, 224)


def test_faithfulness_is_reported(client, photos):
    (classes,) = client.explain("mnv3", photos["coffee"][:96, :96], method="grad_cam", faithfulness=True)
    f = classes[0].faithfulness
    assert f is not None and 0 <= f.deletion_auc <= 1 and 0 <= f.insertion_auc <= 1 and f.average_drop >= 0


@pytest.mark.parametrize("kwargs, code, word", [
    ({"model": "nope"}, grpc.StatusCode.NOT_FOUND, "nope"),
    ({"method": "grad_cam_pp"}, grpc.StatusCode.INVALID_ARGUMENT, "grad_cam_plus_plus"),
    ({"layers": "features.99"}, grpc.StatusCode.NOT_FOUND, "features"),
    ({"target": 5000}, grpc.StatusCode.INVALID_ARGUMENT, "5000"),
    ({"target": "no such label"}, grpc.StatusCode.INVALID_ARGUMENT, "label"),
    ({"method": "integrated_gradients", "steps": -1}, grpc.StatusCode.INVALID_ARGUMENT, "steps"),
    ({"method": "occlusion", "window": 10_000}, grpc.StatusCode.INVALID_ARGUMENT, "window"),
])
def test_bad_explain_requests(client, photos, kwargs, code, word):
    kwargs = dict(kwargs)
    model = kwargs.pop("model", "mnv3")
    expect(code, lambda: client.explain(model, photos["rocket"], **kwargs), word)


def test_undecodable_image(client):
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.explain("mnv3", [b"garbage"]), "image 0")


def test_stream_keeps_ids_and_isolates_a_bad_item(client, photos):
    items = [(f"img{i}", encode(photos["chelsea"] if i % 2 else photos["rocket"])) for i in range(6)]
    items.insert(3, ("broken", b"not an image"))
    results = {r.id: r for r in client.explain_many(iter(items), model="mnv3", in_flight=3)}
    assert set(results) == {i for i, _ in items}
    assert results["broken"].error.code == grpc.StatusCode.INVALID_ARGUMENT
    single = client.explain("mnv3", items[0][1])[0][0]
    np.testing.assert_allclose(results["img0"].classes[0].heatmap, single.heatmap, rtol=1e-4, atol=1e-5)


def stream_images(server, model: str) -> float:
    """Images the server has explained over ExplainStream for `model` (its metrics)."""
    value = server.service.metrics.registry.get_sample_value(
        "netscope_inference_count_total", {"rpc": "ExplainStream", "model": model})
    return value or 0.0


def stream_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("explain-stream")]


def wait_until(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_stream_fills_device_batches(client, server, photos):
    small = encode(cv2.resize(photos["coffee"], (64, 64)))
    before = stream_images(server, "mnv3")
    results = list(client.explain_many(((str(i), small) for i in range(64)), model="mnv3", in_flight=64))
    sizes = [r.timing.device_batch_size for r in results]
    assert len(results) == 64 and all(r.error is None for r in results)
    # the first batch leaves as soon as the device is free; the next fills while it computes
    assert max(sizes) == 32 and sizes.count(32) >= 32
    assert stream_images(server, "mnv3") - before == 64


def test_a_cancelled_stream_stops_the_server_working_on_its_items(client, server, photos):
    """The caller cancels after its first answer: the server explains at most the
    batches already under way (computing, decoded, drawn: 3 x 32), not the ~150
    more it holds, and every stage of the stream ends."""
    assert wait_until(lambda: not stream_threads(), 10), stream_threads()  # earlier streams are gone
    small = encode(cv2.resize(photos["chelsea"], (64, 64)))
    n, before = 300, stream_images(server, "r18")

    def items():
        for i in range(n):
            req = pb.ExplainRequest(model="r18", method="grad_cam")
            req.images.add(encoded=small)
            yield pb.ExplainStreamRequest(id=str(i), request=req)

    call = client.stub.ExplainStream(items(), timeout=120)  # no flow control of our own: the server holds many
    first = next(call)
    assert not first.HasField("error")
    call.cancel()
    ended = wait_until(lambda: not stream_threads())
    explained = stream_images(server, "r18") - before
    time.sleep(0.5)
    assert stream_images(server, "r18") - before == explained  # and stays stopped
    assert 1 <= explained <= 3 * 32, f"{explained} images explained after the cancel"
    assert ended, f"still running: {stream_threads()}"


def test_stream_items_with_other_specs_keep_their_own_answers(client, photos):
    """Items that ask for different things are batched apart; one whose target no
    model has fails alone, in its own response, and the rest are answered."""
    small = encode(cv2.resize(photos["rocket"], (64, 64)))

    def items():
        for i in range(12):
            req = pb.ExplainRequest(model="mnv3", method="grad_cam" if i % 3 else "saliency")
            if i % 4 == 1:
                req.target.index = 5000
            req.images.add(encoded=small)
            yield pb.ExplainStreamRequest(id=f"item{i}", request=req)

    answers = {r.id: r for r in client.stub.ExplainStream(items(), timeout=120)}
    assert sorted(answers) == sorted(f"item{i}" for i in range(12))
    for i in range(12):
        r = answers[f"item{i}"]
        if i % 4 == 1:
            assert r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "5000" in r.error.message
        else:
            assert not r.HasField("error") and r.response.method == ("grad_cam" if i % 3 else "saliency")
