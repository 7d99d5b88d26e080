"""The Inspector RPCs: proto in, domain call, proto out. No torch logic here."""
from __future__ import annotations

import functools
import math
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import torch
from grpc_status import rpc_status

from netscope.v1 import inspector_pb2 as pb
from netscope.v1 import inspector_pb2_grpc as pb_grpc

from ..runtime import cancel, explain_batching
from . import convert, server_info
from .. import explain, inspection
from ..explain import faithfulness
from ..models import predict
from ..errors import ServerError, code_of, rich_status
from .string_caps import check_strings
from ..imaging import DEFAULT_MAX_PIXELS
from .metrics import Metrics
from ..runtime.stream import ExplainStream, spec_key
from ..models.model_options import ModelOptions
from ..models.registry import LoadedModel, Registry, our_architectures, torchvision_architectures
from ..inspection.summary import Summary

log = logging.getLogger("netscope.service")


@dataclass
class Limits:
    max_pixels: int = DEFAULT_MAX_PIXELS   # per decoded image
    max_images: int = 256                  # images in one request (a device batch is something else)
    max_message_bytes: int = 64 * 1024 * 1024
    stream_batch: int = 32                 # images per device batch on ExplainStream
    explain: explain.Ceilings = field(default_factory=explain.Ceilings)  # per-option ceilings, working memory


def rpc(method):
    """Turn any exception into a status a client can act on (never UNKNOWN),
    and count the call in the metrics. The one wrapper of every method of both
    protocols (netscope.v1 here, the Open Inference Protocol in oip.py): the
    request's strings capped, the call run on behalf of its caller, one
    status per error with its google.rpc details. A method returns its
    response, or (response, Timing, images) when the response has no timing
    field of its own (OIP's)."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        start = time.perf_counter()
        model = model_of(request)
        try:
            check_strings(request)  # every string field capped, before any work
            answer = cancel.call(context, method, self, request, context, what=method.__name__)
        except Exception as exc:  # noqa: BLE001 - the one place errors become statuses
            status = rich_status(exc)  # code, message and google.rpc details, for the trailers
            code = code_of(status.code)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method.__name__)
            self.metrics.observe(method.__name__, model, code.name, time.perf_counter() - start)
            context.abort_with_status(rpc_status.to_status(status))
        if isinstance(answer, tuple):
            response, timing, images = answer
        else:
            response = answer
            timing = response.timing if hasattr(response, "timing") else None
            images = len(getattr(request, "images", ()))
        self.metrics.observe(method.__name__, model, "OK", time.perf_counter() - start, timing, images)
        return response

    return wrapper


def model_of(request) -> str:
    """The model a request names, for the metrics: netscope.v1's `model`, OIP's `model_name` or `name`."""
    for name in ("model", "model_name", "name"):
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


class Clock:
    """Splits a request's server time into the Timing phases."""

    def __init__(self):
        self.timing = pb.Timing()
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        setattr(self.timing, f"{phase}_ms", getattr(self.timing, f"{phase}_ms") + (now - self._last) * 1e3)
        self._last = now


def model_brief(m: LoadedModel) -> pb.ModelBrief:
    return pb.ModelBrief(model=m.id, arch=m.arch, source=m.source, device=str(m.device), dtype=dtype_name(m),
                         num_classes=m.num_classes, pretrained=m.pretrained)


def dtype_name(m: LoadedModel) -> str:
    return str(m.dtype).replace("torch.", "")


def model_info(m: LoadedModel, summary: Summary) -> pb.ModelInfo:
    r = m.recipe
    options = m.options.to_proto()
    layers = [
        pb.LayerInfo(name=row.name, type=row.type, input_shape=row.input_shape, output_shape=row.output_shape,
                     num_parameters=row.num_parameters, trainable_parameters=row.trainable_parameters,
                     mult_adds=row.mult_adds, cam_target=row.cam_target, depth=row.depth, is_leaf=row.is_leaf,
                     conv=row.conv)
        for row in summary.layers
    ]
    return pb.ModelInfo(
        model=m.id, arch=m.arch, source=m.source, weights=m.weights, device=str(m.device), dtype=dtype_name(m),
        input_size=list(summary.input_size),
        preprocessing=pb.Preprocessing(resize=r.resize, crop_size=list(r.crop), mean=list(r.mean), std=list(r.std),
                                       interpolation=r.interpolation, channels=r.channels),
        class_names=m.class_names, num_parameters=summary.num_parameters,
        trainable_parameters=summary.trainable_parameters, flops=summary.flops, mult_adds=summary.mult_adds,
        parameter_bytes=summary.parameter_bytes, layers=layers, pretrained=m.pretrained, note=m.note,
        default_cam_layer=default_cam_layer(m), min_input_size=m.min_input_size,
        options=options, backend=pb.BackendInfo(**m.ort.describe()) if m.ort is not None else pb.BackendInfo(name="torch"),
        # The same settings in ModelInfo's fields from before ModelOptions, for older clients.
        batching=options.batching, channels_last=options.channels_last, compile=options.compile,
        compile_batch_sizes=options.compile_batch_sizes, device_decode=options.device_decode,
        pin_memory=options.pin_memory,
    )


def default_cam_layer(m: LoadedModel) -> str:
    try:
        return explain.default_layer(m.module, m.arch)
    except ServerError:
        return ""


class InspectorService(pb_grpc.InspectorServicer):
    def __init__(self, registry: Registry, limits: Limits | None = None, metrics: Metrics | None = None,
                 decode_threads: int = convert.DEFAULT_DECODE_THREADS):
        self.registry = registry
        self.limits = limits or Limits()
        self.metrics = metrics or Metrics(registry.list)
        self.decoder = convert.decode_pool(decode_threads)
        self.last_inference: dict[str, float] = {}  # model id -> time.time() of its last forward (OIP statistics)
        self.stream = ExplainStream(self, stream_batch=min(self.limits.stream_batch, self.limits.max_images),
                                    metrics=self.metrics)

    def preprocess(self, m: LoadedModel, images):
        """A request's images as one preprocessed (N, C, H, W) tensor, the way the model asked
        for them (decoded on its device, in pinned memory)."""
        return convert.images_to_batch(images, m.recipe, max_pixels=self.limits.max_pixels,
                                       max_images=self.limits.max_images, pool=self.decoder,
                                       device=m.device if m.device_decode else None, pin=m.pinned,
                                       min_size=m.min_input_size)

    def close(self) -> None:
        if self.decoder is not None:
            self.decoder.shutdown(wait=False)

    # ------------------------------------------------------------ lifecycle

    @rpc
    def ListModels(self, request, context):
        return pb.ListModelsResponse(
            models=[model_brief(m) for m in self.registry.list()],
            checkpoints=self.registry.checkpoints(),
            architectures=sorted(set(torchvision_architectures()) | set(our_architectures())),
        )

    @rpc
    def LoadModel(self, request, context):
        m = self.registry.load(request.model, request.source, ModelOptions.from_request(request),
                               weights=request.weights, arch=request.arch, num_classes=request.num_classes)
        return pb.LoadModelResponse(info=model_info(m, m.run(m.describe)))

    @rpc
    def UnloadModel(self, request, context):
        self.registry.unload(request.model)
        return pb.UnloadModelResponse()

    @rpc
    def GetModelInfo(self, request, context):
        m = self.registry.get(request.model)
        return model_info(m, m.run(m.describe, tuple(request.input_size) or None))

    # ------------------------------------------------------------ inference

    @rpc
    def Predict(self, request, context):
        return self.predict_response(request)

    def predict_response(self, request: pb.PredictRequest) -> pb.PredictResponse:
        """Predict without gRPC around it (the RPC, and `netscope bench --in-process`)."""
        m = self.registry.get(request.model)
        k = predict.resolve_k(request.top_k, m.num_classes)
        clock = Clock()
        logits = self.classify(m, request.images, clock)
        results = predict.top_k(m, logits, k, request.return_probabilities)
        out = pb.PredictResponse()
        for r in results:
            p = out.predictions.add()
            for i, label, prob, logit in zip(r.indices, r.labels, r.probabilities, r.logits):
                p.top_k.add(index=i, label=label, probability=prob, logit=logit)
            if r.all_probabilities is not None:
                p.probabilities.CopyFrom(convert.tensor_to_proto(r.all_probabilities))
        clock.lap("postprocess")
        out.timing.CopyFrom(clock.timing)
        return out

    def classify(self, m: LoadedModel, images, clock: Clock) -> torch.Tensor:
        """The one inference path of both protocols (netscope.v1 Predict, OIP
        ModelInfer): a request's images (netscope.v1 Image messages) decoded and
        preprocessed under the server's limits, then the forward pass through
        the model's batcher and lanes. Returns the (N, num_classes) float32 host
        logits; `clock` gets the preprocess, queue and compute times and the
        device batch."""
        x = self.preprocess(m, images)
        clock.lap("preprocess")
        return self.logits(m, x, clock)

    def logits(self, m: LoadedModel, x: torch.Tensor, clock: Clock) -> torch.Tensor:
        """classify's forward pass on a preprocessed (N, C, H, W) batch."""
        z, run = predict.logits(m, x)
        clock.lap("compute")
        # The batcher's wait is queue time, not compute.
        clock.timing.queue_ms, clock.timing.compute_ms = run.queue_ms, run.compute_ms
        clock.timing.device_batch_size = run.device_batch_size
        self.last_inference[m.id] = time.time()
        return z

    # ------------------------------------------------------------ inspection

    @rpc
    def GetFeatureMaps(self, request, context):
        m = self.registry.get(request.model)
        clock = Clock()
        x = self.preprocess(m, request.images)
        grid = convert.grid_spec(request.grid) if request.grid.render else None
        clock.lap("preprocess")
        images = m.run(lambda: inspection.feature_maps(m.module, m.to_device(x), list(request.layers),
                                                    channels=list(request.channels),
                                                    top_channels=request.top_channels, grid=grid,
                                                    with_tensor=not request.omit_tensor,
                                                    max_bytes=self.limits.max_message_bytes))
        clock.lap("compute")
        out = pb.FeatureMapsResponse()
        for layers in images:
            out.images.add().layers.extend(convert.layer_activation_to_proto(a) for a in layers)
        clock.lap("postprocess")
        out.timing.CopyFrom(clock.timing)
        return out

    @rpc
    def GetKernels(self, request, context):
        m = self.registry.get(request.model)
        k = m.run(inspection.kernels, m.module, request.layer, mode=convert.kernel_mode(request.mode),
                  grid=convert.grid_spec(request.grid), with_tensor=not request.omit_tensor,
                  max_bytes=self.limits.max_message_bytes)
        out = pb.KernelsResponse(layer=k.layer, grid_png=k.grid_png, mode=convert.kernel_mode_code(k.mode),
                                 tiles=k.tiles, total_tiles=k.total_tiles)
        if k.weight is not None:
            out.weight.CopyFrom(convert.tensor_to_proto(k.weight))
        return out

    @rpc
    def GetLayerStats(self, request, context):
        m = self.registry.get(request.model)
        clock = Clock()
        x = self.preprocess(m, request.images) if request.images else None
        target = convert.target_class(request.target, m.class_names) if request.HasField("target") else None
        clock.lap("preprocess")
        result = m.run(lambda: inspection.layer_stats(m.module, list(request.layers), bins=request.bins,
                                                   hist_range=(request.hist_min, request.hist_max),
                                                   x=m.to_device(x) if x is not None else None, target=target,
                                                   labels=list(request.labels) or None,
                                                   max_bytes=self.limits.max_message_bytes))
        clock.lap("compute")
        out = pb.LayerStatsResponse(layers=[convert.layer_stats_to_proto(ls) for ls in result.layers],
                                    loss=result.loss or 0.0)
        clock.lap("postprocess")
        out.timing.CopyFrom(clock.timing)
        return out

    # ------------------------------------------------------------ explanation

    @rpc
    def Explain(self, request, context):
        return self.explain_response(request)

    def ExplainStream(self, request_iterator, context):
        return self.stream.run(request_iterator, context)

    # ------------------------------------------------------------ discovery

    @rpc
    def GetServerInfo(self, request, context):
        return convert.server_info_to_proto(server_info.gather(self.registry, self.limits))

    def explain_response(self, request: pb.ExplainRequest) -> pb.ExplainResponse:
        return self.render_explanation(self.compute_explanation(self.prepare_explanation(request)))

    # Explaining in three stages, so that ExplainStream can decode the next batch and
    # draw the last one while the device computes this one. Computing goes through
    # the model's batcher, with concurrent requests asking for the same explanation.

    def prepare_explanation(self, request: pb.ExplainRequest) -> "Explaining":
        """Decode and preprocess (CPU)."""
        check_strings(request)  # ExplainStream's items pass no rpc wrapper
        m = self.registry.get(request.model)
        clock = Clock()
        # Everything that needs no forward pass is refused before any work:
        # options, ceilings, targets, layers, rendering, then (once the
        # batch's size is known) working memory and the answer's size.
        checked = self.check_explanation(m, request, len(request.images), m.input_size)
        x = self.preprocess(m, request.images)
        checked = self.check_explanation(m, request, x.shape[0], tuple(x.shape[1:]))
        self.check_explanation_cost(m, request, checked, tuple(x.shape[1:]))
        clock.lap("preprocess")
        return Explaining(request, m, x, clock)

    def check_explanation(self, m: LoadedModel, request: pb.ExplainRequest, n_images: int, input_shape) -> "explain.Checked":
        checked = explain.validate(
            m.module, request.method, convert.explain_options(request.options), n_images, input_shape,
            targets=convert.explain_targets(request), layers=list(request.layers) or None, arch=m.arch,
            class_names=m.class_names, ceilings=self.limits.explain, faithfulness=convert.faithfulness_metrics(request))
        convert.check_render(request)
        return checked

    def check_explanation_cost(self, m: LoadedModel, request: pb.ExplainRequest, checked: "explain.Checked",
                               input_shape) -> None:
        """RESOURCE_EXHAUSTED, before the first forward pass, when the working
        memory or the answer is predicted to be over the server's limits."""
        c, h, w = input_shape
        activation, largest = activation_bytes(m, h * w)
        n = len(request.images)
        opts = convert.explain_options(request.options)
        p = explain.plan(checked.method, opts, n, checked.k, activation_bytes=activation,
                         largest_output_bytes=largest, input_bytes=4 * c * h * w)
        explain.check_plan(p, opts, self.limits.explain, checked.method)
        heat = layer_pixels(m, checked, h * w)
        convert.check_answer_size(request, n, checked.k, heat, (h, w), self.limits.max_message_bytes)

    def compute_explanation(self, job: "Explaining") -> "Explaining":
        """The maps (the device), in a dynamic batch when the model batches."""
        request, m = job.request, job.model
        job.clock.lap("queue")
        # One class per image travels with its image into a shared batch (per_image); top-k stays per request.
        per_image = convert.per_image_target_messages(request)
        run = explain_batching.explain_batched(
            m, job.x, spec_key(request), request.method,
            targets=convert.explain_targets(request) if per_image is None else [convert.explain_target(t) for t in per_image],
            per_image=per_image is not None, layers=list(request.layers) or None,
            options=convert.explain_options(request.options))
        job.result, job.device_batch_size = run.value, run.device_batch_size
        explain.check_finite(job.result, m.id)  # never a NaN map as OK, whatever the method
        job.clock.lap("compute")
        # The batcher's wait is queue time, not compute.
        job.clock.timing.queue_ms += run.queue_ms
        job.clock.timing.compute_ms = run.compute_ms
        return job

    def render_explanation(self, job: "Explaining") -> pb.ExplainResponse:
        """Pictures, faithfulness metrics and the response message (CPU)."""
        request, m, result, clock = job.request, job.model, job.result, job.clock
        clock.lap("queue")
        out = pb.ExplainResponse(method=result.method, layers=result.layers)
        metrics = convert.faithfulness_metrics(request)
        for image, classes in zip(job.x, result.images):
            item = out.explanations.add()
            for cm in classes:
                scores = (m.run(faithfulness.evaluate, m.forward, image, cm.upsampled.numpy(), cm.target,
                                metrics=metrics) if metrics else None)
                item.classes.append(convert.class_map_to_proto(cm, image, m.recipe, request, scores))
        clock.lap("postprocess")
        clock.timing.device_batch_size = job.device_batch_size
        out.timing.CopyFrom(clock.timing)
        return out


def activation_bytes(m: LoadedModel, pixels: int) -> tuple[int, int]:
    """(sum, largest) of the model's leaf-layer outputs for one input of
    `pixels` pixels, as float32 bytes: from the layer table made at load, at
    the recipe's size, scaled by area (0, 0 when there is no table)."""
    rows = [r for r in (m.summary.layers if m.summary is not None else []) if r.is_leaf and r.output_shape]
    if not rows:
        return 0, 0
    _, h0, w0 = m.input_size
    scale = pixels / max(1, h0 * w0)
    sizes = [4 * math.prod(r.output_shape) for r in rows]
    return int(sum(sizes) * scale), int(max(sizes) * scale)


def layer_pixels(m: LoadedModel, checked: "explain.Checked", pixels: int) -> int:
    """Pixels of one map at its own resolution: the layer's (h, w) when one
    conv layer is explained, else the input's."""
    if len(checked.layers) != 1 or m.summary is None or explain.methods.method(checked.method).family == "attribution":
        return pixels
    row = next((r for r in m.summary.layers if r.name == checked.layers[0]), None)
    if row is None or len(row.output_shape) != 4:
        return pixels
    _, h0, w0 = m.input_size
    return max(1, int(row.output_shape[2] * row.output_shape[3] * pixels / max(1, h0 * w0)) + 1)


@dataclass
class Explaining:
    """An ExplainRequest between the stages of explaining it."""

    request: pb.ExplainRequest
    model: LoadedModel
    x: Any  # the preprocessed (N, C, H, W) CPU batch
    clock: Clock
    result: Any = None  # explain.Explanation, once computed
    device_batch_size: int = 0

    def part(self, request: pb.ExplainRequest, start: int, stop: int) -> "Explaining":
        """Its images start:stop as a job of their own (one ExplainStream item's,
        rendered and answered alone), under `request`, with a copy of the clock."""
        clock = Clock()
        clock.timing.CopyFrom(self.clock.timing)
        clock._last = self.clock._last
        result = explain.Explanation(self.result.method, self.result.layers, self.result.images[start:stop])
        return Explaining(request, self.model, self.x[start:stop], clock, result, self.device_batch_size)
