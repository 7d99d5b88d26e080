"""A job's index: one CSV row per image, appended as results arrive, that a
killed job leaves readable.

`index.csv` is the journal a rerun trusts to skip finished images. Each row
goes to the file in one write, but a process killed mid-write can still leave
a torn last line (`p3.jpg,ok,28` of `p3.jpg,ok,281,...`: a plausible row with
the wrong target), and an image that failed for a passing reason gets a
second row when a rerun retries it. Opening the index therefore cuts the file
back to its last whole line and keeps the newest row per image, so a rerun
reads whole rows only, one per image.

`index.json` holds the same rows with typed values (numbers as numbers,
missing as null), rewritten from the CSV at the end of every run.
"""
from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import grpc

from . import atomic_file

# Faithfulness metrics, as the Faithfulness message names them.
METRICS = ("deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence", "road_morf", "road_lerf")
FIELDS = ["id", "status", "target", "label", "score", "probability", "overlay", *METRICS, "error", "server"]
# Errors that say nothing about the image: the image is tried again on a rerun.
TRANSIENT = {c.value[0] for c in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                  grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)}
_INTS = {"target"}
_FLOATS = {"score", "probability", *METRICS}


def finished(row: dict) -> bool:
    """Done for good: explained, or failed for a reason the image itself carries."""
    if row.get("status") == "ok":
        return True
    try:
        return int(row["status"].split(":")[0]) not in TRANSIENT
    except (ValueError, AttributeError):
        return False


def one_line(text: str) -> str:
    """Keep every row on one physical line, so a torn write is always the last line."""
    return " ".join(text.splitlines())


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` all at once: a reader sees the old file or the new one."""
    atomic_file.write_atomically(path, lambda f: f.write(text), binary=False)


class JobIndex:
    """The index files of one job folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.csv = self.folder / "index.csv"
        self.json = self.folder / "index.json"
        self._file = None
        self._lock = threading.Lock()

    def rows(self) -> dict[str, dict]:
        """The newest whole row per image id, in the order images first appeared.
        Repairs the file on disk first when a killed run left it torn or with
        superseded rows."""
        if not self.csv.exists():
            return {}
        raw = self.csv.read_bytes()
        whole = raw[: raw.rfind(b"\n") + 1]  # a torn last line is dropped
        reader = csv.DictReader(io.StringIO(whole.decode("utf-8", errors="replace"), newline=""))
        rows, count = {}, 0
        for row in reader:
            if row.get("id"):
                rows[row["id"]] = {k: row.get(k) or "" for k in FIELDS}
                count += 1
        if whole != raw or count != len(rows) or reader.fieldnames != FIELDS:
            self._rewrite(rows.values())
        return rows

    def _rewrite(self, rows) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(self.csv, buf.getvalue())

    def __enter__(self) -> "JobIndex":
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.csv.exists() or self.csv.stat().st_size == 0:
            self._rewrite([])
        else:
            self.rows()  # whole lines only before anything is appended
        # Unbuffered: each row reaches the file in one write() of its own.
        self._file = open(self.csv, "ab", buffering=0)
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()
        self._file = None

    def append(self, row: dict) -> None:
        buf = io.StringIO()
        clean = {k: one_line(str(row.get(k, ""))) for k in FIELDS}
        csv.DictWriter(buf, fieldnames=FIELDS).writerow(clean)
        with self._lock:
            self._file.write(buf.getvalue().encode("utf-8"))

    def export_json(self) -> list[dict]:
        """Write index.json from the CSV; returns its rows."""
        rows = [typed(r) for r in self.rows().values()]
        if self.csv.exists():
            write_atomically(self.json, json.dumps(rows, indent=1) + "\n")
        return rows


def typed(row: dict) -> dict:
    """A CSV row with numbers as numbers and empty fields as None."""
    out = {}
    for key in FIELDS:
        value = row.get(key) or None
        if value is not None and key in _INTS:
            value = int(value)
        elif value is not None and key in _FLOATS:
            value = float(value)
        out[key] = value
    return out


class SpecMismatch(ValueError):
    """The folder holds a job that asked for something else."""


def claim(folder: Path, spec: dict) -> str | None:
    """Record what this folder's job asks for (job.json), or check that a rerun
    asks for the same: skipping images another method explained would be wrong.

    A job with other settings in which no image succeeded (a wrong layer or
    option) holds nothing worth keeping: its index is dropped and the new
    settings take the folder; returns what was replaced (None otherwise).
    Raises SpecMismatch when any image of the other job succeeded."""
    path = Path(folder) / "job.json"
    replaced = None
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = None  # unreadable: written again below
        if before is not None and before != spec:
            changed = sorted(k for k in set(before) | set(spec) if before.get(k) != spec.get(k))
            what = "; ".join(f"{k} was {before.get(k)!r}, now {spec.get(k)!r}" for k in changed)
            index = JobIndex(folder)
            rows = index.rows()
            if any(r["status"] == "ok" for r in rows.values()):
                raise SpecMismatch(f"{folder} holds a job with other settings ({what}); resuming it would skip "
                                   "images explained differently: give another --out, or delete the folder to "
                                   "start over")
            for stale in (index.csv, index.json):
                stale.unlink(missing_ok=True)
            replaced = (f"{folder} held a job with other settings ({what}) in which no image succeeded "
                        f"({len(rows)} failed): replaced by this one")
        elif before is not None:
            return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(spec, indent=1, sort_keys=True) + "\n")
    return replaced
