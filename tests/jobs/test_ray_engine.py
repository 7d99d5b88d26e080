"""`netscope explain --engine ray` (netscope.jobs.ray) on a local Ray cluster
of the machine's 2 CPUs, started once for the module: the same answers as the
gRPC path, number for number; a killed explain actor is restarted and the job
finishes; a killed driver's rerun does the rest, nothing twice; the request's
own fault stops it before any image; without Ray, exit 2 saying what to install."""
from __future__ import annotations

import json
import os
import signal
import subprocess

import numpy as np
import pytest

from netscope.client import NetscopeError
from netscope.client.client import explain_request
from netscope.client.jobs import ExplainJob, find_images

from ..test_cli import netscope_command
from .helpers import check_complete, check_whole_rows, finish, raw_rows, shapes_folder, wait_for_rows

ray = pytest.importorskip("ray", reason="the Ray engine's tests need the ray extra (pip install netscope[ray])")
pytestmark = pytest.mark.timeout(300)

from netscope.jobs.ray import ModelSource, RayJob, explain_dataset, result  # noqa: E402



@pytest.fixture(scope="module")
def cluster():
    """A local Ray of 2 CPUs, no dashboard, workers' logs not echoed; its address for CLI drivers."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """40 generated PNGs in class folders: with --metrics, a job of some seconds to kill things in."""
    return shapes_folder(tmp_path_factory.mktemp("ray-shapes"), 40)


def spec(model: str = "tiny", method: str = "grad_cam"):
    return explain_request(model, [], method, None, (), True, False, "", 0.0, False, 0, {})


def ray_explain(folder, out, store, address, *extra):
    argv = netscope_command() + ["explain", "--engine", "ray", "--ray-address", address, "--model", "tiny",
                                 "--store", str(store), str(folder), "--out", str(out), "--json", *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_same_answers_as_the_grpc_path(cluster, client, server, tiny_store, shapes, photo_files, tmp_path):
    folder, ids = shapes
    client.load_model("tiny_ray", "tiny", device="cpu")
    try:
        images = find_images([folder])
        ExplainJob([server.address], spec("tiny_ray"), tmp_path / "grpc").run(images=images)
        report = RayJob(spec(), tmp_path / "ray", ModelSource("tiny", "tiny", store=str(tiny_store))).run(
            images=images)
        assert report.explained == len(ids) and report.failed == 0
        by_grpc = {r["id"]: r for r in raw_rows(tmp_path / "grpc")}
        by_ray = {r["id"]: r for r in check_complete(tmp_path / "ray", ids)}
        assert by_ray.keys() == by_grpc.keys()
        for item_id, row in by_ray.items():
            assert row["server"].startswith("ray:")
            assert {**row, "server": ""} == {**by_grpc[item_id], "server": ""}, item_id
            assert ((tmp_path / "ray" / row["overlay"]).read_bytes()
                    == (tmp_path / "grpc" / row["overlay"]).read_bytes()), item_id

        # The raw maps, through the Python API over real photos (any size: resized as the server resizes)
        names = sorted(photo_files)
        ds = ray.data.from_items([{"id": n, "bytes": photo_files[n].read_bytes()} for n in names])
        got = {r["id"]: result(r["answer"]) for r in explain_dataset(
            ds, ModelSource("tiny", "tiny", store=str(tiny_store)), spec("tiny", "saliency")).take_all()}
        want = {r.id: r for r in client.explain_many(((n, photo_files[n]) for n in names), model="tiny_ray",
                                                     method="saliency", overlay=True)}
        assert sorted(got) == names
        for n in names:
            (a,), (b,) = got[n].classes, want[n].classes
            assert (a.target, a.label, a.score, a.probability) == (b.target, b.label, b.score, b.probability)
            np.testing.assert_array_equal(a.heatmap, b.heatmap)
            np.testing.assert_array_equal(a.heatmap_upsampled, b.heatmap_upsampled)
            assert a.overlay_png == b.overlay_png
            assert np.isfinite(a.heatmap).all() and a.heatmap.std() > 0
    finally:
        client.unload_model("tiny_ray")


def test_the_request_s_own_fault_stops_the_job_before_any_image(cluster, tiny_store, shapes, tmp_path):
    folder, _ = shapes
    bad = spec()
    bad.layers.append("features.9")
    job = RayJob(bad, tmp_path / "out", ModelSource("tiny", "tiny", store=str(tiny_store)))
    with pytest.raises(NetscopeError) as err:
        job.run(images=find_images([folder]))
    assert err.value.code.name in ("NOT_FOUND", "INVALID_ARGUMENT") and "features.9" in err.value.message
    assert raw_rows(tmp_path / "out") == []
    with pytest.raises(NetscopeError) as err:
        RayJob(spec(), tmp_path / "out2", ModelSource("tiny", "no-such-checkpoint", store=str(tiny_store))).run(
            images=find_images([folder]))
    assert err.value.code.name in ("NOT_FOUND", "INVALID_ARGUMENT"), err.value


def test_a_killed_actor_is_restarted_and_the_job_finishes(cluster, tiny_store, shapes, tmp_path):
    folder, ids = shapes
    out = tmp_path / "out"
    # Faithfulness metrics make each image dozens of forward passes: the job lasts past the kill.
    job = ray_explain(folder, out, tiny_store, cluster, "--metrics")
    wait_for_rows(out, 8, job, timeout=180)
    victim = int(raw_rows(out)[0]["server"].rsplit(":", 1)[1])
    os.kill(victim, signal.SIGKILL)
    code, stdout, err = finish(job, timeout=240)
    assert code == 0, err
    assert json.loads(stdout)["explained"] == len(ids)
    rows = check_complete(out, ids)
    workers = {r["server"] for r in rows}
    assert f"ray:{os.uname().nodename}:{victim}" in workers and len(workers) >= 2  # a new actor took over


def test_a_killed_driver_reruns_the_rest_and_nothing_twice(cluster, tiny_store, shapes, tmp_path):
    folder, ids = shapes
    out = tmp_path / "out"
    job = ray_explain(folder, out, tiny_store, cluster, "--metrics")
    wait_for_rows(out, 8, job, timeout=180)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    done = check_whole_rows(out)
    assert 8 <= len(done) < len(ids)

    code, stdout, err = finish(ray_explain(folder, out, tiny_store, cluster, "--metrics"), timeout=240)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["skipped"] == len(done) and report["explained"] == len(ids) - len(done)
    check_complete(out, ids)


def test_without_ray_it_exits_2_saying_what_to_install(tiny_store, shapes, tmp_path):
    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(netscope_command() + ["explain", "--engine", "ray", "--model", "tiny", str(shapes[0]),
                                                "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'netscope[ray]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "index.csv").exists()
