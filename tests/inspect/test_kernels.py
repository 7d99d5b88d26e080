"""kernels: the weight tensor and every tile of the grid, computed again by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from .inspect_helpers import decode_png, hand_uint8
from netscope.server import imaging
from netscope.server.errors import InvalidArgument, NotFound, ResourceExhausted
from netscope.server.inspection.hooks import hook_count
from netscope.server.inspection import GridSpec, conv_layers, kernels


def tile_at(img: np.ndarray, t: int, nrow: int, h: int, w: int, pad: int) -> np.ndarray:
    r, c = divmod(t, nrow)
    y, x = pad + r * (h + pad), pad + c * (w + pad)
    return img[y : y + h, x : x + w]


def test_first_layer_is_drawn_in_colour(resnet):
    got = kernels(resnet, "conv1", grid=GridSpec(max_tiles=16, nrow=4))
    w = resnet.conv1.weight.detach()
    assert got.mode == "rgb" and got.tiles == 16 and got.total_tiles == 64
    assert got.weight.dtype == torch.float32 and torch.equal(got.weight, w)
    img = decode_png(got.grid_png)
    assert img.shape == (4 * 9 + 2, 4 * 9 + 2, 3)
    for o in range(16):
        rgb = w[o].permute(1, 2, 0).numpy()  # input channels are R, G, B
        np.testing.assert_array_equal(tile_at(img, o, 4, 7, 7, 2), hand_uint8(rgb))


def test_deeper_layers_one_grey_tile_per_pair(resnet):
    w = resnet.layer1[0].conv1.weight.detach()  # (64, 64, 3, 3)
    got = kernels(resnet, "layer1.0.conv1", grid=GridSpec(max_tiles=128, padding=1))
    assert got.mode == "per_channel" and got.tiles == 128 and got.total_tiles == 64 * 64
    img = decode_png(got.grid_png)
    assert img.shape == (2 * 4 + 1, 64 * 4 + 1, 3)  # one row per output channel
    for t in (0, 1, 63, 64, 100, 127):
        o, i = divmod(t, 64)
        expected = hand_uint8(w[o, i].numpy())
        np.testing.assert_array_equal(tile_at(img, t, 64, 3, 3, 1), np.repeat(expected[:, :, None], 3, axis=2))


def test_mean_over_inputs_with_a_colormap_and_scaled_tiles(resnet):
    w = resnet.layer2[0].conv2.weight.detach()
    got = kernels(resnet, "layer2.0.conv2", mode="mean_input", grid=GridSpec(colormap="inferno", tile_size=12, nrow=5, max_tiles=10))
    assert got.mode == "mean_input" and got.tiles == 10 and got.total_tiles == 128
    img = decode_png(got.grid_png)
    assert img.shape == (2 * 14 + 2, 5 * 14 + 2, 3)
    for o in range(10):
        expected = imaging.colorize(hand_uint8(w[o].mean(dim=0).numpy()), "inferno")
        expected = np.repeat(np.repeat(expected, 4, axis=0), 4, axis=1)  # 3x3 -> 12x12, nearest
        np.testing.assert_array_equal(tile_at(img, o, 5, 12, 12, 2), expected)


def test_depthwise_and_explicit_modes(with_aux):
    dw = kernels(with_aux, "body.0")  # groups=8: weight (8, 1, 3, 3)
    assert dw.mode == "per_channel" and dw.total_tiles == 8 and dw.weight.shape == (8, 1, 3, 3)
    first = kernels(with_aux, "stem.0", mode="per_channel")
    assert first.mode == "per_channel" and first.total_tiles == 24
    assert kernels(with_aux, "body.2", mode="auto").mode == "per_channel"
    with pytest.raises(InvalidArgument, match="rgb mode needs 3 input channels"):
        kernels(with_aux, "body.2", mode="rgb")
    with pytest.raises(InvalidArgument, match="unknown kernel mode"):
        kernels(with_aux, "body.2", mode="sideways")


def test_non_conv_layers_are_refused_naming_the_conv_layers(resnet, with_aux):
    before = hook_count(resnet)
    with pytest.raises(InvalidArgument) as err:
        kernels(resnet, "layer1.0.bn1")
    text = str(err.value)
    assert "BatchNorm2d, not a Conv2d" in text and "conv layers (20)" in text and "layer1.0.conv1" in text
    assert conv_layers(resnet)[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    with pytest.raises(InvalidArgument, match=r"conv layers \(3\): .*stem.0"):
        kernels(with_aux, "head")
    with pytest.raises(NotFound, match="closest: layer1.0.conv2, layer1.0.conv1"):
        kernels(resnet, "layer1.0.conv9")
    assert hook_count(resnet) == before


def test_size_guard(resnet):
    with pytest.raises(ResourceExhausted, match="about [\\d,]+ bytes"):
        kernels(resnet, "layer4.1.conv2", max_bytes=1_000_000)  # 512*512*9 floats = 9.4 MB
    small = kernels(resnet, "layer4.1.conv2", with_tensor=False, max_bytes=1_000_000)
    assert small.weight is None and small.tiles == 64


def test_weights_of_another_dtype_come_back_as_float32():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3)).to(torch.float64)
    got = kernels(conv, "0")
    assert got.weight.dtype == torch.float32 and torch.allclose(got.weight.double(), conv[0].weight)
