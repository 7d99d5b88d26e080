"""Fixtures for the inspection tests (CPU, random init, no network)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ..conftest import encode
from .inspect_helpers import CLASSES, RECIPE, WithAux, photos_batch, save_checkpoint, seeded_resnet18


@pytest.fixture(scope="session")
def resnet() -> nn.Module:
    return seeded_resnet18()


@pytest.fixture(scope="session")
def batch() -> torch.Tensor:
    return photos_batch()


@pytest.fixture
def with_aux() -> WithAux:
    return WithAux().eval()


@pytest.fixture(scope="session")
def ref():
    """The same weights the server serves as `insp`, in-process."""
    return seeded_resnet18()


@pytest.fixture(scope="session")
def insp(client, store, ref):
    """resnet18, 10 classes, 64x64 preprocessing, from a checkpoint in the store."""
    save_checkpoint(store / "insp-r18.pt", "resnet18", ref, CLASSES, RECIPE)
    client.load_model("insp", "insp-r18")
    yield "insp"
    client.unload_model("insp")


@pytest.fixture(scope="session")
def served(server, insp):
    """The server's own module for `insp`, to check nothing was left on it."""
    return server.registry.get(insp).module


@pytest.fixture(scope="session")
def pngs():
    """The photos of `batch`, PNG-encoded (lossless: the server sees the same pixels)."""
    from skimage import data

    return [encode(data.astronaut(), ".png"), encode(data.coffee(), ".png")]
