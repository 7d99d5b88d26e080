"""Service overhead: Predict over gRPC on loopback vs the same decode +
preprocess + forward + top-k in-process, on one model and one JPEG.

CI runs each once as a test (--benchmark-disable in pyproject). To measure:
    .venv/bin/python -m pytest tests/bench/test_serving_bench.py --benchmark-enable --benchmark-group-by=param:model
and divide the two means of a group (docs/PERFORMANCE.md records them).
"""
from __future__ import annotations

import pytest

from netscope.server import convert, predict
from netscope.server.imaging import DEFAULT_MAX_PIXELS
from netscope.v1 import inspector_pb2 as pb

from ..conftest import encode

MODELS = {"mnv3": "mobilenet_v3_small", "r18": "resnet18"}


@pytest.fixture(scope="module")
def jpeg(photos):
    return pb.Image(encoded=encode(photos["chelsea"], ".jpg"))


@pytest.mark.parametrize("model", list(MODELS))
def test_predict_in_process(benchmark, server, jpeg, model):
    loaded = server.registry.get(model)

    def work():
        x = convert.images_to_batch([jpeg], loaded.recipe, max_pixels=DEFAULT_MAX_PIXELS, max_batch=1)
        return predict.predict(loaded, x, 5)[0]

    assert len(benchmark(work)[0].indices) == 5


@pytest.mark.parametrize("model", list(MODELS))
def test_predict_over_grpc(benchmark, client, jpeg, model):
    request = pb.PredictRequest(model=model, images=[jpeg], top_k=5)
    response = benchmark(lambda: client.call("Predict", request))
    assert len(response.predictions[0].top_k) == 5
