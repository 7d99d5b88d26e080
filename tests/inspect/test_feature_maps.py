"""feature_maps: every number against a hand-written forward hook."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from .inspect_helpers import (
    TinyViT,
    assert_unchanged,
    decode_png,
    hand_uint8,
    model_state,
    reference_outputs,
)
from netscope.server import imaging
from netscope.server.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from netscope.server.inspection.hooks import hook_count
from netscope.server.inspection import GridSpec, feature_maps

LAYERS = ["conv1", "bn1", "layer1.0.conv1", "layer2", "avgpool", "fc"]


def test_full_activations_equal_a_hand_written_hook(resnet, batch):
    before = model_state(resnet)
    ref = reference_outputs(resnet, batch, LAYERS)
    got = feature_maps(resnet, batch, LAYERS)
    assert len(got) == 2
    for i in range(2):
        assert [a.layer for a in got[i]] == LAYERS
        for a in got[i]:
            r = ref[a.layer][i]
            assert a.shape == tuple(r.shape)
            assert a.activation.dtype == torch.float32 and not a.activation.requires_grad
            assert torch.equal(a.activation, r)
            flat = r.reshape(r.shape[0], -1)
            assert a.channels == list(range(r.shape[0]))
            np.testing.assert_allclose(a.channel_mean, flat.mean(dim=1).numpy(), rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(a.channel_max, flat.amax(dim=1).numpy())
            assert a.grid_png == b""
    # Shapes as the layers really are: conv (C, H, W), pooled (C, 1, 1), Linear (F,).
    shapes = {a.layer: a.shape for a in got[0]}
    assert shapes == {"conv1": (64, 32, 32), "bn1": (64, 32, 32), "layer1.0.conv1": (64, 16, 16),
                      "layer2": (128, 8, 8), "avgpool": (512, 1, 1), "fc": (10,)}
    assert_unchanged(resnet, before)


def test_capture_is_not_overwritten_by_the_in_place_relu_after_it(resnet, batch):
    # bn1 feeds ReLU(inplace=True): the captured output must keep its negatives.
    ref = reference_outputs(resnet, batch, ["bn1"])["bn1"]
    got = feature_maps(resnet, batch, ["bn1"])
    assert (ref < 0).any()
    for i in range(2):
        assert torch.equal(got[i][0].activation, ref[i])


def test_selected_channels(resnet, batch):
    ref = reference_outputs(resnet, batch, ["layer1.0.conv1", "fc"])
    got = feature_maps(resnet, batch, ["layer1.0.conv1", "fc"], channels=[5, 0, 5, 9])
    for i in range(2):
        conv, fc = got[i]
        assert conv.channels == [5, 0, 9] and fc.channels == [5, 0, 9]
        assert conv.shape == (64, 16, 16)  # the true shape, not the selection's
        assert torch.equal(conv.activation, ref["layer1.0.conv1"][i][[5, 0, 9]])
        assert torch.equal(fc.activation, ref["fc"][i][[5, 0, 9]])
        np.testing.assert_allclose(conv.channel_mean, ref["layer1.0.conv1"][i][[5, 0, 9]].mean(dim=(1, 2)).numpy(), rtol=1e-6)
        np.testing.assert_array_equal(fc.channel_max, ref["fc"][i][[5, 0, 9]].numpy())


def test_top_channels_by_mean_activation_per_image(resnet, batch):
    ref = reference_outputs(resnet, batch, ["layer2"])["layer2"]
    got = feature_maps(resnet, batch, ["layer2"], top_channels=7)
    tops = []
    for i in range(2):
        a = got[i][0]
        means = ref[i].mean(dim=(1, 2))
        expected = sorted(range(128), key=lambda c: (-means[c].item(), c))[:7]
        assert a.channels == expected
        assert torch.equal(a.activation, ref[i][expected])
        np.testing.assert_allclose(a.channel_mean, means[expected].numpy(), rtol=1e-6)
        assert list(a.channel_mean) == sorted(a.channel_mean, reverse=True)
        tops.append(a.channels)
    assert tops[0] != tops[1]  # each image its own top channels
    # More than there are: all of them, best first.
    assert len(feature_maps(resnet, batch, ["fc"], top_channels=50)[0][0].channels) == 10


def test_token_outputs_use_the_last_axis_as_channels(batch):
    vit = TinyViT().eval()
    ref = reference_outputs(vit, batch, ["block", "patch", "head"])
    got = feature_maps(vit, batch, ["block", "patch", "head"], channels=[3, 1], grid=GridSpec())
    for i in range(2):
        block, patch, head = got[i]
        assert block.shape == (16, 16) and block.channel_axis == 1  # (T=16 tokens, D=16)
        assert torch.equal(block.activation, ref["block"][i][:, [3, 1]])
        np.testing.assert_allclose(block.channel_mean, ref["block"][i][:, [3, 1]].mean(dim=0).numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(block.channel_max, ref["block"][i][:, [3, 1]].amax(dim=0).numpy())
        assert block.grid_png == b""  # not spatial: no grid
        assert patch.shape == (16, 4, 4) and patch.channel_axis == 0 and patch.grid_png
        assert head.shape == (4,) and torch.equal(head.activation, ref["head"][i][[3, 1]])


def test_grid_tiles_are_each_channel_normalised_and_coloured(resnet, batch):
    ref = reference_outputs(resnet, batch, ["layer1.0.conv1"])["layer1.0.conv1"]
    spec = GridSpec(colormap="gray", max_tiles=6, nrow=3, padding=2)
    got = feature_maps(resnet, batch, ["layer1.0.conv1"], channels=[1, 2, 3, 4, 5, 6, 7, 8], grid=spec)
    for i in range(2):
        img = decode_png(got[i][0].grid_png)
        assert img.shape == (2 * 18 + 2, 3 * 18 + 2, 3)  # 6 tiles of 16x16, 3 per row, padding 2
        for t, c in enumerate([1, 2, 3, 4, 5, 6]):
            r, col = divmod(t, 3)
            tile = img[2 + r * 18 : 2 + r * 18 + 16, 2 + col * 18 : 2 + col * 18 + 16]
            expected = hand_uint8(ref[i][c].numpy())
            np.testing.assert_array_equal(tile, np.repeat(expected[:, :, None], 3, axis=2))
        assert len(got[i][0].channels) == 8  # max_tiles limits the picture, not the tensor

    viridis = feature_maps(resnet, batch, ["layer1.0.conv1"], channels=[1], grid=GridSpec(colormap="viridis", padding=0))
    tile = decode_png(viridis[0][0].grid_png)
    expected = imaging.colorize(hand_uint8(ref[0][1].numpy()), "viridis")
    np.testing.assert_array_equal(tile, expected)


def test_grid_upsampled_to_the_input_and_scaled_tiles(resnet, batch):
    ref = reference_outputs(resnet, batch, ["layer2"])["layer2"]
    up = feature_maps(resnet, batch, ["layer2"], channels=[4], grid=GridSpec(upsample_to_input=True, padding=0))
    img = decode_png(up[1][0].grid_png)
    assert img.shape == (64, 64, 3)
    expected = hand_uint8(imaging.resize_map(ref[1][4].numpy(), (64, 64)))
    np.testing.assert_array_equal(img[:, :, 0], expected)

    scaled = feature_maps(resnet, batch, ["layer2"], channels=[4, 5], grid=GridSpec(tile_size=32, padding=1, nrow=2))
    img = decode_png(scaled[0][0].grid_png)
    assert img.shape == (34, 67, 3)
    # Nearest-neighbour: each 8x8 map pixel becomes a 4x4 block.
    np.testing.assert_array_equal(img[1:33:4, 1:33:4, 0], hand_uint8(ref[0][4].numpy()))


def test_errors_name_what_is_wrong_and_leave_no_hooks(resnet, batch, with_aux):
    before = hook_count(resnet)
    with pytest.raises(NotFound, match="layer1.0.conv1"):
        feature_maps(resnet, batch, ["layer1.0.conv"])
    with pytest.raises(InvalidArgument, match="64 channels"):
        feature_maps(resnet, batch, ["layer1.0.conv1"], channels=[64])
    with pytest.raises(InvalidArgument, match="either"):
        feature_maps(resnet, batch, ["fc"], channels=[1], top_channels=2)
    with pytest.raises(InvalidArgument, match="at least one layer"):
        feature_maps(resnet, batch, [])
    with pytest.raises(InvalidArgument, match="colormap"):
        feature_maps(resnet, batch, ["fc"], grid=GridSpec(colormap="nope"))
    with pytest.raises(InvalidArgument, match="empty batch"):
        feature_maps(resnet, batch[:0], ["fc"])
    assert hook_count(resnet) == before

    state = model_state(with_aux)
    with pytest.raises(FailedPrecondition, match="'aux' was not reached"):
        feature_maps(with_aux, batch, ["stem.0", "aux"])
    with_aux.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        feature_maps(with_aux, batch, ["stem.0", "body.2"])
    with_aux.fail = False
    assert hook_count(with_aux) == 0
    assert_unchanged(with_aux, state)
    # And it still answers afterwards.
    assert feature_maps(with_aux, batch, ["body.2"])[0][0].shape == (16, 64, 64)


def test_size_guard_says_how_big_the_answer_would_be(resnet, batch):
    layers = ["conv1", "layer1"]
    got = feature_maps(resnet, batch, layers, grid=GridSpec(max_tiles=64))
    actual = sum(a.activation.numel() * 4 + len(a.grid_png) for per in got for a in per)
    with pytest.raises(ResourceExhausted, match=r"about [\d,]+ bytes .* over the message limit of 100,000 bytes"):
        feature_maps(resnet, batch, layers, grid=GridSpec(), max_bytes=100_000)
    # The estimate does not undercount: a limit of the real size plus a little passes.
    ok = feature_maps(resnet, batch, layers, grid=GridSpec(max_tiles=64), max_bytes=int(actual * 1.5) + 10_000)
    assert len(ok) == 2
    with pytest.raises(ResourceExhausted) as err:
        feature_maps(resnet, batch, layers, max_bytes=actual // 2)
    estimate = int(str(err.value).split("about ")[1].split(" bytes")[0].replace(",", ""))
    assert sum(a.activation.numel() * 4 for per in got for a in per) <= estimate
    # Without the tensor it is small enough.
    light = feature_maps(resnet, batch, layers, top_channels=4, with_tensor=False, max_bytes=actual // 2)
    assert light[0][0].activation is None and len(light[0][0].channel_mean) == 4


def test_concurrent_requests_on_one_model_each_get_what_they_would_alone(resnet, batch):
    asks = [
        (["conv1"], {}),
        (["layer1.0.conv1", "fc"], {"channels": [3, 1]}),
        (["layer2"], {"top_channels": 5}),
        (["layer3.1.bn2"], {}),
        (["bn1", "layer4"], {"top_channels": 3}),
        (["avgpool"], {}),
        (["layer1.1"], {"channels": [0]}),
        (["layer4.0.downsample.0"], {}),
    ]
    inputs = [batch, batch.flip(0), batch[:1] * 0.5]
    alone = {(i, j): feature_maps(resnet, inputs[j], layers, **kw) for i, (layers, kw) in enumerate(asks) for j in range(len(inputs))}
    before = hook_count(resnet)
    barrier = threading.Barrier(len(asks))
    results, errors = {}, []

    def worker(i):
        layers, kw = asks[i]
        try:
            barrier.wait()
            for rep in range(2):
                for j in range(len(inputs)):
                    results[(i, j, rep)] = feature_maps(resnet, inputs[j], layers, **kw)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert hook_count(resnet) == before
    for (i, j, rep), got in results.items():
        want = alone[(i, j)]
        assert len(got) == len(want)
        for g_img, w_img in zip(got, want):
            assert [a.layer for a in g_img] == [a.layer for a in w_img] == asks[i][0]
            for g, w in zip(g_img, w_img):
                assert g.channels == w.channels
                assert torch.equal(g.activation, w.activation), (i, j, rep, g.layer)
                np.testing.assert_array_equal(g.channel_mean, w.channel_mean)
