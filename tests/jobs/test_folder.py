"""`netscope explain` over a folder of a few hundred generated images through a
real server: every row of the index holds the numbers a direct Explain of
that image gives, every overlay is the picture it returns, the one
undecodable file gets its own INVALID_ARGUMENT row, and a rerun does nothing
twice. Several methods with --metrics: a folder each and the per-method means."""
from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest

from netscope.client.job_index import METRICS

SCORED = [m for m in METRICS if not m.startswith("road")]  # what a bare --metrics scores (DEFAULT_METRICS)

from ..conftest import encode
from .helpers import SHOWN, check_whole_rows, decoded_png, shapes_folder


@pytest.fixture(scope="module")
def tiny(client, tiny_store):
    client.load_model("tiny", "tiny")
    yield "tiny"
    client.unload_model("tiny")


@pytest.fixture
def folder(tmp_path):
    """300 PNGs in class folders, 20 of them also as JPEGs under jpeg/, and one broken file."""
    src, _ = shapes_folder(tmp_path / "in", 300)
    (src / "jpeg").mkdir()
    for p in sorted(src.rglob("*.png"))[::15]:
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        (src / "jpeg" / f"{p.stem}.jpg").write_bytes(encode(rgb, ".jpg"))
    (src / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return src


def direct(client, model: str, paths: list, **kwargs) -> list:
    """Each image's top-1 explanation from plain Explain calls, in batches the server takes."""
    out = []
    for i in range(0, len(paths), 64):
        out += [classes[0] for classes in client.explain(model, paths[i : i + 64], overlay=True, **kwargs)]
    return out


def test_every_row_and_overlay_of_a_few_hundred_images(run_cli, client, tiny, folder, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli("explain", "--model", tiny, str(folder), "--out", str(out), "--json")
    assert code == 3, err  # one image failed, the job went on
    report = json.loads(stdout)
    assert (report["total"], report["explained"], report["failed"]) == (321, 320, 1)
    assert report["errors"] == {"3:INVALID_ARGUMENT": 1}

    rows = check_whole_rows(out)
    images = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in (".png", ".jpg"))
    assert sorted(r["id"] for r in rows) == images  # each exactly once
    (broken,) = [r for r in rows if r["status"] != "ok"]
    assert broken["id"] == "circle/broken.png" and broken["status"] == "3:INVALID_ARGUMENT"
    assert "decode" in broken["error"] and not broken["overlay"]
    assert not (out / "overlays" / "circle" / "broken.png").exists()

    ok = [r for r in rows if r["status"] == "ok"]
    expected = direct(client, tiny, [folder / r["id"] for r in ok])
    for row, want in zip(ok, expected):
        assert int(row["target"]) == want.target and row["label"] == want.label, row["id"]
        assert float(row["score"]) == pytest.approx(want.score, rel=1e-5, abs=1e-6), row["id"]
        assert float(row["probability"]) == pytest.approx(want.probability, rel=1e-5, abs=1e-7), row["id"]
        got = decoded_png(out / row["overlay"])
        assert got.shape == (SHOWN, SHOWN, 3)
        ref = cv2.imdecode(np.frombuffer(want.overlay_png, np.uint8), cv2.IMREAD_UNCHANGED)
        # the same picture (batched and single computations may differ in the last float bit,
        # a colour step here and there; another image's overlay differs by tens on average)
        assert np.abs(got.astype(int) - ref).mean() < 0.5, row["id"]
    assert len({r["overlay"] for r in ok}) == len(ok)  # jpeg/000015.jpg and circle/000015.png keep their own

    as_json = json.loads((out / "index.json").read_text())
    assert [(r["id"], r["status"], r["target"]) for r in as_json] == \
        [(r["id"], r["status"], int(r["target"]) if r["target"] else None) for r in rows]
    assert as_json[0]["score"] == pytest.approx(float(rows[0]["score"]))

    summary = json.loads((out / "summary.json").read_text())
    (method,) = summary["methods"]
    assert (method["method"], method["folder"], method["images"], method["ok"], method["failed"]) == \
        ("grad_cam", ".", 321, 320, 1)

    # A rerun skips everything: the broken file failed for a reason it carries.
    code, stdout, err = run_cli("explain", "--model", tiny, str(folder), "--out", str(out), "--json")
    assert code == 0, err
    again = json.loads(stdout)
    assert (again["skipped"], again["explained"], again["failed"]) == (321, 0, 0)
    assert raw_lines(out) == len(rows)

    # Asking the same folder for another method is refused, not silently skipped.
    code, _, err = run_cli("explain", "--model", tiny, "--method", "saliency", str(folder), "--out", str(out))
    assert code == 1 and "FAILED_PRECONDITION" in err and "method was 'grad_cam', now 'saliency'" in err


def raw_lines(out) -> int:
    return len((out / "index.csv").read_text().splitlines()) - 1


def test_metrics_per_method_over_a_folder(run_cli, client, tiny, tmp_path):
    src, _ = shapes_folder(tmp_path / "in", 6)
    out = tmp_path / "out"
    methods = ["grad_cam", "saliency"]
    code, stdout, err = run_cli("explain", "--model", tiny, "--method", methods[0], "--method", methods[1],
                                "--metrics", str(src), "--out", str(out))
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert [m["method"] for m in summary["methods"]] == methods
    paths = sorted(src.rglob("*.png"))
    for method, entry in zip(methods, summary["methods"]):
        rows = list(csv.DictReader((out / method / "index.csv").open()))
        assert (out / method / "index.json").is_file() and not (out / "index.csv").exists()
        assert all((out / method / r["overlay"]).is_file() for r in rows)
        assert (entry["folder"], entry["images"], entry["ok"], entry["scored"]) == (method, 6, 6, 6)
        by_id = {r["id"]: r for r in rows}
        expected = direct(client, tiny, paths, method=method, faithfulness=True)
        for path, want in zip(paths, expected):
            row = by_id[path.relative_to(src).as_posix()]
            for m in SCORED:
                assert float(row[m]) == pytest.approx(getattr(want.faithfulness, m), rel=1e-4, abs=1e-5), (method, m)
            assert row["road_morf"] == row["road_lerf"] == ""  # bare --metrics: the cheap ones
        assert sorted(entry["means"]) == sorted(SCORED)
        for m in SCORED:
            mean = np.mean([getattr(w.faithfulness, m) for w in expected])
            assert entry["means"][m] == pytest.approx(mean, rel=1e-4, abs=1e-5), (method, m)
        # the printed table: one line per method with its counts and means
        line = next(line.split() for line in stdout.splitlines() if line.startswith(method + " "))
        assert line[1:5] == ["6", "6", "0", "6"]
        assert [float(v) for v in line[5:]] == pytest.approx([entry["means"][m] for m in SCORED], abs=1e-4)

    # --json prints what summary.json holds; a rerun skips all, and the means stay.
    code, stdout, _ = run_cli("explain", "--model", tiny, "--method", methods[0], "--method", methods[1],
                              "--metrics", str(src), "--out", str(out), "--json")
    assert code == 0
    again = json.loads(stdout)
    assert again["skipped"] == 12 and again == json.loads((out / "summary.json").read_text())
    assert [m["means"] for m in again["methods"]] == [m["means"] for m in summary["methods"]]
    shutil.rmtree(out)


def test_an_output_folder_inside_the_input_folder_is_not_walked(run_cli, tiny, tmp_path):
    src, ids = shapes_folder(tmp_path / "in", 5)
    out = src / "explained"  # its overlays are PNGs under the folder being explained
    for _ in range(2):
        code, stdout, err = run_cli("explain", "--model", tiny, str(src), "--out", str(out), "--json")
        assert code == 0, err
    report = json.loads(stdout)
    assert (report["total"], report["skipped"], report["explained"]) == (5, 5, 0)
    assert sorted(r["id"] for r in csv.DictReader((out / "index.csv").open())) == ids


def test_a_model_no_server_has_is_not_found_and_writes_no_rows(run_cli, tmp_path):
    src, _ = shapes_folder(tmp_path / "in", 3)
    code, _, err = run_cli("explain", "--model", "nosuchmodel", str(src), "--out", str(tmp_path / "out"))
    assert code == 1 and "NOT_FOUND" in err and "nosuchmodel" in err and "netscope models" in err
    assert not list(csv.DictReader((tmp_path / "out" / "index.csv").open()))
