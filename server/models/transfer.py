"""Host -> device: batches assembled in pinned (page-locked) host memory and
copied with non_blocking=True, so the copy is one DMA that does not hold the
calling thread. CUDA only: on the CPU every function here is the plain
operation (there is nothing to pin and nothing to copy).

Not yet measured on a GPU (no GPU was lent to the session that wrote this);
on the CPU the tests check that the same calls give the same tensors.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def can_pin(device: torch.device) -> bool:
    """Pinned staging pays only for copies to a CUDA device."""
    return device.type == "cuda" and torch.cuda.is_available()


def stack(tensors: Sequence[torch.Tensor], *, pin: bool) -> torch.Tensor:
    """torch.stack, into pinned memory when asked (CPU tensors only). Torch's
    caching host allocator reuses pinned blocks, so this costs no more than an
    ordinary allocation once warm. Unpinned host batches are stacked by numpy:
    request threads stay off torch's OpenMP (server/runtime/torch_thread.py)."""
    if tensors[0].device.type != "cpu":
        return torch.stack(list(tensors))
    if not pin:
        return torch.from_numpy(np.stack([t.numpy() for t in tensors]))
    out = torch.empty((len(tensors), *tensors[0].shape), dtype=tensors[0].dtype, pin_memory=True)
    return torch.stack(list(tensors), out=out)


def cat(tensors: Sequence[torch.Tensor], *, pin: bool) -> torch.Tensor:
    """torch.cat along the batch, into pinned memory when asked (CPU tensors only)."""
    if not pin or tensors[0].device.type != "cpu":
        return torch.cat(list(tensors))
    rows = sum(t.shape[0] for t in tensors)
    out = torch.empty((rows, *tensors[0].shape[1:]), dtype=tensors[0].dtype, pin_memory=True)
    return torch.cat(list(tensors), out=out)


def to_device(x: torch.Tensor, device: torch.device, dtype: torch.dtype,
              memory_format: torch.memory_format) -> torch.Tensor:
    """One copy to the device (asynchronous from pinned memory; later work on
    the device's current stream is ordered after it), then the model's dtype
    and layout there."""
    if x.device != device:
        x = x.to(device, non_blocking=x.device.type == "cpu" and device.type == "cuda" and x.is_pinned())
    return x.to(dtype=dtype, memory_format=memory_format)
