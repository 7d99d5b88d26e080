"""Small tensor helpers shared by the CAM family and the attribution methods:
layer layouts (conv maps, channels-last maps, transformer tokens), upsampling,
normalisation, the first principal component, and the raw result type."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FailedPrecondition, InvalidArgument


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
    m = weighted.float().reshape(n, c, h * w).transpose(1, 2)  # (N, hw, C)
    if not bool(torch.isfinite(m).all()):
        raise FailedPrecondition("the explained layer's activations hold NaN or infinity: the model produced "
                                 "non-finite values for this input; check its weights, or load it as float32",
                                 reason="NON_FINITE")
    if h * w < 2:
        return torch.zeros(n, h, w, device=weighted.device)
    # Centred and scaled to at most 1 per image (a constant map centres to 0,
    # and large activations would overflow float32 in the SVD); the
    # projection is scaled back. A zero map is the answer for no variation.
    m = m - m.mean(dim=1, keepdim=True)
    scale = m.abs().amax(dim=(1, 2)).clamp_min(1e-30)
    _, _, vh = _svd(m / scale[:, None, None])
    v = vh[:, 0, :]  # (N, C)
    sign = torch.where(v.sum(dim=1) < 0, -1.0, 1.0).to(v.dtype)
    proj = torch.bmm(m, (v * sign[:, None])[:, :, None]).squeeze(-1)
    return proj.reshape(n, h, w)


def _svd(m: torch.Tensor):
    """torch.linalg.svd, retried in float64 when LAPACK does not converge
    (ill-conditioned, nearly constant maps); float32 factors back."""
    try:
        return torch.linalg.svd(m, full_matrices=False)
    except RuntimeError:  # torch.linalg.LinAlgError: "failed to converge"
        u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
        return u.to(m.dtype), s.to(m.dtype), vh.to(m.dtype)


# What torch says when an input is too small for a network's kernels and pools.
_TOO_SMALL = ("Output size is too small", "Kernel size can't be greater than actual input size",
              "Expected more than 1 value per channel", "Padding size should be less than",
              "input image is smaller than kernel", "should be less than or equal to the input size")


def too_small(exc: BaseException, x: torch.Tensor) -> InvalidArgument | None:
    """An InvalidArgument for a torch error that says the input was too small
    for the network, else None (the error is not the client's)."""
    text = str(exc)
    if not isinstance(exc, RuntimeError) or not any(p in text for p in _TOO_SMALL):
        return None
    h, w = (int(s) for s in x.shape[-2:])
    return InvalidArgument(f"the {h}x{w} input is too small for this model ({text.splitlines()[0][:160]}); "
                           f"send larger images, e.g. at the model's own input size", reason="INPUT_TOO_SMALL",
                           field="images", metadata={"height": str(h), "width": str(w)})
