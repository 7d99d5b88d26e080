"""Our CAMs agree with pytorch-grad-cam and Captum's LayerGradCam, number for
number, on fixed random weights at batch 1 and batch 8.

pytorch-grad-cam min-max normalises each map at the layer's resolution,
resizes it with cv2 (bilinear, half-pixel centres) and normalises again; we
return raw maps, so the comparison normalises ours the same way. Tolerance:
1e-4 relative to the map's maximum.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from pytorch_grad_cam import (
    FEM,
    KPCA_CAM,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    RandomCAM,
    ShapleyCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from netscope.server.explain import Options, Target, explain, normalize
from netscope.server.inspection.hooks import find_layer

from netscope.server.explain.methods import methods

from .conftest import batch, model, options_for

# (arch, layer, input size). densenet121 is compared at features.denseblock4:
# at the default layer ("features", i.e. norm5) the forward pass applies an
# in-place ReLU to norm5's output, which corrupts pytorch-grad-cam's saved
# activations on CPU (they alias the tensor); ours are cloned (see
# test_inplace_relu_does_not_corrupt_densenet below, checked against Captum).
MODELS = [
    ("resnet18", "layer4", 128),
    ("vgg11", "features.19", 64),
    ("densenet121", "features.denseblock4", 96),
    ("mobilenet_v3_large", "features", 128),
]
REFERENCE = {
    "grad_cam": GradCAM,
    "grad_cam_plus_plus": GradCAMPlusPlus,
    "xgrad_cam": XGradCAM,
    "hires_cam": HiResCAM,
    "layer_cam": LayerCAM,
    "eigen_cam": EigenCAM,
    "fem": FEM,
    "kpca_cam": KPCA_CAM,
    "shapley_cam": ShapleyCAM,
    "grad_cam_elementwise": GradCAMElementWise,
    "eigen_grad_cam": EigenGradCAM,
    "random_cam": RandomCAM,  # seeded alike: numpy's global generator there, RandomState(seed) here
}
# CAM methods anchored by a test of their own (another call, model or
# comparison), or not against a library: the reason, or the test.
ANCHORED_ELSEWHERE = {
    "finer_cam": "test_finer_cam_agrees_with_pytorch_grad_cam (targets=None: its own rival choice)",
    "cam": "test_pitfalls: test_cam_is_grad_cam_times_area_on_gap_linear_heads",
    "smooth_grad_cam_plus_plus": "draws torch noise (pytorch-grad-cam has no Smooth Grad-CAM++); "
                                 "test_pitfalls and test_pointing_game",
    "score_cam": "test_pitfalls: test_score_cams_have_no_nan_on_dead_channels_and_match_brute_force",
    "ss_cam": "test_pitfalls: test_score_cams_have_no_nan_on_dead_channels_and_match_brute_force",
    "is_cam": "test_pitfalls: test_score_cams_have_no_nan_on_dead_channels_and_match_brute_force",
    "ablation_cam": "pytorch-grad-cam's AblationCAM skips channels by a ratio; test_pointing_game",
    "full_grad": "test_pitfalls (aug_smooth, frozen models); test_pointing_game",
}
SEED = 11


def test_every_cam_method_has_an_anchor():
    """A method added to the registry is compared here (REFERENCE) or says where it is."""
    cams = [n for n, s in methods().items() if s.family in ("cam", "perturbation_cam")]
    missing = [n for n in cams if n not in REFERENCE and n not in ANCHORED_ELSEWHERE]
    assert not missing, f"CAM methods with no reference: {missing}; add them to REFERENCE or ANCHORED_ELSEWHERE"


def targets_for(n: int):
    """Top-1 for one image; for a batch, each image's top-1 given explicitly as
    a per-image list. (Arbitrary classes of a random VGG give maps that are
    near-total cancellations over 512 channels, where float32 summation order
    alone moves the normalised map by 1e-4: a test of rounding, not of CAMs.)"""
    if n == 1:
        return None

    def top1(m, x):
        with torch.no_grad():
            return m(x).argmax(1).tolist()

    return top1


def resolve(wanted, m, x):
    return wanted(m, x) if callable(wanted) else wanted


def assert_maps_close(ours: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4):
    scale = float(ref.abs().max()) or 1.0
    torch.testing.assert_close(ours, ref, rtol=rel, atol=rel * scale)


@pytest.fixture
def canonical_svd_sign(monkeypatch):
    """A principal component's sign is arbitrary; we fix it (component sum >= 0,
    i.e. the projection correlates positively with the channel sum). Give
    pytorch-grad-cam's numpy SVD the same convention, so the comparison checks
    everything else: centring, projection, ReLU, normalisation, resizing."""
    svd = np.linalg.svd

    def canonical(a, *args, **kwargs):
        u, s, vt = svd(a, *args, **kwargs)
        if vt[0].sum() < 0:
            u, vt = u.copy(), vt.copy()
            u[:, 0] *= -1
            vt[0] *= -1
        return u, s, vt

    monkeypatch.setattr(np.linalg, "svd", canonical)


@pytest.fixture
def canonical_kpca_sign(monkeypatch):
    """The same for kernel PCA: scikit-learn makes each component's largest
    entry positive; we make the projection correlate positively with the
    channel sum. Flip pytorch-grad-cam's projection to that convention."""
    import pytorch_grad_cam.kpca_cam as kpca

    project = kpca.get_2d_projection_kernel

    def canonical(activations, *args, **kwargs):
        proj = project(activations, *args, **kwargs)
        a = np.nan_to_num(activations).reshape(*activations.shape[:2], -1)
        channel_sum = (a - a.mean(axis=2, keepdims=True)).sum(axis=1)
        flip = (proj.reshape(len(proj), -1) * channel_sum).sum(axis=1) < 0
        proj[flip] *= -1
        return proj

    monkeypatch.setattr(kpca, "get_2d_projection_kernel", canonical)


@pytest.mark.parametrize("n", [1, 8])
@pytest.mark.parametrize("arch,layer,size", MODELS)
def test_cams_agree_with_pytorch_grad_cam(arch, layer, size, n, canonical_svd_sign, canonical_kpca_sign):
    m = model(arch)
    x = batch(n, size)
    wanted = resolve(targets_for(n), m, x)
    for method, cls in REFERENCE.items():
        r = explain(m, x, method, targets=wanted, layers=[layer], options=options_for(method, seed=SEED))
        ours = normalize(torch.stack([img[0].upsampled for img in r]))
        assert ours.shape == (n, size, size)
        chosen = [img[0].target for img in r]
        if wanted is not None:
            assert chosen == wanted
        np.random.seed(SEED)
        with cls(model=m, target_layers=[find_layer(m, layer)]) as cam:
            ref = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in chosen]))
        assert float(ref.max()) > 0.5, f"{method}: degenerate reference map"
        assert_maps_close(ours, ref)


@pytest.mark.parametrize("n", [1, 8])
@pytest.mark.parametrize("arch,layer,size", MODELS)
def test_finer_cam_agrees_with_pytorch_grad_cam(arch, layer, size, n):
    """Each image's top-1 against its three closest classes, as
    pytorch-grad-cam's FinerCAM picks them when given no targets."""
    m = model(arch)
    x = batch(n, size, seed=5)
    r = explain(m, x, "finer_cam", targets=resolve(targets_for(n), m, x), layers=[layer])
    ours = normalize(torch.stack([img[0].upsampled for img in r]))
    with FinerCAM(model=m, target_layers=[find_layer(m, layer)]) as cam:
        ref = torch.from_numpy(cam(input_tensor=x, targets=None))
    assert float(ref.max()) > 0.5, "degenerate reference map"
    assert_maps_close(ours, ref)


def test_finer_cam_options_change_the_score_as_documented():
    """finer_alpha 0 leaves the target's own logit, weighted the same for every
    rival: plain Grad-CAM. finer_classes picks how many rivals count."""
    m = model("resnet18")
    x = batch(2, 64, seed=6)
    plain = explain(m, x, "grad_cam", layers=["layer4"])
    no_rivals = explain(m, x, "finer_cam", layers=["layer4"], options=Options(finer_alpha=0.0))
    for a, b in zip(plain, no_rivals):
        assert_maps_close(b[0].heatmap, a[0].heatmap)
    one = explain(m, x, "finer_cam", layers=["layer4"], options=Options(finer_classes=1))
    three = explain(m, x, "finer_cam", layers=["layer4"])
    assert not torch.allclose(one[0][0].heatmap, three[0][0].heatmap)


@pytest.mark.parametrize("n", [1, 8])
@pytest.mark.parametrize("arch,layer,size", MODELS)
def test_grad_cam_agrees_with_captum_layer_grad_cam(arch, layer, size, n):
    m = model(arch)
    x = batch(n, size, seed=2)
    r = explain(m, x, "grad_cam", targets=resolve(targets_for(n), m, x), layers=[layer])
    chosen = torch.tensor([img[0].target for img in r])
    raw = LayerGradCam(m, find_layer(m, layer)).attribute(x, target=chosen, relu_attributions=True).detach()
    up = LayerAttribution.interpolate(raw, (size, size), "bilinear")
    assert_maps_close(torch.stack([img[0].heatmap for img in r]), raw[:, 0])
    assert_maps_close(torch.stack([img[0].upsampled for img in r]), up[:, 0])


def test_inplace_relu_does_not_corrupt_densenet():
    """At densenet's default layer (norm5, followed by an in-place ReLU) our
    Grad-CAM equals Captum's, which clones the layer output as we do."""
    m = model("densenet121")
    x = batch(2, 96, seed=3)
    r = explain(m, x, "grad_cam")
    assert r.layers == ["features"]
    chosen = torch.tensor([img[0].target for img in r])
    raw = LayerGradCam(m, m.features).attribute(x, target=chosen, relu_attributions=True).detach()
    assert_maps_close(torch.stack([img[0].heatmap for img in r]), raw[:, 0])


def test_layer_cam_fuses_several_layers_like_pytorch_grad_cam():
    m = model("resnet18")
    x = batch(2, 128, seed=4)
    layers = ["layer2", "layer3", "layer4"]
    r = explain(m, x, "layer_cam", layers=layers)
    assert r.layers == layers
    chosen = [img[0].target for img in r]
    ours = normalize(torch.stack([img[0].upsampled for img in r]))
    with LayerCAM(model=m, target_layers=[find_layer(m, n) for n in layers]) as cam:
        ref = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in chosen]))
    assert_maps_close(ours, ref)


def test_top_k_maps_agree_with_pytorch_grad_cam_per_class():
    """Top-3: one map per class, each equal to pytorch-grad-cam's for that class."""
    m = model("resnet18")
    x = batch(2, 128, seed=5)
    r = explain(m, x, "grad_cam", targets=Target(top_k=3))
    with torch.no_grad():
        logits = m(x)
    assert [[c.target for c in img] for img in r] == logits.topk(3, dim=1).indices.tolist()
    for rank in range(3):
        chosen = [img[rank].target for img in r]
        with GradCAM(model=m, target_layers=[m.layer4]) as cam:
            ref = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in chosen]))
        assert_maps_close(normalize(torch.stack([img[rank].upsampled for img in r])), ref)
        torch.testing.assert_close(torch.tensor([img[rank].score for img in r]), logits.gather(1, torch.tensor(chosen)[:, None])[:, 0])


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf", "poly", "linear", "cosine"])
def test_kpca_cam_kernels_agree_with_scikit_learn(kernel):
    """Each kernel against scikit-learn's KernelPCA on the layer's centred
    channel vectors (activations taken with a forward hook written here),
    signed by our convention, ReLU'd, at the layer's resolution."""
    from sklearn.decomposition import KernelPCA

    m = model("resnet18")
    x = batch(2, 128, seed=7)
    seen = []
    handle = m.layer3.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().clone()))
    try:
        r = explain(m, x, "kpca_cam", layers=["layer3"], options=Options(kpca_kernel=kernel, kpca_gamma=0.01))
    finally:
        handle.remove()
    a = seen[0].double().numpy()
    for i, img in enumerate(r):
        v = a[i].reshape(a.shape[1], -1).T
        v = v - v.mean(axis=0)
        proj = KernelPCA(n_components=1, kernel=kernel, gamma=0.01).fit_transform(v)[:, 0]
        if (proj * v.sum(axis=1)).sum() < 0:
            proj = -proj
        ref = torch.from_numpy(np.maximum(proj, 0).reshape(a.shape[2:])).float()
        assert float(ref.max()) > 0
        assert_maps_close(img[0].heatmap, ref)


def test_shapley_cam_is_grad_cam_less_a_hessian_term_where_the_head_curves():
    """mobilenet_v3's head (Linear, Hardswish, Linear) has curvature, so the
    Hessian term moves the map; resnet18's (pool, Linear) has none, so
    ShapleyCAM is Grad-CAM there."""
    x = batch(2, 128, seed=8)
    mnv3 = model("mobilenet_v3_large")
    s = explain(mnv3, x, "shapley_cam", targets=[1, 2])
    g = explain(mnv3, x, "grad_cam", targets=[1, 2])
    assert not torch.allclose(s[0][0].heatmap, g[0][0].heatmap, rtol=1e-3, atol=1e-6)
    r18 = model("resnet18")
    s, g = explain(r18, x, "shapley_cam", targets=[1, 2]), explain(r18, x, "grad_cam", targets=[1, 2])
    for a, b in zip(s, g):
        assert_maps_close(a[0].heatmap, b[0].heatmap)
