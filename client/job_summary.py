"""What a `netscope explain` run adds up to, per method: how many images are in
its index, explained or failed, and the mean of each faithfulness metric over
the explained ones. The figures come from the whole index (so a resumed job
reports every image, not only this run's), plus this run's own counts.

Means follow the metrics' usual aggregate reading: average drop is the mean
% of confidence lost, increase in confidence the fraction of images whose
confidence rose, the AUCs and ROAD scores their mean. Each metric's mean is
over the images it was scored for; a metric the job did not ask for
(`--metrics deletion,insertion`) has no mean and no column.
"""
from __future__ import annotations

import math
from dataclasses import asdict

from .job_index import METRICS


def method_summary(method: str, folder: str, rows: list[dict], report) -> dict:
    """`rows`: the method's index rows with typed values (JobIndex.export_json);
    `report`: this run's JobReport for it."""
    ok = [r for r in rows if r["status"] == "ok"]
    errors: dict[str, int] = {}
    for r in rows:
        if r["status"] != "ok":
            errors[r["status"]] = errors.get(r["status"], 0) + 1
    scored = [r for r in ok if any(r[m] is not None for m in METRICS)]
    means = {}
    for m in METRICS:
        values = [r[m] for r in scored if r[m] is not None]
        if values:
            means[m] = math.fsum(values) / len(values)
    return {"method": method, "folder": folder, "images": len(rows), "ok": len(ok), "failed": len(rows) - len(ok),
            "errors": errors, "scored": len(scored), "means": means, "run": asdict(report)}


def job_summary(methods: list[dict]) -> dict:
    """The summary of a run over one or more methods. The top-level counts are this
    run's, over all methods (what `netscope explain --json` has always printed)."""
    runs = [m["run"] for m in methods]
    errors: dict[str, int] = {}
    for run in runs:
        for status, n in run["errors"].items():
            errors[status] = errors.get(status, 0) + n
    return {"total": sum(r["total"] for r in runs), "skipped": sum(r["skipped"] for r in runs),
            "explained": sum(r["explained"] for r in runs), "failed": sum(r["failed"] for r in runs),
            "errors": errors, "methods": methods}


def table(summary: dict) -> tuple[list[str], list[list]]:
    """(header, rows) of the per-method table: counts, and the metric means when any were scored."""
    shown = [k for k in METRICS if any(k in m["means"] for m in summary["methods"])]
    header = ["method", "images", "ok", "failed"] + (["scored", *shown] if shown else [])
    rows = []
    for m in summary["methods"]:
        row = [m["method"], m["images"], m["ok"], m["failed"]]
        if shown:
            row += [m["scored"]] + [f"{m['means'][k]:.4f}" if k in m["means"] else "-" for k in shown]
        rows.append(row)
    return header, rows
