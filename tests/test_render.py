"""Rendering explanations: signed attributions are drawn as Captum draws them
(centred on zero, outliers clipped, blended as an alpha mask), CAMs keep the
heat look, and both can be overridden per request (RenderOptions.sign,
clip_percentile) through the server, the client and the CLI."""
from __future__ import annotations

import os

import cv2
import grpc
import numpy as np
import pytest
from captum.attr._utils.visualization import _normalize_attr

from netscope.client import NetscopeError
from netscope.server import imaging
from netscope.server.explain import rendering
from netscope.v1 import inspector_pb2 as pb

from .conftest import encode


def decode_png(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def quadrants() -> np.ndarray:
    """A 40x40 map: +1 top-left, -1 top-right, 0 bottom half."""
    m = np.zeros((40, 40), np.float32)
    m[:20, :20] = 1.0
    m[:20, 20:] = -1.0
    return m


# ---------------------------------------------------------------- pixels


def test_all_draws_positive_red_negative_blue_zero_white():
    heat = imaging.signed_heatmap(quadrants(), "all")
    assert heat[5, 5].tolist() == [255, 0, 0]
    assert heat[5, 35].tolist() == [0, 0, 255]
    assert heat[35, 10].tolist() == [255, 255, 255]


def test_signed_overlay_leaves_the_photo_where_the_map_is_zero():
    rgb = np.full((40, 40, 3), (30, 160, 90), np.uint8)
    out = imaging.signed_overlay(rgb, quadrants(), "all", alpha=1.0)
    assert out[35, 5].tolist() == [30, 160, 90]  # zero: the photo, untinted
    assert out[5, 5].tolist() == [255, 0, 0]  # strongest positive at full opacity: red
    assert out[5, 35].tolist() == [0, 0, 255]
    half = imaging.signed_overlay(rgb, quadrants(), "all", alpha=0.5)
    assert half[5, 5].tolist() == [142, 80, 45]  # half red, half photo


@pytest.mark.parametrize("sign, top_left, top_right", [
    ("positive", [255, 0, 0], [255, 255, 255]),
    ("negative", [255, 255, 255], [0, 0, 255]),
    ("absolute_value", [0, 140, 0], [0, 140, 0]),
])
def test_one_sign_modes_draw_only_that_sign(sign, top_left, top_right):
    heat = imaging.signed_heatmap(quadrants(), sign)
    assert heat[5, 5].tolist() == top_left
    assert heat[5, 35].tolist() == top_right
    assert heat[35, 5].tolist() == [255, 255, 255]


@pytest.mark.parametrize("sign", ["all", "positive", "negative", "absolute_value"])
@pytest.mark.parametrize("percentile", [0.0, 2.0, 10.0, 50.0])
def test_percentile_clipping_matches_captum(sign, percentile):
    rng = np.random.default_rng(3)
    attr = (rng.standard_normal((64, 48)) * rng.random((64, 48)) ** 4).astype(np.float32)
    ours = imaging.normalize_attr(attr, sign, percentile)
    np.testing.assert_allclose(ours, _normalize_attr(attr, sign, percentile), rtol=0, atol=1e-6)
    if percentile > 0:  # the outliers saturate
        assert np.isclose(np.abs(ours).max(), 1.0) and (np.abs(ours) == 1.0).sum() > 1


def test_a_map_with_nothing_of_the_sign_is_blank_not_a_division_by_zero():
    assert not imaging.normalize_attr(np.zeros((8, 8)), "all").any()
    assert not imaging.normalize_attr(-np.ones((8, 8)), "positive").any()


def test_auto_sign_per_method():
    assert rendering.render_defaults("grad_cam") == "heat"
    assert rendering.render_defaults("score_cam") == "heat"
    for signed in ("integrated_gradients", "input_x_gradient", "deeplift", "gradient_shap", "occlusion",
                   "guided_backprop", "deconvolution"):
        assert rendering.render_defaults(signed) == "all", signed
    assert rendering.render_defaults("saliency") == "absolute_value"
    assert rendering.render_defaults("integrated_gradients", "vargrad") == "absolute_value"
    assert rendering.render_defaults("integrated_gradients", "smoothgrad") == "all"


# ---------------------------------------------------------------- through the server


@pytest.fixture(scope="module")
def chelsea_input(photos):
    """The photo as the model sees it (resize 256, crop 224), RGB uint8."""
    return imaging.fit(photos["chelsea"], imaging.Preprocessing())


def test_integrated_gradients_overlay_no_longer_tints_the_photo(client, photos, chelsea_input, tmp_path):
    [[cm]] = client.explain("r18", [encode(photos["chelsea"], ".png")], method="integrated_gradients", steps=8,
                            overlay=True, heatmap_png=True)
    shown = decode_png(cm.overlay_png)
    photo = chelsea_input.astype(np.int16)
    assert shown.shape == photo.shape
    # Where the attribution is small (below 2% of the saturating value), the
    # overlay is the photo within a few levels; min-max jet at 0.5 moved
    # every pixel by tens of levels.
    norm = imaging.normalize_attr(cm.heatmap_upsampled, "all")
    quiet = np.abs(norm) < 0.02
    assert quiet.mean() > 0.1
    diff = np.abs(shown.astype(np.int16) - photo).max(axis=2)
    assert np.percentile(diff[quiet], 95) <= 3
    old = imaging.overlay(chelsea_input, cm.heatmap_upsampled, "jet", 0.5).astype(np.int16)
    assert np.median(np.abs(old - photo).max(axis=2)[quiet]) > 20
    # and the attribution is drawn: strong positive pixels are red-dominant
    strong = norm > 0.9
    assert strong.any() and (shown[strong, 0].astype(int) - shown[strong, 2] > 50).mean() > 0.9
    heat = decode_png(cm.heatmap_png)
    assert (heat[quiet] >= 245).all(axis=1).mean() > 0.95  # near-zero is white on bwr
    if os.environ.get("NETSCOPE_RENDER_OUT"):  # to look at it
        cv2.imwrite(os.environ["NETSCOPE_RENDER_OUT"],
                    cv2.cvtColor(np.hstack([chelsea_input, shown, heat]), cv2.COLOR_RGB2BGR))


def test_cams_keep_the_heat_look(client, photos, chelsea_input):
    [[cm]] = client.explain("r18", [encode(photos["chelsea"], ".png")], method="grad_cam", overlay=True)
    expected = imaging.overlay(chelsea_input, cm.heatmap_upsampled, "jet", 0.5)
    assert np.abs(decode_png(cm.overlay_png).astype(int) - expected).max() <= 1


def test_sign_and_clip_percentile_per_request(client, photos, chelsea_input):
    image = [encode(photos["chelsea"], ".png")]
    [[heat]] = client.explain("r18", image, method="input_x_gradient", overlay=True, sign="heat")
    expected = imaging.overlay(chelsea_input, heat.heatmap_upsampled, "jet", 0.5)
    assert np.abs(decode_png(heat.overlay_png).astype(int) - expected).max() <= 1
    [[pos]] = client.explain("r18", image, method="input_x_gradient", heatmap_png=True, sign="positive",
                             clip_percentile=20)
    expected = imaging.signed_heatmap(pos.heatmap_upsampled, "positive", clip_percentile=20)
    assert np.abs(decode_png(pos.heatmap_png).astype(int) - expected).max() <= 1
    [[cam]] = client.explain("r18", image, method="grad_cam", heatmap_png=True, sign="all", colormap="bwr")
    assert decode_png(cam.heatmap_png).shape == (224, 224, 3)


@pytest.mark.parametrize("render, field, words", [
    ({"sign": "diverging"}, "render.sign", "choose one of auto, heat, all"),
    ({"clip_percentile": 100}, "render.clip_percentile", "[0, 100)"),
    ({"clip_percentile": float("nan")}, "render.clip_percentile", "[0, 100)"),
    ({"clip_percentile": -1}, "render.clip_percentile", "[0, 100)"),
    ({"sign": "heat", "clip_percentile": 5}, "render.clip_percentile", "signed modes"),
    ({"colormap": "rainbowish"}, "", "unknown colormap"),
    ({"alpha": 1.5}, "render.alpha", "[0, 1]"),
])
def test_bad_render_options_are_invalid_argument_before_work(client, photos, render, field, words):
    with pytest.raises(NetscopeError) as err:
        client.explain("r18", [encode(photos["chelsea"], ".png")], method="integrated_gradients", overlay=True,
                       **render)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in err.value.message
    if field:
        assert field in [f for f, _ in err.value.field_violations]


def test_clip_percentile_on_a_cam_without_a_sign_names_the_fix(client, photos):
    with pytest.raises(NetscopeError) as err:
        client.explain("r18", [encode(photos["chelsea"], ".png")], method="grad_cam", overlay=True,
                       clip_percentile=5)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "grad_cam is drawn as heat" in err.value.message


def test_cli_sign_and_clip_percentile(run_cli, photo_files, tmp_path):
    out = tmp_path / "ig"
    code, stdout, stderr = run_cli("explain", str(photo_files["chelsea"]), "--model", "r18", "--method",
                                   "input_x_gradient", "--sign", "positive", "--clip-percentile", "5",
                                   "--out", str(out))
    assert code == 0, stderr
    [png] = list((out / "overlays").rglob("*.png"))
    assert decode_png(png.read_bytes()).shape == (224, 224, 3)
    code, _, stderr = run_cli("explain", str(photo_files["chelsea"]), "--model", "r18", "--sign", "diverging",
                              "--out", str(tmp_path / "bad"))
    assert code == 2 and "--sign" in stderr


def test_wire_default_is_auto():
    assert pb.RenderOptions().sign == "" and not pb.RenderOptions().HasField("clip_percentile")


def test_auto_sign_follows_the_registry():
    """Every method's auto sign comes from its MethodSpec: a new method is drawn right without a list here."""
    from netscope.server.explain import methods

    for name, spec in methods.methods().items():
        expected = "heat" if spec.family != "attribution" else "all" if spec.signed else "absolute_value"
        assert rendering.render_defaults(name) == expected, name
