"""Explanation jobs as Ray Data pipelines (`netscope explain --engine ray`).

The job is the one `netscope explain` runs over gRPC (netscope.client.jobs):
the same request, output folder and resume rules; only who computes changes.
A Ray Data pipeline of three stages:

    items      (id, uri, label) per image not yet done, listed by the driver
    decode     Ray tasks: read the bytes (a local path, or any URI pyarrow
               reads: s3://, gs://, hdfs://), decode and preprocess them the
               server's way (rpc/convert.images_to_batch, the model's recipe),
               each image a float (C, H, W) pb.Image tensor
    explain    an actor pool of `Explainer`s; each loads the model once through
               netscope's own registry (server/models/registry.py) and runs the
               Explain RPC's stages (InspectorService.prepare/compute/render)
               on device batches grouped as ExplainStream groups them, so the
               answers are the gRPC path's, byte for byte. A GPU per actor
               where the cluster has GPUs.

The driver writes each answer as it arrives through the gRPC job's own writer
(`RayJob` is an `ExplainJob` whose work goes to Ray instead of servers): the
overlay, then its index row; a rerun skips what the index says is done. An
actor that dies is restarted by Ray and its batch retried; an answer that
comes twice is written once.

For your own pipelines: `explain_dataset(ds, model, request)` adds the decode
and explain stages to a Dataset of `id` plus `bytes` (or `uri`) columns and
returns one of `id`, `answer` (a serialized pb.ExplainStreamResponse: read it
with `result`) and `worker`. `Explainer` alone is a callable class for
`ds.map_batches(Explainer, fn_constructor_kwargs=..., compute=ActorPoolStrategy(...))`
over rows of `id` and `image` (a serialized pb.Image).

Ray is imported only when a job starts (`require_ray`); the server code only
in the workers and the preflight, so the driver stays light.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from netscope.v1 import inspector_pb2 as pb

from netscope.client.client import NetscopeError, StreamResult, Timing, _explanations, explain_request
from netscope.client.jobs import IMAGE_SUFFIXES, ExplainJob, find_images as find_local_images, request_error

log = logging.getLogger("netscope.jobs.ray")

INSTALL_HINT = "pip install 'netscope[ray]' (from a checkout: .venv/bin/pip install -e '.[ray]')"
DEFAULT_MAX_PIXELS = 64_000_000  # as server/imaging's DEFAULT_MAX_PIXELS; the driver does not import the server
MAX_BLOCKS = 10_000  # the most blocks one job's items are cut into (their bookkeeping is the driver's)
DECODE_CPUS = 0.5  # a decode task's CPU share (see explain_dataset)


def require_ray():
    """The `ray` module with Ray Data; ImportError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the Ray engine needs Ray Data: {INSTALL_HINT} ({exc})") from None
    return ray


@dataclass(frozen=True)
class ModelSource:
    """The model every worker loads: what `serve --model` takes. `id` names it
    in the request and job.json; `source` is a torchvision architecture (with
    `weights` none, DEFAULT or an enum name) or a checkpoint in `store`
    (`demo`, the embedded default, is trained there first when missing).
    `store` must be the same path on every node (a shared file system)."""

    id: str
    source: str
    weights: str = ""
    store: str = "models"
    device: str = "auto"  # auto: the actor's GPU when it has one, else the CPU
    dtype: str = "float32"

    @classmethod
    def parse(cls, text: str, **kw) -> "ModelSource":
        """`SOURCE[:WEIGHTS]` or `ID=SOURCE[:WEIGHTS]`, as `serve --model`
        (the id defaults to the source's name: `resnet18:DEFAULT` -> resnet18,
        `runs/mine.pt` -> mine). ValueError for an empty source."""
        model_id, sep, rest = text.partition("=")
        if not sep:
            model_id, rest = "", text
        source, _, weights = rest.partition(":")
        source = source.strip()
        if not source:
            raise ValueError(f"--model {text!r}: expected SOURCE[:WEIGHTS] or ID=SOURCE[:WEIGHTS], "
                             "e.g. resnet18:DEFAULT or demo")
        model_id = model_id.strip() or Path(source).stem
        return cls(model_id, source, weights.strip(), **kw)

    def service(self, *, stream_batch: int = 32, max_pixels: int = DEFAULT_MAX_PIXELS, device: str | None = None):
        """An InspectorService (no gRPC) holding this model, loaded through the registry."""
        from netscope.server.models.registry import Registry
        from netscope.server.rpc.service import InspectorService, Limits

        registry = Registry(self.store, default_device=device or self.device, default_dtype=self.dtype)
        registry.load(self.id, self.source, weights=self.weights)
        limits = Limits(max_pixels=max_pixels, max_images=max(stream_batch, 1), stream_batch=stream_batch)
        return InspectorService(registry, limits, decode_threads=1)


def _status_bytes(exc: BaseException, item_id: str = "") -> bytes:
    """An error as a serialized ExplainStreamResponse (code, message, google.rpc.Status)."""
    from netscope.server.runtime.stream import item_error

    return item_error(pb.ExplainStreamRequest(id=item_id), exc).SerializeToString()


def _error_of(answer: bytes) -> NetscopeError:
    resp = pb.ExplainStreamResponse.FromString(answer)
    return NetscopeError.from_item_error(resp.error)


# ---------------------------------------------------------------- preflight

def describe(model: ModelSource, request: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, stream_batch: int = 32) -> dict:
    """Load the model once (on the CPU) and check the request as the Explain RPC
    checks it before any image: method, options, layers, target, rendering.
    Returns {"recipe", "min_size", "max_pixels"} for the decode tasks and
    "batch", the images of one device batch (ExplainStream's batch_limit), or
    {"error": serialized ExplainStreamResponse} (the model or the request is
    at fault: every image would fail so). Runs as a Ray task, on the cluster,
    where the store is."""
    from netscope.server.errors import ServerError
    from netscope.server.rpc import convert
    from netscope.server.runtime.stream import batch_limit

    try:
        if model.source in ("demo", "demo.pt"):
            from netscope.training.demo import ensure_demo

            ensure_demo(model.store, progress=False)
        service = model.service(device="cpu", max_pixels=max_pixels)
        m = service.registry.get(model.id)
        req = pb.ExplainRequest.FromString(request)
        req.model = model.id
        service.check_explanation(m, req, 1, m.input_size)
        convert.check_render(req)
        return {"recipe": m.recipe, "min_size": m.min_input_size, "max_pixels": max_pixels,
                "batch": batch_limit(req, stream_batch)}
    except ServerError as exc:
        return {"error": _status_bytes(exc)}


# ---------------------------------------------------------------- decode (Ray tasks)

def read_bytes(uri: str) -> bytes:
    """The file's bytes: a local path, or any URI pyarrow's file systems read (s3://, gs://, hdfs://)."""
    if "://" not in uri:
        return Path(uri).read_bytes()
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    with fs.open_input_stream(path) as f:
        return f.readall()


def decode(batch: dict, *, recipe, min_size: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """A decode task's work: rows of `id` and `bytes` (or `uri`, read here) ->
    rows of `id`, `image` (a serialized pb.Image holding the preprocessed
    (C, H, W) float32 tensor, as the server's decode makes it) and `error`
    (a serialized ExplainStreamResponse; b"" when decoded). Other columns
    (`label`) pass through. An unreadable file is NOT_FOUND, an undecodable
    image INVALID_ARGUMENT: that image's own error, as over gRPC."""
    from netscope.server.rpc import convert

    ids = [str(i) for i in batch["id"]]
    images, errors = [], []
    for n, item_id in enumerate(ids):
        try:
            data = bytes(batch["bytes"][n]) if "bytes" in batch else read_bytes(str(batch["uri"][n]))
        except OSError as exc:
            images.append(b"")
            errors.append(pb.ExplainStreamResponse(id=item_id, error=pb.ItemError(
                code=grpc.StatusCode.NOT_FOUND.value[0], message=str(exc))).SerializeToString())
            continue
        try:
            x = convert.images_to_batch([pb.Image(encoded=data)], recipe, max_pixels=max_pixels, max_images=1,
                                        min_size=min_size)[0]
        except Exception as exc:  # noqa: BLE001 - the image's own error, its code by server/errors.py
            images.append(b"")
            errors.append(_status_bytes(exc, item_id))
            continue
        images.append(pb.Image(tensor=convert.tensor_to_proto(x)).SerializeToString())
        errors.append(b"")
    out = {k: v for k, v in batch.items() if k not in ("bytes", "uri")}
    out.update(id=ids, image=images, error=errors)
    return out


# ---------------------------------------------------------------- explain (Ray actors)

class Explainer:
    """A callable class for `Dataset.map_batches` on an actor pool: loads the
    model once (ModelSource.service) and explains rows of `id`, `image` (a
    serialized pb.Image) and optionally `label` (explain that image for this
    class; "" for the request's target) and `error` (passed through) ->
    rows of `id`, `answer` (a serialized pb.ExplainStreamResponse: the
    response or the item's error) and `worker` (ray:HOST:PID).

    `keep_maps=False` drops the raw maps (heatmap, heatmap_upsampled) from the
    answers, keeping scores and PNGs: what a job writes, at a third of the bytes
    back to the driver for a 224x224 model.

    `request`: the pb.ExplainRequest (or its bytes) without images. Items go
    through the Explain RPC's own stages in the groups ExplainStream makes:
    consecutive items of one explanation share a device batch of at most
    `stream_batch` images, unless the method fills its own passes; a batch
    that fails is retried item by item, so an error is its item's own."""

    def __init__(self, model: ModelSource, request: bytes | pb.ExplainRequest, *, stream_batch: int = 32,
                 max_pixels: int = DEFAULT_MAX_PIXELS, keep_maps: bool = True):
        self.model = model
        self.stream_batch = stream_batch
        self.keep_maps = keep_maps
        self.service = model.service(stream_batch=stream_batch, max_pixels=max_pixels)
        spec = request if isinstance(request, pb.ExplainRequest) else pb.ExplainRequest.FromString(request)
        self.spec = pb.ExplainRequest()
        self.spec.CopyFrom(spec)
        del self.spec.images[:]
        self.spec.model = model.id
        self.worker = f"ray:{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict) -> dict:
        ids = [str(i) for i in batch["id"]]
        answers: dict[str, bytes] = {}
        items = []
        for n, item_id in enumerate(ids):
            error = batch["error"][n] if "error" in batch else b""
            if error:
                answers[item_id] = bytes(error)
                continue
            req = pb.ExplainRequest()
            req.CopyFrom(self.spec)
            label = str(batch["label"][n]) if "label" in batch else ""
            if label:  # one class per image: items of different classes still share a batch
                req.ClearField("target")
                req.targets.add(label=label)
            req.images.add().ParseFromString(bytes(batch["image"][n]))
            items.append(pb.ExplainStreamRequest(id=item_id, request=req))
        for group in self._groups(items):
            for resp in self._explain(group):
                if not self.keep_maps:
                    for explanation in resp.response.explanations:
                        for cls in explanation.classes:
                            cls.ClearField("heatmap")
                            cls.ClearField("heatmap_upsampled")
                answers[resp.id] = resp.SerializeToString()
        return {"id": ids, "answer": [answers[i] for i in ids], "worker": [self.worker] * len(ids)}

    def _groups(self, items: list[pb.ExplainStreamRequest]) -> list[list[pb.ExplainStreamRequest]]:
        """Consecutive items of one explanation, at most its device batch's images (stream.batch_limit)."""
        from netscope.server.runtime.stream import batch_limit, spec_key

        groups: list[list[pb.ExplainStreamRequest]] = []
        key, images, limit = None, 0, 0
        for item in items:
            k, n = spec_key(item.request), len(item.request.images)
            if groups and k == key and images + n <= limit:
                groups[-1].append(item)
                images += n
            else:
                groups.append([item])
                key, images, limit = k, n, batch_limit(item.request, self.stream_batch)
        return groups

    def _explain(self, group: list[pb.ExplainStreamRequest]) -> list[pb.ExplainStreamResponse]:
        """Prepare and compute the group as one device batch, then draw each item's
        answer alone, as ExplainStream does; a failed batch is retried item by item."""
        from netscope.server.runtime.stream import item_error, merged

        s = self.service
        try:
            jobs = [s.compute_explanation(s.prepare_explanation(merged(group)))]
        except Exception as exc:  # noqa: BLE001 - whose error? each alone below
            if len(group) == 1:
                return [item_error(group[0], exc)]
            jobs = None
        if jobs is None:
            out = []
            for item in group:
                try:
                    out += self._render([item], s.compute_explanation(s.prepare_explanation(item.request)))
                except Exception as exc:  # noqa: BLE001
                    out.append(item_error(item, exc))
            return out
        return self._render(group, jobs[0])

    def _render(self, group: list[pb.ExplainStreamRequest], job) -> list[pb.ExplainStreamResponse]:
        from netscope.server.runtime.stream import item_error

        out, offset = [], 0
        for item in group:
            n = len(item.request.images)
            part = job if len(group) == 1 else job.part(item.request, offset, offset + n)
            offset += n
            try:
                out.append(pb.ExplainStreamResponse(id=item.id, response=self.service.render_explanation(part)))
            except Exception as exc:  # noqa: BLE001 - this item's own error
                out.append(item_error(item, exc))
        return out


def request(method: str = "grad_cam", *, target: int | str | None = None, layers=(), overlay: bool = True,
            heatmap_png: bool = False, colormap: str = "", alpha: float = 0.0, sign: str = "",
            clip_percentile: float | None = None, faithfulness: bool = False, top_k: int = 0,
            **options) -> pb.ExplainRequest:
    """The ExplainRequest (without images) for explain_dataset / Explainer, with
    Client.explain's keywords and options (steps=32, baseline="blur", ...)."""
    return explain_request("", [], method, target, layers, overlay, heatmap_png, colormap, alpha, faithfulness,
                           top_k, options, sign=sign, clip_percentile=clip_percentile)


def result(answer: bytes) -> StreamResult:
    """An `answer` of explain_dataset / Explainer as the client's StreamResult:
    its maps (numpy arrays, per class) or its error (NetscopeError)."""
    resp = pb.ExplainStreamResponse.FromString(answer)
    if resp.HasField("error"):
        return StreamResult(resp.id, error=NetscopeError.from_item_error(resp.error))
    return StreamResult(resp.id, classes=_explanations(resp.response)[0], timing=Timing.from_proto(resp.response.timing))


# ---------------------------------------------------------------- the pipeline

@dataclass
class Placement:
    """Where the explain stage runs: how many actors at most, and each one's resources."""

    actors: int
    num_gpus: float
    num_cpus: float

    @classmethod
    def for_cluster(cls, ray, model: ModelSource, actors: int | None = None) -> "Placement":
        """One actor per GPU when the cluster has GPUs (and the model is not
        pinned to the CPU); else up to half the CPUs, the rest decoding."""
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        if gpus and not model.device.startswith("cpu"):
            return cls(actors or gpus, 1, 1)
        return cls(actors or max(1, int(res.get("CPU", 1)) // 2), 0, 1)


def preflight(model: ModelSource, request: pb.ExplainRequest, max_pixels: int = DEFAULT_MAX_PIXELS,
              stream_batch: int = 32) -> dict:
    """`describe` as a Ray task on the cluster; raises the model's or the
    request's NetscopeError (NOT_FOUND, INVALID_ARGUMENT, ...) before any image is read."""
    ray = require_ray()
    info = ray.get(ray.remote(num_cpus=1)(describe).remote(model, request.SerializeToString(), max_pixels,
                                                            stream_batch))
    if "error" in info:
        raise _error_of(info["error"])
    return info


def explain_dataset(ds, model: ModelSource, request: pb.ExplainRequest, *, info: dict | None = None,
                    actors: int | None = None, stream_batch: int = 32, max_pixels: int = DEFAULT_MAX_PIXELS,
                    keep_maps: bool = True):
    """`ds` (rows of `id` and `bytes` or `uri`, optionally `label`) -> a lazy
    Dataset of `id`, `answer`, `worker` (see Explainer; `result` reads an
    answer). `info`: what `preflight` returned (run here when None, raising
    the request's error before any image is read)."""
    ray = require_ray()
    quiet()
    info = info or preflight(model, request, max_pixels, stream_batch)
    place = Placement.for_cluster(ray, model, actors)
    ds = ds.map_batches(decode, fn_kwargs={"recipe": info["recipe"], "min_size": info["min_size"],
                                           "max_pixels": info["max_pixels"]},
                        batch_size=None, batch_format="numpy",  # a block at a time
                        # Not the actors' resources, so Ray Data keeps decoding in tasks of its own rather than
                        # fusing it into the actors: they only explain, and two decoders fit beside one actor.
                        num_cpus=DECODE_CPUS)
    return ds.map_batches(Explainer, fn_constructor_kwargs={"model": model, "request": request.SerializeToString(),
                                                            "stream_batch": stream_batch,
                                                            "max_pixels": info["max_pixels"],
                                                            "keep_maps": keep_maps},
                          # A device batch per call, so answers leave as each is done (one image with metrics).
                          batch_size=info["batch"], batch_format="numpy",
                          compute=ray.data.ActorPoolStrategy(min_size=1, max_size=place.actors),
                          num_gpus=place.num_gpus, num_cpus=place.num_cpus)


def connect(address: str | None):
    """ray.init: `address` (auto, HOST:PORT, ray://...; None: $RAY_ADDRESS, else a
    new local Ray on this machine), quietly, unless Ray is up in this process
    already. Returns whether this call connected."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    kw = {"log_to_driver": False, "configure_logging": True, "logging_level": logging.WARNING}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kw["include_dashboard"] = False
    ray.init(address=address, **kw)
    return True


def disconnect() -> None:
    """Shut down this process's Ray connection (and the local Ray it started), if any."""
    ray = require_ray()
    if ray.is_initialized():
        ray.shutdown()


def quiet() -> None:
    """No Ray Data progress bars or per-dataset log lines on the driver: the job draws its own progress."""
    ray = require_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


# ---------------------------------------------------------------- the job

def find_images(inputs, exclude=None) -> list[tuple[str, object]]:
    """(id, path or URI) of every image given or under a folder given, sorted:
    local inputs as netscope.client.jobs.find_images lists them; a URI
    (s3://bucket/photos/) listed recursively through pyarrow's file systems,
    ids relative to it. FileNotFoundError for an input that is neither."""
    local = [i for i in inputs if "://" not in str(i)]
    found = find_local_images(local, exclude=exclude) if local else []
    for uri in (str(i) for i in inputs if "://" in str(i)):
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(uri)
        scheme = uri.split("://", 1)[0]
        info = fs.get_file_info(root)
        if info.type == pyarrow.fs.FileType.File:
            found.append((Path(root).name, uri))
            continue
        if info.type != pyarrow.fs.FileType.Directory:
            raise FileNotFoundError(f"no such file or folder: {uri}")
        files = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
        for f in sorted(files, key=lambda f: f.path):
            if f.type == pyarrow.fs.FileType.File and Path(f.path).suffix.lower() in IMAGE_SUFFIXES:
                found.append((Path(f.path).relative_to(root).as_posix(), f"{scheme}://{f.path}"))
    return found


class RayJob(ExplainJob):
    """An explanation job (ExplainJob's request, folder, index and resume)
    computed by a Ray Data pipeline instead of netscope servers.

    `model`: what the workers load (its id replaces the request's model);
    `address`: the Ray cluster (see `connect`); `actors`: at most this many
    explain actors (default: Placement.for_cluster). run() raises the
    model's or request's NetscopeError before any image is read, and
    UNAVAILABLE, saying to rerun, when the pipeline fails midway."""

    def __init__(self, request: pb.ExplainRequest, out, model: ModelSource, *, address: str | None = None,
                 labels: dict[str, str] | None = None, actors: int | None = None, stream_batch: int = 32,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        spec = pb.ExplainRequest()
        spec.CopyFrom(request)
        spec.model = model.id
        super().__init__(["ray"], spec, out, labels=labels)
        self.model = model
        self.address = address
        self.actors = actors
        self.stream_batch = stream_batch
        self.max_pixels = max_pixels

    def run(self, inputs=(), progress=None, *, images=None):
        """ExplainJob.run, on Ray: connects first (from this thread: Ray wants the main
        one for its signal handlers). A local Ray it starts stays up for this process's
        next jobs (one per method), and Ray shuts it down when the process exits."""
        # Ray prints the cluster's error messages (a worker died, ...) to stdout: they belong
        # on stderr, beside the job's own, and stdout to the job's result (--json).
        with contextlib.redirect_stdout(sys.stderr):
            connect(self.address)
            return super().run(inputs, progress, images=images)

    def _stream(self, server: str, work, record) -> None:
        """Everything in `work` through the pipeline; each answer recorded once, as it arrives."""
        items = []
        while not work.empty():
            items.append(work.get_nowait())
        if not items:
            return
        ray = require_ray()
        info = preflight(self.model, self.spec, self.max_pixels, self.stream_batch)
        rows = [{"id": item_id, "uri": str(path), "label": (self.labels or {}).get(item_id, "")}
                for item_id, path in items]
        # Blocks of a device batch: the unit Ray schedules, retries, and hands back to be written.
        blocks = min(MAX_BLOCKS, max(1, math.ceil(len(rows) / info["batch"])))
        ds = explain_dataset(ray.data.from_items(rows, override_num_blocks=blocks), self.model, self.spec,
                             info=info, actors=self.actors, stream_batch=self.stream_batch,
                             max_pixels=self.max_pixels, keep_maps=False)  # the writer needs PNGs and scores
        seen: set[str] = set()
        try:
            for row in ds.iter_rows():
                item_id = str(row["id"])
                if item_id in seen:  # a retried batch's answer that already came
                    continue
                seen.add(item_id)
                resp = pb.ExplainStreamResponse.FromString(bytes(row["answer"]))
                resp.id = item_id
                if resp.HasField("error"):
                    fault = request_error(resp.error)
                    if fault is not None:  # every image would fail so: stop, no row
                        self._request_error = self._request_error or fault
                        self._abort.set()
                        return
                record(str(row["worker"]), item_id, resp)
        except (ray.exceptions.RayError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise NetscopeError(grpc.StatusCode.UNAVAILABLE,
                                f"the Ray job failed ({first}) with {self._outstanding} image(s) left; "
                                "run the same command again to resume") from None
