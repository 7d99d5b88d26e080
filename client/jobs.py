"""Explain a folder of thousands of images over one or more servers.

Items flow lazily from a shared work queue into each server's ExplainStream
(a bounded number in flight, so memory stays flat however big the folder).
Each result is written as it arrives: an overlay PNG, then its row of the
index (job_index.py). Rerunning the job skips what the index says is done; a
server that dies, or makes no progress for `timeout` seconds while it holds
items, hands its unanswered items back to the others. Progress is any
message: an answer, or the StreamProgress a server sends (asked for on every
item) while its work moves on, so one slow image, however long, is not a
lost server, and a stuck or silent one still is.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import grpc
from google.protobuf.json_format import MessageToDict

from netscope.v1 import inspector_pb2 as pb

from .client import Client, NetscopeError
from .job_index import METRICS, JobIndex, SpecMismatch, claim, finished

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
log = logging.getLogger("netscope.jobs")


def find_images(inputs: list[str | Path], exclude: str | Path | None = None) -> list[tuple[str, Path]]:
    """(id, path) for every image file given or under a folder given, recursively, sorted.
    The id is the path relative to its folder (or the file name). Nothing under `exclude`
    (the job's output folder, which may sit inside an input folder) is taken."""
    skip = Path(exclude).resolve() if exclude is not None else None
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            for p in sorted(item.rglob("*")):
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not (
                        skip is not None and p.resolve().is_relative_to(skip)):
                    found.append((p.relative_to(item).as_posix(), p))
        elif item.is_file():
            found.append((item.name, item))
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    ids = [i for i, _ in found]
    if len(set(ids)) != len(ids):  # two inputs with the same relative names: keep them apart
        found = [(p.as_posix(), p) for _, p in found]
    return found


def folder_labels(inputs: list[str | Path], images: list[tuple[str, Path]]) -> dict[str, str]:
    """{image id: its class}, read from the folder layout torchvision's
    ImageFolder reads: ROOT/CLASS/.../image.png, for each input folder ROOT.
    ValueError naming the first image that sits in no class folder (directly
    in ROOT, or given as a file)."""
    roots = [Path(i).resolve() for i in inputs if Path(i).is_dir()]
    labels = {}
    for item_id, path in images:
        real = path.resolve()
        root = next((r for r in roots if real.is_relative_to(r)), None)
        parts = real.relative_to(root).parts if root is not None else ()
        if len(parts) < 2:
            raise ValueError(f"--target-from-folder: {path} is not inside a class folder of an input folder "
                             f"(ROOT/CLASS/image, as torchvision's ImageFolder reads them)")
        labels[item_id] = parts[0]
    return labels


def overlay_names(ids: list[str]) -> dict[str, str]:
    """Where each image's overlay goes under overlays/: its id with a .png suffix,
    or id + .png where two images differ only in their suffix (a.jpg, a.png)."""
    stems = Counter(Path(i).with_suffix("").as_posix() for i in ids)
    return {i: (Path(i).with_suffix(".png") if stems[Path(i).with_suffix("").as_posix()] == 1
                else Path(i + ".png")).as_posix() for i in ids}


def job_spec(request: pb.ExplainRequest) -> dict:
    """What a job asks for, as recorded in its folder's job.json."""
    spec = pb.ExplainRequest()
    spec.CopyFrom(request)
    del spec.images[:]
    return MessageToDict(spec, preserving_proto_field_name=True)


def request_error(error: pb.ItemError) -> NetscopeError | None:
    """The item's error as a NetscopeError when it is the request's fault, not
    the image's: it names a request field (google.rpc.BadRequest) other than
    the image and its target (a wrong layer, method or option). Every other
    image would fail the same way, so the job stops at the first one."""
    exc = NetscopeError.from_item_error(error)
    fields = [f for f, _ in exc.field_violations]
    if fields and not any(f.startswith(("images", "targets")) for f in fields):
        return exc
    return None


@dataclass
class JobReport:
    total: int = 0
    skipped: int = 0
    explained: int = 0
    failed: int = 0
    errors: dict = field(default_factory=dict)
    replaced: str = ""  # why the folder's earlier job (nothing of which had succeeded) was replaced


class ExplainJob:
    """One explanation request over many images, written to one folder."""

    def __init__(self, servers: list[str], request: pb.ExplainRequest, out: Path, *, in_flight: int = 64,
                 timeout: float = 120.0, on_server_lost: Callable[[str, str, int], None] | None = None,
                 connect: dict | None = None, labels: dict[str, str] | None = None):
        self.servers = servers
        # {image id: its class label}: each image explained for its own class (ExplainRequest.targets)
        self.labels = labels
        self.connect = dict(connect or {})  # Client keywords for every server: TLS, token
        self.spec = request  # everything but the images
        self.out = Path(out)
        self.index = JobIndex(self.out)
        self.in_flight = in_flight
        self.timeout = timeout  # seconds a server may go without progress (any message) while it holds items
        self._lock = threading.Lock()
        self._outstanding = 0  # items queued or in flight somewhere
        self._lost: dict[str, str] = {}  # server -> why it was given up on
        self._without_model: set[str] = set()  # servers that do not have the job's model
        self._crash: BaseException | None = None
        self._request_error: NetscopeError | None = None  # the request's fault: stop, say it once
        self._abort = threading.Event()  # something other than a server failed: every sender stops
        # (server, why, images handed to the others): a fleet job goes on, but say so
        self.on_server_lost = on_server_lost or (
            lambda server, why, n: log.warning("%s failed (%s); %d image(s) go to the other servers", server, why, n))

    def run(self, inputs: list[str | Path] = (), progress: Callable[[int], None] | None = None, *,
            images: list[tuple[str, Path]] | None = None,
            skipped: Callable[[int], None] | None = None) -> JobReport:
        """Explain `images` ((id, path) pairs; default: found under `inputs`), skipping those
        the folder's index says are done. Raises NetscopeError UNAVAILABLE when every server
        failed with images left (the index keeps what was done: run it again to resume);
        the server's error (its code, message and details: the closest names) at the first
        answer that is the request's fault (`request_error`: a wrong layer, option, ...),
        recording no row for it, so a corrected rerun starts afresh; FAILED_PRECONDITION
        when the folder holds a job with other settings of which some image succeeded.
        progress(n): n more images have their row; skipped(n), when given, takes the
        images the index already held (else progress gets them, first)."""
        items = find_images(inputs) if images is None else images
        try:
            spec = job_spec(self.spec)
            if self.labels is not None:  # a job of per-image targets is not one of the spec's single target
                spec["targets"] = "per image, from the folder layout"
            replaced = claim(self.out, spec)
        except SpecMismatch as exc:
            raise NetscopeError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
        done = {k for k, row in self.index.rows().items() if finished(row)}
        self._overlays = overlay_names([i for i, _ in items])
        report = JobReport(total=len(items), replaced=replaced or "")
        work: queue.Queue = queue.Queue()
        for item in items:
            if item[0] in done:
                report.skipped += 1
            else:
                work.put(item)
        if report.skipped and (skipped or progress):
            (skipped or progress)(report.skipped)
        self._outstanding = work.qsize()

        def record(server: str, item_id: str, resp: pb.ExplainStreamResponse):
            row = self._row(item_id, resp)  # the overlay is on disk before its row
            row["server"] = server
            self.index.append(row)
            with self._lock:
                self._outstanding -= 1
                if row["status"] == "ok":
                    report.explained += 1
                else:
                    report.failed += 1
                    report.errors[row["status"]] = report.errors.get(row["status"], 0) + 1
            if progress:
                progress(1)

        try:
            with self.index:
                threads = [threading.Thread(target=self._serve_from, args=(s, work, record), daemon=True,
                                            name=f"job-{s}") for s in self.servers]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
        finally:
            self.index.export_json()
        if self._crash is not None:
            raise self._crash
        if self._request_error is not None:
            raise self._request_error
        if self._outstanding and self._without_model == set(self.servers):
            raise NetscopeError(grpc.StatusCode.NOT_FOUND,
                                f"no model {self.spec.model!r} on {', '.join(self.servers)}; load it there "
                                "(netscope load) or name a loaded one (netscope models)")
        if self._outstanding:
            why = "; ".join(f"{s}: {reason}" for s, reason in self._lost.items())
            raise NetscopeError(grpc.StatusCode.UNAVAILABLE,
                                f"every server failed ({why}) with {self._outstanding} image(s) left; "
                                "run the same command again to resume")
        return report

    def _serve_from(self, server: str, work: queue.Queue, record) -> None:
        try:
            self._stream(server, work, record)
        except BaseException as exc:  # noqa: BLE001 - e.g. the disk is full: stop the whole job, say why
            self._crash = self._crash or exc
            self._abort.set()

    def _stream(self, server: str, work: queue.Queue, record) -> None:
        """Stream items from the shared queue through one server until the queue is empty
        or the server fails; unanswered items go back to the queue."""
        pending: dict[str, Path] = {}
        slots = threading.Semaphore(self.in_flight)
        dead = threading.Event()
        guard = threading.Lock()  # pending vs. the hand-back when the server dies
        last_answer = [time.monotonic()]
        model = self.spec.model
        with Client(server, timeout=min(self.timeout, 30.0), **self.connect) as client:
            try:
                client.wait_ready(timeout=min(self.timeout, 30.0))  # a server still starting gets its chance
                if model not in {m.model for m in client.list_models()}:
                    self._lost[server] = f"NOT_FOUND: no model {model!r} loaded there"
                    self._without_model.add(server)
                    return
            except (TimeoutError, NetscopeError) as exc:
                self._lost[server] = str(exc)
                return

            def requests() -> Iterator[pb.ExplainStreamRequest]:
                while True:
                    slots.acquire()
                    if dead.is_set() or self._abort.is_set():
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
                        if not pending:
                            last_answer[0] = time.monotonic()  # the wait starts now
                        pending[item_id] = path
                    req = pb.ExplainRequest()
                    req.CopyFrom(self.spec)
                    if self.labels is not None:  # one target per image: items of different classes still batch
                        req.ClearField("target")
                        req.targets.add(label=self.labels[item_id])
                    try:
                        req.images.add(encoded=path.read_bytes())
                    except OSError as exc:
                        with guard:
                            pending.pop(item_id)
                        record("", item_id, pb.ExplainStreamResponse(id=item_id, error=pb.ItemError(
                            code=grpc.StatusCode.NOT_FOUND.value[0], message=str(exc))))
                        slots.release()
                        continue
                    yield pb.ExplainStreamRequest(id=item_id, request=req, progress=True)

            # No deadline on the whole stream (a big folder takes hours); a server that
            # holds items without progress for `timeout` seconds is given up on instead.
            call = client.stub.ExplainStream(requests())
            watchdog = threading.Thread(target=self._watch, args=(server, call, pending, last_answer, dead),
                                        daemon=True, name=f"watch-{server}")
            watchdog.start()
            try:
                for resp in call:
                    with guard:
                        last_answer[0] = time.monotonic()  # any message is progress
                        if resp.HasField("progress"):
                            continue  # holds no item: no slot to release
                        answered = pending.pop(resp.id, None) is not None
                    if answered and resp.HasField("error"):
                        fault = request_error(resp.error)
                        if fault is not None:  # every image would fail so: stop the job, no row
                            self._request_error = self._request_error or fault
                            self._abort.set()
                            call.cancel()
                            break
                    if answered:
                        record(server, resp.id, resp)
                    slots.release()
            except grpc.RpcError as err:
                self._lost.setdefault(server, str(client.error(err)))  # a person's words for a refused connection
            finally:
                with guard:
                    dead.set()
                    if pending:  # the server went away: others take these
                        self._lost.setdefault(server, "the stream ended with images unanswered")
                    handed_back = len(pending)
                    for item_id, path in pending.items():
                        work.put((item_id, path))
                    pending.clear()
                for _ in range(self.in_flight):  # wake a request generator blocked on a slot
                    slots.release()
                if server in self._lost and self._outstanding and not self._abort.is_set():
                    self.on_server_lost(server, self._lost[server], handed_back)

    def _watch(self, server: str, call, pending: dict, last_answer: list, dead: threading.Event) -> None:
        while not dead.wait(min(1.0, self.timeout / 4)):
            if pending and time.monotonic() - last_answer[0] > self.timeout:
                self._lost[server] = (f"DEADLINE_EXCEEDED: no progress in {self.timeout:g} s (no answer, no "
                                      f"progress message) while it held {len(pending)} image(s)")
                call.cancel()
                return

    def _row(self, item_id: str, resp: pb.ExplainStreamResponse) -> dict:
        if resp.HasField("error"):
            code = next((c for c in grpc.StatusCode if c.value[0] == resp.error.code), grpc.StatusCode.INTERNAL)
            return {"id": item_id, "status": f"{resp.error.code}:{code.name}", "error": resp.error.message}
        cls = resp.response.explanations[0].classes[0]
        row = {"id": item_id, "status": "ok", "target": cls.target, "label": cls.label, "score": f"{cls.score:.6g}",
               "probability": f"{cls.probability:.6g}"}
        if cls.overlay_png:
            name = Path("overlays") / self._overlays.get(item_id, Path(item_id).with_suffix(".png").as_posix())
            path = self.out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(cls.overlay_png)
            row["overlay"] = name.as_posix()
        if cls.HasField("faithfulness"):
            for key in METRICS:  # a metric not asked for stays empty
                if cls.faithfulness.HasField(key):
                    row[key] = f"{getattr(cls.faithfulness, key):.6g}"
        return row
