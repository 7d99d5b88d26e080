"""Loaded models: where they come from, where they run, how they see images.

A model source is a torchvision classification architecture (or one of ours
from netscope.training) with weights `none`, `DEFAULT` or an enum name, or a
checkpoint inside the model store. Checkpoints are read with
`torch.load(weights_only=True)` and only from inside the store.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torchvision
from torch import nn

from . import compiled, torch_thread, transfer
from .batching import Batcher
from .compiled import CompiledForward
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, closest
from .imaging import Preprocessing
from .input_size import min_input_size
from .summary import Summary, summarize

log = logging.getLogger("netscope.registry")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
# "none" weights are initialised from this seed, so the same arch always gives
# the same untrained model (reproducible answers, comparable in tests).
INIT_SEED = 0
MAX_BATCH_SIZE = 1024
MAX_DELAY_MS = 10_000.0


def torchvision_architectures() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def our_architectures() -> list[str]:
    try:
        from netscope.training.models import OUR_ARCHITECTURES
    except ImportError:
        return []
    return list(OUR_ARCHITECTURES)


def build_architecture(arch: str, num_classes: int, **arch_kwargs) -> nn.Module:
    """An untrained model of `arch`, seeded so it is the same every time."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        if arch in our_architectures():
            from netscope.training.models import build_model

            return build_model(arch, num_classes, **arch_kwargs)
        if arch not in torchvision_architectures():
            raise NotFound(f"unknown architecture {arch!r}{closest(arch, torchvision_architectures() + our_architectures())}")
        kwargs = dict(arch_kwargs)
        if arch in ("inception_v3", "googlenet"):
            kwargs.setdefault("init_weights", True)
            kwargs.setdefault("aux_logits", False)
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)


def resolve_device(name: str) -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidArgument(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FailedPrecondition(f"device {name!r} asked for, but this server has no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FailedPrecondition(f"device {name!r} asked for, but this server has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise InvalidArgument(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    name = (name or "float32").lower()
    if name not in DTYPES:
        raise InvalidArgument(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


@dataclass
class Batching:
    max_batch_size: int = 1
    max_delay_ms: float = 0.0
    max_queue: int = 0


@dataclass
class LoadedModel:
    """A model being served, with everything needed to feed and read it."""

    id: str
    arch: str
    source: str
    weights: str
    module: nn.Module
    device: torch.device
    dtype: torch.dtype
    recipe: Preprocessing
    class_names: list[str]
    pretrained: bool
    note: str = ""
    channels_last: bool = False
    batching: Batching = field(default_factory=Batching)
    summary: Summary | None = None
    batcher: Batcher | None = None  # set when batching.max_batch_size > 1
    device_decode: bool = False  # JPEGs decoded (and preprocessed) on the model's device
    pin_memory: bool = True  # host batches in pinned memory, copied non-blocking (CUDA only)
    min_input_size: int = 1  # smallest H = W it runs on (probed at load; input_size.py)
    compile: str = ""  # torch.compile mode of Predict's forward ("": eager)
    compiled: CompiledForward | None = None
    # Serialises work that must alter the module for a moment (e.g. Captum
    # methods that register their own hooks); plain forwards don't take it.
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.recipe.input_size

    def run(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on the thread this model's torch work belongs to:
        the server's one torch thread for a CPU model (server/torch_thread.py;
        `urgent=True` puts it ahead of the waiting rest)."""
        return torch_thread.run(self.device, fn, *args, **kwargs)

    @property
    def pinned(self) -> bool:
        """Whether host batches for this model are assembled in pinned memory."""
        return self.pin_memory and transfer.can_pin(self.device)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A float batch -> this model's device (one copy, non-blocking from
        pinned memory), dtype and memory format."""
        fmt = self.memory_format if x.dim() == 4 else torch.contiguous_format
        return transfer.to_device(x, self.device, self.dtype, fmt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits as float32 on the model's device, through the eager module
        (call under inference_mode or enable_grad)."""
        out = self.module(self.to_device(x))
        if not isinstance(out, torch.Tensor):  # GoogLeNet/Inception namedtuples in train mode
            out = out[0]
        return out.float()

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Logits as float32 on the host, for Predict: through the compiled
        forward when the model has one and a compiled batch size holds x."""
        with torch.inference_mode():
            if self.compiled is not None:
                logits = self.compiled(self.to_device(x))
                if logits is not None:
                    return logits
            return self.forward(x).cpu()

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.compiled is not None:
            self.compiled.close()

    def describe(self, input_size: tuple[int, ...] | None = None) -> Summary:
        if input_size is None or tuple(input_size) == tuple(self.input_size):
            if self.summary is None:
                self.summary = summarize(self.module, self.input_size, self.device, self.dtype)
            return self.summary
        if len(input_size) != 3 or min(input_size) < 1 or input_size[0] != self.input_size[0]:
            raise InvalidArgument(f"input_size must be (C, H, W) with C={self.input_size[0]}; got {list(input_size)}")
        if input_size[1] * input_size[2] > 4096 * 4096:
            raise InvalidArgument(f"input_size {list(input_size)} is too large to summarise")
        try:
            return summarize(self.module, tuple(input_size), self.device, self.dtype)
        except RuntimeError as exc:
            raise InvalidArgument(f"the model cannot run on input_size {list(input_size)}: {str(exc).splitlines()[0]}") from None


def weights_cache_path(weights) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def recipe_of_weights(weights) -> Preprocessing:
    t = weights.transforms()
    crop = list(getattr(t, "crop_size", [224]))
    crop = (crop[0], crop[-1])
    resize = list(getattr(t, "resize_size", [0]) or [0])[0]
    interp = getattr(getattr(t, "interpolation", None), "value", "bilinear")
    return Preprocessing(resize=int(resize), crop=crop, mean=tuple(t.mean), std=tuple(t.std), interpolation=str(interp), channels=3)


def default_recipe(arch: str) -> Preprocessing:
    """ImageNet preprocessing at the size the architecture was trained at."""
    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return Preprocessing()
    return recipe_of_weights(weights)


class Registry:
    """The models a server holds, by id. Thread-safe."""

    def __init__(self, store: str | os.PathLike = "models", *, allow_download: bool = False,
                 default_device: str = "auto", default_dtype: str = "float32"):
        self.store = Path(store)
        self.allow_download = allow_download
        self.default_device = default_device
        self.default_dtype = default_dtype
        self._models: dict[str, LoadedModel] = {}
        self._loading: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ lookup

    def get(self, model_id: str) -> LoadedModel:
        with self._lock:
            model = self._models.get(model_id)
            names = list(self._models)
        if model is None:
            if not model_id:
                raise InvalidArgument("no model named: set `model` to one of " + (", ".join(names) or "(none loaded)"))
            hint = closest(model_id, names) or ("; loaded: " + ", ".join(names) if names else "; no models are loaded")
            raise NotFound(f"model {model_id!r} is not loaded{hint}")
        return model

    def list(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def checkpoints(self) -> list[str]:
        if not self.store.is_dir():
            return []
        return sorted(str(p.relative_to(self.store)) for p in self.store.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())

    # ------------------------------------------------------------ load / unload

    def load(self, model_id: str, source: str, *, weights: str = "", device: str = "", dtype: str = "",
             arch: str = "", num_classes: int = 0, batching: Batching | None = None,
             channels_last: bool = False, compile: str = "", compile_batch_sizes: Sequence[int] = (),
             device_decode: bool = False, pin_memory: bool = True) -> LoadedModel:
        """Build, place and warm up a model. The fast-path pieces (channels-last,
        compile, device decode, pinned memory) are each on or off per model."""
        if not model_id or not all(c.isalnum() or c in "-_." for c in model_id):
            raise InvalidArgument(f"model id {model_id!r} must be non-empty letters, digits, '-', '_' or '.'")
        if not source:
            raise InvalidArgument("no source: name a torchvision architecture or a checkpoint in the model store")
        dev = resolve_device(device or self.default_device)
        dt = resolve_dtype(dtype or self.default_dtype)
        batching = check_batching(batching or Batching())
        mode = compiled.check_mode(compile)
        buckets = compiled.buckets_for(mode, compile_batch_sizes, batching.max_batch_size)
        with self._lock:
            if model_id in self._models or model_id in self._loading:
                raise AlreadyExists(f"a model with id {model_id!r} is already loaded; unload it first or choose another id")
            self._loading.add(model_id)
        try:
            def build_and_warm_up() -> LoadedModel:
                model = self._build(model_id, source, weights, arch, num_classes)
                self._place(model, dev, dt, channels_last)
                if mode:
                    self._compile(model, mode, buckets)
                return model

            loaded = torch_thread.run(dev, build_and_warm_up)
            loaded.batching = batching
            loaded.device_decode, loaded.pin_memory = device_decode, pin_memory
            if device_decode and dev.type != "cuda":
                log.warning("%s: device_decode on %s decodes JPEGs with torchvision one after the other; "
                            "the OpenCV pool is faster there (the option is meant for CUDA)", model_id, dev)
            if loaded.batching.max_batch_size > 1:
                loaded.batcher = Batcher(loaded.id, loaded.batching, pin=loaded.pinned, device=dev)
            with self._lock:
                self._models[model_id] = loaded
            log.info("loaded %s: %s (%s) on %s as %s%s", model_id, loaded.source, loaded.weights, dev,
                     str(dt).replace("torch.", ""), f" — {loaded.note}" if loaded.note else "")
            return loaded
        finally:
            with self._lock:
                self._loading.discard(model_id)

    def unload(self, model_id: str) -> None:
        model = self.get(model_id)
        with self._lock:
            self._models.pop(model_id, None)
        model.close()
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.info("unloaded %s", model_id)

    # ------------------------------------------------------------ building

    def _build(self, model_id: str, source: str, weights: str, arch: str, num_classes: int) -> LoadedModel:
        if source in torchvision_architectures() or source in our_architectures():
            return self._from_architecture(model_id, source, weights, num_classes)
        return self._from_checkpoint(model_id, source, arch, num_classes)

    def _from_architecture(self, model_id: str, arch: str, weights: str, num_classes: int) -> LoadedModel:
        name = (weights or "none").strip()
        if name.lower() == "none":
            n = num_classes or 1000
            module = build_architecture(arch, n)
            names = imagenet_labels(n)
            return LoadedModel(model_id, arch, arch, "none", module, torch.device("cpu"), torch.float32,
                               default_recipe(arch), names, pretrained=False, note="untrained (random weights, seed 0)")
        enum = self._weights_enum(arch, name)
        path = weights_cache_path(enum)
        if not path.exists() and not self.allow_download:
            raise FailedPrecondition(
                f"weights {arch}:{enum.name} are not available offline: looked for {path}. "
                f"Put the file there, or start the server with --allow-download")
        state = enum.get_state_dict(progress=False, check_hash=False)
        categories = list(enum.meta.get("categories") or [])
        module = build_architecture(arch, len(categories) or 1000)
        module.load_state_dict(state)
        return LoadedModel(model_id, arch, arch, enum.name, module, torch.device("cpu"), torch.float32,
                           recipe_of_weights(enum), categories or imagenet_labels(1000), pretrained=True)

    def _weights_enum(self, arch: str, name: str):
        try:
            enum_cls = torchvision.models.get_model_weights(arch)
        except (ValueError, KeyError):
            raise FailedPrecondition(f"{arch} has no pretrained weights in torchvision") from None
        if name.upper() == "DEFAULT":
            return enum_cls.DEFAULT
        short = name.split(".")[-1]
        if short not in enum_cls.__members__:
            raise NotFound(f"{arch} has no weights {name!r}; choose DEFAULT, none or one of {', '.join(enum_cls.__members__)}")
        return enum_cls[short]

    def checkpoint_path(self, name: str) -> Path:
        """The file a checkpoint name means, refusing names that leave the store."""
        if not name or os.path.isabs(name) or name.startswith("~") or ".." in Path(name).parts or "\\" in name:
            raise InvalidArgument(f"checkpoint name {name!r} must be a relative path inside the model store, without '..'")
        root = self.store.resolve()
        candidates = [root / name] + [root / (name + s) for s in CHECKPOINT_SUFFIXES if not name.endswith(s)]
        for path in candidates:
            real = path.resolve()
            if real.is_file():
                if root not in real.parents:
                    raise InvalidArgument(f"checkpoint {name!r} resolves outside the model store")
                return real
        available = self.checkpoints()
        hint = closest(name, available) or ("; the store holds: " + ", ".join(available) if available else f"; the store {root} holds no checkpoints")
        raise NotFound(f"{name!r} is neither an architecture nor a checkpoint in the model store{hint}")

    def _from_checkpoint(self, model_id: str, name: str, arch: str, num_classes: int) -> LoadedModel:
        path = self.checkpoint_path(name)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors, truncated files, non-tensor payloads
            raise InvalidArgument(f"checkpoint {name!r} could not be read safely: {str(exc).splitlines()[0]}") from None
        if isinstance(obj, dict) and "model_state_dict" in obj and "arch" in obj:
            return self._from_netscope_checkpoint(model_id, name, obj)
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            if not arch:
                raise InvalidArgument(f"{name!r} is a plain state_dict: give its architecture (arch) and num_classes")
            n = num_classes or _infer_num_classes(obj) or 1000
            module = build_architecture(arch, n)
            _load_state(module, obj, name)
            return LoadedModel(model_id, arch, name, "checkpoint", module, torch.device("cpu"), torch.float32,
                               default_recipe(arch), imagenet_labels(n), pretrained=True)
        raise InvalidArgument(f"{name!r} is neither a netscope checkpoint nor a state_dict of tensors")

    def _from_netscope_checkpoint(self, model_id: str, name: str, ckpt: dict) -> LoadedModel:
        arch = str(ckpt["arch"])
        n = int(ckpt.get("num_classes") or len(ckpt.get("class_names") or []) or 0)
        if n <= 0:
            raise InvalidArgument(f"checkpoint {name!r} records no class count")
        module = build_architecture(arch, n, **dict(ckpt.get("arch_kwargs") or {}))
        _load_state(module, ckpt["model_state_dict"], name)
        names = [str(c) for c in (ckpt.get("class_names") or [])] or [str(i) for i in range(n)]
        recipe = Preprocessing.from_dict(ckpt["preprocessing"]) if ckpt.get("preprocessing") else default_recipe(arch)
        return LoadedModel(model_id, arch, name, "checkpoint", module, torch.device("cpu"), torch.float32,
                           recipe, names, pretrained=True)

    def _place(self, loaded: LoadedModel, device: torch.device, dtype: torch.dtype, channels_last: bool) -> None:
        module = loaded.module.eval()
        fmt = torch.channels_last if channels_last else torch.preserve_format
        loaded.module = module.to(device=device, dtype=dtype, memory_format=fmt)
        loaded.device, loaded.dtype, loaded.channels_last = device, dtype, channels_last
        # Warm up (the first request is not slow) and prove the model runs here.
        try:
            loaded.summary = summarize(loaded.module, loaded.input_size, device, dtype)
        except (RuntimeError, NotImplementedError) as exc:
            raise FailedPrecondition(
                f"{loaded.source} does not run on {device} as {str(dtype).replace('torch.', '')}: {str(exc).splitlines()[0]}"
            ) from None
        loaded.min_input_size = min_input_size(loaded.module, loaded.input_size, device, dtype,
                                               torch.channels_last if channels_last else torch.contiguous_format)

    def _compile(self, loaded: LoadedModel, mode: str, buckets: tuple[int, ...]) -> None:
        """torch.compile Predict's forward and compile every bucket now, so the
        first request is not slow; a model that does not compile is not loaded."""
        loaded.compile = mode
        loaded.compiled = CompiledForward(loaded.module, mode, buckets, input_size=loaded.input_size,
                                          device=loaded.device, dtype=loaded.dtype,
                                          memory_format=loaded.memory_format, name=loaded.id)
        seconds = loaded.compiled.warm_up()
        log.info("compiled %s (%s, %s) for batch sizes %s in %.1f s", loaded.id, mode, loaded.compiled.backend,
                 ", ".join(map(str, buckets)), seconds)


def check_batching(b: Batching) -> Batching:
    """Batching options in range, or InvalidArgument saying what would work."""
    for name, value, kinds in (("max_batch_size", b.max_batch_size, (int,)), ("max_queue", b.max_queue, (int,)),
                               ("max_delay_ms", b.max_delay_ms, (int, float))):
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise InvalidArgument(f"{name} must be a number; got {value!r}")
    if b.max_batch_size < 0 or b.max_batch_size > MAX_BATCH_SIZE:
        raise InvalidArgument(f"max_batch_size must be 0..{MAX_BATCH_SIZE} (0 or 1: no dynamic batching); got {b.max_batch_size}")
    if not 0.0 <= b.max_delay_ms <= MAX_DELAY_MS:  # also refuses NaN
        raise InvalidArgument(f"max_delay_ms must be 0..{MAX_DELAY_MS:g}; got {b.max_delay_ms}")
    if b.max_queue < 0:
        raise InvalidArgument(f"max_queue must be >= 0 (0: the server default); got {b.max_queue}")
    return Batching(max(1, b.max_batch_size), b.max_delay_ms, b.max_queue)


def _load_state(module: nn.Module, state: dict, name: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise InvalidArgument(f"checkpoint {name!r} does not fit its architecture: {str(exc).splitlines()[0]}") from None


def _infer_num_classes(state: dict) -> int:
    """The class count of a state_dict: the rows of its last 2-D+ weight."""
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() >= 2]
    return int(weights[-1].shape[0]) if weights else 0


def imagenet_labels(n: int) -> list[str]:
    """ImageNet category names when n == 1000 (they ship with torchvision), else indices."""
    if n == 1000:
        try:
            return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
        except Exception:
            pass
    return [str(i) for i in range(n)]
