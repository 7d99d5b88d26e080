"""What a server told about itself (GetServerInfo), as plain dataclasses.

`ServerInfo.from_proto` is the only place that reads the message; the rest
of the client (the `methods` and `server-info` commands) reads these.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

from netscope.v1 import inspector_pb2 as pb


@dataclass(frozen=True)
class Build:
    git_commit: str  # "" when the server does not know it
    python: str
    torch: str
    torchvision: str
    captum: str
    grpc: str
    cuda: str  # torch's CUDA runtime; "" on CPU-only builds


@dataclass(frozen=True)
class Device:
    name: str  # "cpu", "cuda:0", ...: what load_model(device=...) accepts
    description: str  # the GPU's name; "" for the CPU
    total_memory_bytes: int  # 0 for the CPU
    capability: tuple[int, ...]  # CUDA compute capability (major, minor)


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int  # largest request or response, bytes
    max_pixels: int  # per decoded image
    max_images: int  # images in one request
    stream_batch: int  # images per device batch on ExplainStream
    explain: dict[str, int]  # explanation ceilings by name ("steps", "samples", "top_k", "memory_mb", ...)

    @property
    def max_batch(self) -> int:
        """Deprecated name of `max_images` (a "batch" is the device batch now); goes in the next release."""
        warnings.warn("Limits.max_batch is deprecated; use Limits.max_images (images in one request)",
                      DeprecationWarning, stacklevel=2)
        return self.max_images


@dataclass(frozen=True)
class OptionSchema:
    """One explanation option, as the server validates it."""

    name: str
    type: str  # "int" | "float" | "bool" | "str"
    default: Any  # None: the method's own default (the description says which)
    minimum: float | None
    ceiling: str  # the Limits.explain entry bounding it; "" for none
    ceiling_value: int | None  # that entry's value on this server
    choices: tuple[str, ...]
    description: str
    methods: tuple[str, ...]  # the methods that take it
    minimum_exclusive: bool = False  # the value must be above `minimum`, not equal to it
    within_input: bool = False  # a length in pixels: at most the input's shorter side
    requires: str = ""  # another option that must be set for this one to mean anything


@dataclass(frozen=True)
class MethodInfo:
    """One explanation method."""

    name: str
    family: str  # "cam" | "perturbation_cam" | "attribution"
    description: str
    source: str  # the paper or library it follows
    needs: tuple[str, ...]  # "gradients", "layer", "conv_layer", "linear_head"
    cost: str  # "cheap" (~1 forward pass an image) | "moderate" (~10) | "expensive" (~100+)
    draws_noise: bool
    may_batch: bool
    signed: bool  # its maps' sign means something
    options: tuple[str, ...]


@dataclass(frozen=True)
class ServerInfo:
    version: str
    build: Build
    devices: list[Device]
    dtypes: list[str]
    colormaps: list[str]
    limits: Limits
    methods: list[MethodInfo]
    options: list[OptionSchema]
    models: list[str]  # ids of the loaded models
    default_method: str = ""

    def method(self, name: str) -> MethodInfo:
        """The method called `name`; KeyError naming the known ones."""
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(f"no method {name!r}; known: {', '.join(m.name for m in self.methods)}")

    def option(self, name: str) -> OptionSchema:
        """The option called `name`; KeyError naming the known ones."""
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(f"no option {name!r}; known: {', '.join(o.name for o in self.options)}")

    def to_dict(self) -> dict:
        """Everything, as JSON-ready dicts and lists."""
        return asdict(self)

    @classmethod
    def from_proto(cls, m: pb.ServerInfo) -> "ServerInfo":
        b = m.build
        return cls(
            version=m.version, default_method=m.default_method,
            build=Build(b.git_commit, b.python, b.torch, b.torchvision, b.captum, b.grpc, b.cuda),
            devices=[Device(d.name, d.description, d.total_memory_bytes, tuple(d.capability)) for d in m.devices],
            dtypes=list(m.dtypes), colormaps=list(m.colormaps),
            limits=Limits(m.limits.max_message_bytes, m.limits.max_pixels, m.limits.max_images,
                          m.limits.stream_batch, dict(sorted(m.limits.explain.items()))),
            methods=[MethodInfo(x.name, x.family, x.description, x.source, tuple(x.needs), x.cost, x.draws_noise,
                                x.may_batch, x.signed, tuple(x.options)) for x in m.methods],
            options=[_option(o) for o in m.options],
            models=list(m.models),
        )


def _option(o: pb.OptionSchema) -> OptionSchema:
    return OptionSchema(
        name=o.name, type=o.type, default=_value(o.default, o.type),
        minimum=o.minimum if o.HasField("minimum") else None, ceiling=o.ceiling,
        ceiling_value=o.ceiling_value if o.HasField("ceiling_value") else None, choices=tuple(o.choices),
        description=o.description, methods=tuple(o.methods), minimum_exclusive=o.minimum_exclusive,
        within_input=o.within_input, requires=o.requires)


def _value(v, type_: str):
    """A google.protobuf.Value as the option's Python type (numbers travel as doubles)."""
    kind = v.WhichOneof("kind")
    if kind in (None, "null_value"):
        return None
    if kind == "bool_value":
        return v.bool_value
    if kind == "number_value":
        return int(v.number_value) if type_ == "int" else v.number_value
    if kind == "string_value":
        return v.string_value
    return None
