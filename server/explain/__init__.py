"""Why did the model decide: CAMs and Captum attributions behind one interface.

    explain(model, x, method, targets=..., layers=..., options=...) -> Explanation

Tensors in, tensors out; no protos, no gRPC. `x` is a preprocessed
(N, C, H, W) batch on the model's device; every map comes back as float32 on
the CPU (whatever the model's dtype), one list of per-class results per image:

- `heatmap`: the map at the layer's resolution (the input's for input-space
  methods), raw: not normalised, so sums and ratios keep their meaning;
- `upsampled`: the same map at the input's (H, W), bilinear (half-pixel
  centres, as `F.interpolate(align_corners=False)`, `cv2.resize` and Captum's
  `LayerAttribution.interpolate(..., "bilinear")`);
- `attribution`: for the input-space (Captum) methods, the per-channel
  (C, H, W) attribution exactly as Captum returns it; `heatmap` is its sum
  over channels.

Two families, one target/validation/packaging path:

- the CAM family (server/explain/cams.py) shares ONE activation/gradient capture
  (server/inspection/hooks.py) and differs only in how it weighs channels;
- the attribution methods (server/explain/attributions.py) call Captum.

Explaining never changes the model: CAM captures are context-local hooks that
are always removed; Captum methods that hook modules run on a private shallow
copy of the module tree (server/explain/attributions.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Sequence, Union

import torch
from torch import nn

from . import methods
# Imported here, first, so the registry's order (CAMs, then Captum, then cam_methods/)
# is the same whichever of its modules a caller happens to import first.
from . import cams, attributions  # noqa: F401
from . import faithfulness as faithfulness_metrics
from ..runtime import torch_thread
from .maps import first_component, normalize, too_small, upsample  # noqa: F401 (part of this module's interface)
from ..errors import FailedPrecondition, InvalidArgument, ResourceExhausted, closest, closest_metadata, shown
from ..inspection.hooks import find_layer
from .default_layers import default_layer, suggest_layers  # noqa: F401 (part of this module's interface)

# ---------------------------------------------------------------- methods

# What a method is and may do is declared once, next to its implementation
# (server/explain/cams.py, server/explain/attributions.py, server/explain/cam_methods/): see
# server/explain/methods.py. Everything below reads that registry.
DEFAULT_METHOD = methods.DEFAULT_METHOD


# ---------------------------------------------------------------- requests


from .targets import Target, TargetLike, Targets, class_index  # noqa: E402,F401 (part of this module's interface)


class Options:
    """Method options by name, as methods.options() declares them: unset
    reads as the option's default (None: the method's own; False for the
    switches). Unset, None, "" and False are the same thing. A value out of
    range is refused by check_options (so `steps=0` is an error, not the
    default). Options(name=value, ...); an unknown name is InvalidArgument
    (reason OPTION_NOT_FOUND) naming the closest ones."""

    __slots__ = ("_values",)

    def __init__(self, **values):
        for name in values:
            methods.option(name)
        object.__setattr__(self, "_values", {k: v for k, v in values.items()
                                             if not (v is None or v is False or (isinstance(v, str) and v == ""))})

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        spec = methods.options().get(name)
        if spec is None:
            raise AttributeError(f"no option {name!r}")
        return self._values.get(name, spec.default)

    def __setattr__(self, name, value):
        raise AttributeError("Options are read-only; use replace()")

    def get(self, name: str, default):
        """The option's value, or `default` (the method's own) when unset."""
        value = self._values.get(name)
        return default if value is None else value

    def items(self):
        """(name, value) of the options set, in the order given."""
        return self._values.items()

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def replace(self, **changes) -> "Options":
        return Options(**{**self._values, **changes})

    def __eq__(self, other) -> bool:
        return isinstance(other, Options) and self._values == other._values

    def __hash__(self):
        return hash(tuple(sorted((k, repr(v)) for k, v in self._values.items())))

    def __repr__(self) -> str:
        return f"Options({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"


@dataclass
class ClassMap:
    """One class's explanation of one image."""

    target: int
    label: str
    score: float  # the target's logit
    probability: float  # its softmax probability (float32)
    heatmap: torch.Tensor  # (h, w) float32, CPU: at the layer's resolution (the input's for input-space methods)
    upsampled: torch.Tensor  # (H, W) float32, CPU: at the model input's resolution
    attribution: torch.Tensor | None = None  # (C, H, W) float32, CPU: input-space methods only


@dataclass
class Explanation:
    """Per image (batch order) a list of per-class results (target order)."""

    method: str
    layers: list[str]
    images: list[list[ClassMap]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        return iter(self.images)

    def __getitem__(self, i: int) -> list[ClassMap]:
        return self.images[i]


# ---------------------------------------------------------------- layers


def resolve_layers(model: nn.Module, method: str, layers: Sequence[str] | None, arch: str = "") -> list[str]:
    """The layers a method will use (defaults resolved), validated by type."""
    spec = methods.method(method)
    layers = [l for l in (layers or []) if l]
    if spec.own_layers is not None:
        if layers:
            raise InvalidArgument(f"{method} chooses its own layers; do not name layers", field="layers")
        return spec.own_layers(model)
    if not spec.takes_layers:
        if layers:
            raise InvalidArgument(f"{method} attributes to the input and takes no layer; drop `layers`, "
                                  f"or use a CAM method (grad_cam, ...) or guided_grad_cam to explain a layer",
                                  field="layers")
        return []
    if not layers:
        layers = [default_layer(model, arch)]
    if spec.max_layers is not None and len(layers) > spec.max_layers:
        most = "one layer" if spec.max_layers == 1 else f"at most {spec.max_layers} layers"
        raise InvalidArgument(f"{method} explains {most}; got {len(layers)}", field="layers")
    for name in layers:
        module = find_layer(model, name)
        if isinstance(module, (nn.Linear, nn.Flatten, nn.Dropout, nn.AdaptiveAvgPool1d)) or (
            isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and _pools_to_one(module)
        ):
            raise InvalidArgument(
                f"{method} needs a layer with a spatial (N, C, H, W) output, such as a conv block; "
                f"{name!r} is a {type(module).__name__}. Try {suggest_layers(model, arch)}")
    return list(dict.fromkeys(layers))


def _pools_to_one(module: nn.Module) -> bool:
    size = module.output_size
    size = (size, size) if not isinstance(size, (tuple, list)) else size
    return all(s == 1 for s in size)


# ---------------------------------------------------------------- targets


# Targets (which class each image is explained for, one for all or one per
# image, labels matched without silent ambiguity): server/explain/targets.py.


# ---------------------------------------------------------------- options


def check_options(method: str, opts: Options, x) -> Options:
    """Refuse, from the options' schema (server/explain/methods.py), an option the
    method does not use, a value of the wrong type, below its minimum, not
    among its choices, larger than the input (window, stride), or set without
    the option it refines (nt_samples without noise_tunnel); then the
    method's own check. `x` is the (N, C, H, W) batch, or just its shape
    (only (H, W) is read). InvalidArgument with field "options.NAME"."""
    h, w = tuple(x.shape if isinstance(x, torch.Tensor) else x)[-2:]
    spec = methods.method(method)
    uses = set(spec.options) | set(methods.COMMON_OPTIONS)
    for name, value in opts.items():
        o = methods.option(name)
        if name not in uses:
            others = methods.users(name)
            elsewhere = f" (used by {', '.join(others[:6])}{', ...' if len(others) > 6 else ''})" if others else ""
            accepted = spec.options + tuple(n for n in methods.COMMON_OPTIONS if n not in spec.options)
            raise InvalidArgument(
                f"{method} does not use option {name}{elsewhere}; {method}'s options are {', '.join(accepted)}",
                reason="OPTION_NOT_USED", field=f"options.{name}",
                metadata={"method": method, "option": name, "options": ",".join(accepted)})
        _check_value(o, value, h, w)
        if o.requires and o.requires not in opts:
            raise InvalidArgument(f"{name} applies with {o.requires}; set {o.requires} too, or drop {name}",
                                  field=f"options.{name}", metadata={"requires": o.requires})
    if spec.check is not None:
        spec.check(opts, (h, w))
    return opts


def _check_value(o: "methods.OptionSpec", value, h: int, w: int) -> None:
    name, where = o.name, f"options.{o.name}"
    if o.type == "bool":
        if not isinstance(value, bool):
            raise InvalidArgument(f"{name} takes true or false; got {shown(repr(value))}", field=where)
        return
    if o.type == "str":
        if not isinstance(value, str):
            raise InvalidArgument(f"{name} takes a string; got {shown(repr(value))}", field=where)
        if o.choices and value not in o.choices:
            raise InvalidArgument(f"unknown {name} {shown(value)}{closest(value, o.choices)}; choose one of "
                                  f"{', '.join(o.choices)}", field=where, metadata={"choices": ",".join(o.choices)})
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name} takes {'an integer' if o.type == 'int' else 'a number'}; got "
                              f"{shown(repr(value))}", field=where)
    if o.type == "int" and not isinstance(value, int):
        raise InvalidArgument(f"{name} takes an integer; got {value!r}", field=where)
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number; got {value} ({o.description})", field=where)
    if o.minimum is not None and (value <= o.minimum if o.exclusive else value < o.minimum):
        bound = f"{'>' if o.exclusive else '>='} {o.minimum:g}"
        what = "a finite number " if o.type == "float" else ""
        raise InvalidArgument(f"{name} must be {what}{bound} (leave it unset for the default: {o.description}); "
                              f"got {value}", field=where, metadata={"minimum": f"{o.minimum:g}"})
    if o.within_input and value > min(h, w):
        raise InvalidArgument(f"{name} {value} is larger than the {h}x{w} input; use at most {min(h, w)}",
                              field=where, metadata={"limit": str(min(h, w))})


# ---------------------------------------------------------------- ceilings and plans


@dataclass(frozen=True)
class Ceilings:
    """A server's upper bounds on what one explanation may ask for (the lower
    bounds are check_options'). Each count option has its own ceiling, named
    as the option; `netscope serve --explain-limit NAME=N` changes one.

    memory_mb bounds the working memory the request is predicted to need
    (`plan`): the largest forward (and backward) pass it makes, in MiB."""

    batch_size: int = 256  # masked / perturbed / interpolated inputs per forward pass
    steps: int = 1024  # integrated_gradients, is_cam
    samples: int = 1000  # smooth_grad_cam_plus_plus, ss_cam, gradient_shap, lime, kernel_shap, shapley_value_sampling
    nt_samples: int = 200  # noise tunnel
    finer_classes: int = 100  # finer_cam
    top_k: int = 100  # classes explained per image
    faithfulness_maps: int = 64  # maps scored with every faithfulness metric per request (images x classes; 62
    # forward passes each); fewer metrics, proportionally more maps (faithfulness.passes)
    memory_mb: int = 4096  # predicted working memory of one request

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def with_overrides(self, overrides: dict[str, int] | None) -> "Ceilings":
        """These ceilings with some changed; unknown names or values < 1 are a ValueError."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.names()))
        if unknown:
            raise ValueError(f"unknown explain limit(s) {', '.join(unknown)}; known: {', '.join(self.names())}")
        bad = {k: v for k, v in overrides.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1}
        if bad:
            raise ValueError(f"explain limits must be whole numbers >= 1; got {bad}")
        return replace(self, **overrides)


def _over(name: str, value: int, limit: int, what: str, field_name: str) -> InvalidArgument:
    return InvalidArgument(
        f"{name} {value} is over this server's limit of {limit}{' ' + what if what else ''}; ask for at most {limit}, "
        f"or start the server with --explain-limit {name}=N to raise it",
        reason="OVER_LIMIT", field=field_name, metadata={"limit": str(limit), "option": name})


def check_ceilings(method: str, opts: Options, targets: TargetLike, ceilings: Ceilings, *,
                   faithfulness: bool | Sequence[str] = False, n_images: int = 1) -> None:
    """Refuse counts over the server's ceilings (each option's OptionSpec.ceiling):
    InvalidArgument naming the option, the limit and how to change it.
    Checked before any work. faithfulness: the metrics scored (True: all)."""
    for name, value in opts.items():
        ceiling = methods.option(name).ceiling
        if ceiling is not None and isinstance(value, (int, float)) and value > getattr(ceilings, ceiling):
            raise _over(name, value, getattr(ceilings, ceiling), "", f"options.{name}")
    k = targets.top_k if isinstance(targets, Target) and targets.index is None and not targets.label else 1
    if k > ceilings.top_k:
        raise _over("top_k", k, ceilings.top_k, "classes per image", "target.top_k")
    metrics = () if not faithfulness else faithfulness_metrics.chosen(() if faithfulness is True else faithfulness)
    # The ceiling counts maps scored with every metric; fewer metrics cost fewer passes a map.
    per_map = faithfulness_metrics.passes(metrics)
    allowed = max(1, ceilings.faithfulness_maps * faithfulness_metrics.ALL_PASSES // max(per_map, 1))
    if metrics and n_images * max(k, 1) > allowed:
        maps = n_images * max(k, 1)
        raise InvalidArgument(
            f"faithfulness ({', '.join(metrics)}) scores {maps} maps here ({n_images} images x {max(k, 1)} classes), "
            f"over this server's limit of {allowed} for these metrics ({per_map} forward passes each; "
            f"faithfulness_maps {ceilings.faithfulness_maps} counts maps of all metrics); send fewer images or "
            f"classes or metrics, or start the server with --explain-limit faithfulness_maps=N",
            reason="OVER_LIMIT", field="options.faithfulness",
            metadata={"limit": str(allowed), "option": "faithfulness_maps"})


@dataclass(frozen=True)
class Plan:
    """What one explanation will cost, predicted from the request alone."""

    maps: int  # images x classes
    rows: int  # inputs in the largest forward pass
    base_rows: int  # the images (x classes, x views) every pass of the method holds at least
    memory_bytes: int  # working memory of that pass


def plan(method: str, opts: Options, n_images: int, k: int, *, activation_bytes: int, largest_output_bytes: int,
         input_bytes: int) -> Plan:
    """Predict the largest forward pass of an explanation and its memory.

    activation_bytes: the sum of the model's leaf outputs for one input (what
    a backward pass keeps), largest_output_bytes: its largest leaf output,
    input_bytes: one preprocessed input; all as float32 at the request's size.
    Every sampled method is batched by batch_size (see attributions.py), so
    the largest pass is max(rows, batch_size) inputs, where rows is the
    images (x classes for the Captum methods, x 6 with aug_smooth)."""
    spec = methods.method(method)
    rows = base = n_images * (k if spec.family == "attribution" else 1) * (6 if opts.aug_smooth else 1)
    if spec.sampled or opts.noise_tunnel:
        rows = max(rows, opts.get("batch_size", 32))
    if spec.forward_only and not opts.noise_tunnel:
        per_row = 2 * largest_output_bytes + input_bytes
    else:
        per_row = activation_bytes + 2 * input_bytes
    # The answer's own tensors: the attribution (C, H, W) per map, maps at the input's size.
    held = n_images * k * (input_bytes + 2 * input_bytes // 3)
    return Plan(maps=n_images * k, rows=rows, base_rows=base, memory_bytes=rows * per_row + held)


def check_plan(p: Plan, opts: Options, ceilings: Ceilings, method: str) -> None:
    """ResourceExhausted, naming what to lower, when the plan is over the memory ceiling."""
    budget = ceilings.memory_mb * 2**20
    if p.memory_bytes <= budget:
        return
    need = -(-p.memory_bytes // 2**20)
    by_batch = p.rows > p.base_rows  # the pass is batch_size inputs, more than the images x classes
    if by_batch:
        hint = f"lower batch_size (now {opts.get('batch_size', 32)}: the inputs each forward pass holds)"
    else:
        hint = "send fewer images or ask for fewer classes (top_k)" + (", or drop aug_smooth" if opts.aug_smooth else "")
    raise ResourceExhausted(
        f"this {method} explanation would need about {need:,} MiB of working memory ({p.rows} inputs per forward "
        f"pass), over this server's limit of {ceilings.memory_mb:,} MiB; {hint}, or start the server with "
        f"--explain-limit memory_mb=N",
        reason="OVER_MEMORY_LIMIT", field="options.batch_size" if by_batch else "images",
        metadata={"limit_mb": str(ceilings.memory_mb), "estimate_mb": str(need), "rows": str(p.rows)})


def check_finite(result: "Explanation", model_id: str = "") -> None:
    """FailedPrecondition when a map, logit or probability is NaN or infinite:
    such an answer is never returned as OK."""
    for n, classes in enumerate(result.images):
        for cm in classes:
            what = None
            if not (math.isfinite(cm.score) and math.isfinite(cm.probability)):
                what = "logits"
            elif not bool(torch.isfinite(cm.heatmap).all()) or not bool(torch.isfinite(cm.upsampled).all()):
                what = f"a {result.method} map"
            elif cm.attribution is not None and not bool(torch.isfinite(cm.attribution).all()):
                what = f"a {result.method} attribution"
            if what:
                named = f"model {shown(model_id)}" if model_id else "the model"
                raise FailedPrecondition(
                    f"{named} produced non-finite values ({what} of image {n}, class {cm.target} holds NaN or "
                    f"infinity); its weights or its precision cannot represent this input: check the checkpoint, "
                    f"or load it as float32", reason="NON_FINITE", field=f"images[{n}]",
                    metadata={"model": model_id[:64], "class": str(cm.target)})


@dataclass(frozen=True)
class Checked:
    """A request that passed every check that needs no forward pass."""

    method: str
    layers: list[str]
    k: int  # classes explained per image


def method_name(method: str | None) -> str:
    """The method's registered name (None or "": the default); InvalidArgument with the closest names."""
    return methods.method(method).name


def validate(model: nn.Module, method: str | None, options: Options | None, n_images: int, input_shape, *,
             targets: TargetLike = None, layers: Sequence[str] | None = None, arch: str = "",
             class_names: Sequence[str] | None = None, ceilings: Ceilings | None = None,
             faithfulness: bool | Sequence[str] = False) -> Checked:
    """Everything explain() would refuse before its first forward pass, and
    the server's ceilings, checked without running the model: the method,
    options (input_shape: the batch's (..., H, W)), targets and layers.
    Raises InvalidArgument / NotFound saying what would work."""
    name = method_name(method)
    opts = check_options(name, options if options is not None else Options(), input_shape)
    if ceilings is not None:
        check_ceilings(name, opts, targets, ceilings, faithfulness=faithfulness, n_images=n_images)
    tgt = Targets(targets, n_images, class_names)
    used = resolve_layers(model, name, layers, arch)
    return Checked(name, used, tgt.k if tgt.index is None and tgt.per_image is None else 1)


# ---------------------------------------------------------------- explain


def explain(model: nn.Module, x: torch.Tensor, method: str = DEFAULT_METHOD, *, targets: TargetLike = None,
            layers: Sequence[str] | None = None, options: Options | None = None, arch: str = "",
            class_names: Sequence[str] | None = None) -> Explanation:
    """Explain a preprocessed (N, C, H, W) batch with `method`.

    targets: None (top-1), a class index, a label, a `Target` (index, label or
    top_k), or one index per image. layers: qualified module names (default
    per architecture: `default_layer`). Works on the device of `x`; the model
    must live there too. The model is never changed (no hooks, modules or
    `.grad` left behind, train/eval mode kept), even when this raises.
    """
    method = method_name(method)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise InvalidArgument(f"explain takes a preprocessed float (N, C, H, W) batch; got "
                              f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.shape[0] == 0:
        raise InvalidArgument("empty batch: send at least one image")
    opts = check_options(method, options if options is not None else Options(), x)
    dtype = _model_dtype(model)
    if dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    x = x.detach()
    tgt = Targets(targets, x.shape[0], class_names)
    used = resolve_layers(model, method, layers, arch)

    # The batch runs in the layout it came in: a model served channels-last
    # gets channels-last input from the registry (faster on CPU batches and on
    # tensor cores); we do not switch layouts behind the caller's back, since
    # that moves ill-conditioned maps by float32 rounding (see PERFORMANCE.md).
    # A Predict waiting for this CPU model's torch thread runs between blocks.
    try:
        with torch_thread.yielding(model):
            res = methods.method(method).fn(model, x, used, tgt.pick, opts)
    except RuntimeError as exc:
        small = too_small(exc, x)
        if small is None:
            raise
        raise small from None

    # One copy back to the host for everything the answer needs.
    probs = torch.softmax(res.logits.float(), dim=1)
    k = res.targets.shape[1]
    scores = res.logits.float().gather(1, res.targets)
    chosen = probs.gather(1, res.targets)
    host = torch.cat([res.targets.float(), scores, chosen], dim=1).cpu()
    heat = res.heatmap.float().cpu()
    up = heat if res.upsampled is None else res.upsampled.float().cpu()
    attr = res.attribution.float().cpu() if res.attribution is not None else None

    out = Explanation(method=method, layers=list(res.layers if res.layers is not None else used))
    for n in range(x.shape[0]):
        row = []
        for j in range(k):
            t = int(host[n, j])
            row.append(ClassMap(target=t, label=tgt.label(t), score=float(host[n, k + j]),
                                probability=float(host[n, 2 * k + j]), heatmap=heat[n, j], upsampled=up[n, j],
                                attribution=attr[n, j] if attr is not None else None))
        out.images.append(row)
    return out


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    for b in model.buffers():
        if b.is_floating_point():
            return b.dtype
    return None


def options_from_dict(d: dict) -> Options:
    """Options from a {name: value} dict; an unknown name is InvalidArgument naming the known ones."""
    return Options(**d)
