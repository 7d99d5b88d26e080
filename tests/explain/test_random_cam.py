"""random_cam (server/explain/cam_methods/random_cam.py): the method added as one
file, checked number for number against pytorch-grad-cam's RandomCAM over the
wire, its own option carried in ExplainOptions.parameters."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
import torch
from pytorch_grad_cam import RandomCAM

from netscope.client.client import NetscopeError
from netscope.server.explain import methods
from netscope.server.explain import normalize


def test_it_is_registered_by_its_file_alone():
    spec = methods.method("random_cam")
    assert spec.family == "cam" and spec.draws_noise and "weight_bound" in spec.options
    assert methods.option("weight_bound").proto_field is None  # no typed field: the parameters map carries it


@pytest.mark.parametrize("layer", ["layer3", "layer4"])
def test_random_cam_over_the_wire_equals_pytorch_grad_cams(client, r18, pictures, x, layer):
    got = client.explain("r18", pictures, method="random_cam", layers=[layer], seed=7)
    ours = normalize(torch.stack([torch.from_numpy(np.array(img[0].heatmap_upsampled)) for img in got]))
    np.random.seed(7)
    with RandomCAM(model=r18, target_layers=[dict(r18.named_modules())[layer]]) as cam:
        ref = torch.from_numpy(cam(input_tensor=x, targets=None))
    assert float(ref.max()) > 0.5
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_weight_bound_scales_the_map_and_seeds_reproduce(client, pictures):
    one = client.explain("r18", pictures[0], method="random_cam", seed=3)[0][0].heatmap
    half = client.explain("r18", pictures[0], method="random_cam", seed=3, weight_bound=0.5)[0][0].heatmap
    again = client.explain("r18", pictures[0], method="random_cam", seed=3)[0][0].heatmap
    other = client.explain("r18", pictures[0], method="random_cam", seed=4)[0][0].heatmap
    np.testing.assert_array_equal(one, again)
    np.testing.assert_allclose(half, one / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(one, other)


@pytest.mark.parametrize("options,words,field", [
    (dict(weight_bound=0), ["weight_bound must be a finite number > 0"], "options.weight_bound"),
    (dict(weight_bound="big"), ["weight_bound takes a number"], "options.weight_bound"),
    (dict(weight_bond=2.0), ["unknown option 'weight_bond'", "closest: weight_bound"], "options.weight_bond"),
    (dict(steps=3), ["random_cam does not use option steps", "weight_bound"], "options.steps"),
])
def test_bad_options_are_invalid_argument_naming_the_field(client, pictures, options, words, field):
    with pytest.raises(NetscopeError) as exc:
        client.explain("r18", pictures[0], method="random_cam", **options)
    err = exc.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    for w in words:
        assert w in err.message, err.message
    assert any(f == field for f, _ in err.field_violations), err.field_violations


def _request(pictures, method, **fields):
    from netscope.client.client import to_image
    from netscope.v1 import inspector_pb2 as pb

    return pb.ExplainRequest(model="r18", images=[to_image(pictures[0])], method=method,
                             options=pb.ExplainOptions(**fields))


def test_the_parameters_map_carries_typed_options_too(client, pictures):
    """A typed option sent in the map gives the same map; an int for a float
    option is taken; a double for an int option, an empty value, or the same
    option in its field and in the map are INVALID_ARGUMENT."""
    from netscope.v1 import inspector_pb2 as pb

    typed = client.call("Explain", _request(pictures, "fem", fem_k=1.5), None)
    mapped = client.call("Explain", _request(pictures, "fem", parameters={"fem_k": pb.OptionValue(double_value=1.5)}),
                         None)
    assert typed.explanations[0].classes[0].heatmap == mapped.explanations[0].classes[0].heatmap
    client.call("Explain", _request(pictures, "random_cam", parameters={"weight_bound": pb.OptionValue(int_value=2)}),
                None)
    for fields, words in [
        (dict(fem_k=1.5, parameters={"fem_k": pb.OptionValue(double_value=1.0)}), "fem_k is set twice"),
        (dict(parameters={"fem_k": pb.OptionValue()}), "has no value"),
    ]:
        with pytest.raises(NetscopeError) as exc:
            client.call("Explain", _request(pictures, "fem", **fields), None)
        assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT and words in exc.value.message
    with pytest.raises(NetscopeError) as exc:
        client.call("Explain", _request(pictures, "is_cam", parameters={"steps": pb.OptionValue(double_value=2.5)}),
                    None)
    assert "steps takes an integer" in exc.value.message
