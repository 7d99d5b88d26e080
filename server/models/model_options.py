"""How a model is served: one set of options, declared once.

    ModelOptions(device, dtype, batching, channels_last, compile,
                 compile_batch_sizes, device_decode, pin_memory, backend)

The same settings reach a model from four places: a LoadModel request (the
`ModelOptions` message, or the older fields of LoadModelRequest, merged here),
`netscope serve --model` / `netscope load` flags, a TOML `[[models]]` table and
`Client.load_model(**options)`. The flat names (`FLAT_KEYS`: `max_batch_size`
for batching.max_batch_size, ...) are the TOML keys, the flags (with dashes)
and the client's keywords. Validation lives here (`checked`), so every path
refuses the same values with the same INVALID_ARGUMENT naming `options.NAME`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from netscope.v1 import inspector_pb2 as pb

from ..errors import FailedPrecondition, InvalidArgument, shown

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MAX_BATCH_SIZE = 1024
MAX_DELAY_MS = 10_000.0


@dataclass(frozen=True)
class Batching:
    """Dynamic batching of concurrent requests (server/runtime/batching.py)."""

    max_batch_size: int = 1  # images per device batch; 0 or 1: off
    max_delay_ms: float = 0.0  # how long the first request of a batch waits for others
    max_queue: int = 0  # queued requests before RESOURCE_EXHAUSTED; 0: the server default


BATCHING_KEYS = tuple(f.name for f in fields(Batching))


@dataclass(frozen=True)
class ModelOptions:
    """Placement, precision, batching and the fast path of one served model.
    Empty device / dtype mean the server's defaults (`--device`, `--dtype`)."""

    device: str = ""  # "auto", "cpu", "cuda", "cuda:N"
    dtype: str = ""  # "float32", "float16", "bfloat16"
    batching: Batching = field(default_factory=Batching)
    channels_last: bool = False  # channels-last memory format
    compile: str = ""  # torch.compile mode of Predict's forward ("": eager)
    compile_batch_sizes: tuple[int, ...] = ()  # batch sizes compiled at load (default 1 and max_batch_size)
    device_decode: bool = False  # JPEGs decoded (and preprocessed) on the model's device
    pin_memory: bool = True  # pinned host batches, non-blocking copies (CUDA only)
    backend: str = ""  # Predict's runtime: "torch" ("" too) or "onnxruntime" (onnx_backend.py)

    # ------------------------------------------------------------ flat names

    def replace(self, **flat) -> "ModelOptions":
        """These options with some changed, by flat name (FLAT_KEYS; `batching`
        takes a whole Batching). Unknown names are a TypeError naming the known ones."""
        unknown = sorted(set(flat) - set(FLAT_KEYS) - {"batching"})
        if unknown:
            raise TypeError(f"unknown model option(s) {', '.join(unknown)}; known: {', '.join(FLAT_KEYS)}")
        batching = flat.pop("batching", None) or self.batching
        nested = {k: flat.pop(k) for k in BATCHING_KEYS if k in flat}
        if "compile_batch_sizes" in flat and isinstance(flat["compile_batch_sizes"], list):
            flat["compile_batch_sizes"] = tuple(flat["compile_batch_sizes"])
        return replace(self, batching=replace(batching, **nested) if nested else batching, **flat)

    def flat(self) -> dict[str, Any]:
        """{flat name: value}: the TOML keys and the client's keywords."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "batching"}
        out.update({k: getattr(self.batching, k) for k in BATCHING_KEYS})
        return {k: out[k] for k in FLAT_KEYS}

    # ------------------------------------------------------------ the wire

    @classmethod
    def from_proto(cls, msg: pb.ModelOptions) -> "ModelOptions":
        b = msg.batching
        return cls(device=msg.device, dtype=msg.dtype,
                   batching=Batching(b.max_batch_size, b.max_delay_ms, b.max_queue),
                   channels_last=msg.channels_last, compile=msg.compile,
                   compile_batch_sizes=tuple(msg.compile_batch_sizes), device_decode=msg.device_decode,
                   pin_memory=msg.pin_memory if msg.HasField("pin_memory") else True, backend=msg.backend)

    def to_proto(self) -> pb.ModelOptions:
        b = self.batching
        return pb.ModelOptions(device=self.device, dtype=self.dtype,
                               batching=pb.BatchingOptions(max_batch_size=b.max_batch_size,
                                                           max_delay_ms=b.max_delay_ms, max_queue=b.max_queue),
                               channels_last=self.channels_last, compile=self.compile,
                               compile_batch_sizes=list(self.compile_batch_sizes), device_decode=self.device_decode,
                               pin_memory=self.pin_memory, backend=self.backend)

    @classmethod
    def from_request(cls, request: pb.LoadModelRequest) -> "ModelOptions":
        """LoadModelRequest.options merged with the request's older top-level
        fields (device, dtype, batching, channels_last, ...), which clients
        written before ModelOptions still send. A setting given both ways with
        different values is InvalidArgument naming both fields."""
        merged = pb.ModelOptions()
        merged.CopyFrom(request.options)
        for name in ("device", "dtype", "compile", "channels_last", "device_decode"):
            _merge_scalar(merged, name, getattr(request, name), f"options.{name}", name)
        for name in BATCHING_KEYS:
            _merge_scalar(merged.batching, name, getattr(request.batching, name), f"options.batching.{name}",
                          f"batching.{name}")
        if request.compile_batch_sizes:
            if merged.compile_batch_sizes and list(merged.compile_batch_sizes) != list(request.compile_batch_sizes):
                raise _twice("options.compile_batch_sizes", "compile_batch_sizes", list(merged.compile_batch_sizes),
                             list(request.compile_batch_sizes))
            merged.compile_batch_sizes[:] = list(request.compile_batch_sizes)
        if request.HasField("pin_memory"):
            if merged.HasField("pin_memory") and merged.pin_memory != request.pin_memory:
                raise _twice("options.pin_memory", "pin_memory", merged.pin_memory, request.pin_memory)
            merged.pin_memory = request.pin_memory
        return cls.from_proto(merged)

    # ------------------------------------------------------------ validation

    def checked(self) -> "ModelOptions":
        """These options validated and normalised (compile mode lower-cased,
        "none"/"off" as ""), without touching a device. InvalidArgument naming
        `options.NAME` and what would work. The device's availability is
        checked at load (`resolve_device`: FAILED_PRECONDITION)."""
        for name, kind in (("device", str), ("dtype", str), ("channels_last", bool),
                           ("device_decode", bool), ("pin_memory", bool)):
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise InvalidArgument(f"{name} must be {'true or false' if kind is bool else 'a string'}; got "
                                      f"{shown(value)}", reason="BAD_MODEL_OPTION", field=f"options.{name}")
        if self.dtype:
            resolve_dtype(self.dtype)
        if self.device:
            _device_syntax(self.device)
        from . import compiled  # the compile modes and bucket rules live beside the compiled forward

        mode = compiled.check_mode(self.compile)
        batching = check_batching(self.batching)
        sizes = self.compile_batch_sizes
        if isinstance(sizes, (list, tuple)):
            sizes = tuple(sizes)
        compiled.buckets_for(mode, sizes, batching.max_batch_size)  # refuses bad sizes, sizes without a mode
        from .onnx_backend import check_backend

        backend = check_backend(self.backend)
        if backend != "torch" and mode:
            raise InvalidArgument(f"compile {shown(mode)} and backend {backend} both choose how Predict runs; "
                                  f"set one of them", reason="BAD_MODEL_OPTION", field="options.backend")
        return replace(self, compile=mode, batching=batching, compile_batch_sizes=sizes, backend=backend)


FLAT_KEYS = ("device", "dtype", "max_batch_size", "max_delay_ms", "max_queue", "channels_last", "compile",
             "compile_batch_sizes", "device_decode", "pin_memory", "backend")


def _merge_scalar(msg, name: str, legacy, field_new: str, field_old: str) -> None:
    """Copy a legacy scalar into msg.name when set (non-zero), refusing a different value already there."""
    if not legacy:
        return
    current = getattr(msg, name)
    if current and current != legacy:
        raise _twice(field_new, field_old, current, legacy)
    setattr(msg, name, legacy)


def _twice(field_new: str, field_old: str, new, old) -> InvalidArgument:
    return InvalidArgument(
        f"{field_old} is set twice, to different values: {shown(new)} in {field_new} and {shown(old)} in the older "
        f"LoadModelRequest.{field_old}; set it once, in {field_new}", reason="OPTION_SET_TWICE", field=field_new,
        metadata={"deprecated_field": field_old})


# ---------------------------------------------------------------- the checks, one each


def resolve_device(name: str) -> torch.device:
    """A device name ("auto", "cpu", "cuda", "cuda:N") -> torch.device on this
    server: InvalidArgument for a name no server knows, FailedPrecondition
    for a CUDA device this one lacks."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = _device_syntax(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FailedPrecondition(f"device {shown(name)} asked for, but this server has no CUDA device",
                                     field="options.device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FailedPrecondition(f"device {shown(name)} asked for, but this server has {torch.cuda.device_count()} "
                                     f"CUDA device(s)", field="options.device",
                                     metadata={"cuda_devices": str(torch.cuda.device_count())})
    return device


def _device_syntax(name: str) -> torch.device:
    name = name.lower()
    if name == "auto":
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InvalidArgument(f"unknown device {shown(name)}; use auto, cpu, cuda or cuda:N",
                              field="options.device") from None
    if device.type not in ("cpu", "cuda"):
        raise InvalidArgument(f"unsupported device {shown(name)}; use auto, cpu, cuda or cuda:N", field="options.device")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    name = (name or "float32").lower()
    if name not in DTYPES:
        raise InvalidArgument(f"unknown dtype {shown(name)}; use one of {', '.join(DTYPES)}", field="options.dtype")
    return DTYPES[name]


def check_batching(b: Batching) -> Batching:
    """Batching options in range, or InvalidArgument saying what would work."""
    for name, value, kinds in (("max_batch_size", b.max_batch_size, (int,)), ("max_queue", b.max_queue, (int,)),
                               ("max_delay_ms", b.max_delay_ms, (int, float))):
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise InvalidArgument(f"{name} must be a number; got {shown(value)}", field=f"options.batching.{name}")
    if b.max_batch_size < 0 or b.max_batch_size > MAX_BATCH_SIZE:
        raise InvalidArgument(f"max_batch_size must be 0..{MAX_BATCH_SIZE} (0 or 1: no dynamic batching); got {b.max_batch_size}",
                              field="options.batching.max_batch_size", metadata={"max": str(MAX_BATCH_SIZE)})
    if not (math.isfinite(b.max_delay_ms) and 0.0 <= b.max_delay_ms <= MAX_DELAY_MS):
        raise InvalidArgument(f"max_delay_ms must be 0..{MAX_DELAY_MS:g}; got {b.max_delay_ms}",
                              field="options.batching.max_delay_ms", metadata={"max": f"{MAX_DELAY_MS:g}"})
    if b.max_queue < 0:
        raise InvalidArgument(f"max_queue must be >= 0 (0: the server default); got {b.max_queue}",
                              field="options.batching.max_queue")
    return Batching(max(1, b.max_batch_size), float(b.max_delay_ms), b.max_queue)
