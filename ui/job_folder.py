"""A `netscope explain` output folder, read for review without touching it.

The layout (client/jobs.py, client/job_index.py): FOLDER/index.csv (one row
per image, appended while the job runs), FOLDER/overlays/..., job.json; a job
of several methods has one such folder per method, FOLDER/METHOD/. A running
job is still appending, so this never repairs or rewrites the index as
JobIndex.rows() may: it reads whole lines only (a torn last line is left for
the next read) and keeps the newest row per image. Columns are read from the
header, whatever they are (metrics columns vary by job), and a column whose
every non-empty value parses as a number is numeric.
"""
from __future__ import annotations

import base64
import csv
import io
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image

FILTERS = ("all", "ok", "failed", "misclassified")


@dataclass
class JobTable:
    """One method's rows. `rows` are dicts of the header's columns, with numbers as floats
    (None where empty) in `numeric` columns; `columns` in the header's order."""

    folder: Path
    columns: list[str]
    numeric: set[str]
    rows: list[dict]
    stamp: tuple = ()  # (size, mtime) of index.csv when read
    spec: dict = field(default_factory=dict)  # job.json


def methods(folder: str | Path) -> dict[str, Path]:
    """{name: folder} of the jobs under `folder`: itself (named by its method) when it holds
    an index.csv, else each sub-folder that does. FileNotFoundError when there is none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; give the --out folder of a `netscope explain` run")
    if (root / "index.csv").is_file():
        return {_method_name(root): root}
    found = {p.name: p for p in sorted(root.iterdir()) if (p / "index.csv").is_file()}
    if not found:
        raise FileNotFoundError(f"{root} has no index.csv (nor METHOD/index.csv): is it the --out folder of a "
                                "`netscope explain` run? A job that has not written its first row has none yet")
    return found


def _method_name(folder: Path) -> str:
    import json

    try:
        return json.loads((folder / "job.json").read_text()).get("method") or folder.name
    except (OSError, ValueError):
        return folder.name


def stamp(folder: Path) -> tuple:
    """What changes when the job appends a row: (size, mtime_ns) of index.csv."""
    try:
        st = (Path(folder) / "index.csv").stat()
        return st.st_size, st.st_mtime_ns
    except OSError:
        return ()


def read(folder: str | Path) -> JobTable:
    """The job's rows, newest per image id, in the order the ids first appeared."""
    import json

    folder = Path(folder)
    before = stamp(folder)
    raw = (folder / "index.csv").read_bytes()
    whole = raw[: raw.rfind(b"\n") + 1]
    reader = csv.DictReader(io.StringIO(whole.decode("utf-8", errors="replace"), newline=""))
    columns = list(reader.fieldnames or [])
    by_id: dict[str, dict] = {}
    for row in reader:
        if row.get("id"):
            by_id[row["id"]] = {k: (row.get(k) or "") for k in columns}
    rows = list(by_id.values())
    numeric = {c for c in columns if c != "id" and _all_numbers(r[c] for r in rows)}
    for r in rows:
        for c in numeric:
            r[c] = float(r[c]) if r[c] != "" else None
    try:
        spec = json.loads((folder / "job.json").read_text())
    except (OSError, ValueError):
        spec = {}
    return JobTable(folder, columns, numeric, rows, before, spec)


def _all_numbers(values) -> bool:
    seen = False
    for v in values:
        if v == "":
            continue
        try:
            float(v)
        except ValueError:
            return False
        seen = True
    return seen


def true_class(item_id: str) -> str | None:
    """The class an id's folder names (CLASS/.../image, as torchvision's ImageFolder reads), or None."""
    parts = item_id.split("/")
    return parts[0] if len(parts) >= 2 else None


def misclassified(row: dict) -> bool:
    """An explained image whose class folder is not the class it was explained for (its top-1, in a
    job without per-image targets)."""
    truth = true_class(row["id"])
    return row.get("status") == "ok" and truth is not None and str(row.get("label", "")) != truth


def select(table: JobTable, *, which: str = "all", text: str = "", sort: str = "", descending: bool = False
           ) -> list[dict]:
    """The rows that pass the filter (one of FILTERS) and contain `text` in any column, sorted by
    the column `sort` (numbers as numbers; empty values last either way)."""
    if which not in FILTERS:
        raise ValueError(f"filter must be one of {', '.join(FILTERS)}; got {which!r}")
    rows = table.rows
    if which == "ok":
        rows = [r for r in rows if r.get("status") == "ok"]
    elif which == "failed":
        rows = [r for r in rows if r.get("status") != "ok"]
    elif which == "misclassified":
        rows = [r for r in rows if misclassified(r)]
    needle = text.strip().lower()
    if needle:
        rows = [r for r in rows if any(needle in str(v).lower() for v in r.values() if v is not None)]
    if sort:
        if sort not in table.columns:
            raise ValueError(f"no column {sort!r}; the index has {', '.join(table.columns)}")
        present = [r for r in rows if r.get(sort) not in (None, "")]
        empty = [r for r in rows if r.get(sort) in (None, "")]
        if sort in table.numeric:
            present = [r for r in present if not math.isnan(r[sort])] + [r for r in present if math.isnan(r[sort])]
        present.sort(key=lambda r: r[sort] if sort in table.numeric else str(r[sort]).lower(), reverse=descending)
        rows = present + empty
    return rows


def overlay_path(table: JobTable, row: dict) -> Path | None:
    """The row's overlay PNG inside the job folder, when it has one and it is there."""
    name = row.get("overlay") or ""
    if not name:
        return None
    path = (table.folder / name).resolve()
    if not path.is_relative_to(table.folder.resolve()) or not path.is_file():
        return None
    return path


def original_path(images: str | Path, item_id: str) -> Path | None:
    """The image the job read, under the folder it was given (ids are paths relative to it)."""
    if not images:
        return None
    root = Path(images).expanduser().resolve()
    path = (root / item_id).resolve()
    if path.is_file() and path.is_relative_to(root):
        return path
    path = Path(item_id)  # a job given files or overlapping names keeps whole paths as ids
    return path if path.is_absolute() and path.is_file() else None


@lru_cache(maxsize=4096)
def _thumbnail(path: str, mtime_ns: int, size: int) -> str:
    img = Image.open(path).convert("RGB")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def thumbnail(path: Path | None, size: int = 56) -> str:
    """A small JPEG of the picture as a data: URL ("" when there is none or it cannot be read)."""
    if path is None:
        return ""
    try:
        return _thumbnail(str(path), path.stat().st_mtime_ns, size)
    except OSError:
        return ""
