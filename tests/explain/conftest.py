"""Models with fixed random weights (seeded, no downloads) and inputs for the
explanation tests. Built once per session: construction is not free."""
from __future__ import annotations

import functools
import os

import pytest
import torch
import torchvision
from torch import nn

from netscope.server import imaging
from netscope.server.models.registry import build_architecture, default_recipe

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(items):
    # Captum announces its (private-copy) hooks on every call.
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("ignore:Setting (forward, )?backward hooks"))


@functools.lru_cache(maxsize=None)
def model(arch: str, **kwargs) -> nn.Module:
    """A torchvision classifier with weights from seed 0, in eval mode.

    BatchNorm running statistics are calibrated on seeded random images (as
    after training, each BN normalises what it sees): torchvision's random
    init alone makes mobilenets' and efficientnets' activations vanish
    (1e-11 at the last block), and maps of that size test nothing."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = torchvision.models.get_model(arch, weights=None, **kwargs)
        calibrate(m)
    return m.eval()


def calibrate(m: nn.Module, size: int = 96) -> None:
    bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # cumulative average
    m.train()
    with torch.no_grad():
        m(batch(16, size, seed=99))
    for b in bns:
        b.momentum = 0.1
    m.eval()


def batch(n: int, size: int, seed: int = 1, channels: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=gen)


class TinyNet(nn.Module):
    """A small conv net ending in global average pooling + Linear, with
    in-place ReLUs; `dead` channels of the last conv are forced to zero."""

    def __init__(self, channels: int = 8, classes: int = 5, dead: int = 0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, channels, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)
        if dead:
            with torch.no_grad():
                self.features[4].weight[:dead] = 0
                self.features[4].bias[:dead] = -1.0  # relu(-1) = 0 everywhere: a dead channel

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@functools.lru_cache(maxsize=None)
def tiny(channels: int = 8, classes: int = 5, dead: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TinyNet(channels, classes, dead).eval()


def untouched(m: nn.Module):
    """A fingerprint of everything explaining must leave as it was."""
    from netscope.server.inspection.hooks import hook_count

    return {
        "hooks": hook_count(m),
        "modules": [(n, id(mod), mod.training, getattr(mod, "inplace", None)) for n, mod in m.named_modules()],
        "grads": [n for n, p in m.named_parameters() if p.grad is not None],
        "attrs": [sorted(vars(mod)) for mod in m.modules()],
        "params": [p.data_ptr() for p in m.parameters()],
        "requires_grad": [p.requires_grad for p in m.parameters()],
    }


@pytest.fixture
def fingerprint():
    return untouched


def options_for(method: str, **values):
    """explain.Options with only those of `values` that `method` uses (the
    registry's schema refuses the others), so one set of cheap settings
    serves a loop over every method."""
    from netscope.server.explain import methods
    from netscope.server.explain import Options

    uses = set(methods.method(method).options) | set(methods.COMMON_OPTIONS)
    return Options(**{k: v for k, v in values.items() if k in uses})


# The session server's r18 (resnet18, weights none, the registry's seed) in
# process, and two photos as it sees them: for comparisons over the wire.

@pytest.fixture(scope="module")
def r18():
    return build_architecture("resnet18", 1000).eval()


@pytest.fixture(scope="module")
def pictures(photos):
    return [photos["chelsea"], photos["coffee"]]


@pytest.fixture(scope="module")
def x(pictures):
    recipe = default_recipe("resnet18")
    return torch.stack([imaging.preprocess(imaging.as_rgb(p), recipe) for p in pictures])
