"""The CAM family: one activation/gradient capture, many channel weightings.

Every method runs the same forward pass through `hooks.capture` (context-local
hooks, removed on exit; clone-on-output so in-place ReLUs cannot corrupt what
was captured). Gradient methods run that forward under `torch.no_grad()` and
the capture switches grad recording on at the explained layer, so nothing
upstream records a graph; the gradient comes from one `torch.autograd.grad`
to the captured activation per target class: no parameter gradients, nothing
left in `.grad`, frozen models too.

A method is then only how it weighs the activations A (N, C, h, w) given the
gradients G of the target's logit with respect to A:

    grad_cam              w_c = mean_hw G
    grad_cam_plus_plus    w_c = sum_hw relu(G) a,  a = G^2 / (2 G^2 + sum_hw(A) G^3)   (a = 0 where G = 0)
    smooth_grad_cam_pp    the same with G, G^2, G^3 averaged over noisy copies of the input
    xgrad_cam             w_c = sum_hw G A / sum_hw A
    hires_cam             element-wise G A
    grad_cam_elementwise  element-wise relu(G A)
    layer_cam             element-wise relu(G) A
    eigen_cam             first principal component of A
    eigen_grad_cam        first principal component of G A
    kpca_cam              first kernel principal component of A (sigmoid kernel by default)
    shapley_cam           w_c = mean_hw (G - H A / 2), H the Hessian of the target's logit in A
                          (ShapleyCAM; equal to grad_cam where the head is piecewise linear)
    fem                   w_c = share of A_c's pixels above mean_hw A_c + k std_hw A_c (no gradients)
    finer_cam             grad_cam, G of sum_i p_i (y_t - alpha y_i) / sum_i p_i over the classes i
                          whose logits are closest to the target's (p = softmax of the logits)
    cam                   w_c = the classifier's weight of the target (GAP + Linear heads)
    score_cam             w = softmax_c(logit of x masked by normalised upsampled A_c)
    ss_cam                the same, scores averaged over noisy masked inputs
    is_cam                the same, scores averaged over masks scaled 1/n, 2/n, .. 1
    ablation_cam          w_c = (y - y with A_c zeroed) / |y|

(random_cam, in server/explain/cam_methods/, draws w_c uniformly at random: a baseline)
and the map is relu(sum_c w_c A_c) (or relu of the element-wise sum, or of
the first principal component with eigen_smooth). full_grad sums the
normalised |input x input-gradient| and |bias x bias-gradient| of every
Conv2d/BatchNorm2d.

Each method is declared once, above its `maps(p: Pass)` function, with
`cam_method` (server/explain/methods.py's register_method plus the shared pass, the
aug_smooth views and the fusion of several layers): no dispatch on names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import FailedPrecondition, InvalidArgument
from ..inspection.hooks import capture, find_layer, replace_output
from .maps import Layout, Raw, first_component, first_tensor, layout_of, normalize, upsample
from .methods import OptionSpec, register_method

Pick = Callable[[torch.Tensor], torch.Tensor]
Maps = dict  # {layer: [k maps of shape (N, h, w)]}

DEFAULT_BATCH = 32
AUGMENTATIONS = [(flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1)]
SMOOTHING = ("aug_smooth", "eigen_smooth")  # every map-weighing CAM takes them


@dataclass
class Pass:
    """The shared forward pass of a CAM, as a method's `maps` function sees it."""

    model: nn.Module
    x: torch.Tensor  # (N, C, H, W) preprocessed batch
    layers: list[str]
    opts: object  # explain.Options
    cap: object  # hooks.Capture of the explained layers
    out: torch.Tensor  # (N, classes) logits, carrying the graph from the layers when the method needs gradients
    logits: torch.Tensor  # the same, detached
    targets: torch.Tensor  # (N, k) long
    layouts: dict[str, Layout]
    acts: dict[str, torch.Tensor]  # {layer: (N, C, h, w) float32 activations}

    @property
    def k(self) -> int:
        return self.targets.shape[1]

    @property
    def eigen(self) -> bool:
        return bool(self.opts.eigen_smooth)

    def reduce(self, a, *, weights=None, elementwise=None) -> torch.Tensor:
        return _reduce(a, weights=weights, elementwise=elementwise, eigen=self.eigen)

    def per_gradient(self, weigh: Callable, *, score: Callable | None = None, gradients: Callable | None = None) -> Maps:
        """For each target j and layer: weigh(A, G) with G the gradient of
        score(self, j) (default: the summed target logits) in A."""
        if not self.out.requires_grad:
            raise InvalidArgument(f"the model's output does not depend on {', '.join(self.layers)}")
        maps: Maps = {n: [] for n in self.layers}
        for j in range(self.k):
            s = score(self, j) if score else self.out.gather(1, self.targets[:, j : j + 1]).sum()
            grads = (gradients or _plain_gradients)(self.cap, s, self.layers, retain_graph=j < self.k - 1)
            for n in self.layers:
                maps[n].append(weigh(self.acts[n], self.layouts[n].grid(grads[n]).float()))
        return maps

    def per_layer(self, weights: Callable) -> Maps:
        """For each layer: weights(layer) -> (N, k, C) channel weights, reduced per target."""
        maps: Maps = {}
        for n in self.layers:
            w = weights(n)
            maps[n] = [self.reduce(self.acts[n], weights=w[:, j]) for j in range(self.k)]
        return maps

    def class_agnostic(self, one: Callable) -> Maps:
        """For each layer: one map (N, h, w) from the activations, the same for every target."""
        return {n: [one(self.acts[n])] * self.k for n in self.layers}


def _plain_gradients(cap, score, layers, retain_graph):
    return cap.gradients(score, layers, retain_graph=retain_graph)


def cam_method(*, name: str, description: str, source: str, family: str = "cam", needs=("layer",),
               options=(), smoothing=SMOOTHING, **fields):
    """Declare a CAM (see methods.register_method) from its `maps(p: Pass) -> Maps`
    function: the shared pass, aug_smooth and multi-layer fusion come from here."""
    grad = "gradients" in needs

    def wrap(maps_fn: Callable) -> Callable:
        def fn(model, x, layers, pick, opts) -> Raw:
            return _compute(model, x, name, layers, pick, opts, maps_fn, grad)

        fn.__doc__ = maps_fn.__doc__
        register_method(name=name, family=family, description=description, source=source, needs=needs,
                        options=tuple(smoothing) + tuple(options), **fields)(fn)
        return maps_fn

    return wrap


def _compute(model, x, method, layers, pick, opts, maps_fn, grad) -> Raw:
    size = x.shape[-2:]
    if opts.aug_smooth:
        batch, pick_clean, clean = _augment(x, pick)
        logits, targets, maps = _maps(model, batch, method, layers, pick_clean, opts, maps_fn, grad)
        logits, targets = logits[clean], targets[clean]
        maps = {name: _deaugment(m, x.shape[0]) for name, m in maps.items()}
    else:
        logits, targets, maps = _maps(model, x, method, layers, pick, opts, maps_fn, grad)
    if len(layers) == 1:
        heat = maps[layers[0]]
        return Raw(logits, targets, heat, upsample(heat, size))
    # Several layers (LayerCAM's fusion, or any CAM): each map normalised at
    # its own resolution, upsampled, then averaged.
    fused = torch.stack([upsample(normalize(maps[n]), size) for n in layers]).mean(0)
    return Raw(logits, targets, fused, None)


# ---------------------------------------------------------------- the shared pass


def _maps(model: nn.Module, x: torch.Tensor, method: str, layers: list[str], pick: Pick, opts, maps_fn, grad: bool):
    """(logits, targets, {layer: (N, k, h, w) relu'd maps})."""
    modules = {n: find_layer(model, n) for n in layers}
    with capture(model, layers, grad=grad) as cap:
        with torch.no_grad():
            out = first_tensor(model(x))
    cap.require_all()
    logits = out.detach()
    targets = pick(logits)
    layouts = {n: layout_of(model, n, modules[n], cap.outputs[n], method) for n in layers}
    acts = {n: layouts[n].grid(cap.outputs[n].detach()).float() for n in layers}
    p = Pass(model, x, layers, opts, cap, out, logits, targets, layouts, acts)
    maps = maps_fn(p)
    return logits, targets, {n: torch.stack(ms, dim=1) for n, ms in maps.items()}


def _reduce(a: torch.Tensor, *, weights: torch.Tensor | None = None, elementwise: torch.Tensor | None = None,
            eigen: bool = False) -> torch.Tensor:
    """relu of the channel sum (or first principal component) of the weighted activations -> (N, h, w)."""
    if elementwise is None:
        if eigen:
            return torch.relu(first_component(weights[:, :, None, None] * a))
        return torch.relu(torch.einsum("nc,nchw->nhw", weights, a))
    if eigen:
        return torch.relu(first_component(elementwise))
    return torch.relu(elementwise.sum(1))


# ---------------------------------------------------------------- the gradient CAMs


@cam_method(name="grad_cam", needs=("gradients", "layer"),
            description="channels weighted by their spatially averaged gradient",
            source="Selvaraju et al., ICCV 2017")
def grad_cam(p: Pass) -> Maps:
    return p.per_gradient(lambda a, g: p.reduce(a, weights=g.mean(dim=(2, 3))))


@cam_method(name="grad_cam_plus_plus", needs=("gradients", "layer"),
            description="Grad-CAM++: positive gradients weighted by second/third-order terms",
            source="Chattopadhay et al., WACV 2018")
def grad_cam_plus_plus(p: Pass) -> Maps:
    def weigh(a, g):
        g2 = g * g
        return p.reduce(a, weights=_plus_plus_weights(a, g, g2, g2 * g))

    return p.per_gradient(weigh)


@cam_method(name="smooth_grad_cam_plus_plus", needs=("gradients", "layer"), options=("samples", "noise"),
            draws_noise=True, cost="moderate",
            description="Grad-CAM++ with gradient moments averaged over noisy copies of the input",
            source="Omeiza et al., 2019 (Smooth Grad-CAM++)")
def smooth_grad_cam_plus_plus(p: Pass) -> Maps:
    moments = _noisy_gradient_moments(p.model, p.x, p.layers, p.layouts, p.targets, p.opts)
    return {n: [p.reduce(p.acts[n], weights=_plus_plus_weights(p.acts[n], *moments[n][j])) for j in range(p.k)]
            for n in p.layers}


@cam_method(name="xgrad_cam", needs=("gradients", "layer"),
            description="XGrad-CAM: gradients weighted by normalised activations",
            source="Fu et al., BMVC 2020")
def xgrad_cam(p: Pass) -> Maps:
    return p.per_gradient(
        lambda a, g: p.reduce(a, weights=(g * a / (a.sum(dim=(2, 3), keepdim=True) + 1e-7)).sum(dim=(2, 3))))


@cam_method(name="hires_cam", needs=("gradients", "layer"),
            description="HiResCAM: element-wise gradient x activation, summed over channels",
            source="Draelos & Carin, 2020")
def hires_cam(p: Pass) -> Maps:
    return p.per_gradient(lambda a, g: p.reduce(a, elementwise=g * a))


@cam_method(name="grad_cam_elementwise", needs=("gradients", "layer"),
            description="element-wise ReLU(gradient x activation), summed over channels",
            source="pytorch-grad-cam (GradCAMElementWise)")
def grad_cam_elementwise(p: Pass) -> Maps:
    return p.per_gradient(lambda a, g: p.reduce(a, elementwise=torch.relu(g * a)))


@cam_method(name="layer_cam", needs=("gradients", "layer"),
            description="LayerCAM: ReLU(gradient) x activation; several layers are fused",
            source="Jiang et al., IEEE TIP 2021")
def layer_cam(p: Pass) -> Maps:
    return p.per_gradient(lambda a, g: p.reduce(a, elementwise=torch.relu(g) * a))


@cam_method(name="eigen_cam", needs=("layer",), forward_only=True,
            description="first principal component of the activations (no gradients, class-agnostic)",
            source="Muhammad & Yeasin, IJCNN 2020")
def eigen_cam(p: Pass) -> Maps:
    return p.class_agnostic(lambda a: torch.relu(first_component(a)))


@cam_method(name="eigen_grad_cam", needs=("gradients", "layer"),
            description="first principal component of gradient x activation",
            source="pytorch-grad-cam (EigenGradCAM)")
def eigen_grad_cam(p: Pass) -> Maps:
    return p.per_gradient(lambda a, g: _reduce(a, elementwise=g * a, eigen=True))


@cam_method(name="shapley_cam", needs=("gradients", "layer"),
            description="ShapleyCAM: gradient less half the Hessian-vector product, averaged per channel",
            source="Cai et al., 2025 (ShapleyCAM)")
def shapley_cam(p: Pass) -> Maps:
    return p.per_gradient(lambda a, g: p.reduce(a, weights=g.mean(dim=(2, 3))), gradients=_shapley_gradients)


@cam_method(name="kpca_cam", needs=("layer",), forward_only=True,
            options=(OptionSpec("kpca_kernel", "str", "kpca_cam's kernel (default sigmoid)",
                                choices=("sigmoid", "rbf", "poly", "linear", "cosine"), proto_field="kpca_kernel"),
                     OptionSpec("kpca_gamma", "float", "kpca_cam's kernel gamma (default 1 / channels)", minimum=0.0,
                                exclusive=True, proto_field="kpca_gamma")),
            description="KPCA-CAM: first kernel principal component of the activations (no gradients, class-agnostic)",
            source="Karmani et al., 2024 (KPCA-CAM)")
def kpca_cam(p: Pass) -> Maps:
    kernel, gamma = p.opts.get("kpca_kernel", "sigmoid"), p.opts.kpca_gamma
    return p.class_agnostic(lambda a: torch.relu(_kernel_component(a, kernel, gamma)))


@cam_method(name="fem", needs=("layer",), forward_only=True,
            options=(OptionSpec("fem_k", "float", "fem: a channel weighs the share of its pixels above mean + fem_k "
                                "standard deviations (default 2)", proto_field="fem_k"),),
            description="FEM: channels weighted by their share of pixels above mean + k std (no gradients, class-agnostic)",
            source="Fu et al., 2020 (Feature Explanation Method)")
def fem(p: Pass) -> Maps:
    k = p.opts.get("fem_k", 2.0)
    return p.class_agnostic(lambda a: p.reduce(a, weights=_fem_weights(a, k)))


@cam_method(name="finer_cam", needs=("gradients", "layer"),
            options=(OptionSpec("finer_alpha", "float", "finer_cam: the share of each similar class's logit "
                                "subtracted (default 1)", proto_field="finer_alpha"),
                     OptionSpec("finer_classes", "int", "finer_cam: how many classes with the closest logits it "
                                "compares against (default 3)", minimum=1, ceiling="finer_classes",
                                proto_field="finer_classes")),
            description="Finer-CAM: Grad-CAM of the target's logit minus those of its most similar classes",
            source="Zhang et al., CVPR 2025 (Finer-CAM)")
def finer_cam(p: Pass) -> Maps:
    return p.per_gradient(lambda a, g: p.reduce(a, weights=g.mean(dim=(2, 3))),
                          score=lambda q, j: _finer_score(q.out, q.targets[:, j], q.opts).sum())


@cam_method(name="cam", needs=("layer", "conv_layer", "linear_head"), forward_only=True, max_layers=1,
            description="class activation mapping: the classifier's fc weights on the last conv features "
                        "(GAP + Linear heads only)",
            source="Zhou et al., CVPR 2016")
def cam(p: Pass) -> Maps:
    n = p.layers[0]
    try:
        a, weights = _cam_weights(p.model, n, p.acts[n], p.logits, p.targets)
    except InvalidArgument as exc:
        works = _cam_layers(p.model, p.x[:1], p.logits[:1], exclude=n)
        if not works:
            raise
        # The pooled features are another layer's output (the demo's default
        # layer is a conv whose output is normalised and rectified before pooling).
        raise InvalidArgument(f"{exc}; on this model cam works at layers={works[0]!r}"
                              + (f" (also {', '.join(map(repr, works[1:3]))})" if works[1:] else ""),
                              reason=exc.reason, field="layers",
                              metadata={**exc.metadata, "cam_layer": works[0]}) from None
    return {n: [p.reduce(a, weights=weights[:, j]) for j in range(p.k)]}


def _cam_layers(model: nn.Module, x: torch.Tensor, logits: torch.Tensor, exclude: str = "") -> list[str]:
    """The layers whose output the classifier's logits are Linear(global
    average pool) of, last first: where `cam` works on this model. One
    forward pass of one image, capturing every layer whose output could feed
    the head (4-D, as many channels as the head takes, more than one pixel:
    the pooling layer itself has no map); [] when none does."""
    head = classifier_head(model)
    if head is None:
        return []
    fc = head[1]
    names = [name for name, m in model.named_modules()
             if name and name != exclude and not name.startswith(head[0]) and type(m).forward is not nn.Module.forward]
    with torch.no_grad(), capture(model, names) as cap:
        model(x)
    works = []
    for name in reversed(names):
        a = cap.outputs.get(name)
        if a is None or a.dim() != 4 or a.shape[1] != fc.in_features or a.shape[2] * a.shape[3] < 2:  # 1x1: no map
            continue
        try:
            _cam_weights(model, name, a.float(), logits, torch.zeros((1, 1), dtype=torch.long))
        except InvalidArgument:
            continue
        works.append(name)
    return works


# ---------------------------------------------------------------- the perturbation CAMs


@cam_method(name="score_cam", family="perturbation_cam", needs=("layer",), options=("batch_size",),
            forward_only=True, sampled=True, cost="expensive",
            description="channels weighted by the score of the input masked by each channel",
            source="Wang et al., CVPR Workshops 2020")
def score_cam(p: Pass) -> Maps:
    return p.per_layer(lambda n: _score_weights(p.model, p.x, p.acts[n], p.targets, [(1.0, 0.0)], p.opts))


@cam_method(name="ss_cam", family="perturbation_cam", needs=("layer",), options=("samples", "noise", "batch_size"),
            draws_noise=True, forward_only=True, sampled=True, cost="expensive",
            description="Smoothed Score-CAM: Score-CAM scores averaged over noisy masked inputs",
            source="Wang et al., 2020 (SS-CAM)")
def ss_cam(p: Pass) -> Maps:
    variants = [(1.0, p.opts.get("noise", 0.3))] * p.opts.get("samples", 4)
    return p.per_layer(lambda n: _score_weights(p.model, p.x, p.acts[n], p.targets, variants, p.opts))


@cam_method(name="is_cam", family="perturbation_cam", needs=("layer",), options=("steps", "batch_size"),
            forward_only=True, sampled=True, cost="expensive",
            description="Integrated Score-CAM: Score-CAM scores integrated over mask intensities",
            source="Naidu et al., 2020 (IS-CAM)")
def is_cam(p: Pass) -> Maps:
    steps = p.opts.get("steps", 10)
    variants = [((i + 1) / steps, 0.0) for i in range(steps)]
    return p.per_layer(lambda n: _score_weights(p.model, p.x, p.acts[n], p.targets, variants, p.opts))


@cam_method(name="ablation_cam", family="perturbation_cam", needs=("layer",), options=("batch_size",),
            forward_only=True, sampled=True, cost="expensive",
            description="channels weighted by the score drop when each is zeroed",
            source="Desai & Ramaswamy, WACV 2020")
def ablation_cam(p: Pass) -> Maps:
    return p.per_layer(lambda n: _ablation_weights(p.model, p.x, n, p.layouts[n], p.acts[n], p.logits, p.targets,
                                                   p.opts))


def _shapley_gradients(cap, score: torch.Tensor, layers: list[str], retain_graph: bool) -> dict[str, torch.Tensor]:
    """G - H A / 2 per layer: the gradient, less half the Hessian-vector
    product in the direction of the activations (a second-order Taylor
    term, ShapleyCAM), from a gradient taken with create_graph."""
    grads = cap.gradients(score, layers, create_graph=True)
    curved = [n for n in layers if grads[n].requires_grad]  # a piecewise-linear head has no Hessian
    hvps = dict(zip(curved, torch.autograd.grad(
        [grads[n] for n in curved], [cap.output(n) for n in curved],
        grad_outputs=[cap.output(n).detach() for n in curved], retain_graph=retain_graph, allow_unused=True,
    ))) if curved else {}
    return {n: (grads[n] - 0.5 * hvps[n] if hvps.get(n) is not None else grads[n]).detach() for n in layers}


def _kernel_component(a: torch.Tensor, kernel: str, gamma: float | None) -> torch.Tensor:
    """(N, C, h, w) -> (N, h, w): each position's score on the first kernel
    principal component of the positions' channel vectors (centred), scaled
    by the square root of its eigenvalue (as scikit-learn's KernelPCA). Its
    sign is first_component's: the one that correlates positively with the
    channel sum. Float64: the centred kernel's top eigenvalues can be close."""
    n, c, h, w = a.shape
    if not bool(torch.isfinite(a).all()):
        raise FailedPrecondition("the explained layer's activations hold NaN or infinity: the model produced "
                                 "non-finite values for this input; check its weights, or load it as float32",
                                 reason="NON_FINITE")
    x = a.flatten(2).transpose(1, 2).double()  # (N, hw, C)
    x = x - x.mean(dim=1, keepdim=True)
    if h * w < 2:
        return torch.zeros(n, h, w, device=a.device)
    g = 1.0 / c if gamma is None else float(gamma)
    dot = x @ x.transpose(1, 2)
    if kernel == "linear":
        km = dot
    elif kernel == "poly":
        km = (g * dot + 1.0) ** 3
    elif kernel == "sigmoid":
        km = torch.tanh(g * dot + 1.0)
    elif kernel == "rbf":
        sq = dot.diagonal(dim1=1, dim2=2)
        km = torch.exp(-g * (sq[:, :, None] + sq[:, None, :] - 2 * dot).clamp_min(0))
    else:  # cosine
        norm = x.norm(dim=2).clamp_min(1e-12)
        km = dot / (norm[:, :, None] * norm[:, None, :])
    km = km - km.mean(1, keepdim=True) - km.mean(2, keepdim=True) + km.mean((1, 2), keepdim=True)
    values, vectors = torch.linalg.eigh(km)  # ascending
    proj = vectors[..., -1] * values[..., -1].clamp_min(0).sqrt()[:, None]  # (N, hw)
    sign = torch.where((proj * x.sum(dim=2)).sum(dim=1) < 0, -1.0, 1.0).to(proj.dtype)
    return (proj * sign[:, None]).reshape(n, h, w).float()


def _fem_weights(a: torch.Tensor, k: float) -> torch.Tensor:
    """(N, C): the share of each channel's pixels above its mean + k standard deviations."""
    mean = a.mean(dim=(2, 3), keepdim=True)
    std = a.std(dim=(2, 3), keepdim=True, correction=0)
    return (a > mean + k * std).float().mean(dim=(2, 3))


def _finer_score(out: torch.Tensor, target: torch.Tensor, opts) -> torch.Tensor:
    """(N,): the target's logit against its closest rivals, each weighted by
    its probability (Finer-CAM): what tells the target from the classes it is
    easily confused with, rather than what it shares with them."""
    classes = out.shape[1]
    if classes < 2:
        raise InvalidArgument("finer_cam compares the target with other classes; this model has one")
    alpha, n = opts.get("finer_alpha", 1.0), opts.get("finer_classes", min(3, classes - 1))
    if n > classes - 1:
        raise InvalidArgument(f"finer_classes {n} is more than the {classes - 1} other classes the model has")
    y = out.float()
    y_t = y.gather(1, target[:, None])
    gap = (y - y_t).abs().detach()
    gap.scatter_(1, target[:, None], -1.0)  # the target itself sorts first, then its closest rivals
    rivals = gap.argsort(dim=1, stable=True)[:, 1 : n + 1]
    p = torch.softmax(y, dim=1).gather(1, rivals)
    return (p * (y_t - alpha * y.gather(1, rivals))).sum(1) / (p.sum(1) + 1e-9)


def _plus_plus_weights(a, g1, g2, g3) -> torch.Tensor:
    """Grad-CAM++ channel weights (eq. 19 of Chattopadhay et al.)."""
    alpha = g2 / (2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3 + 1e-6)
    alpha = torch.where(g1 != 0, alpha, torch.zeros_like(alpha))
    return (torch.relu(g1) * alpha).sum(dim=(2, 3))


def _generator(device: torch.device, seed) -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(int(seed))
    else:
        gen.seed()
    return gen


def _noisy_gradient_moments(model, x, layers, layouts: dict[str, Layout], targets, opts):
    """For each layer and target: the mean over noisy inputs of G, G^2, G^3."""
    samples = opts.get("samples", 4)
    sigma = opts.get("noise", 0.3)
    gen = _generator(x.device, opts.seed)
    k = targets.shape[1]
    sums: dict[str, list[list[torch.Tensor]]] = {}
    for _ in range(samples):
        noisy = x + sigma * torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float32).to(x.dtype)
        with capture(model, layers, grad=True) as cap:
            with torch.no_grad():
                out = first_tensor(model(noisy))
        cap.require_all()
        for j in range(k):
            score = out.gather(1, targets[:, j : j + 1]).sum()
            grads = cap.gradients(score, layers, retain_graph=j < k - 1)
            for n in layers:
                g = layouts[n].grid(grads[n]).float()
                acc = sums.setdefault(n, [[torch.zeros_like(g) for _ in range(3)] for _ in range(k)])[j]
                acc[0] += g
                acc[1] += g * g
                acc[2] += g * g * g
    return {n: [[m / samples for m in per_t] for per_t in per_layer] for n, per_layer in sums.items()}


# ---------------------------------------------------------------- CAM (GAP + Linear)


def classifier_head(model: nn.Module) -> tuple[str, nn.Linear] | None:
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = (name, m)
    return last


def _cam_weights(model: nn.Module, layer: str, a: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor):
    """The classifier's rows for the targets, after checking that the logits
    really are Linear(global-average-pool(A)) (or of relu(A): DenseNet)."""
    hint = ("cam needs a model whose explained layer feeds global average pooling and one Linear classifier "
            "(resnets, densenets, googlenet, inception_v3, mobilenet_v2, efficientnets, regnets, shufflenets, "
            "mnasnets, swin); use grad_cam, which generalises CAM to any head")
    head = classifier_head(model)
    if head is None:
        raise InvalidArgument(f"{type(model).__name__} has no Linear classifier: {hint}")
    name, fc = head
    if a.shape[1] != fc.in_features:
        raise InvalidArgument(f"layer {layer!r} has {a.shape[1]} channels but the classifier {name!r} takes "
                              f"{fc.in_features} features: {hint}")
    weight = fc.weight.detach().float()
    bias = fc.bias.detach().float() if fc.bias is not None else 0.0
    logits = logits.float()
    tol = 1e-3 if logits.dtype == torch.float32 and fc.weight.dtype in (torch.float32, torch.float64) else 3e-2
    scale = logits.abs().max().clamp_min(1.0)
    for candidate in (a, torch.relu(a)):
        pred = candidate.mean(dim=(2, 3)) @ weight.T + bias
        if ((pred - logits).abs().max() <= tol * scale).item():
            return candidate, weight[targets]  # (N, k, C)
    raise InvalidArgument(f"the logits of {type(model).__name__} are not {name!r} applied to the pooled output of "
                          f"{layer!r}: {hint}")


# ---------------------------------------------------------------- Score-CAM family


def _score_weights(model, x, a: torch.Tensor, targets: torch.Tensor, variants: list[tuple[float, float]],
                   opts) -> torch.Tensor:
    """(N, k, C) softmax weights from forward passes of masked inputs.

    variants: (mask scale, noise standard deviation) pairs, each run for
    every channel and averaged (Score-CAM: [(1, 0)]; IS-CAM: scales 1/n..1;
    SS-CAM: noisy copies). Each channel's mask is its activation upsampled to
    the input and min-max normalised. Dead channels (constant activation) all
    mask the input to 0: one forward per image stands for all of them (no NaN,
    no wasted work)."""
    n_img, c, _, _ = a.shape
    size = x.shape[-2:]
    bs = opts.get("batch_size", DEFAULT_BATCH)
    gen = _generator(x.device, opts.seed) if any(s > 0 for _, s in variants) else None

    flat = a.flatten(2)
    alive = (flat.amax(-1) - flat.amin(-1)) > 1e-8  # (N, C)
    pairs = alive.nonzero().tolist()  # [[image, channel], ...]
    dead_images = sorted({i for i in range(n_img) if not bool(alive[i].all())})
    items = [(i, ch) for i, ch in pairs] + [(i, -1) for i in dead_images]
    work = [(item, v) for item in items for v in range(len(variants))]

    k = targets.shape[1]
    totals = torch.zeros(len(items), k, device=x.device)
    item_index = {item: idx for idx, item in enumerate(items)}
    with torch.no_grad():
        for start in range(0, len(work), bs):
            chunk = work[start : start + bs]
            imgs = torch.tensor([it[0] for it, _ in chunk], device=x.device)
            chans = torch.tensor([max(it[1], 0) for it, _ in chunk], device=x.device)
            live = torch.tensor([it[1] >= 0 for it, _ in chunk], device=x.device)
            masks = normalize(upsample(a[imgs, chans][:, None], size)) * live[:, None, None, None]
            scale = torch.tensor([variants[v][0] for _, v in chunk], device=x.device)
            inp = x[imgs].float() * (masks * scale[:, None, None, None])
            sig = torch.tensor([variants[v][1] for _, v in chunk], device=x.device)
            if gen is not None:
                inp = inp + sig[:, None, None, None] * torch.randn(inp.shape, generator=gen, device=x.device)
            out = first_tensor(model(inp.to(x.dtype))).float()
            scores = out.gather(1, targets[imgs])  # (b, k)
            rows = torch.tensor([item_index[it] for it, _ in chunk], device=x.device)
            totals.index_add_(0, rows, scores)
    totals /= len(variants)

    per_channel = torch.empty(n_img, c, k, device=x.device)
    if dead_images:
        dead_rows = torch.tensor([item_index[(i, -1)] for i in dead_images], device=x.device)
        per_channel[torch.tensor(dead_images, device=x.device)] = totals[dead_rows][:, None, :]
    if pairs:
        idx = torch.tensor(pairs, device=x.device)
        per_channel[idx[:, 0], idx[:, 1]] = totals[: len(pairs)]
    return torch.softmax(per_channel, dim=1).transpose(1, 2)  # (N, k, C)


# ---------------------------------------------------------------- Ablation-CAM


def _ablation_weights(model, x, layer: str, layout: Layout, a: torch.Tensor, logits, targets, opts) -> torch.Tensor:
    """(N, k, C): relative drop of each target's logit when channel c is zeroed.
    Channels already all zero are not run (zeroing them changes nothing)."""
    n_img, c = a.shape[:2]
    bs = opts.get("batch_size", DEFAULT_BATCH)
    y = logits.float().gather(1, targets)  # (N, k)
    k = targets.shape[1]
    ablated = y[:, None, :].expand(n_img, c, k).clone()
    pairs = (a.flatten(2).abs().amax(-1) > 0).nonzero()  # (P, 2)
    current: dict[str, torch.Tensor] = {}

    def zero(output):
        return layout.zero_channels(output, current["rows"], current["chans"])

    with torch.no_grad(), replace_output(model, layer, zero):
        for start in range(0, pairs.shape[0], bs):
            chunk = pairs[start : start + bs]
            current["rows"] = torch.arange(chunk.shape[0], device=x.device)
            current["chans"] = chunk[:, 1]
            out = first_tensor(model(x[chunk[:, 0]])).float()
            ablated[chunk[:, 0], chunk[:, 1]] = out.gather(1, targets[chunk[:, 0]])
    weights = (y[:, None, :] - ablated) / y.abs().clamp_min(1e-6)[:, None, :]
    return weights.transpose(1, 2)


# ---------------------------------------------------------------- aug_smooth


def _augment(x: torch.Tensor, pick: Pick):
    """The batch of every augmentation of x, and a target picker that chooses
    on the unaugmented images and repeats the choice for every view."""
    n = x.shape[0]
    batch = torch.cat([(x.flip(-1) if flip else x) * factor for flip, factor in AUGMENTATIONS])
    clean = AUGMENTATIONS.index((False, 1.0))

    def pick_clean(logits: torch.Tensor) -> torch.Tensor:
        return pick(logits[clean * n : (clean + 1) * n]).repeat(len(AUGMENTATIONS), 1)

    return batch, pick_clean, slice(clean * n, (clean + 1) * n)


def _deaugment(m: torch.Tensor, n: int) -> torch.Tensor:
    """(views * N, k, h, w) maps -> (N, k, h, w): flipped views flipped back, averaged."""
    views = list(m.reshape(len(AUGMENTATIONS), n, *m.shape[1:]).unbind(0))
    views = [v.flip(-1) if flip else v for v, (flip, _) in zip(views, AUGMENTATIONS)]
    return torch.stack(views).mean(0)


# ---------------------------------------------------------------- FullGrad


def bias_layers(model: nn.Module) -> list[str]:
    """Conv2d layers with a bias, and every BatchNorm2d: FullGrad's bias sources."""
    return [n for n, m in model.named_modules()
            if (isinstance(m, nn.Conv2d) and m.bias is not None) or isinstance(m, nn.BatchNorm2d)]


def _effective_bias(m: nn.Module) -> torch.Tensor:
    if isinstance(m, nn.BatchNorm2d):
        mean = m.running_mean if m.running_mean is not None else torch.zeros(m.num_features, device=m.weight.device)
        var = m.running_var if m.running_var is not None else torch.ones(m.num_features, device=m.weight.device)
        weight = m.weight if m.weight is not None else torch.ones_like(mean)
        bias = m.bias if m.bias is not None else torch.zeros_like(mean)
        return (bias.float() - mean.float() * weight.float() / torch.sqrt(var.float() + m.eps)).detach()
    return m.bias.detach().float()


def _normalized_abs(t: torch.Tensor) -> torch.Tensor:
    """|t| min-max normalised over each image's (C, h, w), flattened to (N, C*h*w)."""
    t = t.abs().flatten(1)
    t = t - t.min(dim=1, keepdim=True).values
    t = t / (t.max(dim=1, keepdim=True).values + 1e-6)
    return t


@register_method(name="full_grad", family="cam", needs=("gradients",), options=("aug_smooth",),
                 own_layers=bias_layers,
                 description="FullGrad: input-gradient plus bias-gradients of every conv/BN layer",
                 source="Srinivas & Fleuret, NeurIPS 2019")
def full_grad(model, x, layers, pick, opts) -> Raw:
    if not opts.aug_smooth:
        return _full_grad(model, x, layers, pick)
    batch, pick_clean, clean = _augment(x, pick)
    raw = _full_grad(model, batch, layers, pick_clean)
    return Raw(raw.logits[clean], raw.targets[clean], _deaugment(raw.heatmap, x.shape[0]), None, layers=raw.layers)


def _full_grad(model, x, layers, pick) -> Raw:
    if not layers:
        raise InvalidArgument(f"full_grad needs Conv2d layers with biases or BatchNorm2d layers; {type(model).__name__} has none")
    modules = dict(model.named_modules())
    size = x.shape[-2:]
    xin = x.detach().clone().requires_grad_(True)
    with capture(model, layers, grad=True, from_input=True) as cap:
        with torch.enable_grad():
            out = first_tensor(model(xin))
    reached = [n for n in layers if n in cap.outputs and cap.outputs[n].dim() == 4]
    biases = [_effective_bias(modules[n])[None, :, None, None] for n in reached]
    logits = out.detach()
    targets = pick(logits)
    k = targets.shape[1]
    maps = []
    for j in range(k):
        score = out.gather(1, targets[:, j : j + 1]).sum()
        grads = torch.autograd.grad(score, [xin] + [cap.outputs[n] for n in reached], retain_graph=j < k - 1,
                                    allow_unused=True)
        gx = grads[0] if grads[0] is not None else torch.zeros_like(xin)
        total = _normalized_abs(gx.float() * xin.detach().float()).reshape(x.shape).sum(1)
        for g, b in zip(grads[1:], biases):
            if g is None:
                continue
            part = _normalized_abs(g.float() * b).reshape(g.shape).sum(1, keepdim=True)
            total = total + upsample(part, size)[:, 0]
        maps.append(total)
    heat = torch.stack(maps, dim=1)
    return Raw(logits, targets, heat, None, layers=reached)
