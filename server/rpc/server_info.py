"""Discovery: what this server is, runs on, allows and can explain.

    gather(registry, limits) -> ServerInfo

Plain dataclasses, no protos (server/rpc/convert.py turns them into the
GetServerInfo answer). Methods and options come from the method registry
(server/explain/methods.py), so a newly registered method is discoverable without
being listed here; limits are the ones the service enforces.
"""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path

import torch
import torchvision

from ..imaging import COLORMAPS
from ..models.registry import DTYPES, Registry

GIT_COMMIT_ENV = "NETSCOPE_GIT_COMMIT"  # set by a build (image, wheel) that knows its commit


@dataclass(frozen=True)
class Build:
    git_commit: str  # "" when unknown
    python: str
    torch: str
    torchvision: str
    captum: str
    grpc: str
    cuda: str  # torch's CUDA runtime; "" on CPU-only builds


@dataclass(frozen=True)
class Device:
    name: str  # "cpu", "cuda:0", ...: what LoadModel's `device` accepts
    description: str = ""  # the GPU's name
    total_memory_bytes: int = 0  # GPU memory, bytes; 0 for the CPU
    capability: tuple[int, ...] = ()  # CUDA compute capability (major, minor)


@dataclass(frozen=True)
class LimitsInfo:
    max_message_bytes: int
    max_pixels: int
    max_images: int  # images in one request
    stream_batch: int  # images per ExplainStream device batch
    explain: dict[str, int]  # the explanation ceilings by name (serve --explain-limit NAME=N)


@dataclass(frozen=True)
class OptionInfo:
    name: str
    type: str  # "int" | "float" | "bool" | "str"
    default: object  # None: the method's own default, told in `description`
    minimum: float | None
    ceiling: str | None  # the LimitsInfo.explain entry bounding it
    ceiling_value: int | None  # that entry's value on this server
    choices: tuple[str, ...]
    description: str
    methods: tuple[str, ...]  # the methods that take it
    minimum_exclusive: bool = False  # the value must be above `minimum`
    within_input: bool = False  # a length in pixels, at most the input's shorter side
    requires: str = ""  # another option that must be set for this one to mean anything


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: str
    description: str
    source: str
    needs: tuple[str, ...]
    cost: str
    draws_noise: bool
    may_batch: bool
    signed: bool
    options: tuple[str, ...]


@dataclass(frozen=True)
class ServerInfo:
    version: str
    build: Build
    devices: list[Device]
    dtypes: list[str]
    colormaps: list[str]
    limits: LimitsInfo
    methods: list[MethodInfo]
    options: list[OptionInfo]
    models: list[str]
    default_method: str = ""


def gather(registry: Registry, limits) -> ServerInfo:
    """This server's ServerInfo. `limits` is the service's `Limits` (its
    `explain` the `explain.Ceilings`). Cheap: no forward pass, no lock held
    on any model; devices are read from torch.cuda, not probed."""
    from ..explain import methods as method_registry  # the method registry imports the explainers: only when asked

    ceilings = {f.name: int(getattr(limits.explain, f.name)) for f in fields(limits.explain)}
    specs = _specs(method_registry.methods())
    return ServerInfo(
        version=version(), build=build(), devices=devices(), dtypes=list(DTYPES), colormaps=list(COLORMAPS),
        limits=LimitsInfo(max_message_bytes=int(limits.max_message_bytes), max_pixels=int(limits.max_pixels),
                          max_images=int(limits.max_images), stream_batch=int(limits.stream_batch), explain=ceilings),
        methods=[method_info(m) for m in specs],
        options=[option_info(o, specs, ceilings) for o in _specs(method_registry.options())],
        models=[m.id for m in registry.list()],
        default_method=getattr(method_registry, "DEFAULT_METHOD", "grad_cam"),
    )


def method_info(spec) -> MethodInfo:
    """A registry MethodSpec as discovery reports it (no implementation)."""
    return MethodInfo(name=spec.name, family=spec.family, description=spec.description, source=spec.source,
                      needs=tuple(sorted(spec.needs)), cost=spec.cost, draws_noise=bool(spec.draws_noise),
                      may_batch=bool(spec.may_batch), signed=bool(spec.signed), options=tuple(spec.options))


def option_info(spec, method_specs, ceilings: dict[str, int]) -> OptionInfo:
    """A registry OptionSpec with the methods that take it and, when a
    server ceiling bounds it, that ceiling's value here."""
    return OptionInfo(
        name=spec.name, type=spec.type, default=spec.default, minimum=spec.minimum, ceiling=spec.ceiling,
        ceiling_value=ceilings.get(spec.ceiling) if spec.ceiling else None, choices=tuple(spec.choices or ()),
        description=spec.description,
        methods=tuple(m.name for m in method_specs if spec.name in m.options),
        minimum_exclusive=bool(getattr(spec, "exclusive", False)), within_input=bool(getattr(spec, "within_input", False)),
        requires=getattr(spec, "requires", None) or "")


def _specs(collection) -> list:
    """The registry's methods()/options() as a list, whether a mapping or a sequence."""
    return list(collection.values()) if isinstance(collection, dict) else list(collection)


def version() -> str:
    try:
        return metadata.version("netscope")
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def build() -> Build:
    try:
        import captum
        captum_version = captum.__version__
    except ImportError:  # an optional part of Explain; the rest serves without it
        captum_version = ""
    import grpc
    return Build(git_commit=git_commit(), python=platform.python_version(), torch=torch.__version__,
                 torchvision=torchvision.__version__, captum=captum_version, grpc=grpc.__version__,
                 cuda=torch.version.cuda or "")


def git_commit() -> str:
    """The commit this server runs: $NETSCOPE_GIT_COMMIT when a build set it,
    else HEAD of the git checkout the package is installed from (an editable
    install), with "-dirty" when the checkout has uncommitted changes; ""
    when neither is known (an installed wheel)."""
    if os.environ.get(GIT_COMMIT_ENV):
        return os.environ[GIT_COMMIT_ENV].strip()[:64]
    source = Path(__file__).resolve().parents[2]  # server/rpc/ -> the checkout
    if not (source / ".git").exists():
        return ""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("-dirty" if dirty else "")


def devices() -> list[Device]:
    """The devices LoadModel accepts: the CPU and every visible CUDA device."""
    out = [Device("cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append(Device(f"cuda:{i}", p.name, int(p.total_memory), (p.major, p.minor)))
    return out
