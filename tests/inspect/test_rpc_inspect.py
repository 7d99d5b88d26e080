"""GetFeatureMaps, GetKernels and GetLayerStats through the real server (the
session's, on a loopback port): every number equals the in-process domain
call on the same weights, and every kind of bad input gets its status while
the server goes on serving."""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import torch
import torchvision

from netscope.client import NetscopeError
from netscope.server import inspection
from netscope.server.inspection.hooks import hook_count
from netscope.server.inspection import GridSpec

from .inspect_helpers import CLASSES, RECIPE, SIZE, save_checkpoint


def expect(code, fn, *words):
    with pytest.raises(NetscopeError) as err:
        fn()
    assert err.value.code == code, err.value
    for w in words:
        assert w in err.value.message, err.value.message
    return err.value.message


def still_serves(client, model="insp"):
    maps = client.feature_maps(model, np.zeros((3, SIZE, SIZE), np.float32), "fc")
    assert maps[0]["fc"].shape == [len(CLASSES)]


# ---------------------------------------------------------------- equal to in-process


def test_feature_maps_equal_in_process(client, insp, ref, served, pngs, batch):
    layers = ["layer1.0.conv1", "layer2", "fc"]
    before = hook_count(served)
    got = client.feature_maps(insp, pngs, layers, top_channels=6, grid=True, upsample=True, colormap="viridis",
                              max_tiles=4, nrow=2)
    want = inspection.feature_maps(ref, batch, layers, top_channels=6,
                                grid=GridSpec(colormap="viridis", upsample_to_input=True, max_tiles=4, nrow=2))
    assert len(got) == 2
    for g_img, w_img in zip(got, want):
        assert list(g_img) == layers
        for w in w_img:
            g = g_img[w.layer]
            assert g.shape == list(w.shape) and g.channels == w.channels and g.channel_axis == w.channel_axis
            assert g.activation.dtype == np.float32
            np.testing.assert_array_equal(g.activation, w.activation.numpy())
            np.testing.assert_array_equal(g.channel_mean, w.channel_mean)
            np.testing.assert_array_equal(g.channel_max, w.channel_max)
            assert g.grid_png == w.grid_png
    assert got[0]["layer2"].grid_png and got[0]["fc"].grid_png == b""
    assert hook_count(served) == before


def test_feature_maps_of_selected_channels_without_tensors(client, insp, ref, batch):
    got = client.feature_maps(insp, batch.numpy(), ["layer3.0.bn1"], channels=[7, 3], tensors=False)
    want = inspection.feature_maps(ref, batch, ["layer3.0.bn1"], channels=[7, 3])
    for i in range(2):
        g, w = got[i]["layer3.0.bn1"], want[i][0]
        assert g.activation is None and g.channels == [7, 3] and g.shape == [256, 4, 4]
        np.testing.assert_array_equal(g.channel_mean, w.channel_mean)


def test_kernels_equal_in_process(client, insp, ref):
    got = client.kernels(insp, "conv1", tile_size=21, max_tiles=16)
    want = inspection.kernels(ref, "conv1", grid=GridSpec(tile_size=21, max_tiles=16))
    assert got.mode == "rgb" and (got.tiles, got.total_tiles) == (16, 64)
    np.testing.assert_array_equal(got.weight, ref.conv1.weight.detach().numpy())
    assert got.grid_png == want.grid_png
    got = client.kernels(insp, "layer2.0.conv1", mode="mean_input", colormap="jet", tensor=False)
    want = inspection.kernels(ref, "layer2.0.conv1", mode="mean_input", grid=GridSpec(colormap="jet"))
    assert got.weight is None and got.mode == "mean_input" and got.total_tiles == 128
    assert got.grid_png == want.grid_png


@pytest.mark.parametrize("how", [{}, {"target": "class3"}, {"target": 3}, {"labels": [2, 7]}])
def test_layer_stats_equal_in_process(client, insp, ref, served, pngs, batch, how):
    layers = ["conv1", "layer4.1.bn2", "fc"]
    got = client.layer_stats(insp, layers, bins=9, images=pngs, **how)
    kw = dict(how)
    if kw.get("target") == "class3":
        kw["target"] = 3
    want = inspection.layer_stats(ref, layers, bins=9, x=batch, **kw)
    assert got.loss == pytest.approx(want.loss, rel=1e-6)
    assert [l.layer for l in got.layers] == layers
    for g, w in zip(got.layers, want.layers):
        assert g.type == w.type and g.grad_norm == pytest.approx(w.grad_norm, rel=1e-6)
        assert g.grad_norm_ratio == pytest.approx(w.grad_norm_ratio, rel=1e-6)
        for gp, wp in zip(g.parameters, w.parameters):
            assert (gp.name, gp.shape, gp.count, gp.trainable) == (wp.name, list(wp.shape), wp.count, wp.trainable)
            for gs, ws in ((gp.value, wp.value), (gp.grad, wp.grad)):
                for f in ("mean", "std", "min", "max", "l2_norm", "zero_fraction"):
                    assert getattr(gs, f) == pytest.approx(getattr(ws, f), rel=1e-6, abs=1e-12), f
                np.testing.assert_array_equal(gs.hist_counts, ws.hist_counts)
                np.testing.assert_allclose(gs.hist_edges, ws.hist_edges)
    assert not any(p.grad is not None for p in served.parameters())
    assert not served.training


def test_layer_stats_weights_only_for_every_layer(client, insp, ref):
    got = client.layer_stats(insp)
    assert got.loss is None
    assert [l.layer for l in got.layers] == inspection.parameter_layers(ref)
    assert all(p.grad is None for l in got.layers for p in l.parameters)
    fc = got.layer("fc").parameters[0]
    w = ref.fc.weight.detach().double()
    assert fc.value.mean == pytest.approx(w.mean().item(), rel=1e-12) and fc.value.hist_counts.sum() == w.numel()


def test_concurrent_feature_maps_through_the_server(client, insp, batch):
    asks = [["conv1"], ["layer1.1.conv2", "fc"], ["layer3"], ["layer4.0.bn1"]]
    alone = [client.feature_maps(insp, batch.numpy(), a) for a in asks]
    out, errors = {}, []
    barrier = threading.Barrier(len(asks))

    def worker(i):
        try:
            barrier.wait()
            out[i] = [client.feature_maps(insp, batch.numpy(), asks[i]) for _ in range(2)]
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, runs in out.items():
        for run in runs:
            for img, want in zip(run, alone[i]):
                assert list(img) == asks[i]
                for name in asks[i]:
                    np.testing.assert_array_equal(img[name].activation, want[name].activation)


# ---------------------------------------------------------------- bad input


def test_unknown_model_is_not_found(client, insp):
    x = np.zeros((3, SIZE, SIZE), np.float32)
    expect(grpc.StatusCode.NOT_FOUND, lambda: client.feature_maps("nope", x, "fc"), "'nope' is not loaded")
    expect(grpc.StatusCode.NOT_FOUND, lambda: client.kernels("nope", "conv1"), "'nope' is not loaded")
    expect(grpc.StatusCode.NOT_FOUND, lambda: client.layer_stats("nope"), "'nope' is not loaded")
    still_serves(client)


def test_unknown_layer_is_not_found_with_the_closest_names(client, insp):
    x = np.zeros((3, SIZE, SIZE), np.float32)
    expect(grpc.StatusCode.NOT_FOUND, lambda: client.feature_maps(insp, x, ["layer1.0.conv1", "layer2.0.con1"]),
           "'layer2.0.con1' not found", "closest: layer2.0.conv1")
    expect(grpc.StatusCode.NOT_FOUND, lambda: client.kernels(insp, "layer9.conv1"), "closest:")
    expect(grpc.StatusCode.NOT_FOUND, lambda: client.layer_stats(insp, ["fc", "bn"]), "closest: bn1")
    still_serves(client)


def test_undecodable_image_is_invalid_argument(client, insp, pngs):
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.feature_maps(insp, [pngs[0], b"not an image"], "fc"),
           "image 1", "could not decode")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.layer_stats(insp, "fc", images=[b"\x89PNG broken"]),
           "image 0")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.feature_maps(insp, [], "fc"), "no images")
    still_serves(client)


def test_wrong_kind_of_layer_or_argument_is_invalid_argument(client, insp, batch):
    msg = expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.kernels(insp, "layer1.0.bn1"),
                 "BatchNorm2d, not a Conv2d", "conv layers (20)")
    assert "layer1.0.conv1" in msg
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.kernels(insp, ""), "name a conv layer")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.kernels(insp, "layer1.0.conv1", mode="rgb"), "3 input channels")
    x = batch.numpy()
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.feature_maps(insp, x, "fc", channels=[10]), "10 channels")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.feature_maps(insp, x, []), "at least one layer")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.feature_maps(insp, x, "conv1", grid=True, colormap="plaid"),
           "unknown colormap")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.layer_stats(insp, "fc", images=x, target="class99"),
           "no class labelled 'class99'")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.layer_stats(insp, "fc", images=x, labels=[1]),
           "1 labels for 2 images")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.layer_stats(insp, "fc", images=x, target=10), "out of range")
    expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.layer_stats(insp, "layer1.0.relu"), "has no parameters")
    still_serves(client)


def test_unreached_layer_is_failed_precondition(client, store):
    """GoogLeNet's aux heads only run in training mode: the served (eval) model never reaches them."""
    torch.manual_seed(0)
    model = torchvision.models.googlenet(num_classes=4, aux_logits=True, init_weights=False).eval()
    save_checkpoint(store / "gn-aux.pt", "googlenet", model, ["a", "b", "c", "d"], RECIPE, aux_logits=True)
    client.load_model("gnaux", "gn-aux")
    try:
        x = np.zeros((3, SIZE, SIZE), np.float32)
        expect(grpc.StatusCode.FAILED_PRECONDITION,
               lambda: client.feature_maps("gnaux", x, ["inception3a", "aux1.fc2"]),
               "'aux1.fc2' was not reached by the forward pass")
        # Statistics of an unused head: its values, and no gradient for it.
        stats = client.layer_stats("gnaux", ["aux1.fc2", "fc"], images=x)
        assert stats.layer("aux1.fc2").parameters[0].grad is None
        assert stats.layer("fc").parameters[0].grad is not None
        assert client.feature_maps("gnaux", x, "inception3a")[0]["inception3a"].shape == [256, 8, 8]
    finally:
        client.unload_model("gnaux")


def test_over_size_answers_are_resource_exhausted_with_the_size(client, insp, served):
    x = np.zeros((3, SIZE, SIZE), np.float32)
    limit = "64.0 MiB"
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED,
           lambda: client.feature_maps(insp, x, "conv1", grid=True, tile_size=4096), "would be about", "bytes", limit)
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED,
           lambda: client.kernels(insp, "layer4.1.conv2", tile_size=4096, max_tiles=1024), "would be about", limit)
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: client.layer_stats(insp, bins=100_000),
           "would be about", "62 parameter tensors", limit)
    assert hook_count(served) == 0
    still_serves(client)


def test_cancelled_calls_leave_no_hooks_and_no_grad(client, insp, served, batch):
    from netscope.v1 import inspector_pb2 as pb

    x = np.repeat(batch.numpy(), 8, axis=0)  # 16 images
    req = pb.FeatureMapsRequest(model=insp, layers=["conv1", "layer1", "layer2", "layer3"],
                                grid=pb.GridOptions(render=True, upsample_to_input=True),
                                images=[pb.Image(tensor=pb.Tensor(dtype=pb.FLOAT32, shape=list(i.shape), data=i.tobytes()))
                                        for i in x])
    stats = pb.LayerStatsRequest(model=insp, images=req.images[:4])
    futures = [client.stub.GetFeatureMaps.future(req), client.stub.GetLayerStats.future(stats)]
    deadline = time.monotonic() + 30
    while hook_count(served) == 0 and time.monotonic() < deadline:  # the capture is under way
        time.sleep(0.01)
    assert hook_count(served) > 0
    for f in futures:
        f.cancel()
    # The 16-image feature maps are cancelled mid-way; the 4-image stats may
    # win the race if the server took them first (the calls share a thread).
    assert futures[0].cancelled()
    deadline = time.monotonic() + 60
    while hook_count(served) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hook_count(served) == 0
    assert not any(p.grad is not None for p in served.parameters())
    assert not served.training
    still_serves(client)
