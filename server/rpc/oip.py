"""The Open Inference Protocol (KServe v2, `inference.GRPCInferenceService`)
over the same registry and the same inference path as netscope.v1.

A thin servicer: OIP tensors become netscope.v1 `Image` messages
(`oip_tensors.py`), then `InspectorService.classify` (Predict's one path:
decode and preprocess under the server's limits, the dynamic batcher, the
torch thread's urgent lane) or the Explain stages (`prepare_explanation`,
`compute_explanation`) do the work; the answers go back as OIP outputs. Every
method runs in netscope.v1's own `rpc` wrapper: string caps, the caller's
cancellation and deadline, one status per error (never UNKNOWN), metrics.
"""
from __future__ import annotations

import json
from importlib import metadata

from netscope.inference import grpc_service_pb2 as oip
from netscope.inference import grpc_service_pb2_grpc as oip_grpc
from netscope.v1 import inspector_pb2 as pb

from ..errors import InvalidArgument, NotFound, closest, shown
from ..models import predict
from ..models.model_options import FLAT_KEYS
from ..models.registry import CHECKPOINT_SUFFIXES, LoadedModel
from . import oip_tensors as tensors
from .service import Clock, InspectorService, dtype_name, rpc

SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name  # inference.GRPCInferenceService
SERVER_NAME = "netscope"
# Triton's names for the extensions netscope implements, and ours for explanations.
EXTENSIONS = ("classification", "model_repository", "model_configuration", "statistics", "parameters",
              "netscope_explain")
VERSION = "1"  # netscope serves one version of each model
PLATFORM = "pytorch_torchvision"
# Parameters Triton's clients may send that change nothing here.
IGNORED_PARAMETERS = ("priority", "timeout")
# ModelInfer parameters that shape an explanation; any other name is a method option.
EXPLAIN, LAYER, TARGET, TOP_K = "explain", "layer", "target", "top_k"
# Requested-output parameters: Triton's classification extension; binary_data is HTTP's, harmless here.
CLASSIFICATION, BINARY_DATA = "classification", "binary_data"
INFERENCE_RPCS = ("Predict", "ModelInfer")  # what ModelStatistics counts


def server_version() -> str:
    try:
        return metadata.version("netscope")
    except metadata.PackageNotFoundError:
        return "unknown"


class InferenceService(oip_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over an InspectorService's registry,
    limits, decoder pool and metrics. `ready()` says whether the server serves
    (its startup models loaded, not shutting down)."""

    def __init__(self, inspector: InspectorService, ready=lambda: True):
        self.inspector = inspector
        self.registry = inspector.registry
        self.limits = inspector.limits
        self.metrics = inspector.metrics
        self.ready = ready

    # ------------------------------------------------------------ health

    @rpc
    def ServerLive(self, request, context):
        return oip.ServerLiveResponse(live=True)

    @rpc
    def ServerReady(self, request, context):
        return oip.ServerReadyResponse(ready=bool(self.ready()))

    @rpc
    def ModelReady(self, request, context):
        """False (not an error) for a model that is not loaded, as the protocol has it."""
        loaded = any(m.id == request.name for m in self.registry.list())
        if loaded:
            check_version(request.name, request.version)
        return oip.ModelReadyResponse(ready=loaded and bool(self.ready()))

    # ------------------------------------------------------------ metadata

    @rpc
    def ServerMetadata(self, request, context):
        return oip.ServerMetadataResponse(name=SERVER_NAME, version=server_version(), extensions=EXTENSIONS)

    @rpc
    def ModelMetadata(self, request, context):
        m = self.model(request.name, request.version)
        c, h, w = m.input_size
        n = m.num_classes
        meta = oip.ModelMetadataResponse.TensorMetadata
        return oip.ModelMetadataResponse(
            name=m.id, versions=[VERSION], platform=PLATFORM,
            inputs=[meta(name=tensors.IMAGES, datatype="BYTES", shape=[-1]),
                    meta(name=tensors.PIXELS, datatype="UINT8", shape=[-1, -1, -1, 3]),
                    meta(name=tensors.TENSOR, datatype="FP32", shape=[-1, c, h, w])],
            outputs=[meta(name=tensors.LOGITS, datatype="FP32", shape=[-1, n]),
                     meta(name=tensors.PROBABILITIES, datatype="FP32", shape=[-1, n])])

    @rpc
    def ModelConfig(self, request, context):
        m = self.model(request.name, request.version)
        c, h, w = m.input_size
        n = m.num_classes
        cfg = oip.ModelConfig(name=m.id, platform=PLATFORM, backend=SERVER_NAME, max_batch_size=self.limits.max_images)
        cfg.input.add(name=tensors.IMAGES, data_type=oip.TYPE_STRING, dims=[1], optional=True)
        cfg.input.add(name=tensors.PIXELS, data_type=oip.TYPE_UINT8, format=oip.ModelInput.FORMAT_NHWC,
                      dims=[-1, -1, 3], optional=True)
        cfg.input.add(name=tensors.TENSOR, data_type=oip.TYPE_FP32, format=oip.ModelInput.FORMAT_NCHW,
                      dims=[c, h, w], optional=True)
        cfg.output.add(name=tensors.LOGITS, data_type=oip.TYPE_FP32, dims=[n])
        cfg.output.add(name=tensors.PROBABILITIES, data_type=oip.TYPE_FP32, dims=[n])
        gpu = m.device.type == "cuda"
        cfg.instance_group.add(name=m.id, count=1, kind=oip.ModelInstanceGroup.KIND_GPU if gpu else oip.ModelInstanceGroup.KIND_CPU,
                               gpus=[m.device.index or 0] if gpu else [])
        if m.batcher is not None:
            cfg.dynamic_batching.preferred_batch_size.append(m.batching.max_batch_size)
            cfg.dynamic_batching.max_queue_delay_microseconds = int(m.batching.max_delay_ms * 1000)
        for key, value in (("source", m.source), ("weights", m.weights), ("arch", m.arch), ("device", str(m.device)),
                           ("dtype", dtype_name(m)), ("labels", ",".join(m.class_names)[:4096])):
            cfg.parameters[key].string_value = str(value)
        return oip.ModelConfigResponse(config=cfg)

    @rpc
    def ModelStatistics(self, request, context):
        if request.name:
            models = [self.model(request.name, request.version)]
        else:
            models = self.registry.list()
        return oip.ModelStatisticsResponse(model_stats=[self.statistics(m) for m in models])

    def statistics(self, m: LoadedModel) -> oip.ModelStatistics:
        """Predict's and ModelInfer's counts for `m`, read from the server's
        Prometheus metrics (one source of truth): requests by outcome, images,
        and the time split of the successful ones (queue; decode and
        preprocess as compute_input; the forward pass as compute_infer;
        softmax and the answer as compute_output)."""
        reg = self.metrics.registry

        def value(name, **labels) -> float:
            return sum(reg.get_sample_value(name, {"rpc": rpc, "model": m.id, **labels}) or 0.0 for rpc in INFERENCE_RPCS)

        ok = value("netscope_request_total", code="OK")
        all_codes = sum(s.value for metric in reg.collect() if metric.name == "netscope_request" for s in metric.samples
                        if s.name == "netscope_request_total" and s.labels.get("model") == m.id
                        and s.labels.get("rpc") in INFERENCE_RPCS)
        phase = {p: oip.StatisticDuration(count=int(value("netscope_phase_duration_seconds_count", phase=p)),
                                          ns=int(value("netscope_phase_duration_seconds_sum", phase=p) * 1e9))
                 for p in ("queue", "preprocess", "compute", "postprocess")}
        success_ns = sum(d.ns for d in phase.values())
        last = self.inspector.last_inference.get(m.id, 0.0)
        return oip.ModelStatistics(
            name=m.id, version=VERSION, last_inference=int(last * 1000),
            inference_count=int(value("netscope_inference_count_total")),
            execution_count=int(ok),  # requests; those that shared one device batch each count once
            inference_stats=oip.InferStatistics(
                success=oip.StatisticDuration(count=int(ok), ns=success_ns),
                fail=oip.StatisticDuration(count=int(all_codes - ok)),
                queue=phase["queue"], compute_input=phase["preprocess"], compute_infer=phase["compute"],
                compute_output=phase["postprocess"]))

    # ------------------------------------------------------------ inference

    @rpc
    def ModelInfer(self, request, context):
        m = self.model(request.model_name, request.model_version)
        explain_request = explain_request_of(request, m) if EXPLAIN in request.parameters else None
        if explain_request is None:
            reject_parameters(request.parameters)
        wanted = tensors.requested_outputs(request, m.num_classes, explaining=explain_request is not None)
        images = tensors.images_of(request, self.limits.max_images)
        clock = Clock()
        logits = result = None
        if explain_request is not None:
            explain_request.images.extend(images)
            job = self.inspector.prepare_explanation(explain_request)  # checks it all, then preprocesses once
            clock = job.clock
            if any(o.name in tensors.CLASS_OUTPUTS for o in wanted):
                logits = self.inspector.logits(m, job.x, clock)
            result = self.inspector.compute_explanation(job).result
        else:
            logits = self.inspector.classify(m, images, clock)
        out = oip.ModelInferResponse(model_name=m.id, model_version=VERSION, id=request.id)
        raw = bool(request.raw_input_contents)
        probabilities = predict.softmax(logits.numpy()) if logits is not None else None
        for o in wanted:
            array = tensors.output_array(o.name, logits, probabilities, result)
            tensors.add_output(out, o, array, m.class_names, raw)
        clock.lap("postprocess")
        return out, clock.timing, len(images)

    # ------------------------------------------------------------ the repository extension

    @rpc
    def RepositoryIndex(self, request, context):
        self.check_repository(request.repository_name)
        out = oip.RepositoryIndexResponse()
        loaded = {m.id for m in self.registry.list()}
        for model_id in sorted(loaded):
            out.models.add(name=model_id, version=VERSION, state="READY")
        if not request.ready:
            for name in self.registry.checkpoints():
                stem = next((name[:-len(s)] for s in CHECKPOINT_SUFFIXES if name.endswith(s)), name)
                if stem not in loaded:
                    out.models.add(name=stem, state="UNAVAILABLE",
                                   reason="a checkpoint in the model store, not loaded: RepositoryModelLoad loads it")
        return out

    @rpc
    def RepositoryModelLoad(self, request, context):
        """Loads `model_name` from the store or torchvision: the source is the
        name itself unless the `config` parameter (Triton's JSON override) or
        a `source` parameter names another; `weights`, `arch`, `num_classes`
        and the per-model options (device, dtype, max_batch_size, ...) come
        from the same JSON. A model already loaded, asked with no config, is
        left as it is (the protocol's load is idempotent)."""
        self.check_repository(request.repository_name)
        if not request.model_name:
            raise InvalidArgument("model_name is empty: name the model to load", field="model_name")
        settings = load_settings(request.parameters)
        if not settings and any(m.id == request.model_name for m in self.registry.list()):
            return oip.RepositoryModelLoadResponse()
        source = settings.pop("source", request.model_name)
        weights, arch = settings.pop("weights", ""), settings.pop("arch", "")
        num_classes = settings.pop("num_classes", 0)
        self.registry.load(request.model_name, str(source), weights=str(weights), arch=str(arch),
                           num_classes=int(num_classes), **settings)
        return oip.RepositoryModelLoadResponse()

    @rpc
    def RepositoryModelUnload(self, request, context):
        self.check_repository(request.repository_name)
        self.registry.unload(request.model_name)
        return oip.RepositoryModelUnloadResponse()

    # ------------------------------------------------------------ helpers

    def model(self, name: str, version: str) -> LoadedModel:
        if not name:
            loaded = ", ".join(m.id for m in self.registry.list()) or "(none loaded)"
            raise InvalidArgument(f"no model named: set the model name to one of {loaded}", reason="MODEL_MISSING",
                                  field="model_name")
        m = self.registry.get(name)
        check_version(name, version)
        return m

    def check_repository(self, name: str) -> None:
        """One repository: the model store ("" or its folder's name)."""
        store = self.registry.store.name
        if name and name != store:
            raise NotFound(f"repository {shown(name)} does not exist; this server has one, the model store "
                           f"{store!r} (send an empty repository name)", reason="REPOSITORY_NOT_FOUND",
                           field="repository_name")


def check_version(name: str, version: str) -> None:
    if version not in ("", VERSION):
        raise NotFound(f"model {shown(name)} has no version {shown(version)}; netscope serves one version of each "
                       f"model, {VERSION!r} (or send none)", reason="VERSION_NOT_FOUND", field="model_version")


def reject_parameters(parameters) -> None:
    """A ModelInfer parameter that would change nothing is refused, not ignored:
    a misspelt `explain` must not quietly answer without the maps."""
    for name in parameters:
        if name in IGNORED_PARAMETERS:
            continue
        raise InvalidArgument(
            f"parameter {shown(name)} is not one netscope reads{closest(name, [EXPLAIN, LAYER, TARGET, TOP_K])}; "
            f"without `explain` (a method name, e.g. grad_cam) ModelInfer takes no parameters; with it, "
            f"{LAYER}, {TARGET}, {TOP_K} and the method's options", reason="PARAMETER_UNKNOWN",
            field=f"parameters[{name[:32]}]")


def parameter_value(p: oip.InferParameter):
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def explain_request_of(request: oip.ModelInferRequest, m: LoadedModel) -> pb.ExplainRequest:
    """The netscope.v1 ExplainRequest (without its images) that ModelInfer's
    parameters ask for: `explain` the method, `layer` (comma-separated for
    several), `target` (an int: a class index; a string: a label), `top_k`,
    and any other name an option of the method's schema (checked there, with
    the closest names)."""
    out = pb.ExplainRequest(model=m.id)
    for name, p in request.parameters.items():
        value = parameter_value(p)
        field = f"parameters[{name[:32]}]"
        if value is None:
            raise InvalidArgument(f"parameter {shown(name)} has no value", field=field)
        if name in IGNORED_PARAMETERS:
            continue
        if name == EXPLAIN:
            if not isinstance(value, str) or not value:
                raise InvalidArgument("parameter explain is a method name (a string, e.g. grad_cam)", field=field)
            out.method = value
        elif name == LAYER:
            if not isinstance(value, str):
                raise InvalidArgument("parameter layer is a layer name (a string, e.g. layer4; comma-separated for "
                                      "several)", field=field)
            out.layers.extend(s.strip() for s in value.split(",") if s.strip())
        elif name == TARGET:
            if isinstance(value, bool) or isinstance(value, float):
                raise InvalidArgument("parameter target is a class index (an integer) or a label (a string)",
                                      field=field)
            if isinstance(value, str):
                out.target.label = value
            else:
                out.target.index = int(value)
        elif name == TOP_K:
            if isinstance(value, (bool, float, str)):
                raise InvalidArgument("parameter top_k is an integer", field=field)
            out.target.top_k = int(value)
        else:
            option = out.options.parameters[name]
            if isinstance(value, bool):
                option.bool_value = value
            elif isinstance(value, int):
                option.int_value = value
            elif isinstance(value, float):
                option.double_value = value
            else:
                option.string_value = value
    return out


def load_settings(parameters) -> dict:
    """RepositoryModelLoad's parameters as LoadModel's settings: Triton's
    `config` (a JSON object: source, weights, arch, num_classes and the flat
    model options), or `source` / `weights` string parameters. Model files
    over the wire (`file:...`) are refused: checkpoints are read from the
    model store only."""
    settings: dict = {}
    for name, p in parameters.items():
        kind = p.WhichOneof("parameter_choice")
        field = f"parameters[{name[:32]}]"
        if name.startswith("file:"):
            raise InvalidArgument("netscope loads no model files sent over the wire; put the checkpoint in the "
                                  "server's model store and load it by name", reason="FILES_NOT_ACCEPTED", field=field)
        if name == "config":
            if kind != "string_param":
                raise InvalidArgument("parameter config is a JSON object in a string", field=field)
            try:
                config = json.loads(p.string_param)
            except ValueError as exc:
                raise InvalidArgument(f"parameter config is not JSON: {exc}", reason="CONFIG_NOT_JSON",
                                      field=field) from None
            if not isinstance(config, dict):
                raise InvalidArgument("parameter config must be a JSON object", reason="CONFIG_NOT_JSON", field=field)
            settings.update(config)
        elif name in ("source", "weights", "arch"):
            if kind != "string_param":
                raise InvalidArgument(f"parameter {name} is a string", field=field)
            settings[name] = p.string_param
        else:
            raise InvalidArgument(f"parameter {shown(name)} is not one RepositoryModelLoad reads; send config "
                                  "(JSON), source or weights", reason="PARAMETER_UNKNOWN", field=field)
    known = {"source", "weights", "arch", "num_classes", *FLAT_KEYS}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InvalidArgument(f"config key {shown(unknown[0])} is not a model setting{closest(unknown[0], known)}; "
                              f"keys: {', '.join(sorted(known))}", reason="BAD_MODEL_OPTION", field="parameters[config]")
    return settings
