"""The torchinfo-style summary behind GetModelInfo: per-layer shapes, parameters
(trainable or not), multiply-adds and totals, checked by hand; and its
shape hooks never record another request's forward pass."""
from __future__ import annotations

import threading

import torch
from torch import nn

from netscope.server.inspection.hooks import hook_count
from netscope.server.inspection import conv_layers
from netscope.server.inspection.summary import summarize

from .inspect_helpers import seeded_resnet18


def test_resnet18_table_by_hand():
    model = seeded_resnet18()
    model.layer1.requires_grad_(False)
    s = summarize(model, (3, 64, 64), "cpu", torch.float32)
    rows = {r.name: r for r in s.layers}
    assert list(rows) == [n for n, _ in model.named_modules() if n]
    conv1 = rows["conv1"]
    assert conv1.input_shape == [1, 3, 64, 64] and conv1.output_shape == [1, 64, 32, 32]
    assert conv1.mult_adds == 64 * 32 * 32 * 3 * 7 * 7 and conv1.num_parameters == 64 * 3 * 7 * 7
    assert rows["fc"].mult_adds == 512 * 10 and rows["fc"].output_shape == [1, 10]
    assert rows["layer1.0.conv1"].trainable_parameters == 0 and rows["layer1.0.conv1"].num_parameters == 64 * 64 * 9
    # A container's mult-adds are its children's.
    assert rows["layer2"].mult_adds == sum(r.mult_adds for n, r in rows.items() if n.startswith("layer2.") and r.is_leaf)
    # Totals: parameters (trainable and not), bytes, mult-adds = FLOPs / 2.
    params = list(model.parameters())
    assert s.num_parameters == sum(p.numel() for p in params) == sum(r.num_parameters for r in s.layers)
    frozen = sum(p.numel() for p in model.layer1.parameters())
    assert s.trainable_parameters == s.num_parameters - frozen
    assert s.parameter_bytes == 4 * s.num_parameters
    assert s.mult_adds == sum(r.mult_adds for r in s.layers if r.is_leaf) and s.flops == 2 * s.mult_adds
    # Flags the other RPCs rely on.
    assert [r.name for r in s.layers if r.conv] == conv_layers(model)
    assert rows["layer4"].cam_target and not rows["fc"].cam_target
    assert hook_count(model) == 0


class Gate(nn.Module):
    """Holds the summarising thread mid-forward until another forward has run."""

    def __init__(self):
        super().__init__()
        self.owner = None
        self.reached = threading.Event()
        self.release = threading.Event()

    def forward(self, x):
        if threading.get_ident() == self.owner:
            self.reached.set()
            assert self.release.wait(30)
        return x


def test_a_concurrent_forward_does_not_lend_the_table_its_shapes():
    gate = Gate()
    torch.manual_seed(0)
    model = nn.Sequential(gate, nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5)).eval()
    quiet = summarize(model, (3, 8, 8), "cpu", torch.float32)
    out = {}

    def summarise():
        gate.owner = threading.get_ident()
        out["summary"] = summarize(model, (3, 8, 8), "cpu", torch.float32)

    t = threading.Thread(target=summarise)
    t.start()
    assert gate.reached.wait(30)
    with torch.inference_mode():  # another request's batch of 3, while the summary's hooks are on
        model(torch.zeros(3, 3, 8, 8))
    gate.release.set()
    t.join()
    for q, r in zip(quiet.layers, out["summary"].layers):
        assert (r.input_shape, r.output_shape, r.mult_adds) == (q.input_shape, q.output_shape, q.mult_adds), r.name
    assert hook_count(model) == 0
