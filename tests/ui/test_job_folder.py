"""Reading a job folder for review: a running job's index is read, never repaired or rewritten."""
from __future__ import annotations

from netscope.ui import job_folder


def test_a_running_jobs_index_is_read_without_touching_it(tmp_path):
    raw = ("id,status,target,label,score,insertion_auc,overlay\n"
           "cat/a.png,ok,1,dog,0.5,0.2,\n"
           "cat/b.png,14:UNAVAILABLE,,,,,\n"
           "cat/b.png,ok,2,cat,0.9,,\n"
           "dog/c.png,ok,3,dog,0.7,0.1,\n"
           "dog/d.png,ok,3,d")  # torn: the job is mid-write
    (tmp_path / "index.csv").write_text(raw)
    table = job_folder.read(tmp_path)
    assert (tmp_path / "index.csv").read_text() == raw  # untouched
    assert [r["id"] for r in table.rows] == ["cat/a.png", "cat/b.png", "dog/c.png"]
    assert table.rows[1]["status"] == "ok"  # the newest row of an image wins
    assert {"score", "insertion_auc", "target"} <= table.numeric and "label" not in table.numeric
    lowest = job_folder.select(table, sort="insertion_auc")
    assert [r["id"] for r in lowest] == ["dog/c.png", "cat/a.png", "cat/b.png"]  # empty last
    assert [r["id"] for r in job_folder.select(table, which="misclassified")] == ["cat/a.png"]
    assert [r["id"] for r in job_folder.select(table, text="DOG/")] == ["dog/c.png"]
