"""Every classification architecture torchvision lists (and ours) works at its
defaults through a real server on loopback, as a new user would try it: load
with weights none, Predict a photo, grad_cam and GetFeatureMaps at the default
layer, all finite, unload.

The default layer of every architecture must be declared for its family in
server/explain/default_layers.py, be called by the forward pass (grad_cam fails with
FAILED_PRECONDITION otherwise) and have a spatial output: (C, H, W), (H, W, C)
for Swin, or patch tokens on a square grid (T, D) for vision transformers.

The large architectures (SLOW_PARAMS / SLOW_GFLOPS below) are marked slow and
skipped unless asked for: `pytest -m slow tests/test_architectures.py`.
"""
from __future__ import annotations

import inspect
import math

import grpc
import numpy as np
import pytest
import torchvision
from torch import nn

from netscope.client import NetscopeError
from netscope.server.explain import default_layers
from netscope.server.models.registry import default_recipe
from netscope.training.models import OUR_ARCHITECTURES

from .conftest import encode, photo

# Above either, an architecture's round trip takes over ~4 s on 2 busy CPU
# cores (tests/test_architectures.py --durations=0), so it runs only with
# -m slow, unless it is its family's smallest: every family runs by default.
SLOW_PARAMS = 100e6
SLOW_GFLOPS = 8.0  # torchvision's published GFLOPS at the DEFAULT weights' crop


def torchvision_classifiers() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def module_class(arch: str) -> str:
    """The class an architecture's builder returns, without building it."""
    if arch in OUR_ARCHITECTURES:
        from netscope.training.models import build_model

        return type(build_model(arch, 10)).__name__
    builder = torchvision.models.get_model_builder(arch)
    return inspect.signature(builder).return_annotation.__name__


def _meta(arch: str) -> dict:
    try:
        return torchvision.models.get_model_weights(arch).DEFAULT.meta
    except (ValueError, KeyError, AttributeError):
        return {}  # ours: small by construction


def _cost(arch: str) -> tuple[float, int]:
    meta = _meta(arch)
    return float(meta.get("_ops", 0.0)), int(meta.get("num_params", 0))


ARCHS = [*torchvision_classifiers(), *OUR_ARCHITECTURES]
SMALLEST_OF_FAMILY = {min((a for a in ARCHS if module_class(a) == c), key=_cost)
                      for c in {module_class(a) for a in ARCHS}}


def is_large(arch: str) -> bool:
    gflops, params = _cost(arch)
    return arch not in SMALLEST_OF_FAMILY and (params > SLOW_PARAMS or gflops > SLOW_GFLOPS)


PARAMS = [pytest.param(a, id=a, marks=[pytest.mark.slow] if is_large(a) else []) for a in ARCHS]


@pytest.fixture(scope="module")
def chelsea_jpeg() -> bytes:
    return encode(photo("chelsea"))


def spatial(shape: list[int]) -> bool:
    """(C, H, W) / (H, W, C) maps, or (T, D) tokens with T or T - 1 a square."""
    if len(shape) == 3:
        return min(shape) >= 1
    if len(shape) == 2:
        return any(t > 0 and math.isqrt(t) ** 2 == t for t in (shape[0], shape[0] - 1))
    return False


@pytest.mark.parametrize("arch", PARAMS)
def test_architecture_at_its_defaults(arch, request, server, client, chelsea_jpeg):
    if is_large(arch) and "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip(f"{arch} is large (> {SLOW_PARAMS / 1e6:.0f}M parameters or > {SLOW_GFLOPS} GFLOPS): -m slow")
    mid = f"arch-{arch}"
    info = client.load_model(mid, arch, weights="none")
    try:
        loaded = server.registry.get(mid)
        family = default_layers.family_of(loaded.module, arch)
        assert family is not None, (f"{type(loaded.module).__name__} ({arch}) has no default layer declared in "
                                    f"server/explain/default_layers.py FAMILIES")
        layer = info.default_cam_layer
        assert layer == family.resolve(loaded.module), "the default is the family's declaration, not the fallback"
        # The recipe fits the model that weights none builds (vit_h_14: 224 px, not its weights' 518).
        size = getattr(loaded.module, "image_size", None)
        if isinstance(size, int):
            assert info.input_size[1:] == [size, size]
        assert info.input_size[1:] == list(default_recipe(arch, loaded.module).crop)

        (pred,) = client.predict(mid, chelsea_jpeg, k=5, probabilities=True)
        assert len(pred.top_k) == 5
        assert np.isfinite(pred.probabilities).all() and abs(float(pred.probabilities.sum()) - 1) < 1e-3
        assert all(math.isfinite(s.logit) for s in pred.top_k)

        ((cam,),) = client.explain(mid, chelsea_jpeg, method="grad_cam")
        assert cam.heatmap.ndim == 2 and min(cam.heatmap.shape) >= 1
        assert np.isfinite(cam.heatmap).all() and np.isfinite(cam.heatmap_upsampled).all()
        assert list(cam.heatmap_upsampled.shape) == info.input_size[1:]

        (maps,) = client.feature_maps(mid, chelsea_jpeg, layer, channels=[0, 1])
        fm = maps[layer]
        assert spatial(fm.shape), f"default layer {layer!r} of {arch} outputs {fm.shape}, not a spatial map"
        assert fm.activation is not None and np.isfinite(fm.activation).all()
        assert np.isfinite(fm.channel_mean).all() and np.isfinite(fm.channel_max).all()

        # A container the model iterates itself (MaxViT's `blocks`) is never
        # called: naming it is INVALID_ARGUMENT with its children named.
        never_called = [n for n, mod in loaded.module.named_modules() if type(mod).forward is nn.Module.forward]
        for name in never_called[:1]:
            for call in (lambda: client.explain(mid, chelsea_jpeg, method="grad_cam", layers=name),
                         lambda: client.feature_maps(mid, chelsea_jpeg, name)):
                with pytest.raises(NetscopeError) as err:
                    call()
                assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.reason == "LAYER_NOT_CALLED"
                assert f"{name}." in str(err.value), "the message names its children"
    finally:
        client.unload_model(mid)


def test_every_family_is_declared_once_and_used():
    """Every architecture, large ones included, has its family's default layer
    declared (by class); every declaration serves at least one architecture."""
    classes = [f.cls for f in default_layers.FAMILIES]
    assert len(classes) == len(set(classes))
    used = {a: module_class(a) for a in ARCHS}
    undeclared = sorted(f"{a} ({c})" for a, c in used.items() if c not in classes)
    assert not undeclared, f"declare a default layer in server/explain/default_layers.py FAMILIES for: {undeclared}"
    assert not set(classes) - set(used.values()), "a declaration no architecture uses"


def test_untrained_vit_load_note_says_its_head_is_zero(client):
    """torchvision zero-initialises a ViT's head: untrained, every class has
    the same logit and every gradient map is zero. The load note says so."""
    info = client.load_model("arch-note-vit", "vit_b_32", weights="none")
    try:
        assert "head" in info.note and "all zeros" in info.note and "trained weights" in info.note
    finally:
        client.unload_model("arch-note-vit")
    info = client.load_model("arch-note-r18", "resnet18", weights="none")
    try:
        assert info.note == "untrained (random weights, seed 0)"
    finally:
        client.unload_model("arch-note-r18")


def test_maxvit_at_its_defaults_from_the_cli(run_cli, photo_files, tmp_path):
    """The new user's path of the issue: MaxViT's default layer used to be its
    `blocks` ModuleList (FAILED_PRECONDITION); naming it now says what to name."""
    code, out, err = run_cli("load", "arch-cli-maxvit", "maxvit_t", "--weights", "none", "--json")
    assert code == 0, err
    try:
        code, out, err = run_cli("explain", "--model", "arch-cli-maxvit", "--out", str(tmp_path / "cams"),
                                 str(photo_files["chelsea"]))
        assert code == 0, err
        assert list((tmp_path / "cams").rglob("*.png")), out
        code, out, err = run_cli("features", "--model", "arch-cli-maxvit", "--layer", "blocks", "--out",
                                 str(tmp_path / "maps"), str(photo_files["chelsea"]))
        assert code == 1 and "INVALID_ARGUMENT" in err and "blocks.3" in err, err
    finally:
        run_cli("unload", "arch-cli-maxvit")
