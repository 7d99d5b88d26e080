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

- the CAM family (server/cams.py) shares ONE activation/gradient capture
  (server/hooks.py) and differs only in how it weighs channels;
- the attribution methods (server/attributions.py) call Captum.

Explaining never changes the model: CAM captures are context-local hooks that
are always removed; Captum methods that hook modules run on a private shallow
copy of the module tree (server/attributions.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Sequence, Union

import torch
from torch import nn

from . import attributions, cams, torch_thread
from .maps import first_component, normalize, too_small, upsample  # noqa: F401 (part of this module's interface)
from .errors import FailedPrecondition, InvalidArgument, ResourceExhausted, closest, closest_metadata, shown
from .hooks import find_layer
from .default_layers import default_layer, suggest_layers  # noqa: F401 (part of this module's interface)

# ---------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    name: str
    family: str  # "cam" or "attribution"
    needs_layer: bool  # takes (and defaults) a layer
    captum: bool  # computed by Captum
    summary: str


_METHODS = [
    Method("cam", "cam", True, False, "class activation mapping: the classifier's fc weights on the last conv features (GAP + Linear heads only)"),
    Method("grad_cam", "cam", True, False, "channels weighted by their spatially averaged gradient"),
    Method("grad_cam_plus_plus", "cam", True, False, "Grad-CAM++: positive gradients weighted by second/third-order terms"),
    Method("smooth_grad_cam_plus_plus", "cam", True, False, "Grad-CAM++ with gradient moments averaged over noisy copies of the input"),
    Method("xgrad_cam", "cam", True, False, "XGrad-CAM: gradients weighted by normalised activations"),
    Method("hires_cam", "cam", True, False, "HiResCAM: element-wise gradient x activation, summed over channels"),
    Method("grad_cam_elementwise", "cam", True, False, "element-wise ReLU(gradient x activation), summed over channels"),
    Method("layer_cam", "cam", True, False, "LayerCAM: ReLU(gradient) x activation; several layers are fused"),
    Method("eigen_cam", "cam", True, False, "first principal component of the activations (no gradients, class-agnostic)"),
    Method("eigen_grad_cam", "cam", True, False, "first principal component of gradient x activation"),
    Method("shapley_cam", "cam", True, False, "ShapleyCAM: gradient less half the Hessian-vector product, averaged per channel"),
    Method("kpca_cam", "cam", True, False, "KPCA-CAM: first kernel principal component of the activations (no gradients, class-agnostic)"),
    Method("fem", "cam", True, False, "FEM: channels weighted by their share of pixels above mean + k std (no gradients, class-agnostic)"),
    Method("finer_cam", "cam", True, False, "Finer-CAM: Grad-CAM of the target's logit minus those of its most similar classes"),
    Method("score_cam", "cam", True, False, "channels weighted by the score of the input masked by each channel"),
    Method("ss_cam", "cam", True, False, "Smoothed Score-CAM: Score-CAM scores averaged over noisy masked inputs"),
    Method("is_cam", "cam", True, False, "Integrated Score-CAM: Score-CAM scores integrated over mask intensities"),
    Method("ablation_cam", "cam", True, False, "channels weighted by the score drop when each is zeroed"),
    Method("full_grad", "cam", False, False, "FullGrad: input-gradient plus bias-gradients of every conv/BN layer"),
    Method("integrated_gradients", "attribution", False, True, "Integrated Gradients (Captum)"),
    Method("saliency", "attribution", False, True, "absolute input gradient (Captum Saliency)"),
    Method("guided_backprop", "attribution", False, True, "Guided Backpropagation (Captum)"),
    Method("guided_grad_cam", "attribution", True, True, "Guided Grad-CAM (Captum): guided backprop x upsampled Grad-CAM"),
    Method("deconvolution", "attribution", False, True, "Deconvolution (Captum)"),
    Method("input_x_gradient", "attribution", False, True, "input x gradient (Captum)"),
    Method("deeplift", "attribution", False, True, "DeepLIFT (Captum)"),
    Method("gradient_shap", "attribution", False, True, "GradientSHAP (Captum)"),
    Method("occlusion", "attribution", False, True, "score drop under a sliding occluding window (Captum Occlusion)"),
    Method("feature_ablation", "attribution", False, True, "score drop when each window-sized patch is ablated (Captum FeatureAblation)"),
    Method("lime", "attribution", False, True, "LIME: a linear surrogate fitted to random subsets of window-sized patches (Captum Lime)"),
    Method("kernel_shap", "attribution", False, True, "Kernel SHAP: Shapley values of window-sized patches from a weighted linear fit (Captum KernelShap)"),
    Method("shapley_value_sampling", "attribution", False, True, "Shapley values of window-sized patches over sampled permutations (Captum ShapleyValueSampling)"),
]
METHODS: dict[str, Method] = {m.name: m for m in _METHODS}
CAM_METHODS = tuple(m.name for m in _METHODS if m.family == "cam")
ATTRIBUTION_METHODS = tuple(m.name for m in _METHODS if m.family == "attribution")
DEFAULT_METHOD = "grad_cam"

NOISE_TUNNELS = ("smoothgrad", "smoothgrad_sq", "vargrad")
BASELINES = ("zeros", "blur", "noise", "mean")


# ---------------------------------------------------------------- requests


from .targets import Target, TargetLike, Targets, class_index  # noqa: E402,F401 (part of this module's interface)


@dataclass
class Options:
    """Method options. None means the method's default; a value out of range
    is an InvalidArgument (so `steps=0` is refused, not defaulted)."""

    batch_size: int | None = None  # masked/perturbed inputs per forward pass (default 32)
    steps: int | None = None  # integrated_gradients (50), is_cam (10)
    baseline: str | None = None  # "zeros" (default), "blur", "noise", "mean"
    window: int | None = None  # occlusion / feature_ablation square window (default: 1/8 of the shorter side)
    stride: int | None = None  # occlusion stride (default: half the window)
    noise_tunnel: str | None = None  # "smoothgrad", "smoothgrad_sq", "vargrad" (Captum methods)
    nt_samples: int | None = None  # noise-tunnel samples (default 5, as Captum)
    nt_stdev: float | None = None  # noise-tunnel standard deviation, in input units (default 1.0, as Captum)
    aug_smooth: bool = False  # flip x intensity (0.9, 1, 1.1) test-time augmentation (CAMs)
    eigen_smooth: bool = False  # first principal component of the weighted activations (CAMs)
    samples: int | None = None  # smooth_grad_cam_plus_plus / ss_cam (4), gradient_shap (5), lime (50), kernel_shap and shapley_value_sampling (25)
    noise: float | None = None  # their noise standard deviation in input units (0.3; gradient_shap 0.0)
    seed: int | None = None  # seeds the random methods (noise, baselines) for reproducible maps
    fem_k: float | None = None  # fem: a channel weighs the share of its pixels above mean + fem_k * std (2)
    finer_alpha: float | None = None  # finer_cam: share of each similar class's logit subtracted (1)
    finer_classes: int | None = None  # finer_cam: how many classes with the closest logits it compares against (3)
    kpca_kernel: str | None = None  # kpca_cam: "sigmoid" (default), "rbf", "poly", "linear", "cosine"
    kpca_gamma: float | None = None  # kpca_cam: the kernel's gamma (default 1 / channels)

    def get(self, name: str, default):
        value = getattr(self, name)
        return default if value is None else value


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
    info = METHODS[method]
    layers = [l for l in (layers or []) if l]
    if method == "full_grad":
        if layers:
            raise InvalidArgument("full_grad uses the bias of every Conv2d/BatchNorm2d layer; do not name layers")
        return cams.bias_layers(model)
    if not info.needs_layer:
        if layers:
            raise InvalidArgument(f"{method} attributes to the input and takes no layer; drop `layers`, "
                                  f"or use a CAM method (grad_cam, ...) or guided_grad_cam to explain a layer")
        return []
    if not layers:
        layers = [default_layer(model, arch)]
    if len(layers) > 1 and method in ("cam", "guided_grad_cam"):
        raise InvalidArgument(f"{method} explains one layer; got {len(layers)}")
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
# image, labels matched without silent ambiguity): server/targets.py.


# ---------------------------------------------------------------- options


def check_options(method: str, opts: Options, x) -> Options:
    """Refuse options out of range, saying what would work. `x` is the
    (N, C, H, W) batch, or just its shape (only (H, W) is read)."""
    h, w = tuple(x.shape if isinstance(x, torch.Tensor) else x)[-2:]

    def at_least(name: str, low: int, default_note: str) -> None:
        value = getattr(opts, name)
        if value is not None and value < low:
            raise InvalidArgument(f"{name} must be >= {low} ({default_note}); got {value}", field=f"options.{name}")

    at_least("batch_size", 1, "leave it unset for 32")
    at_least("steps", 1, "leave it unset for the default: 50 for integrated_gradients, 10 for is_cam")
    at_least("samples", 1, "leave it unset for the default")
    at_least("nt_samples", 1, "leave it unset for 5")
    at_least("window", 1, "leave it unset for 1/8 of the shorter side")
    at_least("stride", 1, "leave it unset for half the window")
    at_least("finer_classes", 1, "leave it unset for 3")
    for name in ("noise", "nt_stdev"):
        value = getattr(opts, name)
        if value is not None and not (value >= 0.0 and value == value and value != float("inf")):
            raise InvalidArgument(f"{name} must be a finite standard deviation >= 0; got {value}")
    for name, what in (("fem_k", "a number of standard deviations (default 2)"),
                       ("finer_alpha", "a finite factor (default 1)")):
        value = getattr(opts, name)
        if value is not None and not math.isfinite(value):
            raise InvalidArgument(f"{name} must be {what}; got {value}")
    if opts.window is not None and opts.window > min(h, w):
        raise InvalidArgument(f"window {opts.window} is larger than the {h}x{w} input; use at most {min(h, w)}")
    if opts.stride is not None and opts.stride > min(h, w):
        raise InvalidArgument(f"stride {opts.stride} is larger than the {h}x{w} input; use at most {min(h, w)}")
    if method == "kernel_shap":
        side = opts.window if opts.window is not None else max(1, min(h, w) // 8)
        if -(-h // side) * -(-w // side) < 2:
            raise InvalidArgument(f"kernel_shap needs at least 2 window-sized patches; the {h}x{w} input is one "
                                  f"patch of {side}: use a smaller window", field="options.window")
    if opts.baseline and opts.baseline not in BASELINES:
        raise InvalidArgument(f"unknown baseline {shown(opts.baseline)}; choose one of {', '.join(BASELINES)}")
    if opts.kpca_kernel and opts.kpca_kernel not in cams.KPCA_KERNELS:
        raise InvalidArgument(f"unknown kpca_kernel {shown(opts.kpca_kernel)}; choose one of {', '.join(cams.KPCA_KERNELS)}")
    if opts.kpca_gamma is not None and not (math.isfinite(opts.kpca_gamma) and opts.kpca_gamma > 0):
        raise InvalidArgument(f"kpca_gamma must be a finite number > 0 (default 1 / channels); got {opts.kpca_gamma}")
    if opts.noise_tunnel and opts.noise_tunnel not in NOISE_TUNNELS:
        raise InvalidArgument(f"unknown noise_tunnel {shown(opts.noise_tunnel)}; choose one of {', '.join(NOISE_TUNNELS)}")
    family = METHODS[method].family
    if family == "cam" and opts.noise_tunnel:
        raise InvalidArgument(f"noise_tunnel smooths the Captum attribution methods; for {method} use aug_smooth, "
                              f"or smooth_grad_cam_plus_plus / ss_cam")
    if method == "gradient_shap" and opts.noise_tunnel:
        raise InvalidArgument("gradient_shap already averages over noisy samples; drop noise_tunnel and set "
                              "samples and noise instead", field="options.noise_tunnel")
    if family == "attribution" and (opts.aug_smooth or opts.eigen_smooth):
        raise InvalidArgument(f"aug_smooth and eigen_smooth apply to the CAM methods, not {method}; "
                              f"use noise_tunnel to smooth an attribution")
    if method == "full_grad" and opts.eigen_smooth:
        raise InvalidArgument("eigen_smooth does not apply to full_grad (its map is a sum over many layers)")
    return opts


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
    faithfulness_maps: int = 64  # maps scored for faithfulness per request (images x classes; ~60 forwards each)
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
        f"{name} {value} is over this server's limit of {limit} {what}; ask for at most {limit}, "
        f"or start the server with --explain-limit {name}=N to raise it",
        reason="OVER_LIMIT", field=field_name, metadata={"limit": str(limit), "option": name})


def check_ceilings(method: str, opts: Options, targets: TargetLike, ceilings: Ceilings, *,
                   faithfulness: bool = False, n_images: int = 1) -> None:
    """Refuse counts over the server's ceilings: InvalidArgument naming the
    option, the limit and how to change it. Checked before any work."""
    for name, what in (("batch_size", "inputs per forward pass"), ("steps", "steps"),
                       ("samples", "samples"), ("nt_samples", "noise-tunnel samples"),
                       ("finer_classes", "classes")):
        value = getattr(opts, name)
        limit = getattr(ceilings, name)
        if value is not None and value > limit:
            raise _over(name, value, limit, what, f"options.{name}")
    k = targets.top_k if isinstance(targets, Target) and targets.index is None and not targets.label else 1
    if k > ceilings.top_k:
        raise _over("top_k", k, ceilings.top_k, "classes per image", "target.top_k")
    if faithfulness and n_images * max(k, 1) > ceilings.faithfulness_maps:
        maps = n_images * max(k, 1)
        raise InvalidArgument(
            f"faithfulness scores {maps} maps here ({n_images} images x {max(k, 1)} classes), over this server's "
            f"limit of {ceilings.faithfulness_maps} (about 60 forward passes each); send fewer images or classes, "
            f"or start the server with --explain-limit faithfulness_maps=N",
            reason="OVER_LIMIT", field="options.faithfulness",
            metadata={"limit": str(ceilings.faithfulness_maps), "option": "faithfulness_maps"})


# Methods whose batched passes are forward-only (no autograd graph is kept):
# their memory is about two layers' outputs per input, not the whole network's.
_FORWARD_ONLY = ("cam", "eigen_cam", "kpca_cam", "fem", "score_cam", "ss_cam", "is_cam", "ablation_cam",
                 "occlusion", "feature_ablation", "lime", "kernel_shap", "shapley_value_sampling")
_USES_BATCH = ("score_cam", "ss_cam", "is_cam", "ablation_cam", "integrated_gradients", "occlusion",
               "feature_ablation", "lime", "kernel_shap", "shapley_value_sampling", "gradient_shap")


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
    method = (method or DEFAULT_METHOD).lower()
    info = METHODS[method]
    rows = base = n_images * (k if info.captum else 1) * (6 if opts.aug_smooth else 1)
    if method in _USES_BATCH or opts.noise_tunnel:
        rows = max(rows, opts.get("batch_size", 32))
    if method in _FORWARD_ONLY and not opts.noise_tunnel:
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
    name = (method or DEFAULT_METHOD).lower()
    if name not in METHODS:
        raise InvalidArgument(f"unknown method {shown(name)}{closest(name, METHODS)}; choose one of {', '.join(METHODS)}",
                              reason="METHOD_NOT_FOUND", field="method", metadata=closest_metadata(name, METHODS))
    return name


def validate(model: nn.Module, method: str | None, options: Options | None, n_images: int, input_shape, *,
             targets: TargetLike = None, layers: Sequence[str] | None = None, arch: str = "",
             class_names: Sequence[str] | None = None, ceilings: Ceilings | None = None,
             faithfulness: bool = False) -> Checked:
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
    opts = check_options(method, replace(options) if options is not None else Options(), x)
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
            if METHODS[method].family == "cam":
                res = cams.compute(model, x, method, used, tgt.pick, opts)
            else:
                res = attributions.compute(model, x, method, used, tgt.pick, opts)
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
    names = {f.name for f in fields(Options)}
    unknown = set(d) - names
    if unknown:
        raise InvalidArgument(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
    return Options(**d)
