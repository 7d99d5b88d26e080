"""The pitfalls the CAM/attribution libraries' trackers are full of."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import LayerGradCam
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from netscope.server.explain import cams
from netscope.server.errors import FailedPrecondition, InvalidArgument
from netscope.server.explain import Options, explain, normalize
from netscope.server.explain.methods import method as method_spec, methods
from netscope.server.inspection.hooks import find_layer

from .conftest import batch, model, options_for, tiny, untouched

CHEAP = dict(steps=2, samples=2, window=8, stride=8, batch_size=64)


def maps(r, rank=0):
    return torch.stack([img[rank].upsampled for img in r])


def test_frozen_models_explain_and_match_trainable():
    m = tiny()
    frozen = copy.deepcopy(m)
    for p in frozen.parameters():
        p.requires_grad_(False)
    x = batch(2, 32, seed=21)
    for method in methods():
        a = explain(m, x, method, options=options_for(method, **CHEAP, seed=1))
        b = explain(frozen, x, method, options=options_for(method, **CHEAP, seed=1))
        torch.testing.assert_close(maps(a), maps(b), msg=method)
        assert all(p.grad is None for p in frozen.parameters())


@pytest.mark.parametrize("method", list(methods()))
def test_every_method_leaves_the_model_as_it_was(method):
    m = tiny()
    before = untouched(m)
    r = explain(m, batch(2, 32, seed=22), method, options=options_for(method, **CHEAP, seed=1))
    assert untouched(m) == before
    for img in r:
        for c in img:
            assert c.heatmap.dtype == torch.float32 and c.upsampled.dtype == torch.float32
            assert torch.isfinite(c.heatmap).all() and torch.isfinite(c.upsampled).all()
            assert c.upsampled.shape == (32, 32)


class Fragile(nn.Module):
    """Wraps a model; fails on forward passes bigger than the request's batch
    (the masked / ablated / perturbed passes), i.e. half-way through."""

    def __init__(self, inner: nn.Module, limit: int, calls: int = 10**9):
        super().__init__()
        self.inner = inner
        self.limit = limit
        self.calls = calls  # or: fail after this many passes

    def forward(self, x):
        self.calls -= 1
        if x.shape[0] > self.limit or self.calls < 0:
            raise RuntimeError("injected failure")
        return self.inner(x)


@pytest.mark.parametrize("method", ["score_cam", "ss_cam", "ablation_cam", "smooth_grad_cam_plus_plus", "occlusion",
                                    "feature_ablation", "deeplift", "integrated_gradients", "gradient_shap"])
def test_a_failure_half_way_leaves_the_model_as_it_was(method):
    """The first (logits or capture) pass succeeds; a later pass fails."""
    m = Fragile(copy.deepcopy(tiny()), limit=2, calls=2)  # smooth_grad_cam_plus_plus: the 2nd noisy pass fails
    before = untouched(m)
    with pytest.raises(RuntimeError, match="injected"):
        explain(m, batch(2, 32, seed=23), method, layers=["inner.features"] if method_spec(method).takes_layers else None,
                options=options_for(method, batch_size=8, steps=8, window=8, samples=4))
    assert untouched(m) == before
    assert m.calls < 0 or method != "smooth_grad_cam_plus_plus"


@pytest.mark.parametrize("method", ["guided_backprop", "deconvolution", "deeplift", "guided_grad_cam"])
def test_a_failure_inside_captum_after_its_hooks_are_set_leaves_the_model_as_it_was(method, monkeypatch):
    """Fail in Captum's gradient step: its hooks (and DeepLift's module
    attributes) are in place by then, on our private copy only."""
    from captum.attr._utils import attribution as captum_attribution

    seen = {}

    def boom(forward_fn, inputs, *args, **kwargs):
        seen["hooks"] = True
        raise RuntimeError("injected failure inside Captum")

    monkeypatch.setattr(captum_attribution, "compute_gradients", boom)
    m = tiny()
    before = untouched(m)
    with pytest.raises(RuntimeError, match="injected"):
        explain(m, batch(2, 32), method)
    assert seen
    assert untouched(m) == before


def test_a_failure_in_a_cam_after_the_capture_leaves_the_model_as_it_was(monkeypatch):
    m = model("resnet18")
    before = untouched(m)

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure after the capture")

    monkeypatch.setattr(cams, "_reduce", boom)
    with pytest.raises(RuntimeError, match="injected"):
        explain(m, batch(1, 64), "grad_cam")
    assert untouched(m) == before


@pytest.mark.parametrize("method", ["score_cam", "ss_cam", "is_cam"])
def test_score_cams_have_no_nan_on_dead_channels_and_match_brute_force(method):
    """Dead channels (constant activation) used to divide by zero. Ours masks
    them to 0 and runs one pass for all of them; that must equal evaluating
    each dead channel on its own."""
    m = tiny(channels=8, dead=3)
    x = batch(2, 32, seed=24)
    opts = options_for(method, steps=3, samples=1, noise=0.0, batch_size=5)
    r = explain(m, x, method, layers=["features"], options=opts)
    ours = torch.stack([img[0].heatmap for img in r])
    assert torch.isfinite(ours).all()
    with torch.no_grad():
        a = m.features(x)
        assert (a[:, :3] == 0).all()
        logits = m(x)
        t = torch.tensor([img[0].target for img in r])
        scales = [1.0] if method != "is_cam" else [(i + 1) / 3 for i in range(3)]
        scores = torch.zeros(2, 8)
        for c in range(8):
            up = torch.nn.functional.interpolate(a[:, c : c + 1], size=(32, 32), mode="bilinear", align_corners=False)
            lo, hi = up.amin((2, 3), keepdim=True), up.amax((2, 3), keepdim=True)
            mask = torch.where(hi - lo > 1e-8, (up - lo) / (hi - lo + 1e-7), torch.zeros_like(up))
            scores[:, c] = torch.stack([m(x * mask * s).gather(1, t[:, None])[:, 0] for s in scales]).mean(0)
        w = torch.softmax(scores, dim=1)
        ref = torch.relu((w[:, :, None, None] * a).sum(1))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    assert logits.shape == (2, 5)


def test_cam_is_grad_cam_times_area_on_gap_linear_heads():
    """For global-average-pool + Linear, Grad-CAM's weights are fc rows / (h w)."""
    m = model("resnet18")
    x = batch(2, 128, seed=25)
    a = explain(m, x, "cam")
    b = explain(m, x, "grad_cam")
    h, w = a[0][0].heatmap.shape
    torch.testing.assert_close(torch.stack([i[0].heatmap for i in a]), h * w * torch.stack([i[0].heatmap for i in b]),
                               rtol=1e-4, atol=1e-5)


def test_cam_on_densenet_uses_the_relu_before_pooling():
    m = model("densenet121")
    x = batch(1, 64, seed=26)
    r = explain(m, x, "cam")
    t = r[0][0].target
    with torch.no_grad():
        a = torch.relu(m.features(x))[0]
    ref = torch.relu(torch.einsum("c,chw->hw", m.classifier.weight[t], a))
    torch.testing.assert_close(r[0][0].heatmap, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["squeezenet1_1", "vgg11", "mobilenet_v3_small", "convnext_tiny"])
def test_cam_refuses_heads_that_are_not_gap_linear(arch):
    m = model(arch)
    with pytest.raises(InvalidArgument, match="grad_cam"):
        explain(m, batch(1, 64), "cam")
    # ... while grad_cam explains them at their default layer
    r = explain(m, batch(1, 64), "grad_cam")
    assert torch.isfinite(r[0][0].heatmap).all()


def test_mnasnet_inplace_relus():
    m = model("mnasnet0_5")
    x = batch(2, 96, seed=27)
    r = explain(m, x, "grad_cam")
    assert r.layers == ["layers"]
    t = torch.tensor([i[0].target for i in r])
    ref = LayerGradCam(m, m.layers).attribute(x, target=t, relu_attributions=True).detach()[:, 0]
    torch.testing.assert_close(torch.stack([i[0].heatmap for i in r]), ref, rtol=1e-4, atol=1e-6)


def _googlenet():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torchvision.models.GoogLeNet(num_classes=10, aux_logits=True, transform_input=True, init_weights=True).eval()


def test_googlenet_with_aux_heads_and_transform_input():
    m = _googlenet()
    x = batch(2, 96, seed=28)
    r = explain(m, x, "grad_cam")
    assert r.layers == ["inception5b"]
    t = torch.tensor([i[0].target for i in r])
    ref = LayerGradCam(m, m.inception5b).attribute(x, target=t, relu_attributions=True).detach()[:, 0]
    torch.testing.assert_close(torch.stack([i[0].heatmap for i in r]), ref, rtol=1e-4, atol=1e-6)
    assert explain(m, x, "cam")[0][0].heatmap.shape == r[0][0].heatmap.shape  # avgpool + dropout + fc: a CAM head
    with pytest.raises(FailedPrecondition, match="not reached"):
        explain(m, x, "grad_cam", layers=["aux1.conv"])  # aux heads only run in training
    assert not m.training


def test_inception_v3_with_aux_logits_and_transform_input():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = torchvision.models.Inception3(num_classes=10, aux_logits=True, transform_input=True, init_weights=True).eval()
    x = batch(1, 128, seed=29)
    r = explain(m, x, "grad_cam")
    assert r.layers == ["Mixed_7c"]
    t = torch.tensor([i[0].target for i in r])
    ref = LayerGradCam(m, m.Mixed_7c).attribute(x, target=t, relu_attributions=True).detach()[:, 0]
    torch.testing.assert_close(torch.stack([i[0].heatmap for i in r]), ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", list(methods()))
def test_half_precision_models_give_float32_maps_close_to_float32(dtype, method):
    """Every method: the Captum ones compute on a float32 copy of a half
    model (DeepLIFT's map was NaN everywhere in float16), the CAMs in the
    model's dtype with float32 maps. Seeded: random methods draw alike."""
    m32 = tiny()
    m16 = copy.deepcopy(m32).to(dtype)
    x = batch(2, 32, seed=30)
    a = explain(m32, x, method, options=options_for(method, batch_size=16, seed=0))
    try:
        b = explain(m16, x, method, options=options_for(method, batch_size=16, seed=0))
    except RuntimeError as exc:  # pragma: no cover - a CPU build without half kernels
        pytest.skip(f"{dtype} not supported here: {exc}")
    assert [i[0].target for i in a] == [i[0].target for i in b]
    for img in b:
        assert img[0].heatmap.dtype == torch.float32 and img[0].upsampled.dtype == torch.float32
    assert torch.isfinite(maps(b)).all(), method
    ours, ref = normalize(maps(b)), normalize(maps(a))
    # bf16 keeps ~3 significant digits: judge the map, not single pixels.
    assert float((ours - ref).abs().mean()) < 0.02, method
    if float(ref.std()) > 0:  # lime's lasso may keep no patch on this tiny net: both maps zero
        assert float(torch.corrcoef(torch.stack([ours.flatten(), ref.flatten()]))[0, 1]) > 0.98, method


def test_eigen_smooth_agrees_with_pytorch_grad_cam(monkeypatch):
    svd = np.linalg.svd

    def canonical(a, *args, **kwargs):
        u, s, vt = svd(a, *args, **kwargs)
        if vt[0].sum() < 0:
            u, vt = u.copy(), vt.copy()
            u[:, 0] *= -1
            vt[0] *= -1
        return u, s, vt

    monkeypatch.setattr(np.linalg, "svd", canonical)
    m = model("resnet18")
    x = batch(2, 128, seed=31)
    r = explain(m, x, "grad_cam", options=Options(eigen_smooth=True))
    with GradCAM(model=m, target_layers=[m.layer4]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(i[0].target) for i in r], eigen_smooth=True)
    torch.testing.assert_close(normalize(maps(r)), torch.from_numpy(ref), rtol=1e-4, atol=1e-4)


def test_aug_smooth_is_the_mean_over_flips_and_intensities():
    m = model("resnet18")
    x = batch(1, 128, seed=32)
    r = explain(m, x, "grad_cam", options=Options(aug_smooth=True))
    t = r[0][0].target
    views = []
    for flip in (False, True):
        for f in (0.9, 1.0, 1.1):
            xi = (x.flip(-1) if flip else x) * f
            h = explain(m, xi, "grad_cam", targets=t)[0][0].heatmap
            views.append(h.flip(-1) if flip else h)
    torch.testing.assert_close(r[0][0].heatmap, torch.stack(views).mean(0), rtol=1e-4, atol=1e-6)
    assert r[0][0].score == pytest.approx(float(m(x)[0, t].detach()), rel=1e-5)


def test_vision_transformer_tokens_are_reshaped_to_a_grid():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32, num_classes=10).eval()
    x = batch(2, 32, seed=33)
    r = explain(m, x, "grad_cam")
    assert r.layers == ["encoder.layers.encoder_layer_1.ln_1"]
    assert r[0][0].heatmap.shape == (4, 4)

    def reshape(t):
        return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    layer = find_layer(m, r.layers[0])
    with GradCAM(model=m, target_layers=[layer], reshape_transform=reshape) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(i[0].target) for i in r])
    torch.testing.assert_close(normalize(maps(r)), torch.from_numpy(ref), rtol=1e-4, atol=1e-4)
    with pytest.raises(InvalidArgument, match="needs a conv layer"):
        explain(m, x, "guided_grad_cam")


def test_swin_channels_last_maps_and_cam_head():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                                               window_size=[2, 2], num_classes=10).eval()
    x = batch(2, 32, seed=34)
    r = explain(m, x, "grad_cam")
    assert r.layers == ["norm"]
    with GradCAM(model=m, target_layers=[m.norm], reshape_transform=lambda t: t.permute(0, 3, 1, 2)) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(i[0].target) for i in r])
    torch.testing.assert_close(normalize(maps(r)), torch.from_numpy(ref), rtol=1e-4, atol=1e-4)
    c = explain(m, x, "cam")  # norm -> permute -> avgpool -> head is a GAP + Linear head
    assert torch.isfinite(c[0][0].heatmap).all()



def test_aug_smooth_applies_to_full_grad():
    m = tiny()
    x = batch(1, 32, seed=36)
    r = explain(m, x, "full_grad", options=Options(aug_smooth=True))
    t = r[0][0].target
    views = []
    for flip in (False, True):
        for f in (0.9, 1.0, 1.1):
            h = explain(m, (x.flip(-1) if flip else x) * f, "full_grad", targets=t)[0][0].heatmap
            views.append(h.flip(-1) if flip else h)
    torch.testing.assert_close(r[0][0].heatmap, torch.stack(views).mean(0), rtol=1e-4, atol=1e-6)
