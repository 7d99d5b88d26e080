"""layer_stats: statistics against torch and torch.histc, gradients against a
plain backward pass on a deep copy, and the served model left as it was."""
from __future__ import annotations

import copy
import math
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from .inspect_helpers import WithAux, assert_unchanged, model_state, seeded_resnet18
from netscope.server.errors import InvalidArgument, NotFound, ResourceExhausted
from netscope.server.inspection.hooks import hook_count
from netscope.server.inspection import feature_maps, layer_stats, parameter_layers, tensor_stats


def check_stats(s, t: torch.Tensor, bins: int, lo: float = 0.0, hi: float = 0.0):
    d = t.detach().double()
    assert s.mean == pytest.approx(d.mean().item(), rel=1e-12, abs=1e-15)
    assert s.std == pytest.approx(d.std(unbiased=False).item(), rel=1e-9, abs=1e-15)
    assert s.min == d.min().item() and s.max == d.max().item()
    assert s.l2_norm == pytest.approx(d.norm().item(), rel=1e-12)
    assert s.zero_fraction == (t == 0).sum().item() / t.numel()
    f = t.detach().float()
    counts = torch.histc(f, bins=bins, min=lo, max=hi)
    np.testing.assert_array_equal(s.hist_counts, counts.long().numpy())
    if lo == hi:
        assert s.hist_counts.sum() == t.numel()
    a, b = (lo, hi) if lo < hi else (f.min().item(), f.max().item())
    if a == b:
        a, b = a - 1, b + 1
    np.testing.assert_allclose(s.hist_edges, np.linspace(a, b, bins + 1))


def test_value_statistics_of_every_layer_with_parameters(resnet):
    got = layer_stats(resnet, bins=17)
    assert [ls.layer for ls in got.layers] == parameter_layers(resnet)
    assert got.loss is None
    modules = dict(resnet.named_modules())
    n = 0
    for ls in got.layers:
        assert ls.type == type(modules[ls.layer]).__name__
        own = dict(modules[ls.layer].named_parameters(recurse=False))
        assert [p.name for p in ls.parameters] == list(own)
        for ps in ls.parameters:
            p = own[ps.name]
            assert ps.shape == tuple(p.shape) and ps.count == p.numel() and ps.trainable
            assert ps.grad is None
            check_stats(ps.value, p, 17)
            n += 1
    assert n == len(list(resnet.parameters()))
    assert not any(ls.has_grad or ls.grad_norm for ls in got.layers)


def test_histogram_range_and_constant_tensors():
    t = torch.tensor([-3.0, -0.5, 0.0, 0.0, 0.25, 0.5, 2.0, 9.0])
    check_stats(tensor_stats(t, 4, (-1.0, 1.0)), t, 4, -1.0, 1.0)
    assert tensor_stats(t, 4, (-1.0, 1.0)).hist_counts.sum() == 5  # values outside the range are left out, as in histc
    ones = torch.ones(5)
    s = tensor_stats(ones, 4)
    check_stats(s, ones, 4)
    assert s.std == 0.0 and list(s.hist_edges) == [0.0, 0.5, 1.0, 1.5, 2.0]
    # Non-finite values: statistics say so, the histogram keeps the finite ones.
    bad = torch.tensor([1.0, float("inf"), 2.0, float("nan")])
    s = tensor_stats(bad, 2)
    assert math.isnan(s.mean) and s.hist_counts.tolist() == [1, 1]


def reference_grads(model, x, layers, *, target=None, labels=None):
    """The plain way: a deep copy, a loss, .backward(), read param.grad."""
    m = copy.deepcopy(model)
    logits = m(x).float()
    if labels is not None:
        loss = F.cross_entropy(logits, torch.tensor(labels))
    else:
        idx = torch.full((x.shape[0],), target) if target is not None else logits.argmax(dim=1)
        loss = logits[torch.arange(x.shape[0]), idx].mean()
    loss.backward()
    modules = dict(m.named_modules())
    return loss.item(), {n: dict(modules[n].named_parameters(recurse=False)) for n in layers}


SOME = ["conv1", "layer2.0.bn1", "layer3.1.conv2", "fc"]


@pytest.mark.parametrize("how", [{}, {"target": 3, "layers": SOME}, {"labels": [2, 7], "layers": SOME}])
def test_gradient_statistics_equal_a_plain_backward_pass(resnet, batch, how):
    before = model_state(resnet)
    hooks = hook_count(resnet)
    got = layer_stats(resnet, x=batch, bins=11, **how)
    layers = [ls.layer for ls in got.layers]
    assert layers == how.get("layers", parameter_layers(resnet))
    how.pop("layers", None)
    loss, ref = reference_grads(resnet, batch, layers, **how)
    assert got.loss == pytest.approx(loss, rel=1e-6)
    assert got.grad_parameters == sum(len(ref[n]) for n in layers)
    norms = {}
    for ls in got.layers:
        sq = 0.0
        for ps in ls.parameters:
            g = ref[ls.layer][ps.name].grad
            assert ps.grad is not None
            # autograd.grad runs the same kernels as .backward(): the same numbers.
            check_stats(ps.grad, g, 11)
            check_stats(ps.value, ref[ls.layer][ps.name], 11)
            sq += g.double().norm().item() ** 2
        norms[ls.layer] = math.sqrt(sq)
        assert ls.has_grad and ls.grad_norm == pytest.approx(norms[ls.layer], rel=1e-5)
    # Ratio to the next layer towards the output; the last layer has none.
    for a, b in zip(layers, layers[1:]):
        ratio = next(ls.grad_norm_ratio for ls in got.layers if ls.layer == a)
        assert ratio == pytest.approx(norms[a] / norms[b], rel=1e-4)
    assert got.layers[-1].grad_norm_ratio == 0.0
    # The served model is as it was: no .grad, same running stats, eval mode, no hooks.
    assert_unchanged(resnet, before)
    assert hook_count(resnet) == hooks


def test_chosen_layers_frozen_parameters_and_unused_heads(batch):
    model = WithAux().eval()
    model.stem[0].weight.requires_grad_(False)
    before = model_state(model)
    got = layer_stats(model, ["head", "aux", "stem.0", "body"], x=batch)
    by = {ls.layer: ls for ls in got.layers}
    assert [ls.layer for ls in got.layers] == ["head", "aux", "stem.0", "body"]  # request order
    # A container: all its parameters, named relative to it.
    assert [p.name for p in by["body"].parameters] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    # Frozen: value statistics, trainable False, no gradient statistics.
    w, b = by["stem.0"].parameters
    assert not w.trainable and w.grad is None and b.trainable and b.grad is not None
    # Never reached by the forward: no gradient statistics, no ratio.
    assert all(p.grad is None for p in by["aux"].parameters) and not by["aux"].has_grad
    assert by["aux"].grad_norm_ratio == 0.0
    # Plain backward on a copy frozen the same way.
    m = copy.deepcopy(model)
    logits = m(batch)
    logits[torch.arange(2), logits.argmax(1)].mean().backward()
    assert m.stem[0].weight.grad is None and m.aux.weight.grad is None
    assert b.grad.l2_norm == pytest.approx(m.stem[0].bias.grad.double().norm().item(), rel=1e-5)
    body = [m.body[0].weight.grad, m.body[0].bias.grad, m.body[2].weight.grad, m.body[2].bias.grad]
    for ps, g in zip(by["body"].parameters, body):
        assert ps.grad.l2_norm == pytest.approx(g.double().norm().item(), rel=1e-5)
    # Ratios follow module order (stem.0 -> body -> head), whatever the request order.
    assert by["stem.0"].grad_norm_ratio == pytest.approx(by["stem.0"].grad_norm / by["body"].grad_norm)
    assert by["body"].grad_norm_ratio == pytest.approx(by["body"].grad_norm / by["head"].grad_norm)
    assert by["head"].grad_norm_ratio == 0.0
    assert_unchanged(model, before)


def test_the_model_is_untouched_after_failures_half_way(batch, monkeypatch):
    model = WithAux().eval()
    before = model_state(model)
    with pytest.raises(InvalidArgument, match="label 9 is out of range 0..4"):
        layer_stats(model, x=batch, labels=[1, 9])  # fails after the forward pass
    with pytest.raises(InvalidArgument, match="2 labels for 1 images"):
        layer_stats(model, x=batch[:1], labels=[1, 2])
    with pytest.raises(InvalidArgument, match="target class 5"):
        layer_stats(model, x=batch, target=5)
    model.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        layer_stats(model, x=batch)
    model.fail = False

    def broken_grad(*args, **kwargs):
        raise RuntimeError("backward failed")

    monkeypatch.setattr(torch.autograd, "grad", broken_grad)
    with pytest.raises(RuntimeError, match="backward failed"):
        layer_stats(model, x=batch)
    monkeypatch.undo()
    assert_unchanged(model, before)
    assert hook_count(model) == 0


def test_bad_requests(resnet, batch):
    with pytest.raises(NotFound, match="closest: layer1.0.bn2, layer1.0.bn1"):
        layer_stats(resnet, ["layer1.0.bn"])
    with pytest.raises(InvalidArgument, match="has no parameters"):
        layer_stats(resnet, ["layer1.0.relu"])
    with pytest.raises(InvalidArgument, match="bins"):
        layer_stats(resnet, bins=-3)
    with pytest.raises(InvalidArgument, match="min <= max"):
        layer_stats(resnet, hist_range=(1.0, -1.0))
    with pytest.raises(InvalidArgument, match="need images"):
        layer_stats(resnet, labels=[1, 2])
    with pytest.raises(InvalidArgument, match="not both"):
        layer_stats(resnet, x=batch, labels=[1, 2], target=1)
    with pytest.raises(ResourceExhausted, match="62 parameter tensors"):
        layer_stats(resnet, bins=10_000, max_bytes=1_000_000)
    assert len(layer_stats(resnet, ["fc"], bins=10_000, max_bytes=1_000_000).layers) == 1


def test_statistics_beside_concurrent_feature_maps(batch):
    """A gradient request and forward-only captures share one model at once."""
    model = seeded_resnet18()
    alone_stats = layer_stats(model, ["layer3.0.conv1", "fc"], x=batch)
    alone_maps = feature_maps(model, batch, ["layer3.0.conv1"])
    out = {}  # a thread that fails leaves its key out: the checks below fail on it
    barrier = threading.Barrier(3)

    def stats():
        barrier.wait()
        out["stats"] = [layer_stats(model, ["layer3.0.conv1", "fc"], x=batch) for _ in range(2)]

    def maps(key):
        barrier.wait()
        out[key] = [feature_maps(model, batch, ["layer3.0.conv1"]) for _ in range(3)]

    threads = [threading.Thread(target=stats), threading.Thread(target=maps, args=("a",)), threading.Thread(target=maps, args=("b",))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(out) == {"stats", "a", "b"}
    for s in out["stats"]:
        for ls, ref in zip(s.layers, alone_stats.layers):
            for p, r in zip(ls.parameters, ref.parameters):
                assert p.grad.l2_norm == r.grad.l2_norm and p.grad.mean == r.grad.mean
    for key in ("a", "b"):
        for got in out[key]:
            for i in range(2):
                assert torch.equal(got[i][0].activation, alone_maps[i][0].activation)
    assert not any(p.grad is not None for p in model.parameters())


def test_a_bfloat16_model(batch):
    """Reduced-precision models: inputs are cast to the model's dtype, answers
    come back as float32/float64 numbers computed from the model's own values."""
    model = WithAux().eval().to(torch.bfloat16)
    before = model_state(model)
    got = layer_stats(model, ["stem.0", "head"], x=batch, bins=7)
    m = copy.deepcopy(model)
    logits = m(batch.to(torch.bfloat16)).float()
    loss = logits[torch.arange(2), logits.argmax(1)].mean()
    loss.backward()
    assert got.loss == pytest.approx(loss.item(), rel=1e-6)
    for ls, mod in zip(got.layers, (m.stem[0], m.head)):
        for ps, (name, p) in zip(ls.parameters, mod.named_parameters()):
            check_stats(ps.value, p, 7)
            check_stats(ps.grad, p.grad, 7)
    maps = feature_maps(model, batch, ["body.2"])
    ref = m.body(m.stem(batch.to(torch.bfloat16)))
    assert maps[0][0].activation.dtype == torch.float32
    assert torch.equal(maps[1][0].activation, ref[1].detach().float())
    assert_unchanged(model, before)
