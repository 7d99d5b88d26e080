"""`netscope explain` over a few hundred images while processes die: a server
of two (the other finishes the job), the only server (the job stops, says
how to resume, and the rerun finishes it), and the client itself (the rerun
skips exactly what was done, even past a torn last line)."""
from __future__ import annotations

import json
import signal

import pytest

from .helpers import check_complete, check_whole_rows, explain_process, finish, index_lines, wait_for_rows

pytestmark = pytest.mark.timeout(300)


def test_a_server_killed_mid_job_hands_its_images_to_the_other(serve, shapes, tmp_path):
    folder, ids = shapes
    a, b = serve(2)
    out = tmp_path / "out"
    job = explain_process(folder, out, [a.address, b.address])
    at_kill = wait_for_rows(out, 60, job)
    a.kill()
    code, stdout, err = finish(job)
    assert code == 0, err
    assert at_kill < len(ids)
    assert f"{a.address} failed (UNAVAILABLE" in err  # said so, and went on
    report = json.loads(stdout)
    assert report["explained"] == len(ids) and report["failed"] == 0 and report["skipped"] == 0
    rows = check_complete(out, ids)
    by_server = {r["server"] for r in rows}
    assert by_server == {a.address, b.address}  # both worked before the kill


def test_the_only_server_killed_mid_job_then_rerun_resumes(serve, shapes, tmp_path):
    folder, ids = shapes
    (server,) = serve(1)
    out = tmp_path / "out"
    job = explain_process(folder, out, [server.address])
    wait_for_rows(out, 80, job)
    server.kill()
    code, _, err = finish(job)
    assert code == 1
    assert "UNAVAILABLE" in err and "run the same command again to resume" in err and "Traceback" not in err
    done = check_whole_rows(out)
    assert 80 <= len(done) < len(ids) and {r["status"] for r in done} == {"ok"}

    server.start().wait_ready()
    code, stdout, err = finish(explain_process(folder, out, [server.address]))
    assert code == 0, err
    report = json.loads(stdout)
    # nothing done twice, nothing left out
    assert report["skipped"] == len(done) and report["explained"] == len(ids) - len(done)
    check_complete(out, ids)


def test_a_killed_client_reruns_past_a_torn_last_line(serve, shapes, tmp_path):
    folder, ids = shapes
    (server,) = serve(1)
    out = tmp_path / "out"
    job = explain_process(folder, out, [server.address])
    wait_for_rows(out, 60, job)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    whole = index_lines(out)
    assert whole < len(ids)
    # A kill in the middle of a write leaves the start of a row: this one reads as
    # "explained, target 2" but the image was never answered.
    done = {r["id"] for r in check_whole_rows(out)}
    victim = next(i for i in ids if i not in done)
    with open(out / "index.csv", "ab") as f:
        f.write(f"{victim},ok,2".encode())

    code, stdout, err = finish(explain_process(folder, out, [server.address]))
    assert code == 0, err
    report = json.loads(stdout)
    assert report["skipped"] == whole and report["explained"] == len(ids) - whole
    rows = {r["id"]: r for r in check_complete(out, ids)}
    assert rows[victim]["overlay"] and rows[victim]["score"]


def test_a_server_that_stops_answering_is_given_up_on_after_the_timeout(serve, shapes, tmp_path):
    folder, ids = shapes
    a, b = serve(2)
    out = tmp_path / "out"
    job = explain_process(folder, out, [a.address, b.address], "--timeout", "3")
    wait_for_rows(out, 60, job)
    a.proc.send_signal(signal.SIGSTOP)  # hung: its connection stays open, nothing comes back
    try:
        code, stdout, err = finish(job)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    assert code == 0, err
    assert f"{a.address} failed (DEADLINE_EXCEEDED: no progress in 3 s" in err
    assert json.loads(stdout)["explained"] == len(ids)
    check_complete(out, ids)
