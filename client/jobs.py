"""Explain a folder of thousands of images over one or more servers.

Items flow lazily from a shared work queue into each server's ExplainStream
(a bounded number in flight, so memory stays flat however big the folder).
Each result is written as it arrives: an overlay PNG and a row of
`index.csv`. Rerunning the job skips what the index says is done; a server
that dies mid-job hands its unanswered items back to the others.
"""
from __future__ import annotations

import csv
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import grpc

from netscope.v1 import inspector_pb2 as pb

from .client import Client, NetscopeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
# Errors that say nothing about the image: the item is tried again on resume.
TRANSIENT = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.CANCELLED.value[0],
             grpc.StatusCode.DEADLINE_EXCEEDED.value[0], grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
FIELDS = ["id", "status", "target", "label", "score", "probability", "overlay", "deletion_auc", "insertion_auc",
          "average_drop", "increase_in_confidence", "road_morf", "road_lerf", "error"]


def find_images(inputs: list[str | Path]) -> list[tuple[str, Path]]:
    """(id, path) for every image file given or under a folder given, recursively, sorted.
    The id is the path relative to its folder (or the file name)."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            for p in sorted(item.rglob("*")):
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                    found.append((p.relative_to(item).as_posix(), p))
        elif item.is_file():
            found.append((item.name, item))
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    ids = [i for i, _ in found]
    if len(set(ids)) != len(ids):  # two inputs with the same relative names: keep them apart
        found = [(p.as_posix(), p) for _, p in found]
    return found


def read_index(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def finished(row: dict) -> bool:
    """Done for good: explained, or failed for a reason the image itself carries."""
    if row["status"] == "ok":
        return True
    try:
        return int(row["status"].split(":")[0]) not in TRANSIENT
    except ValueError:
        return False


@dataclass
class JobReport:
    total: int = 0
    skipped: int = 0
    explained: int = 0
    failed: int = 0
    errors: dict = field(default_factory=dict)


class ExplainJob:
    def __init__(self, servers: list[str], request: pb.ExplainRequest, out: Path, *, in_flight: int = 32,
                 timeout: float = 3600.0):
        self.servers = servers
        self.spec = request  # everything but the images
        self.out = Path(out)
        self.in_flight = in_flight
        self.timeout = timeout
        self._lock = threading.Lock()

    def run(self, inputs: list[str | Path], progress: Callable[[int], None] | None = None) -> JobReport:
        self.out.mkdir(parents=True, exist_ok=True)
        index_path = self.out / "index.csv"
        done = {k for k, row in read_index(index_path).items() if finished(row)}
        items = find_images(inputs)
        report = JobReport(total=len(items))
        work: queue.Queue = queue.Queue()
        for item in items:
            if item[0] in done:
                report.skipped += 1
            else:
                work.put(item)
        self._outstanding = work.qsize()  # queued or in flight somewhere
        new_file = not index_path.exists()
        with index_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            if new_file:
                writer.writeheader()

            def record(item_id: str, resp: pb.ExplainStreamResponse):
                row = self._row(item_id, resp)
                with self._lock:
                    writer.writerow(row)
                    f.flush()
                    self._outstanding -= 1
                    if row["status"] == "ok":
                        report.explained += 1
                    else:
                        report.failed += 1
                        report.errors[row["status"]] = report.errors.get(row["status"], 0) + 1
                if progress:
                    progress(1)

            threads = [threading.Thread(target=self._serve_from, args=(s, work, record), daemon=True)
                       for s in self.servers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if self._outstanding:
            left = self._outstanding
            raise NetscopeError(grpc.StatusCode.UNAVAILABLE,
                                f"every server failed with {left} image(s) left; run the same command again to resume")
        return report

    def _serve_from(self, server: str, work: queue.Queue, record) -> None:
        """Stream items from the shared queue through one server until the queue is empty
        or the server fails; unanswered items go back to the queue."""
        pending: dict[str, Path] = {}
        slots = threading.Semaphore(self.in_flight)
        dead = threading.Event()
        guard = threading.Lock()  # pending vs. the hand-back when the server dies
        with Client(server, timeout=self.timeout) as client:
            try:
                client.wait_ready(timeout=30)
            except (TimeoutError, NetscopeError):
                return

            def requests() -> Iterator[pb.ExplainStreamRequest]:
                while True:
                    slots.acquire()
                    if dead.is_set():
                        return
                    try:
                        item_id, path = work.get(timeout=0.1)
                    except queue.Empty:
                        slots.release()
                        if self._outstanding == 0:
                            return
                        continue  # another server may hand items back yet
                    with guard:
                        if dead.is_set():
                            work.put((item_id, path))
                            return
                        pending[item_id] = path
                    req = pb.ExplainRequest()
                    req.CopyFrom(self.spec)
                    try:
                        req.images.add(encoded=path.read_bytes())
                    except OSError as exc:
                        with guard:
                            pending.pop(item_id)
                        record(item_id, pb.ExplainStreamResponse(id=item_id, error=pb.ItemError(
                            code=grpc.StatusCode.NOT_FOUND.value[0], message=str(exc))))
                        slots.release()
                        continue
                    yield pb.ExplainStreamRequest(id=item_id, request=req)

            try:
                for resp in client.stub.ExplainStream(requests(), timeout=self.timeout):
                    with guard:
                        answered = pending.pop(resp.id, None) is not None
                    if answered:
                        record(resp.id, resp)
                    slots.release()
            except grpc.RpcError:
                with guard:
                    dead.set()
                    for item_id, path in pending.items():  # the server went away: others take these
                        work.put((item_id, path))
                    pending.clear()
                for _ in range(self.in_flight):  # wake a request generator blocked on a slot
                    slots.release()

    def _row(self, item_id: str, resp: pb.ExplainStreamResponse) -> dict:
        if resp.HasField("error"):
            code = grpc.StatusCode.INTERNAL
            for c in grpc.StatusCode:
                if c.value[0] == resp.error.code:
                    code = c
            return {"id": item_id, "status": f"{resp.error.code}:{code.name}", "error": resp.error.message}
        cls = resp.response.explanations[0].classes[0]
        row = {"id": item_id, "status": "ok", "target": cls.target, "label": cls.label, "score": f"{cls.score:.6g}",
               "probability": f"{cls.probability:.6g}"}
        if cls.overlay_png:
            name = Path(item_id).with_suffix(".png")
            path = self.out / "overlays" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(cls.overlay_png)
            row["overlay"] = (Path("overlays") / name).as_posix()
        if cls.HasField("faithfulness"):
            f = cls.faithfulness
            for key in ("deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence", "road_morf",
                        "road_lerf"):
                row[key] = f"{getattr(f, key):.6g}"
        return row
