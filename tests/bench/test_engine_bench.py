"""One explanation job over the same folder through each engine, in one run on
the same model (resnet18, seeded untrained weights), method (grad_cam) and
device batch, overlays drawn as a job draws them:

    in_process  the server's own stages (InspectorService.explain_response) in
                this process, on requests of BATCH images read from the folder
    grpc_job    `netscope explain`'s job (ExplainJob) to a real server on
                loopback over ExplainStream, writing overlays and the index
    ray_job     `netscope explain --engine ray`'s job (RayJob) on a local Ray
                of RAY_CPUS CPUs started once for the module: decode tasks,
                the explain actor pool (started, model loaded, per job: part
                of a job's cost), writing the same folder

Each round writes a fresh folder (a rerun would skip everything). Needs the
ray extra; slow (a Ray cluster), so it runs with NETSCOPE_SLOW=1. To measure
(docs/PERFORMANCE.md):

    NETSCOPE_SLOW=1 NETSCOPE_ENGINE_IMAGES=128 .venv/bin/python -m pytest tests/bench/test_engine_bench.py \\
        --benchmark-enable --benchmark-json=engines.json
    .venv/bin/python tests/bench/engine_rates.py engines.json
"""
from __future__ import annotations

import itertools
import os

import cv2
import pytest
import torch

from netscope.client.client import explain_request
from netscope.client.jobs import ExplainJob, find_images
from netscope.server.app import ModelSpec, Server, ServerConfig
from netscope.v1 import inspector_pb2 as pb

from ..conftest import encode, photo

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not os.environ.get("NETSCOPE_SLOW"),
                                                   reason="starts a Ray cluster (~30 s); NETSCOPE_SLOW=1")]
ray = pytest.importorskip("ray")

IMAGES = int(os.environ.get("NETSCOPE_ENGINE_IMAGES", "16"))
BATCH = int(os.environ.get("NETSCOPE_ENGINE_BATCH", "32"))
ROUNDS = int(os.environ.get("NETSCOPE_ENGINE_ROUNDS", "2"))
RAY_CPUS = int(os.environ.get("NETSCOPE_ENGINE_RAY_CPUS", str(os.cpu_count() or 2)))
DEVICE = os.environ.get("NETSCOPE_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
GROUP = f"grad_cam resnet18 job of {IMAGES} JPEGs 224x224, batch {BATCH}, overlays, on {DEVICE}"
_runs = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """IMAGES distinct 224x224 JPEGs: shifted crops of the scikit-image photos."""
    root = tmp_path_factory.mktemp("engine-photos")
    photos = [photo(n) for n in ("chelsea", "astronaut", "coffee", "rocket")]
    for i in range(IMAGES):
        rgb = photos[i % len(photos)]
        dy, dx = (i * 7) % 60, (i * 13) % 60
        crop = cv2.resize(rgb[dy: rgb.shape[0] - 60 + dy, dx: rgb.shape[1] - 60 + dx], (224, 224))
        (root / f"{i:05d}.jpg").write_bytes(encode(crop))
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("engine-store")


@pytest.fixture(scope="module")
def bench_server(store):
    config = ServerConfig(address="127.0.0.1:0", models=[ModelSpec("r18", "resnet18", device=DEVICE)],
                          store=str(store), stream_batch=BATCH, max_images=max(BATCH, 64))
    srv = Server(config).start()
    yield srv
    srv.stop(grace=1)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


def spec():
    return explain_request("r18", [], "grad_cam", None, (), True, False, "", 0.0, False, 0, {})


def fresh(tmp_path):
    return (tmp_path / f"out{next(_runs)}",), {}


def test_in_process(benchmark, bench_server, folder):
    images = find_images([folder])
    service = bench_server.service

    def run():
        for start in range(0, len(images), BATCH):
            req = spec()
            for _, path in images[start:start + BATCH]:
                req.images.add(encoded=path.read_bytes())
            service.explain_response(req)

    benchmark.group = GROUP
    benchmark.extra_info.update(impl="in_process", images=IMAGES)
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)


def test_grpc_job(benchmark, bench_server, folder, tmp_path):
    images = find_images([folder])

    def run(out):
        report = ExplainJob([bench_server.address], spec(), out).run(images=images)
        assert report.explained == IMAGES

    benchmark.group = GROUP
    benchmark.extra_info.update(impl="grpc_job", images=IMAGES)
    benchmark.pedantic(run, setup=lambda: fresh(tmp_path), rounds=ROUNDS, iterations=1)


def test_ray_job(benchmark, cluster, store, folder, tmp_path):
    from netscope.jobs.ray import ModelSource, RayJob

    images = find_images([folder])
    model = ModelSource("r18", "resnet18", store=str(store), device=DEVICE)

    def run(out):
        report = RayJob(spec(), out, model, stream_batch=BATCH).run(images=images)
        assert report.explained == IMAGES

    benchmark.group = GROUP
    benchmark.extra_info.update(impl="ray_job", images=IMAGES, ray_cpus=RAY_CPUS)
    benchmark.pedantic(run, setup=lambda: fresh(tmp_path), rounds=ROUNDS, iterations=1)
