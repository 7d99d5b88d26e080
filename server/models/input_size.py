"""The smallest input a loaded model runs on, found once at load time.

A preprocessed float image smaller than a network's stride and kernels allow
("Kernel size can't be greater than actual input size") would otherwise fail
inside the forward pass; knowing the size up front lets the server refuse it
with INVALID_ARGUMENT naming the size that works (convert.check_float_size).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn


def smallest_size(runs, largest: int) -> int:
    """The smallest s in 1..largest with runs(s) true, assuming `largest`
    runs and that sizes which run form an upward-closed range: doubling from
    1, then a binary search between the last size that failed and the first
    that ran (about 2 log2(largest) calls at most, most of them tiny). The
    answer always ran, even where that assumption fails."""
    works, fails = largest, 0
    s = 1
    while s < largest:
        if runs(s):
            works = s
            break
        fails, s = s, s * 2
    while works - fails > 1:
        mid = (works + fails) // 2
        if runs(mid):
            works = mid
        else:
            fails = mid
    return works


def min_input_size(module: nn.Module, input_size: tuple[int, int, int], device: torch.device,
                   dtype: torch.dtype, memory_format: torch.memory_format = torch.contiguous_format) -> int:
    """The smallest square H = W (pixels) on which `module` (in eval mode, on
    `device` as `dtype`) completes a forward pass of one (C, H, W) image with
    finite-shaped output; at most min(H, W) of input_size, which the caller
    has already run. Forward passes that fail for the size (any exception)
    count as "does not run"."""
    c, h, w = input_size

    def runs(s: int) -> bool:
        x = torch.zeros(1, c, s, s, device=device, dtype=dtype).contiguous(memory_format=memory_format)
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module(x)
            return True
        except Exception:  # conv/pool size errors, ViT's size assertion, reshape errors, ...
            return False

    return smallest_size(runs, min(h, w))
