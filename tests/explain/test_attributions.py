"""The Captum-backed methods return what calling Captum directly returns."""
from __future__ import annotations

import copy

import numpy as np
import pytest
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

from netscope.server.explain.attributions import baseline_of, patch_mask
from netscope.server.explain import Options, explain

from .conftest import batch, model, tiny

SIZE = 64


@pytest.fixture(scope="module")
def r18():
    return model("resnet18")


@pytest.fixture(scope="module")
def x():
    return batch(2, SIZE, seed=11)


def fwd(m):
    return lambda inp: m(inp)


def ours(m, x, method, **opts):
    r = explain(m, x, method, options=Options(**opts))
    attr = torch.stack([img[0].attribution for img in r])
    heat = torch.stack([img[0].heatmap for img in r])
    torch.testing.assert_close(heat, attr.sum(1))
    torch.testing.assert_close(torch.stack([img[0].upsampled for img in r]), heat)
    return attr, torch.tensor([img[0].target for img in r])


def close(a, b, rel=1e-4):
    scale = float(b.abs().max()) or 1.0
    torch.testing.assert_close(a, b, rtol=rel, atol=rel * scale)


# method -> (our options, the direct Captum call given a private copy of the model, input, targets)
DIRECT = {
    "saliency": ({}, lambda m, x, t: Saliency(fwd(m)).attribute(x, target=t)),
    "input_x_gradient": ({}, lambda m, x, t: InputXGradient(fwd(m)).attribute(x, target=t)),
    "guided_backprop": ({}, lambda m, x, t: GuidedBackprop(m).attribute(x, target=t)),
    "deconvolution": ({}, lambda m, x, t: Deconvolution(m).attribute(x, target=t)),
    "guided_grad_cam": ({}, lambda m, x, t: GuidedGradCam(m, m.layer4).attribute(x, target=t, interpolate_mode="bilinear")),
    "integrated_gradients": (dict(steps=8, batch_size=16), lambda m, x, t: IntegratedGradients(fwd(m)).attribute(
        x, baselines=torch.zeros_like(x), target=t, n_steps=8, internal_batch_size=16)),
    "occlusion": (dict(window=16, stride=8), lambda m, x, t: Occlusion(fwd(m)).attribute(
        x, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), baselines=torch.zeros_like(x), target=t,
        perturbations_per_eval=32)),
    "feature_ablation": (dict(window=16, baseline="mean"), lambda m, x, t: FeatureAblation(fwd(m)).attribute(
        x, baselines=x.mean(dim=(2, 3), keepdim=True).expand_as(x), target=t,
        feature_mask=(torch.arange(SIZE)[:, None] // 16 * 4 + torch.arange(SIZE)[None, :] // 16)[None, None],
        perturbations_per_eval=32)),
}


@pytest.mark.parametrize("method", list(DIRECT))
def test_matches_captum(method, r18, x):
    opts, direct = DIRECT[method]
    attr, targets = ours(r18, x, method, **opts)
    ref = direct(copy.deepcopy(r18), x.clone(), targets).detach()
    close(attr, ref)


@pytest.mark.parametrize("nt_type,method", [("smoothgrad", "saliency"), ("smoothgrad_sq", "guided_backprop"),
                                            ("vargrad", "input_x_gradient")])
def test_noise_tunnel_matches_captum(nt_type, method, r18, x):
    attr, targets = ours(r18, x, method, noise_tunnel=nt_type, nt_samples=3, nt_stdev=0.2, seed=7)
    m = copy.deepcopy(r18)
    algo = {"saliency": lambda: Saliency(fwd(m)), "guided_backprop": lambda: GuidedBackprop(m),
            "input_x_gradient": lambda: InputXGradient(fwd(m))}[method]()
    torch.manual_seed(7)
    ref = NoiseTunnel(algo).attribute(x.clone(), nt_type=nt_type, nt_samples=3, stdevs=0.2, target=targets,
                                      nt_samples_batch_size=32).detach()
    close(attr, ref)


@pytest.mark.parametrize("method,cls,samples", [("lime", Lime, 12), ("kernel_shap", KernelShap, 12),
                                                ("shapley_value_sampling", ShapleyValueSampling, 2)])
def test_surrogate_and_shapley_methods_match_captum(method, cls, samples, r18, x):
    """Window-sized patches as the features, one surrogate (or set of
    permutations) per image, the same seed: the same numbers as Captum."""
    attr, targets = ours(r18, x, method, window=16, samples=samples, seed=3)
    mask = (torch.arange(SIZE)[:, None] // 16 * 4 + torch.arange(SIZE)[None, :] // 16)[None, None]
    m = copy.deepcopy(r18)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        np.random.seed(3)
        ref = cls(fwd(m)).attribute(x.clone(), baselines=torch.zeros_like(x), target=targets, feature_mask=mask,
                                    n_samples=samples, perturbations_per_eval=32).detach()
    close(attr, ref)
    patches = attr[0].sum(0).unfold(0, 16, 16).unfold(1, 16, 16)  # (4, 4, 16, 16): constant per patch
    assert torch.allclose(patches, patches[..., :1, :1].expand_as(patches), atol=1e-6)


def test_gradient_shap_matches_captum(r18, x):
    attr, targets = ours(r18, x, "gradient_shap", samples=4, noise=0.1, seed=3)
    torch.manual_seed(3)
    np.random.seed(3)
    ref = GradientShap(fwd(copy.deepcopy(r18))).attribute(x.clone(), baselines=torch.zeros_like(x[:1]), n_samples=4,
                                                         stdevs=0.1, target=targets).detach()
    close(attr, ref)


@pytest.mark.parametrize("baseline", ["zeros", "blur", "mean", "noise"])
def test_integrated_gradients_baselines(baseline, r18, x):
    attr, targets = ours(r18, x, "integrated_gradients", steps=6, baseline=baseline, seed=5)
    base = baseline_of(baseline, x, 5)
    ref = IntegratedGradients(fwd(r18)).attribute(x.clone(), baselines=base, target=targets, n_steps=6,
                                                  internal_batch_size=32).detach()
    close(attr, ref)
    if baseline != "zeros":
        assert not torch.equal(base, torch.zeros_like(x))


def test_deeplift_matches_captum():
    m = tiny()
    x = batch(3, 32, seed=12)
    attr, targets = ours(m, x, "deeplift")
    ref = DeepLift(copy.deepcopy(m)).attribute(x.clone(), baselines=torch.zeros_like(x), target=targets).detach()
    close(attr, ref)


def test_deeplift_works_on_resnets_that_reuse_their_relu(r18, x):
    """Captum's DeepLift refuses a module called twice (each ResNet block's
    relu); ours gives each call its own copy in the private module tree, and
    the attributions keep DeepLIFT's summation-to-delta property."""
    attr, targets = ours(r18, x, "deeplift")
    with torch.no_grad():
        delta = r18(x).gather(1, targets[:, None])[:, 0] - r18(torch.zeros_like(x)).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), delta, rtol=1e-3, atol=1e-4)
    with pytest.raises(RuntimeError, match="used more than once"):
        DeepLift(copy.deepcopy(r18)).attribute(x.clone(), target=targets)


def test_patch_mask_tiles_the_image():
    mask = patch_mask(torch.zeros(1, 3, 10, 10), 4)
    assert mask.shape == (1, 1, 10, 10)
    assert mask.unique().tolist() == list(range(9))
