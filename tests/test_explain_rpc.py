"""Explain and ExplainStream through a real server (`netscope explain` over folders: tests/jobs)."""
from __future__ import annotations

import cv2
import grpc
import numpy as np
import pytest
import torch

from netscope.client import NetscopeError
from netscope.server import explain as domain
from netscope.server import imaging
from netscope.server.registry import build_architecture, default_recipe

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
