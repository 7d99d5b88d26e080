"""Helpers for the inspection tests: small models, batch, hand-written references (CPU, no network)."""
from __future__ import annotations

import copy

import numpy as np
import torch
import torchvision
from skimage import data
from torch import nn

from netscope.server.imaging import Preprocessing, preprocess

SIZE = 64
CLASSES = [f"class{i}" for i in range(10)]
RECIPE = Preprocessing(resize=SIZE, crop=(SIZE, SIZE))  # ImageNet mean/std


def photos_batch(size: int = SIZE) -> torch.Tensor:
    """Two skimage batch, preprocessed like ImageNet inputs at size x size."""
    recipe = Preprocessing(resize=size, crop=(size, size))
    return torch.stack([preprocess(data.astronaut(), recipe), preprocess(data.coffee(), recipe)])


def seeded_resnet18(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=num_classes)
    # Random init leaves every BatchNorm at weight 1, bias 0 and running stats
    # 0/1; give them values so statistics and eval-mode checks mean something.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
    return model.eval()


class WithAux(nn.Module):
    """A net with an aux head its forward never calls, and a switch to fail mid-forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(inplace=True), nn.Conv2d(8, 16, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 5)
        self.aux = nn.Linear(16, 5)
        self.fail = False
        with torch.no_grad():
            self.stem[1].running_mean.normal_(0, 0.1)
            self.stem[1].running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        x = self.body(self.stem(x))
        if self.fail:
            raise RuntimeError("boom mid-forward")
        return self.head(torch.flatten(self.pool(x), 1))


class TinyViT(nn.Module):
    """Patchify + one transformer block: outputs (N, T, D) inside."""

    def __init__(self, dim: int = 16, classes: int = 4):
        super().__init__()
        torch.manual_seed(4)
        self.patch = nn.Conv2d(3, dim, 16, stride=16)
        self.block = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=32, batch_first=True, dropout=0.0)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)  # (N, T, D)
        t = self.norm(self.block(t))
        return self.head(t.mean(dim=1))


def model_state(model: nn.Module) -> dict:
    """Everything a request must leave untouched."""
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
        "grads": [n for n, p in model.named_parameters() if p.grad is not None],
        "training": [n for n, m in model.named_modules() if m.training],
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = model_state(model)
    assert after["grads"] == [] and before["grads"] == []
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    for kind in ("params", "buffers"):
        assert after[kind].keys() == before[kind].keys()
        for n in before[kind]:
            assert torch.equal(after[kind][n], before[kind][n]), f"{kind} {n} changed"


def reference_outputs(model: nn.Module, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
    """The hand-written way: a forward hook per layer that clones the output
    when the hook fires (before any in-place op downstream), on a deep copy."""
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name in layers:
        def hook(module, inputs, output, name=name):
            out = output if isinstance(output, torch.Tensor) else output[0]
            seen[name] = out.detach().clone()
        handles.append(modules[name].register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def decode_png(png: bytes) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def hand_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max to 0..255 written out by hand (truncating, constant -> 0)."""
    v = np.asarray(values, dtype=np.float32)
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-12:
        return np.zeros(v.shape, np.uint8)
    return np.clip((v - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def save_checkpoint(path, arch, model, class_names, recipe, **arch_kwargs):
    """A checkpoint in the format DESIGN.md describes (what training/ writes)."""
    torch.save({"format": "netscope-checkpoint", "format_version": 1, "arch": arch, "num_classes": len(class_names),
                "class_names": class_names, "preprocessing": recipe.to_dict(), "arch_kwargs": arch_kwargs,
                "model_state_dict": model.state_dict()}, path)
