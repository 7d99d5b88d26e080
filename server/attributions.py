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

from .errors import InvalidArgument
from .hooks import capture, find_layer
from .maps import Raw, first_tensor

# Captum warns on every call of the hooking methods; here that is by design
# (the hooks live on a private copy) and would only flood a server's log.
warnings.filterwarnings("ignore", message=r"Setting (forward, )?backward hooks", module=r"captum")
# Lime and KernelShap fit one surrogate per image of a batch, which is what we want;
# Lime's lasso often stops at its iteration cap, and would say so for every image.
warnings.filterwarnings("ignore", message=r"You are providing multiple inputs for Lime", module=r"captum")
warnings.filterwarnings("ignore", message=r"Objective did not converge", module=r"sklearn")

HOOKING_METHODS = ("guided_backprop", "deconvolution", "deeplift", "guided_grad_cam")
RANDOM_METHODS = ("gradient_shap", "lime", "kernel_shap", "shapley_value_sampling")
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


def compute(model: nn.Module, x: torch.Tensor, method: str, layers: list[str], pick, opts) -> Raw:
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
        net = private_copy(model) if method in HOOKING_METHODS else model

    def forward(inp: torch.Tensor) -> torch.Tensor:
        return first_tensor(net(inp))

    bs = opts.get("batch_size", DEFAULT_BATCH)
    n = x.shape[0]
    k = targets.shape[1]
    # Every pass holds at most max(rows, batch_size) inputs: Captum's
    # perturbation and sample counts are per row of the (images x classes) batch.
    rows = n * k
    per_row = max(1, bs // rows)
    kwargs: dict = {}
    per_image_baselines = False
    if method == "integrated_gradients":
        algo = IntegratedGradients(forward)
        kwargs = dict(baselines=baseline_of(opts.baseline, x, opts.seed), n_steps=opts.get("steps", 50),
                      internal_batch_size=max(rows, bs))
    elif method == "saliency":
        algo = Saliency(forward)
    elif method == "guided_backprop":
        algo = GuidedBackprop(net)
    elif method == "deconvolution":
        algo = Deconvolution(net)
    elif method == "input_x_gradient":
        algo = InputXGradient(forward)
    elif method == "deeplift":
        unshare_reused(net, x)
        algo = DeepLift(net)
        kwargs = dict(baselines=baseline_of(opts.baseline, x, opts.seed))
    elif method == "gradient_shap":
        algo = GradientShap(forward)
        kwargs = dict(n_samples=opts.get("samples", DEFAULT_SAMPLES[method]), stdevs=float(opts.get("noise", 0.0)))
        algo = _Chunked(algo, per_row)
        per_image_baselines = (opts.baseline or "zeros") != "zeros"
        if not per_image_baselines:
            kwargs["baselines"] = torch.zeros_like(x[:1])
    elif method == "occlusion":
        window, stride = window_of(opts, x)
        c = x.shape[1]
        algo = Occlusion(forward)
        kwargs = dict(sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                      baselines=baseline_of(opts.baseline, x, opts.seed), perturbations_per_eval=per_row)
    elif method == "feature_ablation":
        window, _ = window_of(opts, x)
        algo = FeatureAblation(forward)
        kwargs = dict(baselines=baseline_of(opts.baseline, x, opts.seed), feature_mask=patch_mask(x, window),
                      perturbations_per_eval=per_row)
    elif method in ("lime", "kernel_shap", "shapley_value_sampling"):
        # The features are window x window squares (as feature_ablation's); each
        # image gets its own surrogate model (Lime, KernelShap) or permutations.
        window, _ = window_of(opts, x)
        algo = {"lime": Lime, "kernel_shap": KernelShap, "shapley_value_sampling": ShapleyValueSampling}[method](forward)
        kwargs = dict(baselines=baseline_of(opts.baseline, x, opts.seed), feature_mask=patch_mask(x, window),
                      n_samples=opts.get("samples", DEFAULT_SAMPLES[method]), perturbations_per_eval=per_row)
    elif method == "guided_grad_cam":
        algo = GuidedGradCam(net, find_layer(net, layers[0]))
        kwargs = dict(interpolate_mode="bilinear")
    else:  # pragma: no cover - explain() validated the name
        raise InvalidArgument(f"unknown attribution method {method!r}")

    if opts.noise_tunnel:
        algo = NoiseTunnel(algo)
        kwargs.update(nt_type=opts.noise_tunnel, nt_samples=opts.get("nt_samples", 5),
                      stdevs=float(opts.get("nt_stdev", 1.0)), nt_samples_batch_size=per_row)

    # Top-k: each image once per target class, all in one call (Captum
    # explains one target per example; this batches them together).
    xs = (x.repeat_interleave(k, dim=0) if k > 1 else x.clone()).requires_grad_(True)
    ts = targets.reshape(-1)
    for key in ("baselines",):
        if isinstance(kwargs.get(key), torch.Tensor) and kwargs[key].shape[0] == n and k > 1:
            kwargs[key] = kwargs[key].repeat_interleave(k, dim=0)
    random = opts.noise_tunnel or method in RANDOM_METHODS
    with _seeded(opts.seed if random else None, x.device):
        if per_image_baselines:
            base = baseline_of(opts.baseline, x, opts.seed).repeat_interleave(k, dim=0)
            if isinstance(algo, _Chunked):
                algo.per_call = max(1, bs)  # one row per call here
            attr = torch.cat([algo.attribute(xs[i : i + 1].detach().requires_grad_(True), baselines=base[i : i + 1], target=ts[i : i + 1], **kwargs)
                              for i in range(xs.shape[0])])
        else:
            attr = algo.attribute(xs, target=ts, **kwargs)
    attribution = attr.detach().float().reshape(n, k, *x.shape[1:])  # (N, k, C, H, W)
    return Raw(logits, targets, attribution.sum(dim=2), None, attribution=attribution)


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
