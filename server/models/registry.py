"""Loaded models: where they come from, where they run, how they see images.

A model source is a torchvision classification architecture (or one of ours
from netscope.training) with weights `none`, `DEFAULT` or an enum name, or a
checkpoint inside the model store. Checkpoints are read with
`torch.load(weights_only=True)` and only from inside the store.
"""
from __future__ import annotations

import gc
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch
import torchvision
from torch import nn

from netscope.training.checkpoint import CheckpointError, is_netscope_checkpoint, validate

from . import compiled, transfer
from ..runtime import torch_thread
from ..runtime.batching import Batcher
from .compiled import CompiledForward
from .onnx_backend import OrtForward
from ..errors import (AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, closest, closest_metadata,
                     shown)
from .. import imaging
from ..imaging import Preprocessing
from .input_size import min_input_size
from .model_options import (DTYPES, MAX_BATCH_SIZE, MAX_DELAY_MS, Batching, ModelOptions,  # noqa: F401 (re-exported)
                            check_batching, resolve_device, resolve_dtype)
from ..inspection.summary import Summary, summarize

log = logging.getLogger("netscope.registry")

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
# "none" weights are initialised from this seed, so the same arch always gives
# the same untrained model (reproducible answers, comparable in tests).
INIT_SEED = 0
# ImageNet-21k has 21,841 classes; a head this wide is already 100k rows.
MAX_NUM_CLASSES = 100_000
MAX_LISTED_CHECKPOINTS = 10_000  # ListModels stays a bounded answer on a crowded store
SHOWN_KEYS = 3  # of each kind of state_dict mismatch, named in the message


def torchvision_architectures() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def our_architectures() -> list[str]:
    try:
        from netscope.training.models import OUR_ARCHITECTURES
    except ImportError:
        return []
    return list(OUR_ARCHITECTURES)


def build_architecture(arch: str, num_classes: int, **arch_kwargs) -> nn.Module:
    """An untrained model of `arch`, seeded so it is the same every time.
    Raises NotFound for an unknown arch, InvalidArgument for a class count out of
    1..MAX_NUM_CLASSES or keyword arguments the architecture does not take."""
    check_num_classes(num_classes)
    try:
        return _build_architecture(arch, num_classes, **arch_kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. an arch_kwargs key it does not know
        raise InvalidArgument(f"cannot build {shown(arch)} with {num_classes} classes"
                              f"{' and ' + shown(sorted(arch_kwargs)) if arch_kwargs else ''}: {str(exc).splitlines()[0][:200]}",
                              reason="ARCHITECTURE_ARGUMENTS", field="arch") from None


def _build_architecture(arch: str, num_classes: int, **arch_kwargs) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        if arch in our_architectures():
            from netscope.training.models import build_model

            return build_model(arch, num_classes, **arch_kwargs)
        if arch not in torchvision_architectures():
            known = torchvision_architectures() + our_architectures()
            raise NotFound(f"unknown architecture {shown(arch)}{closest(arch, known)}", reason="ARCHITECTURE_NOT_FOUND",
                           field="arch", metadata=closest_metadata(arch, known))
        kwargs = dict(arch_kwargs)
        if arch in ("inception_v3", "googlenet"):
            kwargs.setdefault("init_weights", True)
            kwargs.setdefault("aux_logits", False)
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)


def check_num_classes(n: int, field: str = "num_classes") -> int:
    """A class count a head can be built with: 1..MAX_NUM_CLASSES, else InvalidArgument."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_NUM_CLASSES:
        raise InvalidArgument(f"{field} must be 1..{MAX_NUM_CLASSES}; got {shown(n)}", reason="NUM_CLASSES_OUT_OF_RANGE",
                              field=field, metadata={"min": "1", "max": str(MAX_NUM_CLASSES)})
    return n


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
    backend: str = "torch"  # what runs Predict's forward: torch, or onnxruntime through `ort`
    ort: "OrtForward | None" = None
    # Serialises work that must alter the module for a moment (e.g. Captum
    # methods that register their own hooks); plain forwards don't take it.
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def options(self) -> ModelOptions:
        """The options it is served with, defaults resolved (device "cpu" / "cuda:0", dtype name)."""
        return ModelOptions(device=str(self.device), dtype=str(self.dtype).replace("torch.", ""),
                            batching=self.batching, channels_last=self.channels_last, compile=self.compile,
                            compile_batch_sizes=tuple(self.compiled.buckets) if self.compiled is not None else (),
                            device_decode=self.device_decode, pin_memory=self.pin_memory, backend=self.backend)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.recipe.input_size

    def run(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on the thread this model's torch work belongs to:
        the server's one torch thread for a CPU model (server/runtime/torch_thread.py;
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

    @property
    def predicts_on_torch_thread(self) -> bool:
        """Whether Predict's forward is torch work (the torch thread's, for a
        CPU model); an ONNX Runtime session runs in the caller's thread."""
        return self.ort is None

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Logits as float32 on the host, for Predict: through the ONNX
        Runtime session of an onnxruntime model (here, in the caller's thread),
        or the compiled forward when the model has one and a compiled batch
        size holds x. A batch the session was not exported for (raw tensors of
        another size) runs the torch module, on the model's torch thread."""
        if self.ort is not None:
            logits = self.ort(x)
            if logits is not None:
                return logits
            return self.run(self._infer_torch, x, urgent=True)
        return self._infer_torch(x)

    def _infer_torch(self, x: torch.Tensor) -> torch.Tensor:
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
        self.ort = None  # the session's own copy of the weights goes with it

    def describe(self, input_size: tuple[int, ...] | None = None) -> Summary:
        if input_size is None or tuple(input_size) == tuple(self.input_size):
            if self.summary is None:
                self.summary = summarize(self.module, self.input_size, self.device, self.dtype)
            return self.summary
        if len(input_size) != 3 or min(input_size) < 1 or input_size[0] != self.input_size[0]:
            raise InvalidArgument(f"input_size must be (C, H, W) with C={self.input_size[0]}; got {list(input_size)}")
        # The summary is a forward pass at this size: bound it as float images are
        # (16x the model input's pixels), not by a fixed 4096x4096 (over 3 GiB).
        _, h0, w0 = self.input_size
        limit = imaging.FLOAT_IMAGE_FACTOR * h0 * w0
        if input_size[1] * input_size[2] > limit:
            side = int(limit ** 0.5)
            raise InvalidArgument(
                f"input_size {list(input_size)[:3]} is over this model's limit of {limit} pixels "
                f"({imaging.FLOAT_IMAGE_FACTOR}x its {h0}x{w0} input, e.g. {side}x{side})",
                reason="INPUT_SIZE_TOO_LARGE", field="input_size", metadata={"limit": str(limit)})
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


def default_recipe(arch: str, module: nn.Module | None = None) -> Preprocessing:
    """ImageNet preprocessing at the size the architecture was trained at
    (its DEFAULT weights' recipe), fitted to `module` when given: a model built
    for one input size (a ViT's `image_size`) gets that crop. vit_h_14's DEFAULT
    weights are 518 px, but weights none builds a 224 px model."""
    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return Preprocessing()
    return fit_recipe(recipe_of_weights(weights), module)


def fit_recipe(recipe: Preprocessing, module: nn.Module | None) -> Preprocessing:
    """`recipe` at `module.image_size` (px, square) if the module has one and it
    differs from the crop, resize scaled by the same factor; else unchanged.
    Size-agnostic models (CNNs, Swin, MaxViT at multiples of 32) keep their
    weights' recipe."""
    size = getattr(module, "image_size", None)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or recipe.crop == (size, size):
        return recipe
    resize = round(recipe.resize * size / recipe.crop[0]) if recipe.resize else 0
    return replace(recipe, crop=(size, size), resize=resize)


def zero_head(module: nn.Module) -> str:
    """The name of the model's classifier (its last Linear) when all its
    weights are zero, else "": torchvision initialises a ViT's head to zeros,
    so untrained it gives every class the same logit and zero gradients."""
    last = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)][-1:]
    if last and not bool(last[0][1].weight.detach().any()):
        return last[0][0]
    return ""


def untrained_note(module: nn.Module) -> str:
    note = "untrained (random weights, seed 0)"
    head = zero_head(module)
    if head:
        note += (f"; its head {head!r} is all zeros, so every class has the same logit and gradient-based maps "
                 f"are zero: load trained weights to explain")
    return note


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
                raise InvalidArgument("no model named: set `model` to one of " + (", ".join(names) or "(none loaded)"),
                                      reason="MODEL_MISSING", field="model", metadata={"loaded": ",".join(names)})
            hint = closest(model_id, names) or ("; loaded: " + ", ".join(names) if names else "; no models are loaded")
            raise NotFound(f"model {shown(model_id)} is not loaded{hint}", reason="MODEL_NOT_FOUND", field="model",
                           metadata=closest_metadata(model_id, names))
        return model

    def list(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def checkpoints(self) -> list[str]:
        """Names (relative to the store) of the checkpoints a LoadModel could read:
        regular files inside the store, symlinks included only when they resolve
        inside it, whose first bytes are torch.save's (a zip archive holding a
        data.pkl, or the legacy pickle format). The check reads a file's header
        and zip directory, not its tensors, and is remembered by (size, mtime):
        a ListModels costs a stat per file, not a torch.load per file."""
        root = self.store.resolve()
        if not root.is_dir():
            return []
        names = []
        for folder, dirs, files in os.walk(root):  # followlinks=False: a linked folder is not walked
            dirs.sort()
            for file in sorted(files):
                if not file.endswith(CHECKPOINT_SUFFIXES):
                    continue
                path = Path(folder) / file
                real = path.resolve()
                if root in real.parents and real.is_file() and looks_like_checkpoint(real):
                    names.append(str(path.relative_to(root)))
                    if len(names) >= MAX_LISTED_CHECKPOINTS:
                        return sorted(names)
        return sorted(names)

    # ------------------------------------------------------------ load / unload

    def load(self, model_id: str, source: str, options: ModelOptions | None = None, *, weights: str = "",
             arch: str = "", num_classes: int = 0, **flat_options) -> LoadedModel:
        """Build, place and warm up a model, served as `options` says (device,
        dtype, batching and the fast-path pieces, each on or off per model;
        model_options.py). `flat_options` (max_batch_size=..., device=..., or a
        whole batching=Batching) change single options by their flat names.
        Raises InvalidArgument / NotFound / FailedPrecondition / AlreadyExists."""
        try:
            options = (options or ModelOptions()).replace(**flat_options)
        except TypeError as exc:
            raise InvalidArgument(str(exc), reason="BAD_MODEL_OPTION", field="options") from None
        if not model_id or not all(c.isalnum() or c in "-_." for c in model_id):
            raise InvalidArgument(f"model id {shown(model_id)} must be non-empty letters, digits, '-', '_' or '.'",
                                  reason="INVALID_MODEL_ID", field="model")
        if not source:
            raise InvalidArgument("no source: name a torchvision architecture or a checkpoint in the model store",
                                  reason="SOURCE_MISSING", field="source")
        if num_classes:
            check_num_classes(num_classes)
        options = options.checked()
        dev = resolve_device(options.device or self.default_device)
        dt = resolve_dtype(options.dtype or self.default_dtype)
        batching, mode, channels_last = options.batching, options.compile, options.channels_last
        buckets = compiled.buckets_for(mode, options.compile_batch_sizes, batching.max_batch_size)
        with self._lock:
            if model_id in self._models or model_id in self._loading:
                raise AlreadyExists(f"a model with id {shown(model_id)} is already loaded; unload it first or choose another id",
                                    reason="MODEL_EXISTS", field="model")
            self._loading.add(model_id)
        try:
            def build_and_warm_up() -> LoadedModel:
                model = self._build(model_id, source, weights, arch, num_classes)
                self._place(model, dev, dt, channels_last)
                prove_finite(model)
                if mode:
                    self._compile(model, mode, buckets)
                if options.backend == "onnxruntime":
                    self._onnx(model)
                return model

            loaded = torch_thread.run(dev, build_and_warm_up)
            loaded.batching = batching
            loaded.device_decode, loaded.pin_memory = options.device_decode, options.pin_memory
            if options.device_decode and dev.type != "cuda":
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
        # Nothing else holds the module once the torch thread drops its last
        # work (torch_thread._Line._loop); collect now so that weights caught in
        # a reference cycle (a traceback, a hook's closure) go at once too.
        gc.collect()
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
                               default_recipe(arch, module), names, pretrained=False, note=untrained_note(module))
        enum = self._weights_enum(arch, name)
        path = weights_cache_path(enum)
        if not path.exists() and not self.allow_download:
            log.warning("weights %s:%s not in the local cache: looked for %s", arch, enum.name, path)
            raise FailedPrecondition(
                f"weights {arch}:{enum.name} are not available offline: {path.name} is not in the server's "
                f"torch hub cache (hub/checkpoints under TORCH_HOME). Put the file there, or start the server "
                f"with --allow-download", reason="WEIGHTS_NOT_CACHED", field="weights", metadata={"file": path.name})
        if path.exists():
            verify_weights_file(path, f"{arch}:{enum.name}")
        try:  # a download is checked against the published hash before it is kept
            state = enum.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - no network, a bad download, an unreadable file
            raise FailedPrecondition(f"weights {arch}:{enum.name} could not be obtained: "
                                     f"{self.private(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}",
                                     reason="WEIGHTS_UNAVAILABLE", field="weights") from None
        categories = list(enum.meta.get("categories") or [])
        module = build_architecture(arch, len(categories) or 1000)
        module.load_state_dict(state)
        return LoadedModel(model_id, arch, arch, enum.name, module, torch.device("cpu"), torch.float32,
                           recipe_of_weights(enum), categories or imagenet_labels(1000), pretrained=True)

    def _weights_enum(self, arch: str, name: str):
        try:
            enum_cls = torchvision.models.get_model_weights(arch)
        except (ValueError, KeyError):
            raise FailedPrecondition(f"{arch} has no pretrained weights in torchvision", reason="NO_WEIGHTS",
                                     field="weights") from None
        if name.upper() == "DEFAULT":
            return enum_cls.DEFAULT
        short = name.split(".")[-1]
        if short not in enum_cls.__members__:
            raise NotFound(f"{arch} has no weights {shown(name)}; choose DEFAULT, none or one of "
                           f"{', '.join(enum_cls.__members__)}", reason="WEIGHTS_NOT_FOUND", field="weights",
                           metadata=closest_metadata(short, list(enum_cls.__members__)))
        return enum_cls[short]

    def checkpoint_path(self, name: str) -> Path:
        """The file a checkpoint name means, refusing names that leave the store."""
        # A NUL byte can be in no file name (the OS calls raise ValueError on it).
        if (not name or os.path.isabs(name) or name.startswith("~") or ".." in Path(name).parts or "\\" in name
                or "\x00" in name):
            raise InvalidArgument(f"checkpoint name {shown(name)} must be a relative path inside the model store, "
                                  "without '..' or NUL", reason="CHECKPOINT_NAME", field="source")
        root = self.store.resolve()
        candidates = [root / name] + [root / (name + s) for s in CHECKPOINT_SUFFIXES if not name.endswith(s)]
        for path in candidates:
            try:
                real = path.resolve()
                found = real.is_file()
            except OSError:  # a name too long for the file system, a symlink loop: no such checkpoint
                continue
            if found:
                if root not in real.parents:
                    raise InvalidArgument(f"checkpoint {shown(name)} resolves outside the model store",
                                          reason="CHECKPOINT_OUTSIDE_STORE", field="source")
                return real
        available = self.checkpoints()
        known = available + torchvision_architectures() + our_architectures()
        hint = closest(name, known) or ("; the store holds: " + ", ".join(available[:20]) if available
                                        else "; the model store holds no checkpoints")
        raise NotFound(f"{shown(name)} is neither an architecture nor a checkpoint in the model store{hint}",
                       reason="SOURCE_NOT_FOUND", field="source", metadata=closest_metadata(name, known))

    def private(self, text: str) -> str:
        """`text` with the store's absolute path cut to "<store>": a message may
        name a file by its place in the store, never by the server's paths."""
        for root in {str(self.store.resolve()), str(self.store.absolute())}:
            text = text.replace(root + os.sep, "").replace(root, "<store>")
        return text

    def _from_checkpoint(self, model_id: str, name: str, arch: str, num_classes: int) -> LoadedModel:
        path = self.checkpoint_path(name)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors, truncated files, non-tensor payloads
            text = self.private(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]
            raise InvalidArgument(f"checkpoint {shown(name)} could not be read safely: {text}",
                                  reason="CHECKPOINT_UNREADABLE", field="source") from None
        if is_netscope_checkpoint(obj):
            try:  # the one format: training/checkpoint.py writes it and says what a valid one holds
                ckpt = validate(obj, f"checkpoint {shown(name)}")
            except CheckpointError as exc:
                raise InvalidArgument(self.private(str(exc)), reason="CHECKPOINT_INVALID", field="source") from None
            return self._from_netscope_checkpoint(model_id, name, ckpt)
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            if not arch:
                raise InvalidArgument(f"{shown(name)} is a plain state_dict: give its architecture (arch) and num_classes",
                                      reason="ARCHITECTURE_MISSING", field="arch")
            n = num_classes or _infer_num_classes(obj) or 1000
            module = build_architecture(arch, n)
            _load_state(module, obj, name)
            return LoadedModel(model_id, arch, name, "checkpoint", module, torch.device("cpu"), torch.float32,
                               default_recipe(arch, module), imagenet_labels(n), pretrained=True)
        raise InvalidArgument(f"{shown(name)} is neither a netscope checkpoint nor a state_dict of tensors",
                              reason="NOT_A_CHECKPOINT", field="source")

    def _from_netscope_checkpoint(self, model_id: str, name: str, ckpt: dict) -> LoadedModel:
        arch = str(ckpt["arch"])
        try:
            n = int(ckpt.get("num_classes") or len(ckpt.get("class_names") or []) or 0)
            arch_kwargs = dict(ckpt.get("arch_kwargs") or {})
        except (TypeError, ValueError):
            n, arch_kwargs = 0, {}
        if n <= 0:
            raise InvalidArgument(f"checkpoint {shown(name)} records no class count", reason="CHECKPOINT_NO_CLASSES",
                                  field="source")
        module = build_architecture(arch, n, **arch_kwargs)
        _load_state(module, ckpt["model_state_dict"], name)
        names = [str(c) for c in (ckpt.get("class_names") or [])] or [str(i) for i in range(n)]
        recipe = Preprocessing.from_dict(ckpt["preprocessing"]) if ckpt.get("preprocessing") else default_recipe(arch, module)
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

    def _onnx(self, loaded: LoadedModel) -> None:
        """Export the placed module and serve Predict through an ONNX Runtime
        session, checked against the module (onnx_backend.build raises why not)."""
        from . import onnx_backend

        loaded.ort = onnx_backend.build(loaded.module, input_size=loaded.input_size, device=loaded.device,
                                        dtype=loaded.dtype, source=loaded.source)
        loaded.backend = "onnxruntime"

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


def _load_state(module: nn.Module, state, name: str) -> None:
    """Load `state` into `module`, or InvalidArgument naming the first few keys
    that are missing, unexpected or of the wrong shape (with both shapes)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidArgument(f"checkpoint {shown(name)}: its state_dict is not a dict of tensors",
                              reason="NOT_A_CHECKPOINT", field="source")
    problems = state_dict_mismatch(module.state_dict(), state)
    if problems:
        raise InvalidArgument(f"checkpoint {shown(name)} does not fit its architecture "
                              f"({type(module).__name__}): {problems}", reason="CHECKPOINT_MISMATCH", field="source")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:  # what the comparison above does not see
        raise InvalidArgument(f"checkpoint {shown(name)} does not fit its architecture: {str(exc).splitlines()[0][:300]}",
                              reason="CHECKPOINT_MISMATCH", field="source") from None


def state_dict_mismatch(expected: dict, got: dict) -> str:
    """Why `got` does not load into a module whose state_dict is `expected`:
    up to SHOWN_KEYS missing, unexpected and mis-sized keys with their shapes,
    with counts; "" when every key and shape agrees."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    missized = [k for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]

    def listed(keys, fmt) -> str:
        more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
        return ", ".join(fmt(k) for k in keys[:SHOWN_KEYS]) + more

    def shape(t) -> str:
        return "(" + ", ".join(map(str, t.shape)) + ")"

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: " + listed(missing, lambda k: f"{shown(k, 48)} {shape(expected[k])}"))
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: " + listed(unexpected, lambda k: f"{shown(k, 48)} {shape(got[k])}"))
    if missized:
        parts.append(f"{len(missized)} of the wrong shape: " + listed(
            missized, lambda k: f"{shown(k, 48)} {shape(got[k])} where the model has {shape(expected[k])}"))
    if unexpected and all(k.startswith("module.") for k in unexpected):
        parts.append("the keys start with 'module.' (saved from DataParallel?): strip that prefix")
    return "; ".join(parts)


def prove_finite(loaded: LoadedModel) -> None:
    """A warm-up forward on a fixed random input must give finite logits, or
    the model is not served (FailedPrecondition naming the first parameter or
    buffer that is not finite, if one is): a checkpoint of NaN weights would
    otherwise answer every Predict with NaN probabilities as OK."""
    gen = torch.Generator().manual_seed(INIT_SEED)
    x = torch.randn((1, *loaded.input_size), generator=gen)
    with torch.inference_mode():
        logits = loaded.forward(x)
        if bool(torch.isfinite(logits).all()):
            return
        bad = next((n for n, t in [*loaded.module.named_parameters(), *loaded.module.named_buffers()]
                    if t.is_floating_point() and not bool(torch.isfinite(t).all())), "")
    dtype = str(loaded.dtype).replace("torch.", "")
    why = (f"its {shown(bad, 48)} holds NaN or infinite values" if bad
           else f"its logits overflow as {dtype}" + ("; load it as float32" if dtype != "float32" else ""))
    raise FailedPrecondition(f"{shown(loaded.source)} gives non-finite logits on a warm-up input: {why}",
                             reason="NON_FINITE_MODEL", field="source", metadata={"parameter": bad} if bad else {})


def looks_like_checkpoint(path: Path) -> bool:
    """Whether `path` starts like a torch.save file (zip with a data.pkl, or the
    legacy pickle format), remembered by (size, mtime) so a listing is cheap."""
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    verdict = _CHECKPOINT_LOOKS.get(key)
    if verdict is None:
        verdict = _torch_save_header(path)
        if len(_CHECKPOINT_LOOKS) > 4 * MAX_LISTED_CHECKPOINTS:
            _CHECKPOINT_LOOKS.clear()
        _CHECKPOINT_LOOKS[key] = verdict
    return verdict


_CHECKPOINT_LOOKS: dict[tuple, bool] = {}


# pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2): how a legacy torch.save file starts
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def _torch_save_header(path: Path) -> bool:
    import zipfile

    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04":  # torch.save's zip format: one record is <archive>/data.pkl
            with zipfile.ZipFile(path) as z:
                return any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist())
        if head[:2] == b"\x80\x02":  # legacy format: torch's magic number, pickled first
            with open(path, "rb") as f:
                return f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC
        return False
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


_VERIFIED_WEIGHTS: dict[tuple, bool] = {}
_VERIFIED_LOCK = threading.Lock()


def verify_weights_file(path: Path, what: str) -> None:
    """A cached torchvision weights file must match the sha256 prefix its name
    carries (torch.hub's convention, "resnet18-f37072fd.pth"), or
    FailedPrecondition: a truncated or altered file is not served. Hashed once
    per (size, mtime) in this process."""
    match = torch.hub.HASH_REGEX.search(path.name)
    if not match or not match.group(1):
        return
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _VERIFIED_LOCK:
        if _VERIFIED_WEIGHTS.get(key):
            return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(match.group(1)):
        log.warning("weights %s: %s does not match its published sha256 prefix %s", what, path, match.group(1))
        raise FailedPrecondition(
            f"weights {what}: the cached file {path.name} does not match its published sha256 ({match.group(1)}...); "
            "it is truncated or altered: delete it and download it again (--allow-download)",
            reason="WEIGHTS_HASH_MISMATCH", field="weights", metadata={"file": path.name, "sha256_prefix": match.group(1)})
    with _VERIFIED_LOCK:
        _VERIFIED_WEIGHTS[key] = True


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
