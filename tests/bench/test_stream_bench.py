"""Grad-CAM over ExplainStream against the same work in-process, in one run on
the same model (resnet18, seeded untrained weights) and batch size:

    in_process   decode + preprocess + explain(..., "grad_cam") over batches of B
    over_stream  the same JPEGs through Client.explain_many to a real server
                 (loopback) whose ExplainStream batches B images per device batch

Issue 6's goal: over the stream, at least 80% of the in-process images/s, with
the server's device batches full. Each result's Timing says which device batch
size it rode in; the stream test records them.

CI runs each once as a test (pyproject: --benchmark-disable) on a few images.
To measure (docs/PERFORMANCE.md):

    NETSCOPE_STREAM_IMAGES=256 NETSCOPE_STREAM_BATCH=32 .venv/bin/python -m pytest \\
        tests/bench/test_stream_bench.py --benchmark-enable --benchmark-json=stream.json
    .venv/bin/python tests/bench/stream_ratio.py stream.json

NETSCOPE_STREAM_OVERLAY=1 has both sides draw the overlay PNGs too;
NETSCOPE_BENCH_DEVICE=cuda picks the device (default: cuda when there is one).
"""
from __future__ import annotations

import os
from collections import Counter

import cv2
import pytest
import torch

from netscope.client import Client
from netscope.server.rpc import convert
from netscope.server.app import ModelSpec, Server, ServerConfig
from netscope.server.explain import explain
from netscope.server.imaging import DEFAULT_MAX_PIXELS
from netscope.v1 import inspector_pb2 as pb

from ..conftest import encode, photo

IMAGES = int(os.environ.get("NETSCOPE_STREAM_IMAGES", "8"))
BATCH = int(os.environ.get("NETSCOPE_STREAM_BATCH", "4"))
OVERLAY = os.environ.get("NETSCOPE_STREAM_OVERLAY", "") not in ("", "0")
DEVICE = os.environ.get("NETSCOPE_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
ROUNDS = int(os.environ.get("NETSCOPE_STREAM_ROUNDS", "3"))
GROUP = f"grad_cam resnet18 {IMAGES} JPEGs 224x224 batch {BATCH}{' +overlay' if OVERLAY else ''} on {DEVICE}"


@pytest.fixture(scope="module")
def jpegs():
    """IMAGES distinct 224x224 JPEGs: shifted crops of the scikit-image photos."""
    photos = [photo(n) for n in ("chelsea", "astronaut", "coffee", "rocket")]
    out = []
    for i in range(IMAGES):
        rgb = photos[i % len(photos)]
        dy, dx = (i * 7) % 60, (i * 13) % 60
        out.append(encode(cv2.resize(rgb[dy : rgb.shape[0] - 60 + dy, dx : rgb.shape[1] - 60 + dx], (224, 224))))
    return out


@pytest.fixture(scope="module")
def bench_server(tmp_path_factory):
    config = ServerConfig(address="127.0.0.1:0", models=[ModelSpec("r18", "resnet18", device=DEVICE)],
                          store=str(tmp_path_factory.mktemp("store")), stream_batch=BATCH, max_images=max(BATCH, 64))
    srv = Server(config).start()
    yield srv
    srv.stop(grace=1)


def _sync():
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def test_grad_cam_in_process(benchmark, bench_server, jpegs):
    """The same work the server does, where it does it: decoding in this thread,
    explaining on the model's torch thread (server/runtime/torch_thread.py: a second
    OpenMP team beside the server's would slow both)."""
    m = bench_server.registry.get("r18")
    request = pb.ExplainRequest(render_overlay=OVERLAY)

    def run():
        for i in range(0, len(jpegs), BATCH):
            images = [pb.Image(encoded=j) for j in jpegs[i : i + BATCH]]
            x = convert.images_to_batch(images, m.recipe, max_pixels=DEFAULT_MAX_PIXELS, max_images=BATCH)
            result = m.run(lambda: explain(m.module, m.to_device(x), "grad_cam", arch=m.arch,
                                           class_names=m.class_names))
            if OVERLAY:
                for image, (cm,) in zip(x, result.images):
                    convert.class_map_to_proto(cm, image, m.recipe, request)
        _sync()
        return len(jpegs)

    benchmark.group = GROUP
    benchmark.extra_info.update(impl="in_process", images=IMAGES, batch=BATCH, device=DEVICE, overlay=OVERLAY)
    assert benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1) == IMAGES


def test_grad_cam_over_stream(benchmark, bench_server, jpegs):
    batches: Counter = Counter()

    def run():
        batches.clear()
        with Client(bench_server.address, timeout=600) as client:
            for r in client.explain_many(enumerate(jpegs), model="r18", method="grad_cam", overlay=OVERLAY,
                                         in_flight=2 * BATCH):
                assert r.error is None, r.error
                batches[r.timing.device_batch_size] += 1
        return sum(batches.values())

    benchmark.group = GROUP
    benchmark.extra_info.update(impl="over_stream", images=IMAGES, batch=BATCH, device=DEVICE, overlay=OVERLAY)
    assert benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1) == IMAGES
    # images by the device batch they rode in (last round): full batches are {BATCH: IMAGES}
    benchmark.extra_info["device_batches"] = {str(k): v for k, v in sorted(batches.items())}
    assert max(batches) <= BATCH
