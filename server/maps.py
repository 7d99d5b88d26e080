"""Small tensor helpers shared by the CAM family and the attribution methods:
layer layouts (conv maps, channels-last maps, transformer tokens), upsampling,
normalisation, the first principal component, and the raw result type."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidArgument


@dataclass
class Raw:
    """What a method computed, still on the device. k = targets per image."""

    logits: torch.Tensor  # (N, classes), detached
    targets: torch.Tensor  # (N, k) long
    heatmap: torch.Tensor  # (N, k, h, w)
    upsampled: torch.Tensor | None = None  # (N, k, H, W); None: heatmap is already at the input's size
    attribution: torch.Tensor | None = None  # (N, k, C, H, W), input-space methods
    layers: list[str] | None = None  # when the method chose its own layers


def first_tensor(value):
    """The logits of a model output (GoogLeNet/Inception return namedtuples in train mode)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise InvalidArgument(f"the model returned {type(value).__name__}, not a logits tensor")


@dataclass(frozen=True)
class Layout:
    """How a layer's output is seen as an (N, C, h, w) grid."""

    kind: str  # "nchw", "nhwc" (Swin), "tokens" (ViT: (N, T, C), `prefix` class tokens first)
    prefix: int = 0

    def grid(self, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        n, tokens, c = t.shape
        side = math.isqrt(tokens - self.prefix)
        return t[:, self.prefix :].reshape(n, side, side, c).permute(0, 3, 1, 2)

    def zero_channels(self, out: torch.Tensor, rows: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """A copy of `out` with channel channels[i] of sample rows[i] set to 0
        (patch tokens only for transformers)."""
        out = out.clone()
        if self.kind == "nchw":
            out[rows, channels] = 0
        elif self.kind == "nhwc":
            out[rows, :, :, channels] = 0
        else:
            out[rows, self.prefix :, channels] = 0
        return out


def layout_of(model: nn.Module, name: str, module: nn.Module, t: torch.Tensor, method: str) -> Layout:
    """The grid view of `t`, the output of layer `name`, or InvalidArgument."""
    if t.dim() == 4:
        if type(model).__name__ == "SwinTransformer" and not isinstance(module, nn.Conv2d):
            return Layout("nhwc")
        return Layout("nchw")
    if t.dim() == 3:
        tokens = t.shape[1]
        for prefix in (0, 1):
            side = math.isqrt(max(tokens - prefix, 0))
            if side > 0 and side * side == tokens - prefix:
                return Layout("tokens", prefix)
    raise InvalidArgument(
        f"{method} needs a layer with a spatial output, (N, C, H, W) or transformer tokens on a square grid; "
        f"{name!r} ({type(module).__name__}) outputs shape {list(t.shape)}")


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """Bilinear (N, K, h, w) -> (N, K, H, W) with half-pixel centres
    (F.interpolate align_corners=False = cv2.resize INTER_LINEAR)."""
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def normalize(maps: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Min-max each (..., H, W) map to [0, 1], as the CAM libraries display them."""
    flat = maps.reshape(*maps.shape[:-2], -1)
    flat = flat - flat.min(-1, keepdim=True).values
    return (flat / (flat.max(-1, keepdim=True).values + eps)).reshape(maps.shape)


def first_component(weighted: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, h, w): each position's projection on the first
    principal component of the channel vectors (centred over positions).

    The sign of a principal component is arbitrary; we choose the one whose
    projection correlates positively with the channel sum (equivalently, whose
    component has a positive sum: v'C1 = lambda v'1), so a map never flips
    between runs, devices or libraries."""
    n, c, h, w = weighted.shape
    m = torch.nan_to_num(weighted.float()).reshape(n, c, h * w).transpose(1, 2)  # (N, hw, C)
    m = m - m.mean(dim=1, keepdim=True)
    if h * w < 2:
        return torch.zeros(n, h, w, device=weighted.device)
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    v = vh[:, 0, :]  # (N, C)
    sign = torch.where(v.sum(dim=1) < 0, -1.0, 1.0).to(v.dtype)
    proj = torch.bmm(m, (v * sign[:, None])[:, :, None]).squeeze(-1)
    return proj.reshape(n, h, w)
