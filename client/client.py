"""Typed Python client: paths, bytes, numpy arrays or PIL images in; dataclasses
and numpy arrays out, never raw protos."""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import grpc
import numpy as np
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from grpc_health.v1 import health_pb2, health_pb2_grpc

from netscope.v1 import inspector_pb2 as pb
from netscope.v1 import inspector_pb2_grpc as pb_grpc

from .connection import open_channel, unreachable, uses_tls, with_port
from .server_info import ServerInfo

DEFAULT_SERVER = os.environ.get("NETSCOPE_SERVER", "127.0.0.1:50051")

_DTYPES = {
    pb.FLOAT32: np.dtype("<f4"), pb.FLOAT16: np.dtype("<f2"), pb.FLOAT64: np.dtype("<f8"), pb.UINT8: np.dtype("u1"),
    pb.INT8: np.dtype("i1"), pb.INT16: np.dtype("<i2"), pb.INT32: np.dtype("<i4"), pb.INT64: np.dtype("<i8"),
    pb.BOOL: np.dtype("?"),
}
_CODES = {d.name: k for k, d in _DTYPES.items()}

# grpc retries UNAVAILABLE itself, with exponential backoff, when told to.
_RETRY_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{"service": "netscope.v1.Inspector"}],
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.1s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]
})


class NetscopeError(Exception):
    """A call failed: `code` is the grpc.StatusCode, `message` says why.

    What the server attached as google.rpc.Status details (in the trailers,
    or in an ExplainStream item's error), decoded:
    `reason`  the ErrorInfo reason, an UPPER_SNAKE_CASE word to switch on
              (e.g. "NOT_FOUND", "STRING_TOO_LONG"); "" when none came;
    `domain`  the ErrorInfo domain ("netscope.dev");
    `metadata` the ErrorInfo metadata, str -> str (e.g. {"closest": "r18,r50"},
              {"limit": "256"}); `closest` splits its names into a list;
    `field_violations` BadRequest's (field, description) pairs, e.g.
              [("options.steps", "...")];
    `details` the raw google.rpc.status_pb2.Status, or None;
    `transport` gRPC's own text when `message` was rewritten for a call that
              never reached the server (connection refused, TLS mismatch), else ""."""

    def __init__(self, code: grpc.StatusCode, message: str, details: Any = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.details = details
        self.transport = ""
        self.reason, self.domain, self.metadata = "", "", {}
        self.field_violations: list[tuple[str, str]] = []
        for any_ in getattr(details, "details", ()):
            if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                any_.Unpack(info)
                self.reason, self.domain, self.metadata = info.reason, info.domain, dict(info.metadata)
            elif any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                any_.Unpack(bad)
                self.field_violations += [(v.field, v.description) for v in bad.field_violations]

    @property
    def closest(self) -> list[str]:
        """The names the server found closest to an unknown one (model, layer,
        checkpoint, architecture, label, method), best first."""
        return [n for n in self.metadata.get("closest", "").split(",") if n]

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> "NetscopeError":
        """From a failed call, with the google.rpc.Status from its trailers."""
        try:
            details = rpc_status.from_call(err)
        except (ValueError, AttributeError):  # a status that disagrees with its details, or no call
            details = None
        return cls(err.code(), err.details() or "", details)

    @classmethod
    def from_item_error(cls, error: "pb.ItemError") -> "NetscopeError":
        """From an ExplainStream item's error."""
        code = next((c for c in grpc.StatusCode if c.value[0] == error.code), grpc.StatusCode.UNKNOWN)
        return cls(code, error.message, error.status if error.HasField("status") else None)


# ---------------------------------------------------------------- tensors and images

def to_numpy(t: pb.Tensor) -> np.ndarray:
    shape = tuple(t.shape)
    if t.dtype == pb.BFLOAT16:  # the upper half of a float32
        raw = np.frombuffer(t.data, dtype="<u2").astype(np.uint32) << 16
        return raw.view(np.float32).reshape(shape)
    return np.frombuffer(t.data, dtype=_DTYPES[t.dtype]).reshape(shape)


def to_tensor(a: np.ndarray) -> pb.Tensor:
    a = np.asarray(a)
    if a.dtype.name not in _CODES:
        a = a.astype(np.float32)
    code = _CODES[a.dtype.name]
    return pb.Tensor(dtype=code, shape=list(a.shape), data=np.ascontiguousarray(a, dtype=_DTYPES[code]).tobytes())


ImageLike = Any  # str | Path | bytes | np.ndarray | PIL.Image.Image | torch.Tensor


def to_image(image: ImageLike) -> pb.Image:
    """A path or encoded bytes travel encoded; arrays travel as tensors:
    uint8 (H, W[, 3]) pixels, or float (C, H, W) already preprocessed."""
    if isinstance(image, pb.Image):
        return image
    if isinstance(image, (str, Path)):
        return pb.Image(encoded=Path(image).read_bytes())
    if isinstance(image, (bytes, bytearray, memoryview)):
        return pb.Image(encoded=bytes(image))
    if hasattr(image, "detach") and hasattr(image, "numpy"):  # torch.Tensor
        return pb.Image(tensor=to_tensor(image.detach().cpu().numpy()))
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL.Image
        return pb.Image(tensor=to_tensor(np.asarray(image.convert("RGB"))))
    if isinstance(image, np.ndarray):
        return pb.Image(tensor=to_tensor(image))
    raise TypeError(f"cannot send {type(image).__name__} as an image; use a path, bytes, numpy array or PIL image")


# ---------------------------------------------------------------- results

@dataclass
class ClassScore:
    index: int
    label: str
    probability: float
    logit: float


@dataclass
class Prediction:
    top_k: list[ClassScore]
    probabilities: np.ndarray | None = None

    @property
    def top1(self) -> ClassScore:
        return self.top_k[0]


@dataclass
class Timing:
    queue_ms: float = 0.0
    preprocess_ms: float = 0.0
    compute_ms: float = 0.0
    postprocess_ms: float = 0.0
    device_batch_size: int = 0

    @classmethod
    def from_proto(cls, t: pb.Timing) -> "Timing":
        return cls(t.queue_ms, t.preprocess_ms, t.compute_ms, t.postprocess_ms, t.device_batch_size)


@dataclass
class ModelBrief:
    model: str
    arch: str
    source: str
    device: str
    dtype: str
    num_classes: int
    pretrained: bool


@dataclass
class Layer:
    name: str
    type: str
    input_shape: list[int]
    output_shape: list[int]
    num_parameters: int
    trainable_parameters: int
    mult_adds: int
    cam_target: bool
    depth: int
    is_leaf: bool
    conv: bool


@dataclass
class ModelInfo:
    model: str
    arch: str
    source: str
    weights: str
    device: str
    dtype: str
    input_size: list[int]
    preprocessing: dict
    class_names: list[str]
    num_parameters: int
    trainable_parameters: int
    flops: int
    mult_adds: int
    parameter_bytes: int
    pretrained: bool
    note: str
    layers: list[Layer] = field(default_factory=list)
    default_cam_layer: str = ""  # where CAMs explain when no layer is named
    # How it was loaded: dynamic batching and the fast path.
    batching: dict = field(default_factory=dict)  # max_batch_size, max_delay_ms, max_queue
    channels_last: bool = False
    compile: str = ""
    compile_batch_sizes: list[int] = field(default_factory=list)
    device_decode: bool = False
    pin_memory: bool = True
    min_input_size: int = 1  # smallest H = W a preprocessed float image may have
    # Every option it is served with, as load_model's keywords (device, dtype, max_batch_size, ...).
    options: dict = field(default_factory=dict)
    # What runs Predict: {"name": "torch"} or "onnxruntime" with its providers (best first), exporter,
    # export_ms, parity_max_abs_diff and parity_tolerance (logits, at load), session_dtype, intra_op_threads.
    backend: dict = field(default_factory=dict)

    def layer(self, name: str) -> Layer:
        return next(l for l in self.layers if l.name == name)


def model_options_message(**options) -> pb.ModelOptions:
    """Keywords -> a ModelOptions message: its own field names, with those of
    its batching (max_batch_size, max_delay_ms, max_queue) flat beside them,
    as in the server's TOML [[models]] tables. None leaves a field unset."""
    msg = pb.ModelOptions()
    batching = set(pb.BatchingOptions.DESCRIPTOR.fields_by_name)
    names = set(pb.ModelOptions.DESCRIPTOR.fields_by_name) - {"batching"}
    for name, value in options.items():
        if value is None:
            continue
        if name in batching:
            setattr(msg.batching, name, value)
        elif name == "compile_batch_sizes":
            msg.compile_batch_sizes[:] = [int(v) for v in value]
        elif name in names:
            setattr(msg, name, value)
        else:
            raise TypeError(f"unknown model option {name!r}; known: {', '.join(sorted(names | batching))}")
    return msg


def _options_dict(o: pb.ModelOptions) -> dict:
    """A ModelOptions message as the flat dict load_model takes."""
    return {"device": o.device, "dtype": o.dtype, "max_batch_size": o.batching.max_batch_size,
            "max_delay_ms": o.batching.max_delay_ms, "max_queue": o.batching.max_queue,
            "channels_last": o.channels_last, "compile": o.compile, "compile_batch_sizes": list(o.compile_batch_sizes),
            "device_decode": o.device_decode, "pin_memory": o.pin_memory if o.HasField("pin_memory") else True,
            "backend": o.backend or "torch"}


def _model_info(m: pb.ModelInfo) -> ModelInfo:
    p = m.preprocessing
    return ModelInfo(
        model=m.model, arch=m.arch, source=m.source, weights=m.weights, device=m.device, dtype=m.dtype,
        input_size=list(m.input_size),
        preprocessing={"resize": p.resize, "crop": list(p.crop_size), "mean": list(p.mean), "std": list(p.std),
                       "interpolation": p.interpolation, "channels": p.channels},
        class_names=list(m.class_names), num_parameters=m.num_parameters,
        trainable_parameters=m.trainable_parameters, flops=m.flops, mult_adds=m.mult_adds,
        parameter_bytes=m.parameter_bytes, pretrained=m.pretrained, note=m.note,
        default_cam_layer=m.default_cam_layer,
        batching={"max_batch_size": m.batching.max_batch_size, "max_delay_ms": m.batching.max_delay_ms,
                  "max_queue": m.batching.max_queue},
        channels_last=m.channels_last, compile=m.compile, compile_batch_sizes=list(m.compile_batch_sizes),
        device_decode=m.device_decode, pin_memory=m.pin_memory, min_input_size=m.min_input_size or 1,
        options=_options_dict(m.options) if m.HasField("options") else {},
        backend=({"name": m.backend.name, "providers": list(m.backend.providers), "exporter": m.backend.exporter,
                  "export_ms": m.backend.export_ms, "parity_max_abs_diff": m.backend.parity_max_abs_diff,
                  "parity_tolerance": m.backend.parity_tolerance, "session_dtype": m.backend.session_dtype,
                  "intra_op_threads": m.backend.intra_op_threads}
                 if m.HasField("backend") else {"name": "torch"}),
        layers=[Layer(l.name, l.type, list(l.input_shape), list(l.output_shape), l.num_parameters,
                      l.trainable_parameters, l.mult_adds, l.cam_target, l.depth, l.is_leaf, l.conv) for l in m.layers],
    )


@dataclass
class FeatureMap:
    """One layer's output for one image."""

    layer: str
    shape: list[int]             # the layer's per-image output shape (no batch dimension)
    channel_axis: int            # the axis of `shape` that `channels` index
    channels: list[int]          # channel indices returned, in order
    activation: np.ndarray | None  # float32: `shape` with the channel axis indexed by `channels`
    channel_mean: np.ndarray
    channel_max: np.ndarray
    grid_png: bytes = b""


@dataclass
class Kernels:
    layer: str
    weight: np.ndarray | None    # (out, in/groups, kh, kw) float32
    grid_png: bytes
    mode: str                    # rgb, per_channel or mean_input
    tiles: int
    total_tiles: int


@dataclass
class Stats:
    mean: float
    std: float
    min: float
    max: float
    l2_norm: float
    zero_fraction: float
    hist_edges: np.ndarray
    hist_counts: np.ndarray


@dataclass
class ParameterStats:
    name: str
    shape: list[int]
    count: int
    trainable: bool
    value: Stats
    grad: Stats | None = None


@dataclass
class LayerStats:
    layer: str
    type: str
    parameters: list[ParameterStats]
    grad_norm: float
    grad_norm_ratio: float


@dataclass
class LayerStatsResult:
    layers: list[LayerStats]
    loss: float | None           # the differentiated quantity, when images were sent
    timing: Timing | None = None

    def layer(self, name: str) -> LayerStats:
        return next(l for l in self.layers if l.layer == name)


KERNEL_MODES = {"auto": pb.KERNEL_MODE_AUTO, "rgb": pb.KERNEL_MODE_RGB, "per_channel": pb.KERNEL_MODE_PER_CHANNEL,
                "mean_input": pb.KERNEL_MODE_MEAN_INPUT}
_KERNEL_MODE_NAMES = {v: k for k, v in KERNEL_MODES.items()}


def _grid(render: bool, colormap: str, upsample: bool, max_tiles: int, nrow: int, padding: int,
          tile_size: int) -> pb.GridOptions:
    return pb.GridOptions(render=render, colormap=colormap, upsample_to_input=upsample, max_tiles=max_tiles,
                          nrow=nrow, padding=padding, tile_size=tile_size)


def _stats(s: pb.Stats) -> Stats:
    return Stats(s.mean, s.std, s.min, s.max, s.l2_norm, s.zero_fraction, np.asarray(s.histogram.edges, np.float64),
                 np.asarray(s.histogram.counts, np.int64))


def _target(target: int | str | None) -> pb.Target | None:
    if target is None:
        return None
    if isinstance(target, str):
        return pb.Target(label=target)
    return pb.Target(index=int(target))


def _per_image(target) -> bool:
    """Whether `target` is one target per image (a list, tuple or array), not one for all."""
    return target is not None and not isinstance(target, (str, bytes)) and not hasattr(target, "__index__") \
        and hasattr(target, "__iter__")


def _set_targets(req: pb.ExplainRequest, target) -> None:
    """One target for every image (an index or label) or, from a sequence, one per image (None: its top-1)."""
    if _per_image(target):
        req.ClearField("target")
        del req.targets[:]
        req.targets.extend(_target(t) or pb.Target() for t in target)
        return
    t = _target(target)
    if t is not None:
        req.target.CopyFrom(t)


# ---------------------------------------------------------------- the client

class Client:
    """`Client("host:port")`: one channel, typed calls, deadlines, and retries
    of UNAVAILABLE with backoff. Use as a context manager or call close().

    Security (see client/connection.py): `tls=True` for TLS with the system's
    roots; `root_certificates` (PEM bytes or a file path) trusts that CA and
    implies TLS; `client_cert` + `client_key` (bytes or paths) for mutual TLS;
    `token` is sent as `authorization: Bearer TOKEN` on every call;
    `server_name_override` when the certificate names another host. Left
    None, each falls back to $NETSCOPE_TLS_CA, $NETSCOPE_TLS_CERT,
    $NETSCOPE_TLS_KEY, $NETSCOPE_TOKEN. Raises ValueError or OSError for
    half an mTLS pair, an unreadable PEM file or a malformed token."""

    def __init__(self, target: str = DEFAULT_SERVER, *, timeout: float | None = 60.0,
                 max_message_mb: int = 64, retries: bool = True, tls: bool = False,
                 root_certificates: bytes | str | Path | None = None, client_cert: bytes | str | Path | None = None,
                 client_key: bytes | str | Path | None = None, token: str | None = None,
                 server_name_override: str | None = None):
        limit = max_message_mb * 1024 * 1024
        options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit),
                   ("grpc.enable_retries", 1 if retries else 0)]
        if retries:
            options.append(("grpc.service_config", _RETRY_CONFIG))
        self.target = target = with_port(target)
        self.timeout = timeout
        self.tls = uses_tls(tls, root_certificates, client_cert)
        self.channel = open_channel(target, options, tls=tls, root_certificates=root_certificates,
                                    client_cert=client_cert, client_key=client_key, token=token,
                                    server_name_override=server_name_override)
        self.stub = pb_grpc.InspectorStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def call(self, method: str, request, timeout: float | None = None):
        """Invoke an RPC by name, turning grpc errors into NetscopeError."""
        try:
            return getattr(self.stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise self.error(err) from None

    def error(self, err: grpc.RpcError) -> NetscopeError:
        """The NetscopeError for a failed call on this client's channel: a call
        that never reached the server (nothing listening, TLS on one side only,
        ...) says so in a person's words (client/connection.py's unreachable),
        the raw gRPC text kept as `transport`."""
        exc = NetscopeError.from_rpc_error(err)
        if exc.code == grpc.StatusCode.UNAVAILABLE and exc.details is None:
            why = unreachable(exc.message, self.target, self.tls)
            if why:
                exc = NetscopeError(exc.code, why)
                exc.transport = err.details() or ""
        return exc

    # ------------------------------------------------------------ health

    def health(self, service: str = "netscope.v1.Inspector") -> str:
        """SERVING, NOT_SERVING, ... as the server's health service says."""
        try:
            resp = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.RpcError as err:
            raise self.error(err) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the server reports SERVING (models loaded)."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                status = self.health()
                if status == "SERVING":
                    return
                last = status
            except NetscopeError as exc:
                last = str(exc)  # e.g. a TLS handshake that fails: say so, not only "not SERVING"
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.target} was not SERVING within {timeout:.0f} s" + (f" (last: {last})"
                                                                                              if last else ""))
            time.sleep(0.2)

    # ------------------------------------------------------------ discovery

    def server_info(self) -> ServerInfo:
        """What the server is and can do: version, build, devices, dtypes,
        colormaps, limits, every explanation method with its option schema,
        and the loaded model ids (see client/server_info.py). Needs `read`."""
        return ServerInfo.from_proto(self.call("GetServerInfo", pb.GetServerInfoRequest()))

    # ------------------------------------------------------------ models

    def list_models(self) -> list[ModelBrief]:
        resp = self.call("ListModels", pb.ListModelsRequest())
        return [ModelBrief(m.model, m.arch, m.source, m.device, m.dtype, m.num_classes, m.pretrained) for m in resp.models]

    def checkpoints(self) -> list[str]:
        return list(self.call("ListModels", pb.ListModelsRequest()).checkpoints)

    def architectures(self) -> list[str]:
        return list(self.call("ListModels", pb.ListModelsRequest()).architectures)

    def load_model(self, model: str, source: str, *, weights: str = "", arch: str = "", num_classes: int = 0,
                   timeout: float | None = 600.0, **options) -> ModelInfo:
        """Load `source` (an architecture or a checkpoint in the server's
        store) under the id `model`. weights: "none", "DEFAULT" or an enum
        name; arch / num_classes: for a plain state_dict checkpoint.

        `options`, how it is served (the ModelOptions message; unset or None:
        the server's default): device ("auto", "cpu", "cuda:N"), dtype
        ("float32", "float16", "bfloat16"); dynamic batching: max_batch_size
        > 1 (images per device batch), max_delay_ms, max_queue; the fast
        path, each piece on or off: channels_last, compile ("default",
        "reduce-overhead", "max-autotune", ...) for Predict at
        compile_batch_sizes, device_decode (JPEGs decoded on the model's
        device), pin_memory (default on); backend ("torch", the default, or
        "onnxruntime": Predict through an ONNX Runtime session exported at
        load; FAILED_PRECONDITION ONNX_EXPORT / ONNX_PARITY when the model
        does not export or its session disagrees with the module, or
        ONNXRUNTIME_MISSING). An unknown keyword is a TypeError;
        a bad value INVALID_ARGUMENT naming `options.NAME`."""
        req = pb.LoadModelRequest(model=model, source=source, weights=weights, arch=arch, num_classes=num_classes,
                                  options=model_options_message(**options))
        return _model_info(self.call("LoadModel", req, timeout).info)

    def unload_model(self, model: str) -> None:
        self.call("UnloadModel", pb.UnloadModelRequest(model=model))

    def model_info(self, model: str, input_size: Sequence[int] = ()) -> ModelInfo:
        return _model_info(self.call("GetModelInfo", pb.GetModelInfoRequest(model=model, input_size=list(input_size))))

    # ------------------------------------------------------------ inference

    def predict(self, model: str, images: ImageLike | Iterable[ImageLike], *, k: int = 0,
                probabilities: bool = False, timeout: float | None = None) -> list[Prediction]:
        """Top-k per image, in the order given. One image or a list."""
        return self.predict_timed(model, images, k=k, probabilities=probabilities, timeout=timeout)[0]

    def predict_timed(self, model: str, images, *, k: int = 0, probabilities: bool = False,
                      timeout: float | None = None) -> tuple[list[Prediction], Timing]:
        """Like predict, with the server's time split."""
        req = pb.PredictRequest(model=model, images=_images(images), top_k=k, return_probabilities=probabilities)
        resp = self.call("Predict", req, timeout)
        preds = [
            Prediction(top_k=[ClassScore(s.index, s.label, s.probability, s.logit) for s in p.top_k],
                       probabilities=to_numpy(p.probabilities) if p.HasField("probabilities") else None)
            for p in resp.predictions
        ]
        return preds, Timing.from_proto(resp.timing)


    # ------------------------------------------------------------ inspection

    def feature_maps(self, model: str, images, layers: str | Sequence[str], *, channels: Sequence[int] = (),
                     top_channels: int = 0, tensors: bool = True, grid: bool = False, colormap: str = "",
                     upsample: bool = False, max_tiles: int = 0, nrow: int = 0, padding: int = 0, tile_size: int = 0,
                     timeout: float | None = None) -> list[dict[str, FeatureMap]]:
        """Per image (in the order given), the layers' outputs by layer name (in
        the order asked). `grid=True` also renders PNG grids of the channels."""
        layers = [layers] if isinstance(layers, str) else list(layers)
        req = pb.FeatureMapsRequest(model=model, images=_images(images), layers=layers, channels=list(channels),
                                    top_channels=top_channels, omit_tensor=not tensors,
                                    grid=_grid(grid, colormap, upsample, max_tiles, nrow, padding, tile_size))
        resp = self.call("GetFeatureMaps", req, timeout)
        return [
            {a.layer: FeatureMap(a.layer, list(a.shape), a.channel_axis, list(a.channels),
                                 to_numpy(a.activation) if a.HasField("activation") else None,
                                 np.asarray(a.channel_mean, np.float32), np.asarray(a.channel_max, np.float32),
                                 a.grid_png)
             for a in img.layers}
            for img in resp.images
        ]

    def kernels(self, model: str, layer: str, *, mode: str = "auto", tensor: bool = True, colormap: str = "",
                max_tiles: int = 0, nrow: int = 0, padding: int = 0, tile_size: int = 0,
                timeout: float | None = None) -> Kernels:
        """A conv layer's weights and a PNG grid of them. mode: auto, rgb, per_channel or mean_input."""
        if mode not in KERNEL_MODES:
            raise ValueError(f"mode must be one of {', '.join(KERNEL_MODES)}; got {mode!r}")
        req = pb.KernelsRequest(model=model, layer=layer, mode=KERNEL_MODES[mode], omit_tensor=not tensor,
                                grid=_grid(True, colormap, False, max_tiles, nrow, padding, tile_size))
        r = self.call("GetKernels", req, timeout)
        return Kernels(r.layer, to_numpy(r.weight) if r.HasField("weight") else None, r.grid_png,
                       _KERNEL_MODE_NAMES.get(r.mode, str(r.mode)), r.tiles, r.total_tiles)

    def layer_stats(self, model: str, layers: str | Sequence[str] = (), *, bins: int = 0,
                    hist_range: tuple[float, float] | None = None, images=None, target: int | str | None = None,
                    labels: Sequence[int] | None = None, timeout: float | None = None) -> LayerStatsResult:
        """Weight statistics of each layer's parameters (default: every layer
        with parameters); with images, gradient statistics of one backward pass
        of the target class's logit (index or label; default each image's
        top-1) or of the cross-entropy with true `labels`."""
        layers = [layers] if isinstance(layers, str) else list(layers)
        lo, hi = hist_range or (0.0, 0.0)
        req = pb.LayerStatsRequest(model=model, layers=layers, bins=bins, hist_min=lo, hist_max=hi,
                                   images=_images(images) if images is not None else [], labels=list(labels or ()))
        t = _target(target)
        if t is not None:
            req.target.CopyFrom(t)
        r = self.call("GetLayerStats", req, timeout)
        result = []
        for ls in r.layers:
            params = [ParameterStats(p.name, list(p.shape), p.count, p.trainable, _stats(p.value),
                                     _stats(p.grad) if p.HasField("grad") else None) for p in ls.parameters]
            result.append(LayerStats(ls.layer, ls.type, params, ls.grad_norm, ls.grad_norm_ratio))
        return LayerStatsResult(result, r.loss if images is not None else None, Timing.from_proto(r.timing))

    # ------------------------------------------------------------ explanation

    def explain(self, model: str, images, *, method: str = "grad_cam", target: int | str | None = None,
                top_k: int = 0, layers: str | Sequence[str] = (), overlay: bool = False, heatmap_png: bool = False,
                colormap: str = "", alpha: float = 0.0, sign: str = "", clip_percentile: float | None = None,
                faithfulness: bool = False, metrics: Sequence[str] = (), timeout: float | None = None,
                **options) -> list[list[ClassExplanation]]:
        """Per image (in order), one ClassExplanation per target class.
        `target`: one class for every image (an index or a label; None: each
        image's top-1; top_k > 1: its top-k) or a list of one per image
        (index, label or None), explained in one request. A label matching
        several classes (case-insensitively) is INVALID_ARGUMENT listing them.
        `options` are any options of the server's schema by name (`netscope
        methods` lists each method's): steps, baseline, window, stride,
        batch_size, noise_tunnel, nt_samples, nt_stdev, aug_smooth,
        eigen_smooth, samples, noise, seed, fem_k, finer_alpha, finer_classes,
        kpca_kernel, kpca_gamma, and a method's own (random_cam's
        weight_bound, ...); those without a typed ExplainOptions field travel
        in its `parameters` map. Leave an option out for the method's default.
        INVALID_ARGUMENT: an unknown option (naming the closest), one the
        method does not use (naming its options), a count set to 0, a value
        over the server's ceiling.

        Pictures (overlay / heatmap_png): `sign` "" or "auto" (the method's
        own: CAMs "heat", signed attributions "all", saliency
        "absolute_value"), "heat" (min-max onto `colormap`), "all" (diverging,
        0 white, positive red, negative blue), "positive", "negative",
        "absolute_value"; `clip_percentile` the percent of |attribution| mass
        that saturates (signed modes; default 2, as Captum); `alpha` the
        opacity (0: 0.5 for heat, 0.8 at the strongest signed value).

        Faithfulness (ClassExplanation.faithfulness): `metrics` names those
        to score, of FAITHFULNESS_METRICS (deletion, insertion, average_drop,
        increase_in_confidence, road; DEFAULT_METRICS leaves out ROAD, which
        costs seconds an image on a CPU); `faithfulness=True` alone scores
        all. A metric not asked for is None. An unknown name is
        INVALID_ARGUMENT (reason METRIC_NOT_FOUND) naming the valid ones."""
        return self.explain_timed(model, images, method=method, target=target, top_k=top_k, layers=layers,
                                  overlay=overlay, heatmap_png=heatmap_png, colormap=colormap, alpha=alpha,
                                  sign=sign, clip_percentile=clip_percentile,
                                  faithfulness=faithfulness, metrics=metrics, timeout=timeout, **options)[0]

    def explain_timed(self, model: str, images, *, method: str = "grad_cam", target: int | str | None = None,
                      top_k: int = 0, layers: str | Sequence[str] = (), overlay: bool = False,
                      heatmap_png: bool = False, colormap: str = "", alpha: float = 0.0, sign: str = "",
                      clip_percentile: float | None = None, faithfulness: bool = False, metrics: Sequence[str] = (),
                      timeout: float | None = None, **options) -> tuple[list[list[ClassExplanation]], Timing]:
        """Like explain, with the server's time split (queue time, and the
        device batch the request rode in when the model batches)."""
        req = explain_request(model, _images(images), method, target, layers, overlay, heatmap_png, colormap, alpha,
                              faithfulness, top_k, options, sign=sign, clip_percentile=clip_percentile,
                              metrics=metrics)
        resp = self.call("Explain", req, timeout)
        return _explanations(resp), Timing.from_proto(resp.timing)

    def explain_many(self, items, *, model: str, method: str = "grad_cam", target: int | str | None = None,
                     top_k: int = 0, layers: str | Sequence[str] = (), overlay: bool = False,
                     heatmap_png: bool = False, colormap: str = "", alpha: float = 0.0, sign: str = "",
                     clip_percentile: float | None = None, faithfulness: bool = False, metrics: Sequence[str] = (),
                     in_flight: int = 64, timeout: float | None = None, **options) -> Iterator[StreamResult]:
        """Explain many images over one stream, yielding results as they finish.
        `items` is any iterable (read lazily) of images, (id, image) pairs, or
        (id, image, target) triples whose target (an index or a label) is that
        image's own, in place of `target`: items with different targets still
        share device batches on the server. At
        most `in_flight` are on the wire at once, so memory stays bounded. Keep
        in_flight at two of the server's stream batches (32 by default) or more,
        so the next batch is waiting while one computes."""
        spec = explain_request(model, [], method, target, layers, overlay, heatmap_png, colormap, alpha,
                               faithfulness, top_k, options, sign=sign, clip_percentile=clip_percentile,
                               metrics=metrics)
        slots = threading.Semaphore(in_flight)

        def requests():
            for n, item in enumerate(items):
                own = None
                if isinstance(item, tuple) and len(item) == 3:
                    item_id, image, own = item
                else:
                    item_id, image = item if isinstance(item, tuple) else (str(n), item)
                slots.acquire()
                req = pb.ExplainRequest()
                req.CopyFrom(spec)
                req.images.append(to_image(image))
                if own is not None:
                    _set_targets(req, [own])
                yield pb.ExplainStreamRequest(id=str(item_id), request=req)

        try:
            for resp in self.stub.ExplainStream(requests(), timeout=timeout or self.timeout):
                if resp.HasField("progress"):  # not asked for here; a server's keep-alive holds no item
                    continue
                slots.release()
                if resp.HasField("error"):
                    yield StreamResult(resp.id, error=NetscopeError.from_item_error(resp.error))
                else:
                    yield StreamResult(resp.id, classes=_explanations(resp.response)[0],
                                       timing=Timing.from_proto(resp.response.timing))
        except grpc.RpcError as err:
            raise self.error(err) from None


# Faithfulness metrics as a request names them, and the Faithfulness fields each fills.
FAITHFULNESS_METRICS = {"deletion": ("deletion_auc",), "insertion": ("insertion_auc",),
                        "average_drop": ("average_drop",), "increase_in_confidence": ("increase_in_confidence",),
                        "road": ("road_morf", "road_lerf")}
# The cheap ones, what `netscope explain --metrics` scores: ROAD alone costs as much on a CPU as these four.
DEFAULT_METRICS = ("deletion", "insertion", "average_drop", "increase_in_confidence")


@dataclass
class Faithfulness:
    """One map's scores (docs/EXPLANATIONS.md); a metric not asked for is None."""

    deletion_auc: float | None = None
    insertion_auc: float | None = None
    average_drop: float | None = None
    increase_in_confidence: float | None = None
    road_morf: float | None = None
    road_lerf: float | None = None

    @classmethod
    def from_proto(cls, msg: pb.Faithfulness) -> "Faithfulness":
        return cls(**{f: getattr(msg, f) if msg.HasField(f) else None for f in cls.__dataclass_fields__})


@dataclass
class ClassExplanation:
    """One image's map for one class."""

    target: int
    label: str
    score: float
    probability: float
    heatmap: np.ndarray            # (h, w) at the layer's resolution
    heatmap_upsampled: np.ndarray  # (H, W) at the model input's resolution
    overlay_png: bytes = b""
    heatmap_png: bytes = b""
    faithfulness: Faithfulness | None = None


@dataclass
class StreamResult:
    """One item of explain_many: its id, and its maps or its error."""

    id: str
    classes: list[ClassExplanation] | None = None
    error: NetscopeError | None = None
    timing: Timing | None = None  # the server's, for the device batch this item rode in


def _explanations(resp: pb.ExplainResponse) -> list[list[ClassExplanation]]:
    return [[ClassExplanation(c.target, c.label, c.score, c.probability, to_numpy(c.heatmap),
                              to_numpy(c.heatmap_upsampled), c.overlay_png, c.heatmap_png,
                              Faithfulness.from_proto(c.faithfulness) if c.HasField("faithfulness") else None)
             for c in e.classes] for e in resp.explanations]


def explain_request(model: str, images, method: str, target, layers, overlay: bool, heatmap_png: bool,
                    colormap: str, alpha: float, faithfulness: bool, top_k: int, options: dict, *, sign: str = "",
                    clip_percentile: float | None = None, metrics: Sequence[str] = ()) -> pb.ExplainRequest:
    req = pb.ExplainRequest(model=model, images=images, method=method, layers=[layers] if isinstance(layers, str) else list(layers),
                            render_overlay=overlay, render_heatmap=heatmap_png,
                            render=pb.RenderOptions(colormap=colormap, alpha=alpha, sign=sign,
                                                    clip_percentile=clip_percentile),
                            options=explain_options(options, faithfulness, metrics))
    _set_targets(req, target)
    if top_k:
        if req.targets:
            raise ValueError("top_k explains the same number of top classes of every image; give it or "
                             "per-image targets, not both")
        req.target.top_k = top_k
    return req


# Singular slips of explain()'s own keywords, which would otherwise travel as
# unknown explanation options and come back as OPTION_NOT_FOUND.
_REQUEST_KEYWORDS = {"layer": "layers", "targets": "target", "image": "images", "methods": "method"}


def explain_options(options: dict, faithfulness: bool = False, metrics: Sequence[str] = ()) -> pb.ExplainOptions:
    """ExplainOptions from {name: value}: an option with a typed field of its
    own goes there, any other in the `parameters` map, typed by its Python
    value (bool, int, float, str). The client needs no schema: the server
    refuses a name it does not know, naming the closest (INVALID_ARGUMENT).
    TypeError: a value of another type."""
    if isinstance(metrics, str):  # one name, not its letters
        metrics = [metrics]
    msg = pb.ExplainOptions(faithfulness=faithfulness, metrics=list(metrics))
    fields = pb.ExplainOptions.DESCRIPTOR.fields_by_name
    for name, value in options.items():
        if value is None:
            continue
        if name in _REQUEST_KEYWORDS:  # a slip such as layer= for layers= is not an explanation option
            raise TypeError(f"explain() got an unexpected keyword argument {name!r}; did you mean "
                            f"{_REQUEST_KEYWORDS[name]!r}?")
        if name in fields and name not in ("faithfulness", "parameters", "metrics"):
            setattr(msg, name, value)
            continue
        entry = msg.parameters[name]
        if isinstance(value, (bool, np.bool_)):
            entry.bool_value = bool(value)
        elif isinstance(value, (int, np.integer)):
            entry.int_value = int(value)
        elif isinstance(value, (float, np.floating)):
            entry.double_value = float(value)
        elif isinstance(value, str):
            entry.string_value = value
        else:
            raise TypeError(f"option {name}: a {type(value).__name__} is not a bool, int, float or str")
    return msg


def _images(images) -> list[pb.Image]:
    """One image or many; a 4-D array or tensor is a batch."""
    if isinstance(images, np.ndarray) or hasattr(images, "detach"):
        return [to_image(i) for i in images] if images.ndim == 4 else [to_image(images)]
    if isinstance(images, (str, Path, bytes, bytearray, memoryview, pb.Image)) or hasattr(images, "convert"):
        return [to_image(images)]
    return [to_image(i) for i in images]
