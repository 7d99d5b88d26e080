"""Predict through a real server, checked against the same model in-process."""
from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
import torch

from netscope.client import NetscopeError
from netscope.server import imaging
from netscope.server.models.registry import build_architecture, default_recipe

from .conftest import MAX_PIXELS, encode


@pytest.fixture(scope="module")
def resnet18():
    return build_architecture("resnet18", 1000).eval()


def in_process_logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


def check_against(pred, logits_row: torch.Tensor, k: int):
    top_i = logits_row.topk(k).indices
    top_p = torch.softmax(logits_row, 0)[top_i]
    assert [s.index for s in pred.top_k] == top_i.tolist()
    np.testing.assert_allclose([s.probability for s in pred.top_k], top_p.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([s.logit for s in pred.top_k], logits_row[top_i].numpy(), rtol=1e-5, atol=1e-5)


def test_float_tensor_input_matches_in_process(client, resnet18):
    torch.manual_seed(1)
    x = torch.randn(3, 3, 224, 224)
    preds = client.predict("r18", x.numpy(), k=5, probabilities=True)
    logits = in_process_logits(resnet18, x)
    assert len(preds) == 3
    for pred, row in zip(preds, logits):
        check_against(pred, row, 5)
        np.testing.assert_allclose(pred.probabilities, torch.softmax(row, 0).numpy(), rtol=1e-5, atol=1e-8)
        assert pred.probabilities.dtype == np.float32 and pred.probabilities.shape == (1000,)


def test_encoded_images_match_in_process_preprocessing(client, resnet18, photos, photo_files):
    names = list(photo_files)
    preds = client.predict("r18", [photo_files[n] for n in names], k=3)
    recipe = default_recipe("resnet18")
    batch = torch.stack([imaging.preprocess(imaging.decode(photo_files[n].read_bytes()), recipe) for n in names])
    logits = in_process_logits(resnet18, batch)
    for pred, row in zip(preds, logits):  # batch order kept
        check_against(pred, row, 3)


def test_colour_order_is_rgb_for_every_input_form(client, photos):
    """PNG bytes (lossless), uint8 RGB pixels and a PIL image give identical answers."""
    from PIL import Image

    rgb = photos["astronaut"]
    as_png = client.predict("r18", encode(rgb, ".png"), k=5)[0]
    as_pixels = client.predict("r18", rgb, k=5)[0]
    as_pil = client.predict("r18", Image.fromarray(rgb), k=5)[0]
    bgr = client.predict("r18", np.ascontiguousarray(rgb[:, :, ::-1]), k=5)[0]
    assert as_png.top_k == as_pixels.top_k == as_pil.top_k
    assert [s.logit for s in bgr.top_k] != [s.logit for s in as_pixels.top_k]


def test_grey_image_is_accepted(client, photos):
    grey = photos["coffee"].mean(axis=2).astype(np.uint8)
    assert len(client.predict("mnv3", grey)[0].top_k) == 5


def test_default_k_is_five_and_probabilities_sum_to_one(client, photos):
    pred = client.predict("mnv3", photos["rocket"], probabilities=True)[0]
    assert len(pred.top_k) == 5
    assert pred.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert pred.top_k == sorted(pred.top_k, key=lambda s: -s.probability)


def test_timing_is_reported(client, photos):
    _, timing = client.predict_timed("mnv3", [photos["chelsea"]] * 2)
    assert timing.compute_ms > 0 and timing.preprocess_ms > 0 and timing.device_batch_size == 2


def test_concurrent_predictions_keep_their_own_answers(client, photos):
    names = list(photos)
    expected = {n: client.predict("mnv3", photos[n], k=3)[0] for n in names}
    errors, results = [], []

    def worker(i):
        try:
            n = names[i % len(names)]
            results.append(client.predict("mnv3", photos[n], k=3)[0] == expected[n])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 16 and all(results)


# ---------------------------------------------------------------- bad input

def expect(code, fn, *words):
    with pytest.raises(NetscopeError) as info:
        fn()
    assert info.value.code == code, info.value
    for w in words:
        assert w in info.value.message, info.value.message
    return info.value


@pytest.fixture(autouse=True)
def still_serving(client):
    yield
    assert client.health() == "SERVING"


def test_unknown_model(client, photos):
    expect(grpc.StatusCode.NOT_FOUND, lambda: client.predict("r19", photos["rocket"]), "r19", "r18")


def test_undecodable_image_names_its_index(client, photos):
    expect(grpc.StatusCode.INVALID_ARGUMENT,
           lambda: client.predict("r18", [photos["rocket"], b"not an image at all"]), "image 1", "decode")


def test_empty_request(client):
    err = expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.predict("r18", []), "no images in the request")
    assert [f for f, _ in err.field_violations] == ["images"]


def test_too_many_images_in_one_request_says_the_limit(client):
    """The session server takes 64 images a request (ServerConfig.max_images); the message speaks of
    images in a request, not of a "batch" (that is the device batch)."""
    images = np.zeros((65, 3, 32, 32), np.float32)  # a 4-D array: 65 images
    err = expect(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: client.predict("r18", images),
                 "65 images in one request", "limit of 64", "requests of at most 64")
    assert "batch" not in err.message
    assert (err.reason, err.metadata.get("limit")) == ("TOO_MANY_IMAGES", "64")
    assert [f for f, _ in err.field_violations] == ["images"]


@pytest.mark.parametrize("k", [-1, 1001])
def test_k_out_of_range(client, photos, k):
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.predict("r18", photos["rocket"], k=k), "top_k", "1000")


def test_tensor_bytes_must_match_shape(client):
    from netscope.v1 import inspector_pb2 as pb

    bad = pb.Image(tensor=pb.Tensor(dtype=pb.FLOAT32, shape=[3, 224, 224], data=b"\0" * 100))
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.predict("r18", bad), "image 0", "do not match shape")


def test_unsupported_dtype(client):
    from netscope.v1 import inspector_pb2 as pb

    bad = pb.Image(tensor=pb.Tensor(dtype=pb.INT32, shape=[8, 8, 3], data=b"\0" * 8 * 8 * 3 * 4))
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.predict("r18", bad), "image 0")
    worse = pb.Image(tensor=pb.Tensor(dtype=99, shape=[1], data=b"\0"))
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.predict("r18", worse), "unsupported dtype")


def test_wrong_float_shape(client):
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.predict("r18", np.zeros((1, 224, 224), np.float32)), "C=3")


def test_image_over_pixel_limit(client):
    side = int(MAX_PIXELS ** 0.5) + 10
    big = np.zeros((side, side, 3), np.uint8)
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.predict("r18", encode(big, ".png")), "image 0", "limit")


def test_batch_over_limit(client, photos):
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: client.predict("mnv3", [encode(photos["rocket"])] * 65), "65")


def test_request_over_message_limit(store, photos):
    from netscope.client import Client
    from netscope.server.app import ModelSpec, Server, ServerConfig

    small = Server(ServerConfig(address="127.0.0.1:0", models=[ModelSpec("sq", "squeezenet1_1")], store=str(store),
                                device="cpu", max_message_mb=1, workers=2)).start()
    try:
        with Client(small.address, timeout=60) as c:
            noise = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)  # 3 MB
            expect(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: c.predict("sq", noise))
            assert len(c.predict("sq", noise[:64, :64])[0].top_k) == 5  # and it still serves
    finally:
        small.stop(grace=0)


def test_top_k_ranks_by_logit_where_float32_probabilities_tie(client, photos):
    """An untrained mobilenet_v3_small's logits are ~1e-9 apart: every float32
    probability is the same, yet top-1 is the highest logit (as Explain's is)."""
    model = build_architecture("mobilenet_v3_small", 1000).eval()
    rgb = photos["chelsea"]
    (pred,) = client.predict("mnv3", rgb, k=3)
    (cls,) = client.explain("mnv3", rgb, method="grad_cam")[0]
    x = imaging.preprocess(rgb, default_recipe("mobilenet_v3_small")).unsqueeze(0)
    logits = in_process_logits(model, x)[0]
    assert [s.index for s in pred.top_k] == logits.topk(3).indices.tolist()
    assert pred.top_k[0].index == cls.target
