import pytest
import torch
from torch import nn

from netscope.training.models import (
    OUR_ARCHITECTURES, WeightsUnavailable, build_model, build_pretrained, init_weights, replace_head)


def test_simple_cnn_shapes_and_cam_layer():
    m = build_model("simple_cnn", 6, input_size=64).eval()
    assert "simple_cnn" in OUR_ARCHITECTURES
    x = torch.randn(2, 3, 64, 64)
    assert m(x).shape == (2, 6)
    assert m.features(x).shape[-2:] == (8, 8)  # the 8x8 map CAMs are computed on
    assert isinstance(m.classifier[-1], nn.Linear)  # GAP then one linear layer: exact CAM
    grey = build_model("simple_cnn", 10, in_channels=1, input_size=32, widths=[8, 16], hidden=[120, 84])
    assert grey(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_bad_arch_and_kwargs_are_clear_value_errors():
    with pytest.raises(ValueError, match="unknown architecture 'resnet19'.*resnet18"):
        build_model("resnet19", 3)
    with pytest.raises(ValueError, match="too small"):
        build_model("simple_cnn", 3, input_size=4)
    with pytest.raises(ValueError, match="bad arch_kwargs"):
        build_model("simple_cnn", 3, colour="red")


def test_torchvision_by_name():
    m = build_model("mobilenet_v3_small", 5)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "squeezenet1_1", "densenet121", "convnext_tiny",
                                  "efficientnet_b0", "vit_b_16", "alexnet", "regnet_y_400mf"])
def test_replace_head_gives_what_build_model_builds(arch):
    """A fine-tuned model must load into build_model(arch, n): same keys, same shapes."""
    import torchvision.models as tvm

    m = tvm.get_model(arch, weights=None)
    names = replace_head(m, 7)
    assert names
    want = {k: v.shape for k, v in build_model(arch, 7).state_dict().items()}
    assert {k: v.shape for k, v in m.state_dict().items()} == want


def test_pretrained_offline_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: nothing is there
    with pytest.raises(WeightsUnavailable, match="not in the local torch cache.*--download"):
        build_pretrained("resnet18", 3)
    with pytest.raises(ValueError, match="has no weights"):
        build_pretrained("resnet18", 3, weights="NOPE")


def test_simple_cnn_convs_per_block_keeps_one_conv_checkpoints_loadable():
    one = build_model("simple_cnn", 6, input_size=32, widths=[8, 16])
    assert [n for n, _ in one.named_parameters()][:3] == ["features.0.0.weight", "features.0.1.weight",
                                                          "features.0.1.bias"]  # as before convs existed
    assert build_model("simple_cnn", 6, input_size=32, widths=[8, 16], convs=1).state_dict().keys() == \
        one.state_dict().keys()
    two = build_model("simple_cnn", 6, input_size=32, widths=[8, 16], convs=2).eval()
    convs = [n for n, m in two.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs == ["features.0.0", "features.0.3", "features.1.0", "features.1.3"]
    assert two.features(torch.randn(1, 3, 32, 32)).shape == (1, 16, 8, 8)  # still one halving per block
    with pytest.raises(ValueError, match="convs"):
        build_model("simple_cnn", 6, convs=0)


def test_torch_init_is_pytorchs_own_and_smaller_than_kaiming():
    torch.manual_seed(0)
    m = build_model("simple_cnn", 6, input_size=32, widths=[16, 32])  # simple_cnn's own init: kaiming
    kaiming = m.features[1][0].weight.std().item()
    init_weights(m, "torch")
    bound = 1 / (16 * 9) ** 0.5  # PyTorch's conv default: uniform(+-1/sqrt(fan_in)), std bound/sqrt(3)
    assert m.features[1][0].weight.abs().max() <= bound
    assert m.features[1][0].weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.1)
    assert kaiming > 1.5 * m.features[1][0].weight.std().item()  # fan_out 288 vs fan_in 144: 1.7x


@pytest.mark.parametrize("scheme", ["kaiming", "xavier"])
def test_init_schemes(scheme):
    torch.manual_seed(0)
    m = build_model("simple_cnn", 3, input_size=16, widths=[4, 8])
    before = m.features[0][0].weight.clone()
    m.classifier[-1].bias.data.fill_(1.0)
    init_weights(m, scheme)
    assert not torch.equal(before, m.features[0][0].weight)
    assert torch.all(m.classifier[-1].bias == 0)
    with pytest.raises(ValueError, match="unknown init"):
        init_weights(m, "orthogonal")
