"""Explain through a real server: the same numbers as in-process, the
pictures drawn on the image as the model saw it, and bad input answered with
the right status while the server keeps serving."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import grpc
import numpy as np
import pytest
import torch

from netscope.server import explain as domain
from netscope.server import imaging
from netscope.server.models.registry import default_recipe, imagenet_labels

from ..test_predict import expect


@pytest.fixture(autouse=True)
def still_serving(client):
    yield
    assert client.health() == "SERVING"


CASES = [
    ("grad_cam", dict(top_k=2), {}),
    ("layer_cam", dict(layers=["layer3", "layer4"]), {}),
    ("eigen_cam", {}, {}),
    ("grad_cam_plus_plus", dict(target=281), dict(aug_smooth=True)),
    ("integrated_gradients", dict(target="tabby"), dict(steps=4, baseline="blur")),
    ("saliency", {}, dict(noise_tunnel="smoothgrad", nt_samples=2, nt_stdev=0.1, seed=5)),
    ("occlusion", {}, dict(window=56, stride=56, batch_size=8)),
    ("guided_grad_cam", {}, {}),
    ("fem", {}, dict(fem_k=1.5)),
    ("kpca_cam", {}, dict(kpca_kernel="rbf", kpca_gamma=0.05)),
    ("shapley_cam", dict(top_k=2), {}),
    ("kernel_shap", {}, dict(window=56, samples=10, seed=2)),
    ("finer_cam", dict(top_k=2), dict(finer_alpha=0.5, finer_classes=2)),
    ("random_cam", {}, dict(weight_bound=0.5, seed=3)),  # an option with no typed field: the parameters map
]


@pytest.mark.parametrize("method,kwargs,options", CASES, ids=[c[0] for c in CASES])
def test_maps_equal_in_process(client, r18, pictures, x, method, kwargs, options):
    got = client.explain("r18", pictures, method=method, **kwargs, **options)
    target = kwargs.get("target")
    targets = domain.Target(top_k=kwargs["top_k"]) if "top_k" in kwargs else target
    ref = domain.explain(r18, x, method, targets=targets, layers=kwargs.get("layers"),
                         options=domain.Options(**options), arch="resnet18", class_names=imagenet_labels(1000))
    assert len(got) == len(ref.images)
    for image, expected in zip(got, ref.images):
        assert [c.target for c in image] == [c.target for c in expected]
        for cls, exp in zip(image, expected):
            assert cls.label == exp.label and cls.score == pytest.approx(exp.score, rel=1e-5, abs=1e-5)
            scale = float(np.abs(exp.upsampled.numpy()).max()) or 1.0
            np.testing.assert_allclose(cls.heatmap, exp.heatmap.numpy(), rtol=1e-5, atol=1e-5 * scale)
            np.testing.assert_allclose(cls.heatmap_upsampled, exp.upsampled.numpy(), rtol=1e-5, atol=1e-5 * scale)
            assert cls.heatmap.dtype == np.float32


def test_overlay_is_drawn_on_the_image_the_model_saw(client, r18, pictures, x):
    (image,) = client.explain("r18", pictures[:1], overlay=True, heatmap_png=True, colormap="viridis", alpha=0.4)
    cls = image[0]
    recipe = default_recipe("resnet18")
    want = imaging.overlay(imaging.denormalize(x[0], recipe), cls.heatmap_upsampled, "viridis", 0.4)
    got = cv2.cvtColor(cv2.imdecode(np.frombuffer(cls.overlay_png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(got, want)
    heat = cv2.imdecode(np.frombuffer(cls.heatmap_png, np.uint8), cv2.IMREAD_COLOR)
    assert heat.shape == (224, 224, 3)


def test_default_cam_layer_is_reported(client):
    assert client.model_info("r18").default_cam_layer == "layer4"
    assert client.model_info("mnv3").default_cam_layer == "features"


BAD = [
    ("a Linear layer for a CAM", dict(method="grad_cam", layers="fc"), grpc.StatusCode.INVALID_ARGUMENT,
     ["spatial", "'layer4'"]),
    ("cam without a GAP + Linear head", dict(model="mnv3", method="cam"), grpc.StatusCode.INVALID_ARGUMENT,
     ["global average pooling", "grad_cam"]),
    ("class out of range", dict(target=1000), grpc.StatusCode.INVALID_ARGUMENT, ["out of range", "1000 classes"]),
    ("unknown label", dict(target="not a class"), grpc.StatusCode.INVALID_ARGUMENT, ["no class labelled"]),
    ("steps 0", dict(method="integrated_gradients", steps=0), grpc.StatusCode.INVALID_ARGUMENT, ["steps must be >= 1"]),
    ("window larger than the image", dict(method="occlusion", window=300), grpc.StatusCode.INVALID_ARGUMENT,
     ["window 300 is larger than the 224x224 input", "at most 224"]),
    ("top-k over the class count", dict(top_k=1001), grpc.StatusCode.INVALID_ARGUMENT, ["top_k"]),
    ("a layer for an input attribution", dict(method="saliency", layers="layer4"), grpc.StatusCode.INVALID_ARGUMENT,
     ["takes no layer"]),
    ("an unknown layer", dict(layers="layer5"), grpc.StatusCode.NOT_FOUND, ["layer5", "closest"]),
    ("an unknown method", dict(method="gradcam"), grpc.StatusCode.INVALID_ARGUMENT, ["grad_cam"]),
    ("an unknown noise tunnel", dict(method="saliency", noise_tunnel="smooth"), grpc.StatusCode.INVALID_ARGUMENT,
     ["smoothgrad"]),
    ("finer_classes over its ceiling", dict(method="finer_cam", finer_classes=1000),
     grpc.StatusCode.INVALID_ARGUMENT, ["finer_classes 1000", "limit of 100"]),
    ("an option the method does not use", dict(method="grad_cam", kpca_kernel="rbf"),
     grpc.StatusCode.INVALID_ARGUMENT, ["grad_cam does not use option kpca_kernel", "used by kpca_cam"]),
    ("an unknown option", dict(method="grad_cam", aug_smoth=True), grpc.StatusCode.INVALID_ARGUMENT,
     ["unknown option 'aug_smoth'", "closest: aug_smooth"]),
]


@pytest.mark.parametrize("what,kwargs,code,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input(client, pictures, what, kwargs, code, words):
    kwargs = dict(kwargs)
    model = kwargs.pop("model", "r18")
    expect(code, lambda: client.explain(model, pictures[:1], **kwargs), *words)


def test_concurrent_calls_through_the_server_do_not_mix(client, pictures):
    calls = [dict(method="grad_cam", target=1), dict(method="guided_backprop", target=2),
             dict(method="deeplift", target=3), dict(method="grad_cam", layers="layer3", target=4),
             dict(method="saliency", target=5), dict(method="eigen_grad_cam", target=6)]
    alone = [client.explain("r18", pictures[:1], **c)[0][0].heatmap_upsampled for c in calls]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(lambda c: client.explain("r18", pictures[:1], **c)[0][0].heatmap_upsampled,
                                 calls * 2))
    for i, got in enumerate(together):
        want = alone[i % len(calls)]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * (float(np.abs(want).max()) or 1.0))


def test_cli_explains_files_to_overlays(run_cli, tmp_path, photo_files):
    out = tmp_path / "out"
    code, stdout, err = run_cli("explain", "--model", "r18", "--method", "grad_cam_plus_plus", "--layer", "layer3",
                                str(photo_files["chelsea"]), str(photo_files["rocket"]), "--out", str(out))
    assert code == 0, err
    pngs = sorted(p.name for p in out.rglob("*.png"))
    assert len(pngs) == 2, pngs


def test_cli_passes_any_explain_option(run_cli, client, tmp_path, photo_files):
    """--option KEY=VALUE reaches the server typed by the schema: the overlay
    equals the client's with the same options, and differs from the
    default's; a key that is not an option is refused by the server, naming
    the closest; a value of the wrong type is a usage error."""
    photo = photo_files["chelsea"]
    out = tmp_path / "opt"
    code, _, err = run_cli("explain", "--model", "r18", "--method", "kpca_cam", "--option", "kpca_kernel=rbf",
                           "--option", "kpca_gamma=0.05", "--option", "aug_smooth=true", str(photo), "--out", str(out))
    assert code == 0, err
    (png,) = list(out.rglob("*.png"))
    same = client.explain("r18", photo.read_bytes(), method="kpca_cam", kpca_kernel="rbf", kpca_gamma=0.05,
                          aug_smooth=True, overlay=True, colormap="jet", alpha=0.5)[0][0]
    plain = client.explain("r18", photo.read_bytes(), method="kpca_cam", overlay=True, colormap="jet", alpha=0.5)[0][0]
    assert png.read_bytes() == same.overlay_png != plain.overlay_png
    code, text, err = run_cli("explain", "--model", "r18", "--method", "kpca_cam", "--option", "kpca_gama=0.05",
                              str(photo), "--out", str(tmp_path / "typo"))
    assert code != 0 and "kpca_gamma" in text + err  # the server's answer: the closest name
    code, _, err = run_cli("explain", "--model", "r18", "--option", "=3", str(photo), "--out", str(out))
    assert code == 2 and "KEY=VALUE" in err
    code, _, err = run_cli("explain", "--model", "r18", "--option", "aug_smooth=maybe", str(photo), "--out", str(out))
    assert code == 2 and "aug_smooth takes true or false" in err


def test_a_singular_slip_of_explains_own_keywords_says_which_one_it_meant(client, pictures):
    """layer= for layers= would travel as an unknown explanation option (OPTION_NOT_FOUND,
    naming option names only): the client says what it meant before sending anything."""
    with pytest.raises(TypeError, match="did you mean 'layers'"):
        client.explain("r18", pictures[0], layer="layer4")
