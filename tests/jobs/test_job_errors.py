"""`netscope explain` errors a person can act on: a job-level error (a wrong
--layer) is printed once with the closest names and stops the job without
marking images done; a rerun with corrected settings replaces a job in which
nothing succeeded, and is still refused when something did."""
from __future__ import annotations

import csv
import json

import pytest

from .helpers import shapes_folder


@pytest.fixture(scope="module")
def tiny(client, tiny_store):
    client.load_model("tiny_errors", "tiny")
    yield "tiny_errors"
    client.unload_model("tiny_errors")


def index_rows(out) -> list[dict]:
    return list(csv.DictReader((out / "index.csv").open()))


def test_a_wrong_layer_is_said_once_and_a_corrected_rerun_takes_the_folder(run_cli, client, tiny, tmp_path):
    src, ids = shapes_folder(tmp_path / "in", 12)
    out = tmp_path / "out"
    code, stdout, err = run_cli("explain", "--model", tiny, str(src), "--out", str(out), "--layer", "featurs")
    assert code == 1, err
    [line] = [ln for ln in err.splitlines() if "not found" in ln]  # once, not per image
    assert line.startswith("netscope explain: NOT_FOUND: layer 'featurs' not found; closest: features")
    assert "field: layers" in err and "x 5:NOT_FOUND" not in stdout + err
    assert index_rows(out) == []  # no image is marked done (or failed) by the request's fault

    code, stdout, err = run_cli("explain", "--model", tiny, str(src), "--out", str(out), "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert (report["explained"], report["failed"], report["skipped"]) == (12, 0, 0)
    assert sorted(r["id"] for r in index_rows(out)) == ids
    assert json.loads((out / "job.json").read_text()).get("layers") is None


def test_a_job_where_nothing_succeeded_is_replaced_one_where_something_did_is_kept(run_cli, tiny, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        (src / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / "out"
    code, stdout, err = run_cli("explain", "--model", tiny, str(src), "--out", str(out))
    assert code == 3, err
    # each kind of failure once, with its count and an example message
    assert "3 x 3:INVALID_ARGUMENT (e.g. bad0.png:" in stdout and "decode" in stdout
    assert [r["status"] for r in index_rows(out)] == ["3:INVALID_ARGUMENT"] * 3

    code, stdout, err = run_cli("explain", "--model", tiny, str(src), "--out", str(out), "--method", "saliency")
    assert code == 3
    assert "in which no image succeeded (3 failed): replaced by this one" in err
    assert "method was 'grad_cam', now 'saliency'" in err
    assert json.loads((out / "job.json").read_text())["method"] == "saliency"
    assert len(index_rows(out)) == 3

    shapes, _ = shapes_folder(tmp_path / "good", 2)
    for p in shapes.rglob("*.png"):
        (src / p.name).write_bytes(p.read_bytes())
    code, _, err = run_cli("explain", "--model", tiny, str(src), "--out", str(out), "--method", "saliency")
    assert code == 0, err  # the two good images explained, the three bad skipped (failed before)
    assert sum(r["status"] == "ok" for r in index_rows(out)) == 2
    code, _, err = run_cli("explain", "--model", tiny, str(src), "--out", str(out))
    assert code == 1 and "FAILED_PRECONDITION" in err and "method was 'saliency', now 'grad_cam'" in err


def test_several_methods_each_get_the_options_they_use(run_cli, tiny, tmp_path):
    """--steps with integrated_gradients and grad_cam goes to integrated_gradients alone (grad_cam
    refuses options it does not use); an option none of the methods uses is a usage error at once."""
    src, ids = shapes_folder(tmp_path / "in", 4)
    out = tmp_path / "out"
    code, stdout, err = run_cli("explain", "--model", tiny, str(src), "--out", str(out), "--json",
                                "--method", "integrated_gradients", "--method", "grad_cam", "--steps", "4",
                                "--seed", "1")
    assert code == 0, err
    for method in ("integrated_gradients", "grad_cam"):
        assert sorted(r["id"] for r in index_rows(out / method)) == ids
        assert all(r["status"] == "ok" for r in index_rows(out / method))
    assert json.loads((out / "integrated_gradients" / "job.json").read_text())["options"]["steps"] == 4
    assert "steps" not in json.loads((out / "grad_cam" / "job.json").read_text()).get("options", {})

    code, _, err = run_cli("explain", "--model", tiny, str(src), "--out", str(tmp_path / "out2"),
                           "--method", "saliency", "--method", "grad_cam", "--kpca-kernel", "rbf")
    assert code == 2
    assert "no method of saliency, grad_cam uses kpca_kernel (used by kpca_cam)" in err
    assert not (tmp_path / "out2" / "saliency" / "index.csv").exists()
