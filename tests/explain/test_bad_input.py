"""Bad input: InvalidArgument (or NotFound for a missing layer) saying what would work."""
from __future__ import annotations

import pytest
import torch

from netscope.server.errors import InvalidArgument, NotFound
from netscope.server.explain import Options, Target, default_layer, explain

from .conftest import batch, model, tiny, untouched

LABELS = [f"class{i}" for i in range(5)]


@pytest.fixture(scope="module")
def m():
    return tiny()


@pytest.fixture(scope="module")
def x():
    return batch(2, 32, seed=51)


CASES = [
    # (method, kwargs, error, message fragment)
    ("grad_cam", dict(layers=["fc"]), InvalidArgument, "needs a layer with a spatial"),
    ("grad_cam", dict(layers=["pool"]), InvalidArgument, "Try 'features.4'"),
    ("score_cam", dict(layers=["fc"]), InvalidArgument, "spatial"),
    ("grad_cam", dict(layers=["featurs"]), NotFound, "closest: features"),
    ("grad_cam", dict(targets=5), InvalidArgument, "out of range: the model has 5 classes (0..4)"),
    ("saliency", dict(targets=-1), InvalidArgument, "out of range"),
    ("grad_cam", dict(targets="dog"), InvalidArgument, "no class labelled 'dog'"),
    ("grad_cam", dict(targets=Target(label="clas3")), InvalidArgument, "closest: class3"),
    ("grad_cam", dict(targets=Target(top_k=6)), InvalidArgument, "top_k must be between 1 and 5"),
    ("grad_cam", dict(targets=[1, 2, 3]), InvalidArgument, "for 2 images"),
    ("grad_cam", dict(targets=Target(index=1, label="class1")), InvalidArgument, "not both"),
    ("integrated_gradients", dict(options=Options(steps=0)), InvalidArgument, "steps must be >= 1"),
    ("is_cam", dict(options=Options(steps=-3)), InvalidArgument, "steps must be >= 1"),
    ("occlusion", dict(options=Options(window=33)), InvalidArgument, "window 33 is larger than the 32x32 input"),
    ("occlusion", dict(options=Options(stride=0)), InvalidArgument, "stride must be >= 1"),
    ("score_cam", dict(options=Options(batch_size=0)), InvalidArgument, "batch_size must be >= 1"),
    ("saliency", dict(options=Options(noise_tunnel="smooth")), InvalidArgument, "smoothgrad, smoothgrad_sq, vargrad"),
    ("saliency", dict(options=Options(nt_stdev=-1.0)), InvalidArgument, "nt_stdev must be a finite"),
    ("integrated_gradients", dict(options=Options(baseline="black")), InvalidArgument, "zeros, blur, noise, mean"),
    ("grad_cam", dict(options=Options(noise_tunnel="smoothgrad")), InvalidArgument, "aug_smooth"),
    ("saliency", dict(options=Options(aug_smooth=True)), InvalidArgument, "noise_tunnel"),
    ("fem", dict(options=Options(fem_k=float("inf"))), InvalidArgument, "fem_k must be a finite number"),
    ("kernel_shap", dict(options=Options(samples=0)), InvalidArgument, "samples must be >= 1"),
    ("kpca_cam", dict(options=Options(kpca_kernel="gauss")), InvalidArgument, "sigmoid, rbf, poly, linear, cosine"),
    ("kpca_cam", dict(options=Options(kpca_gamma=0.0)), InvalidArgument, "kpca_gamma must be a finite number > 0"),
    ("lime", dict(options=Options(window=40)), InvalidArgument, "window 40 is larger than the 32x32 input"),
    ("finer_cam", dict(options=Options(finer_alpha=float("nan"))), InvalidArgument, "finer_alpha must be a finite"),
    ("finer_cam", dict(options=Options(finer_classes=0)), InvalidArgument, "finer_classes must be >= 1"),
    ("finer_cam", dict(options=Options(finer_classes=5)), InvalidArgument, "more than the 4 other classes"),
    ("saliency", dict(layers=["features"]), InvalidArgument, "takes no layer"),
    ("full_grad", dict(layers=["features"]), InvalidArgument, "do not name layers"),
    ("cam", dict(layers=["features.1"]), InvalidArgument, "use grad_cam"),
    ("cam", dict(layers=["features", "features.4"]), InvalidArgument, "explains one layer"),
    ("grad_camm", dict(), InvalidArgument, "closest: grad_cam"),
]


@pytest.mark.parametrize("method,kwargs,error,fragment", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_says_what_would_work(m, x, method, kwargs, error, fragment):
    before = untouched(m)
    with pytest.raises(error) as exc:
        explain(m, x, method, class_names=LABELS, **kwargs)
    assert fragment in str(exc.value)
    assert untouched(m) == before


def test_cam_on_a_model_without_gap_linear_head():
    with pytest.raises(InvalidArgument, match="global average pooling and one Linear"):
        explain(model("vgg11"), batch(1, 32), "cam")


def test_labels_resolve_and_bad_tensors_are_refused(m, x):
    r = explain(m, x, "grad_cam", targets="class3", class_names=LABELS)
    assert [img[0].target for img in r] == [3, 3] and r[0][0].label == "class3"
    with pytest.raises(InvalidArgument, match=r"\(N, C, H, W\)"):
        explain(m, x[0], "grad_cam")
    with pytest.raises(InvalidArgument, match="empty batch"):
        explain(m, x[:0], "grad_cam")


def test_a_layer_the_forward_never_reaches():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny()
            self.unused = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.net(x)

    from netscope.server.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition, match="not reached"):
        explain(Branchy().eval(), batch(1, 32), "grad_cam", layers=["unused"])


@pytest.mark.parametrize("arch,layer", [
    ("resnet18", "layer4"), ("vgg11", "features.19"), ("alexnet", "features.11"), ("densenet121", "features"),
    ("mobilenet_v2", "features"), ("mobilenet_v3_small", "features"), ("efficientnet_b0", "features"),
    ("convnext_tiny", "features"), ("regnet_y_400mf", "trunk_output"), ("squeezenet1_1", "features"),
    ("mnasnet0_5", "layers"), ("shufflenet_v2_x0_5", "conv5"), ("resnext50_32x4d", "layer4"),
])
def test_default_layers_per_family(arch, layer):
    import torchvision

    m = torchvision.models.get_model(arch, weights=None)
    assert default_layer(m, arch) == layer


@pytest.mark.parametrize("convs,layer", [(1, "features.2.2"), (2, "features.2.5")])
def test_default_layer_of_simple_cnn_is_its_last_relu(convs, layer):
    """Our own CNN: the last block's last ReLU (non-negative, before the final
    pool halves the map), not its raw last conv, where XGrad-CAM's per-channel
    sums go negative."""
    from netscope.training.models import build_model

    m = build_model("simple_cnn", 10, convs=convs)
    assert default_layer(m, "simple_cnn") == layer
    assert isinstance(dict(m.named_modules())[layer], torch.nn.ReLU)


# ---------------------------------------------------------------- the options schema

from netscope.server.explain import methods


def _value_of(spec):
    """A valid value of an option, to be refused only for not being used."""
    return {"int": 2, "float": 0.5, "bool": True}.get(spec.type) or (spec.choices[0] if spec.choices else "x")


@pytest.mark.parametrize("method", list(methods.methods()))
def test_an_option_the_method_does_not_use_is_refused_naming_its_options(m, x, method):
    spec = methods.method(method)
    unused = [o for o in methods.options().values() if o.name not in spec.options + methods.COMMON_OPTIONS]
    assert unused, method
    for o in unused:
        with pytest.raises(InvalidArgument) as exc:
            explain(m, x, method, options=Options(**{o.name: _value_of(o)}))
        err = exc.value
        assert f"{method} does not use option {o.name}" in str(err)
        assert err.field == f"options.{o.name}" and err.reason == "OPTION_NOT_USED"
        for name in spec.options:
            assert name in str(err), (method, o.name, str(err))


def test_the_issues_examples_are_refused(m, x):
    with pytest.raises(InvalidArgument, match="grad_cam does not use option kpca_kernel .*used by kpca_cam"):
        explain(m, x, "grad_cam", options=Options(kpca_kernel="rbf"))
    with pytest.raises(InvalidArgument, match="saliency does not use option window"):
        explain(m, x, "saliency", options=Options(window=4))
    with pytest.raises(InvalidArgument, match="gradient_shap does not use option noise_tunnel.*samples, noise"):
        explain(m, x, "gradient_shap", options=Options(noise_tunnel="smoothgrad"))


@pytest.mark.parametrize("method,opts,fragment", [
    ("integrated_gradients", dict(steps=2.5), "steps takes an integer"),
    ("integrated_gradients", dict(steps="10"), "steps takes an integer"),
    ("grad_cam", dict(aug_smooth="yes"), "aug_smooth takes true or false"),
    ("integrated_gradients", dict(baseline=3), "baseline takes a string"),
    ("saliency", dict(nt_samples=3), "nt_samples applies with noise_tunnel"),
    ("random_cam", dict(weight_bound=0.0), "weight_bound must be a finite number > 0"),
    ("kpca_cam", dict(kpca_kernel="rbff"), "closest: rbf"),
])
def test_types_minimums_choices_and_requirements_come_from_the_schema(m, x, method, opts, fragment):
    with pytest.raises(InvalidArgument) as exc:
        explain(m, x, method, options=Options(**opts))
    assert fragment in str(exc.value)
    assert exc.value.field == f"options.{next(iter(opts))}"


def test_an_unknown_option_name_is_refused_with_the_closest():
    with pytest.raises(InvalidArgument) as exc:
        Options(stepz=3)
    assert "closest: steps" in str(exc.value) and exc.value.reason == "OPTION_NOT_FOUND"


def test_every_method_and_option_is_declared_completely():
    for spec in methods.methods().values():
        assert spec.description and spec.source and callable(spec.fn), spec.name
        assert all(n in methods.options() for n in spec.options), spec.name
    from netscope.server.explain import Ceilings

    for o in methods.options().values():
        assert o.description, o.name
        assert o.ceiling is None or o.ceiling in Ceilings.names(), o.name
        assert methods.users(o.name) or o.name in methods.COMMON_OPTIONS, f"{o.name} is used by no method"
