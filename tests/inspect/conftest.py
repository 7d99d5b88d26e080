"""Fixtures for the inspection tests (CPU, random init, no network)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from .inspect_helpers import WithAux, photos_batch, seeded_resnet18


@pytest.fixture(scope="session")
def resnet() -> nn.Module:
    return seeded_resnet18()


@pytest.fixture(scope="session")
def batch() -> torch.Tensor:
    return photos_batch()


@pytest.fixture
def with_aux() -> WithAux:
    return WithAux().eval()
