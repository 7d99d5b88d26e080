"""A job always shows progress, and a slow method never starves it (issue 16 §2).

The user's report, at small scale: `netscope explain --metrics` over a folder
printed nothing, then DEADLINE_EXCEEDED with 0 rows, on every rerun: the
stream answered only after a whole device batch was scored, and `--timeout`
was applied to that batch. Here the folder's images are sized from a
calibration (one image with metrics, timed on this machine) so that the old
stream's one batch would take several times `--timeout`, while each image
takes a fraction of it.
"""
from __future__ import annotations

import json
import math
import signal
import subprocess
import time

import grpc
import pytest

from netscope.client import NetscopeError
from netscope.client.client import DEFAULT_METRICS, FAITHFULNESS_METRICS
from netscope.client.job_index import METRICS
from netscope.v1 import inspector_pb2 as pb

from ..test_cli import netscope_command
from .helpers import check_complete, finish, raw_rows, shapes_folder, wait_for_rows

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tiny(client, tiny_store):
    client.load_model("tiny", "tiny")
    yield "tiny"
    client.unload_model("tiny")


@pytest.fixture(scope="module")
def seconds_per_image(client, tiny, tmp_path_factory):
    """What one image with the default metrics takes here (the second of two: the first warms up)."""
    src, _ = shapes_folder(tmp_path_factory.mktemp("calibrate"), 2)
    path = sorted(src.rglob("*.png"))[0]
    client.explain(tiny, path.read_bytes(), metrics=DEFAULT_METRICS)
    started = time.monotonic()
    client.explain(tiny, path.read_bytes(), metrics=DEFAULT_METRICS)
    return time.monotonic() - started


def stream_items(tiny: str, paths, *, progress: bool, metrics=DEFAULT_METRICS):
    for p in paths:
        req = pb.ExplainRequest(model=tiny, method="grad_cam", options=pb.ExplainOptions(metrics=list(metrics)))
        req.images.add(encoded=p.read_bytes())
        yield pb.ExplainStreamRequest(id=p.name, request=req, progress=progress)


def test_answers_leave_one_by_one_as_each_image_is_scored(client, tiny, tmp_path):
    src, _ = shapes_folder(tmp_path / "in", 6)
    paths = sorted(src.rglob("*.png"))
    started = time.monotonic()
    arrivals, sizes = [], []
    for resp in client.stub.ExplainStream(stream_items(tiny, paths, progress=False), timeout=120):
        assert not resp.HasField("progress")  # not asked for: never sent
        assert not resp.HasField("error"), resp.error.message
        arrivals.append(time.monotonic() - started)
        sizes.append(resp.response.timing.device_batch_size)
        scores = resp.response.explanations[0].classes[0].faithfulness
        assert all(scores.HasField(f) for m in DEFAULT_METRICS for f in FAITHFULNESS_METRICS[m])
        assert not scores.HasField("road_morf") and not scores.HasField("road_lerf")  # not asked for
    assert len(arrivals) == len(paths)
    # With metrics an image costs ~45 forward passes: each is its own device batch...
    assert sizes == [1] * len(paths)
    # ...and its answer leaves when it is scored, not when the last one is (the stream
    # used to send all six at the end): the first comes early in the stream's time.
    assert arrivals[0] < 0.6 * arrivals[-1], arrivals


def test_progress_messages_come_while_long_images_are_scored(client, photo_files):
    # ROAD on resnet18: 18 sparse solves over up to 224 x 224 unknowns an image, seconds on any CPU.
    names = ["chelsea", "coffee", "rocket"]

    def items():
        for name in names:
            req = pb.ExplainRequest(model="r18", method="grad_cam", options=pb.ExplainOptions(metrics=["road"]))
            req.images.add(encoded=photo_files[name].read_bytes())
            yield pb.ExplainStreamRequest(id=name, request=req, progress=True)

    seen = []
    started = time.monotonic()
    for resp in client.stub.ExplainStream(items(), timeout=300):
        seen.append((time.monotonic() - started, resp))
    answers = [r for _, r in seen if not r.HasField("progress")]
    progress = [(t, r) for t, r in seen if r.HasField("progress")]
    took = seen[-1][0]
    assert [r.id for r in answers] == names and not any(r.HasField("error") for r in answers)
    assert all(r.response.explanations[0].classes[0].faithfulness.HasField("road_morf") for r in answers)
    assert took > 2, "too short to need progress messages"
    assert progress and all(r.id == "" and 1 <= r.progress.pending <= len(names) for _, r in progress)
    # At most one a second (PROGRESS_S), and never a long silence while the server works.
    times = [t for t, _ in seen]
    assert len(progress) <= took + 1 and max(b - a for a, b in zip([0.0] + times, times)) < 15, times


def test_a_slow_job_with_a_short_timeout_writes_rows_as_images_finish_and_resumes_after_a_kill(
        client, tiny, tmp_path, seconds_per_image):
    timeout = max(3.0, 2 * seconds_per_image)
    # The old stream put up to 32 images in one device batch and answered when all were scored.
    n = min(32, max(6, math.ceil(2.5 * timeout / seconds_per_image)))
    src, ids = shapes_folder(tmp_path / "in", n)
    out = tmp_path / "out"
    server = [client.target]
    # The user's command, stderr piped: bare --metrics right before the folder.
    args = ("--metrics", str(src), "--timeout", f"{timeout:g}", "--in-flight", "64")
    job = explain_process_bare(out, server, args)
    at_kill = wait_for_rows(out, 2, job, timeout=60 + 10 * seconds_per_image)  # rows appear as images finish
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    done = [r for r in raw_rows(out) if r["status"] == "ok"]
    assert len(done) >= at_kill >= 2 and len(done) < n

    code, stdout, err = finish(explain_process_bare(out, server, args), timeout=60 + 4 * n * seconds_per_image)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["skipped"] == len(done) and report["explained"] == n - len(done) and report["failed"] == 0
    rows = check_complete(out, ids)
    for r in rows:  # the default set, scored; ROAD left out
        assert all(r[m] for m in ("deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence"))
        assert r["road_morf"] == "" and r["road_lerf"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["methods"][0]["means"]) == sorted(m for m in METRICS if not m.startswith("road"))
    # Piped, progress is plain lines: a first one at once, then as images finish, and a last one.
    lines = [line for line in err.splitlines() if line.startswith("netscope explain: grad_cam ")]
    assert len(lines) >= 3, err
    assert lines[0].startswith(f"netscope explain: grad_cam 0/{n} images")  # at once, before any answer
    assert f"{len(done)}/{n} images" in lines[1] and f"{len(done)} already done" in lines[1]
    assert any("img/s" in line and "left" in line for line in lines[1:-1]), lines
    assert lines[-1].startswith(f"netscope explain: grad_cam {n}/{n} images (100%)"), lines
    assert "\r" not in err  # no bar's carriage returns in a log


def explain_process_bare(out, servers, args):
    """`netscope explain --model tiny --method grad_cam ARGS --out OUT --json`, stderr piped, as the
    user ran it: the folder only in ARGS, right after a bare --metrics."""
    argv = netscope_command() + ["explain", "--model", "tiny", "--method", "grad_cam", *args, "--out", str(out),
                                 "--json"]
    for s in servers:
        argv += ["--server", s]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_metrics_are_chosen_by_name_and_unknown_names_are_refused(client, tiny, run_cli, tmp_path):
    src, _ = shapes_folder(tmp_path / "in", 3)
    paths = sorted(src.rglob("*.png"))
    (full,) = client.explain(tiny, paths[0].read_bytes(), faithfulness=True)
    (some,) = client.explain(tiny, paths[0].read_bytes(), metrics=["insertion", "deletion"])
    assert some[0].faithfulness.deletion_auc == pytest.approx(full[0].faithfulness.deletion_auc, rel=1e-6)
    assert some[0].faithfulness.insertion_auc == pytest.approx(full[0].faithfulness.insertion_auc, rel=1e-6)
    assert some[0].faithfulness.average_drop is None and some[0].faithfulness.road_morf is None
    assert full[0].faithfulness.road_morf is not None  # faithfulness alone: every metric, as before

    with pytest.raises(NetscopeError) as err:
        client.explain(tiny, paths[0].read_bytes(), metrics=["deletion", "roads"])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.reason == "METRIC_NOT_FOUND"
    assert "'roads'" in err.value.message and "road" in err.value.closest
    assert all(m in err.value.message for m in FAITHFULNESS_METRICS)

    out = tmp_path / "out"
    code, stdout, stderr = run_cli("explain", "--model", tiny, str(src), "--out", str(out), "--metrics", "deletion")
    assert code == 0, stderr
    rows = raw_rows(out)
    assert all(r["deletion_auc"] and not r["insertion_auc"] and not r["road_morf"] for r in rows)
    header = next(line.split() for line in stdout.splitlines() if line.startswith("method"))
    assert header == ["method", "images", "ok", "failed", "scored", "deletion_auc"]

    code, _, stderr = run_cli("explain", "--model", tiny, str(src), "--out", str(tmp_path / "bad"),
                              "--metrics", "deletion,delition")
    assert code == 1 and "INVALID_ARGUMENT" in stderr and "unknown faithfulness metric 'delition'" in stderr
    assert "increase_in_confidence" in stderr


def test_the_faithfulness_ceiling_counts_the_metrics_passes():
    from netscope.server import explain
    from netscope.server.errors import InvalidArgument

    ceilings = explain.Ceilings(faithfulness_maps=4)  # maps scored with every metric (62 passes each)
    top4 = explain.Target(top_k=4)
    with pytest.raises(InvalidArgument) as err:  # 2 images x 4 classes
        explain.check_ceilings("grad_cam", explain.Options(), top4, ceilings, faithfulness=True, n_images=2)
    assert "faithfulness_maps" in str(err.value) and err.value.metadata["limit"] == "4"
    # average_drop alone costs 2 passes a map: 31 times as many maps fit.
    explain.check_ceilings("grad_cam", explain.Options(), top4, ceilings, faithfulness=["average_drop"], n_images=31)
    with pytest.raises(InvalidArgument) as err:
        explain.check_ceilings("grad_cam", explain.Options(), top4, ceilings, faithfulness=["average_drop"],
                               n_images=32)
    assert err.value.metadata["limit"] == "124"
