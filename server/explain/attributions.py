"""Input attributions, computed by Captum (we call it rather than write it again).

Captum's guided backprop, deconvolution, DeepLIFT and guided Grad-CAM put
hooks (and, for DeepLIFT, attributes) on the model's modules for the length
of a call. Hooks on a shared module would act on every other request's
forward pass running at the same moment, so those methods run on a private
shallow copy of the module tree (`private_copy`): new module objects with
their own hook dictionaries, sharing the served model's parameters and
buffers (no memory copied). Whatever Captum does to the copy, the served
model never sees; the copy is garbage once the request ends, even if it
fails half-way. In the copy in-place activations are made out-of-place
(numerically the same; Captum's tensor hooks break on in-place ReLUs).
The other methods only run forward passes and take `torch.autograd.grad`
to the input, which is safe from any number of threads.
"""
from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from captum.attr import (
    DeepLift,
    Deconvolution,
    FeatureAblation,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    Lime,
    NoiseTunnel,
    Occlusion,
    Saliency,
    ShapleyValueSampling,
)
from torch import nn

from ..errors import InvalidArgument
from ..inspection.hooks import capture, find_layer
from .maps import Raw, first_tensor
from .methods import register_method

# Captum warns on every call of the hooking methods; here that is by design
# (the hooks live on a private copy) and would only flood a server's log.
warnings.filterwarnings("ignore", message=r"Setting (forward, )?backward hooks", module=r"captum")
# Lime and KernelShap fit one surrogate per image of a batch, which is what we want;
# Lime's lasso often stops at its iteration cap, and would say so for every image.
warnings.filterwarnings("ignore", message=r"You are providing multiple inputs for Lime", module=r"captum")
warnings.filterwarnings("ignore", message=r"Objective did not converge", module=r"sklearn")

# Samples per image by default: Captum's own defaults (Lime's interpretable
# model fits 50 perturbations; KernelShap 25; Shapley sampling 25 permutations).
DEFAULT_SAMPLES = {"gradient_shap": 5, "lime": 50, "kernel_shap": 25, "shapley_value_sampling": 25}
DEFAULT_BATCH = 32


def shallow_copy(m: nn.Module) -> nn.Module:
    """A new module object with its own hook/parameter/buffer/child dicts
    holding the same values (tensors are shared, not copied)."""
    c = copy.copy(m)  # a new __dict__, same values
    for key, value in list(c.__dict__.items()):
        if key.startswith("_") and isinstance(value, dict):
            c.__dict__[key] = type(value)(value)
    return c


def private_copy(model: nn.Module) -> nn.Module:
    """A shallow copy of the module tree: new module objects (own hook dicts,
    own children, own attributes) sharing the parameter and buffer tensors.
    Modules used twice (a ResNet block's ReLU) stay one module in the copy."""
    memo: dict[int, nn.Module] = {}

    def clone(m: nn.Module) -> nn.Module:
        if id(m) in memo:
            return memo[id(m)]
        c = shallow_copy(m)
        memo[id(m)] = c
        c.__dict__["_modules"] = type(m._modules)(
            (name, clone(child) if child is not None else None) for name, child in m._modules.items())
        if isinstance(c.__dict__.get("inplace"), bool):
            c.__dict__["inplace"] = False
        return c

    return clone(model)


class Unshared(nn.Module):
    """Stands, in a private copy, for a leaf module that one forward pass
    calls several times (a ResNet block's `relu`): the i-th call of a pass
    goes to the i-th of its own copies, so per-call state (DeepLIFT's saved
    inputs and outputs) is never overwritten by the next call."""

    def __init__(self, module: nn.Module, calls: int):
        super().__init__()
        self.copies = nn.ModuleList(shallow_copy(module) for _ in range(calls))
        self.calls = 0

    def forward(self, *args, **kwargs):
        module = self.copies[self.calls % len(self.copies)]
        self.calls += 1
        return module(*args, **kwargs)


def unshare_reused(net: nn.Module, x: torch.Tensor) -> None:
    """In a private copy, replace every leaf module that a forward pass calls
    more than once (and that is referenced once) by an `Unshared`."""
    calls: dict[int, int] = {}
    refs: dict[int, int] = {}
    for parent in net.modules():
        for child in parent._modules.values():
            if child is not None:
                refs[id(child)] = refs.get(id(child), 0) + 1
    leaves = [m for m in net.modules() if not m._modules]

    def count(mod, inputs):
        calls[id(mod)] = calls.get(id(mod), 0) + 1

    handles = [m.register_forward_pre_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            net(x[:1])
    finally:
        for h in handles:
            h.remove()
    for parent in list(net.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and not child._modules and calls.get(id(child), 0) > 1 and refs.get(id(child)) == 1:
                parent._modules[name] = Unshared(child, calls[id(child)])


HALF = (torch.float16, torch.bfloat16)


def float32_copy(model: nn.Module) -> nn.Module:
    """A private copy (see private_copy) whose floating parameters and
    buffers are float32 copies: Captum's methods on a half-precision model
    compute there. DeepLIFT's multipliers divide small differences of float16
    activations (NaN everywhere), GradientShap mixes float32 noise into the
    input, and perturbation methods compare logits that differ in the third
    digit. Costs one float32 copy of the weights per request (2x a float16
    model's parameter bytes), freed with the request; nothing is cached, so
    unloading a model frees all of it."""
    net = private_copy(model)
    for m in net.modules():
        for key in ("_parameters", "_buffers"):
            tensors = m.__dict__.get(key)
            for name, t in list((tensors or {}).items()):
                if t is None or not t.is_floating_point() or t.dtype == torch.float32:
                    continue
                cast = t.detach().float()
                tensors[name] = nn.Parameter(cast, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else cast
    return net


def baseline_of(kind: str | None, x: torch.Tensor, seed: int | None) -> torch.Tensor:
    """The reference input: zeros (default), a heavy Gaussian blur of the
    image, Gaussian noise, or the image's per-channel mean."""
    kind = kind or "zeros"
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    if kind == "noise":
        gen = torch.Generator(device=x.device)
        gen.manual_seed(int(seed)) if seed is not None else gen.seed()
        return torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float32).to(x.dtype)
    if kind == "blur":
        from torchvision.transforms.functional import gaussian_blur

        sigma = max(1.0, min(x.shape[-2:]) / 16)
        size = 2 * int(round(3 * sigma)) + 1
        size = min(size, 2 * (min(x.shape[-2:]) // 2) - 1) if min(x.shape[-2:]) > 2 else 1
        return gaussian_blur(x.float(), [size, size], [sigma, sigma]).to(x.dtype)
    raise InvalidArgument(f"unknown baseline {kind!r}")  # pragma: no cover - validated earlier


def window_of(opts, x: torch.Tensor) -> tuple[int, int]:
    side = min(x.shape[-2:])
    window = opts.get("window", max(1, side // 8))
    stride = opts.get("stride", max(1, window // 2))
    return window, stride


def patch_mask(x: torch.Tensor, window: int) -> torch.Tensor:
    """(1, 1, H, W) feature ids: one per window x window square (all channels together)."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device) // window
    cols = torch.arange(w, device=x.device) // window
    per_row = (w + window - 1) // window
    return (rows[:, None] * per_row + cols[None, :])[None, None]


@contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Captum draws its noise from torch's and numpy's global generators
    (GradientShap's interpolation points): seed both for the call, then put
    their states back."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            np.random.seed(int(seed) % 2**32)
            yield
    finally:
        np.random.set_state(state)


@dataclass
class Call:
    """What a method's builder sees: the network to attribute (the served
    model, or a private copy), its logits function, the (N, C, H, W) input
    (float32 for half models), the layers, the options, and per_row: the
    perturbed inputs per forward pass for each (image, class) row so that a
    pass holds at most max(rows, batch_size) inputs."""

    net: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    x: torch.Tensor
    layers: list[str]
    opts: object  # explain.Options
    rows: int
    batch_size: int

    @property
    def per_row(self) -> int:
        return max(1, self.batch_size // self.rows)

    def baseline(self) -> torch.Tensor:
        return baseline_of(self.opts.baseline, self.x, self.opts.seed)


@dataclass
class Attribute:
    """A Captum algorithm and the keywords of its `attribute` call.
    per_image_baselines: call it once per row, each with its own baseline."""

    algo: object
    kwargs: dict = field(default_factory=dict)
    per_image_baselines: bool = False


NOISE_TUNNEL = ("noise_tunnel", "nt_samples", "nt_stdev")


def attribution_method(*, name: str, description: str, source: str, options=(), hooks: bool = False,
                       noise_tunnel: bool = True, needs=("gradients",), **fields):
    """Declare a Captum method (see methods.register_method) from its
    builder `build(c: Call) -> Attribute`. hooks: Captum hooks the modules,
    so it runs on a private copy. noise_tunnel: takes the NoiseTunnel options."""

    def wrap(build: Callable) -> Callable:
        def fn(model, x, layers, pick, opts) -> Raw:
            return _compute(model, x, name, layers, pick, opts, build, hooks, fields.get("draws_noise", False))

        fn.__doc__ = build.__doc__
        register_method(name=name, family="attribution", description=description, source=source, needs=needs,
                        options=("batch_size",) + tuple(options) + (NOISE_TUNNEL if noise_tunnel else ()),
                        **fields)(fn)
        return build

    return wrap


def _compute(model: nn.Module, x: torch.Tensor, method: str, layers: list[str], pick, opts, build, hooks: bool,
             random: bool) -> Raw:
    with torch.no_grad(), (capture(model, layers) if layers else nullcontext()) as cap:
        logits = first_tensor(model(x)).detach()
    if layers:
        out = cap.output(layers[0])
        if out.dim() != 4:
            raise InvalidArgument(f"{method} needs a conv layer with an (N, C, H, W) output; {layers[0]!r} outputs "
                                  f"shape {list(out.shape)} (use grad_cam for transformer tokens)")
    targets = pick(logits)
    if x.dtype in HALF:  # targets chosen by the served model; attributions computed in float32
        net, x = float32_copy(model), x.float()
    else:
        net = private_copy(model) if hooks else model

    def forward(inp: torch.Tensor) -> torch.Tensor:
        return first_tensor(net(inp))

    bs = opts.get("batch_size", DEFAULT_BATCH)
    n = x.shape[0]
    k = targets.shape[1]
    # Every pass holds at most max(rows, batch_size) inputs: Captum's
    # perturbation and sample counts are per row of the (images x classes) batch.
    call = Call(net, forward, x, layers, opts, rows=n * k, batch_size=bs)
    spec = build(call)
    algo, kwargs = spec.algo, dict(spec.kwargs)

    if opts.noise_tunnel:
        algo = NoiseTunnel(algo)
        kwargs.update(nt_type=opts.noise_tunnel, nt_samples=opts.get("nt_samples", 5),
                      stdevs=float(opts.get("nt_stdev", 1.0)), nt_samples_batch_size=call.per_row)

    # Top-k: each image once per target class, all in one call (Captum
    # explains one target per example; this batches them together).
    xs = (x.repeat_interleave(k, dim=0) if k > 1 else x.clone()).requires_grad_(True)
    ts = targets.reshape(-1)
    for key in ("baselines",):
        if isinstance(kwargs.get(key), torch.Tensor) and kwargs[key].shape[0] == n and k > 1:
            kwargs[key] = kwargs[key].repeat_interleave(k, dim=0)
    with _seeded(opts.seed if random or opts.noise_tunnel else None, x.device):
        if spec.per_image_baselines:
            base = call.baseline().repeat_interleave(k, dim=0)
            if isinstance(algo, _Chunked):
                algo.per_call = max(1, bs)  # one row per call here
            attr = torch.cat([algo.attribute(xs[i : i + 1].detach().requires_grad_(True), baselines=base[i : i + 1], target=ts[i : i + 1], **kwargs)
                              for i in range(xs.shape[0])])
        else:
            attr = algo.attribute(xs, target=ts, **kwargs)
    attribution = attr.detach().float().reshape(n, k, *x.shape[1:])  # (N, k, C, H, W)
    return Raw(logits, targets, attribution.sum(dim=2), None, attribution=attribution)


# ---------------------------------------------------------------- the methods

SIGNED = dict(signed=True)  # maps with a meaningful sign: drawn on a diverging colormap


@attribution_method(name="integrated_gradients", options=("steps", "baseline"), sampled=True, cost="moderate",
                    description="Integrated Gradients (Captum)", source="Sundararajan et al., ICML 2017", **SIGNED)
def integrated_gradients(c: Call) -> Attribute:
    return Attribute(IntegratedGradients(c.forward), dict(
        baselines=c.baseline(), n_steps=c.opts.get("steps", 50), internal_batch_size=max(c.rows, c.batch_size)))


@attribution_method(name="saliency", description="absolute input gradient (Captum Saliency)",
                    source="Simonyan et al., ICLR Workshops 2014")
def saliency(c: Call) -> Attribute:
    return Attribute(Saliency(c.forward))


@attribution_method(name="guided_backprop", hooks=True, description="Guided Backpropagation (Captum)",
                    source="Springenberg et al., ICLR Workshops 2015", **SIGNED)
def guided_backprop(c: Call) -> Attribute:
    return Attribute(GuidedBackprop(c.net))


@attribution_method(name="guided_grad_cam", hooks=True, needs=("gradients", "layer", "conv_layer"), max_layers=1,
                    description="Guided Grad-CAM (Captum): guided backprop x upsampled Grad-CAM",
                    source="Selvaraju et al., ICCV 2017", **SIGNED)
def guided_grad_cam(c: Call) -> Attribute:
    return Attribute(GuidedGradCam(c.net, find_layer(c.net, c.layers[0])), dict(interpolate_mode="bilinear"))


@attribution_method(name="deconvolution", hooks=True, description="Deconvolution (Captum)",
                    source="Zeiler & Fergus, ECCV 2014", **SIGNED)
def deconvolution(c: Call) -> Attribute:
    return Attribute(Deconvolution(c.net))


@attribution_method(name="input_x_gradient", description="input x gradient (Captum)",
                    source="Shrikumar et al., 2016", **SIGNED)
def input_x_gradient(c: Call) -> Attribute:
    return Attribute(InputXGradient(c.forward))


@attribution_method(name="deeplift", hooks=True, options=("baseline",), description="DeepLIFT (Captum)",
                    source="Shrikumar et al., ICML 2017", **SIGNED)
def deeplift(c: Call) -> Attribute:
    unshare_reused(c.net, c.x)
    return Attribute(DeepLift(c.net), dict(baselines=c.baseline()))


@attribution_method(name="gradient_shap", options=("samples", "noise", "baseline"), noise_tunnel=False,
                    draws_noise=True, sampled=True, cost="moderate", description="GradientSHAP (Captum)",
                    source="Lundberg & Lee, NeurIPS 2017", **SIGNED)
def gradient_shap(c: Call) -> Attribute:
    """Gradient SHAP already averages over noisy samples: no noise tunnel."""
    kwargs = dict(n_samples=c.opts.get("samples", DEFAULT_SAMPLES["gradient_shap"]),
                  stdevs=float(c.opts.get("noise", 0.0)))
    per_image = (c.opts.baseline or "zeros") != "zeros"
    if not per_image:
        kwargs["baselines"] = torch.zeros_like(c.x[:1])
    return Attribute(_Chunked(GradientShap(c.forward), c.per_row), kwargs, per_image_baselines=per_image)


@attribution_method(name="occlusion", options=("window", "stride", "baseline"), forward_only=True, sampled=True,
                    cost="expensive", description="score drop under a sliding occluding window (Captum Occlusion)",
                    source="Zeiler & Fergus, ECCV 2014", **SIGNED)
def occlusion(c: Call) -> Attribute:
    window, stride = window_of(c.opts, c.x)
    ch = c.x.shape[1]
    return Attribute(Occlusion(c.forward), dict(
        sliding_window_shapes=(ch, window, window), strides=(ch, stride, stride), baselines=c.baseline(),
        perturbations_per_eval=c.per_row))


@attribution_method(name="feature_ablation", options=("window", "baseline"), forward_only=True, sampled=True,
                    cost="expensive",
                    description="score drop when each window-sized patch is ablated (Captum FeatureAblation)",
                    source="Captum (FeatureAblation)", **SIGNED)
def feature_ablation(c: Call) -> Attribute:
    window, _ = window_of(c.opts, c.x)
    return Attribute(FeatureAblation(c.forward), dict(
        baselines=c.baseline(), feature_mask=patch_mask(c.x, window), perturbations_per_eval=c.per_row))


def _surrogate(algo_class, name: str):
    """Lime, KernelShap and ShapleyValueSampling: the features are window x
    window squares (as feature_ablation's); each image gets its own
    surrogate model (Lime, KernelShap) or permutations."""

    def build(c: Call) -> Attribute:
        window, _ = window_of(c.opts, c.x)
        return Attribute(algo_class(c.forward), dict(
            baselines=c.baseline(), feature_mask=patch_mask(c.x, window),
            n_samples=c.opts.get("samples", DEFAULT_SAMPLES[name]), perturbations_per_eval=c.per_row))

    return build


def _two_patches(opts, hw) -> None:
    h, w = hw
    side = opts.window if opts.window is not None else max(1, min(h, w) // 8)
    if -(-h // side) * -(-w // side) < 2:
        raise InvalidArgument(f"kernel_shap needs at least 2 window-sized patches; the {h}x{w} input is one "
                              f"patch of {side}: use a smaller window", field="options.window")


_SURROGATE = dict(options=("window", "baseline", "samples"), draws_noise=True, forward_only=True, sampled=True,
                  cost="expensive", **SIGNED)
attribution_method(name="lime", source="Ribeiro et al., KDD 2016", **_SURROGATE,
                   description="LIME: a linear surrogate fitted to random subsets of window-sized patches (Captum Lime)",
                   )(_surrogate(Lime, "lime"))
attribution_method(name="kernel_shap", source="Lundberg & Lee, NeurIPS 2017", check=_two_patches, **_SURROGATE,
                   description="Kernel SHAP: Shapley values of window-sized patches from a weighted linear fit "
                               "(Captum KernelShap)")(_surrogate(KernelShap, "kernel_shap"))
attribution_method(name="shapley_value_sampling", source="Castro et al., 2009", **_SURROGATE,
                   description="Shapley values of window-sized patches over sampled permutations "
                               "(Captum ShapleyValueSampling)")(_surrogate(ShapleyValueSampling, "shapley_value_sampling"))


class _Chunked:
    """GradientShap with its samples drawn `per_call` at a time (Captum draws
    all n_samples for every row in one pass): the mean over chunks weighted by
    their sizes, the same expectation, with memory bounded by batch_size."""

    def __init__(self, algo: GradientShap, per_call: int):
        self.algo = algo
        self.per_call = per_call

    def attribute(self, inputs, *, n_samples: int, **kwargs):
        if n_samples <= self.per_call:
            return self.algo.attribute(inputs, n_samples=n_samples, **kwargs)
        total = None
        for start in range(0, n_samples, self.per_call):
            m = min(self.per_call, n_samples - start)
            part = self.algo.attribute(inputs, n_samples=m, **kwargs).detach() * m
            total = part if total is None else total + part
        return total / n_samples
