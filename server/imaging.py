"""Pixels: decode, preprocess, normalise, colour, tile, overlay, encode (OpenCV).

Everything here works on numpy arrays in RGB order (OpenCV's BGR stays inside
this module) except `preprocess`, which hands the model a float tensor.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from .errors import InvalidArgument

# Decoded images above this many pixels are refused (decompression bombs).
DEFAULT_MAX_PIXELS = 64_000_000

_COLORMAPS = {
    name[len("COLORMAP_"):].lower(): getattr(cv2, name) for name in dir(cv2) if name.startswith("COLORMAP_")
}
COLORMAPS = sorted(["gray", *_COLORMAPS])

_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}


@dataclass(frozen=True)
class Preprocessing:
    """How raw RGB pixels become the model's input tensor."""

    resize: int = 256  # shorter side, 0: none
    crop: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    channels: int = 3

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        crop = d.get("crop", d.get("crop_size", cls.crop))
        crop = (int(crop), int(crop)) if isinstance(crop, (int, float)) else tuple(int(c) for c in crop)
        mean = tuple(float(m) for m in d.get("mean", cls.mean))
        return cls(
            resize=int(d.get("resize", cls.resize) or 0),
            crop=crop,
            mean=mean,
            std=tuple(float(s) for s in d.get("std", cls.std)),
            interpolation=str(d.get("interpolation", "bilinear")),
            channels=int(d.get("channels", len(mean))),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["crop"] = list(self.crop)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.channels, *self.crop)


def decode(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, index: int = 0) -> np.ndarray:
    """Encoded JPEG/PNG/WebP/BMP bytes -> (H, W, 3) uint8 RGB."""
    if not data:
        raise InvalidArgument(f"image {index}: empty image bytes")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise InvalidArgument(f"image {index}: could not decode {len(data)} bytes as JPEG/PNG/WebP/BMP")
    check_pixels(img.shape[0], img.shape[1], max_pixels, index)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def check_pixels(height: int, width: int, max_pixels: int, index: int) -> None:
    if height * width > max_pixels:
        raise InvalidArgument(
            f"image {index}: {width}x{height} = {height * width} pixels is over the server's limit of {max_pixels}"
        )


def as_rgb(pixels: np.ndarray, index: int = 0) -> np.ndarray:
    """Accept (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8; return (H, W, 3)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise InvalidArgument(f"image {index}: pixel array must be (H, W), (H, W, 3) or (H, W, 4); got {pixels.shape}")
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(new_h, new_w) when the shorter side is resized to `size` (0: unchanged),
    aspect kept and rounded. The one rule for every decode path."""
    if size <= 0 or min(height, width) == size:
        return height, width
    scale = size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_shorter(rgb: np.ndarray, size: int, interpolation: str = "bilinear") -> np.ndarray:
    h, w = rgb.shape[:2]
    new_h, new_w = resized_size(h, w, size)
    if (new_h, new_w) == (h, w):
        return rgb
    # INTER_AREA when shrinking approximates torchvision's antialiased resize.
    flag = cv2.INTER_AREA if size < min(h, w) else _INTERPOLATION.get(interpolation, cv2.INTER_LINEAR)
    return cv2.resize(rgb, (new_w, new_h), interpolation=flag)


def crop_box(height: int, width: int, crop: tuple[int, int]) -> tuple[tuple[int, int, int, int], int, int]:
    """Where a centre crop of (ch, cw) lies: the zero padding (top, bottom,
    left, right) that first brings a smaller image up to the crop, as
    torchvision's CenterCrop does, then the crop's top-left corner."""
    ch, cw = crop
    top_pad, left_pad = max(0, (ch - height) // 2), max(0, (cw - width) // 2)
    pad = (top_pad, max(0, ch - height - top_pad), left_pad, max(0, cw - width - left_pad))
    h, w = height + pad[0] + pad[1], width + pad[2] + pad[3]
    return pad, int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))


def center_crop(rgb: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    ch, cw = crop
    pad, top, left = crop_box(rgb.shape[0], rgb.shape[1], crop)
    if any(pad):
        rgb = cv2.copyMakeBorder(rgb, *pad, cv2.BORDER_CONSTANT)
    return rgb[top : top + ch, left : left + cw]


def fit(rgb: np.ndarray, recipe: Preprocessing) -> np.ndarray:
    """Resize and crop RGB pixels to what the model sees (still uint8)."""
    return center_crop(resize_shorter(rgb, recipe.resize, recipe.interpolation), recipe.crop)


def preprocess(rgb: np.ndarray, recipe: Preprocessing) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (C, crop_h, crop_w) float32, normalised."""
    x = fit(rgb, recipe).astype(np.float32) / 255.0
    if recipe.channels == 1:
        x = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        x = x[:, :, None]
    mean = np.asarray(recipe.mean, dtype=np.float32)
    std = np.asarray(recipe.std, dtype=np.float32)
    x = (x - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max normalise one map (any shape) to 0..255; a constant map becomes 0."""
    values = np.asarray(values, dtype=np.float32)
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if not math.isfinite(lo) or not math.isfinite(hi) or hi - lo < 1e-12:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip((values - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def colorize(gray: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8 RGB through an OpenCV colormap."""
    name = (colormap or "jet").lower()
    if name in ("gray", "grey"):
        return np.repeat(gray[:, :, None], 3, axis=2)
    if name not in _COLORMAPS:
        raise InvalidArgument(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    return cv2.cvtColor(cv2.applyColorMap(gray, _COLORMAPS[name]), cv2.COLOR_BGR2RGB)


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to (H, W)."""
    h, w = size
    if values.shape == (h, w):
        return values
    return cv2.resize(np.asarray(values, dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def make_grid(tiles: list[np.ndarray], nrow: int = 0, padding: int = 2, fill: int = 255) -> np.ndarray:
    """Tile equal-size (h, w, 3) uint8 images, `nrow` per row (0: square-ish)."""
    if not tiles:
        raise InvalidArgument("nothing to draw: no tiles")
    n = len(tiles)
    nrow = nrow if nrow > 0 else math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    h, w = tiles[0].shape[:2]
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, 3), fill, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        grid[y : y + h, x : x + w] = tile
    return grid


def scale_tile(tile: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour scale so small kernels and maps stay crisp."""
    h, w = size
    if tile.shape[:2] == (h, w):
        return tile
    return cv2.resize(tile, (w, h), interpolation=cv2.INTER_NEAREST)


def overlay(rgb: np.ndarray, heatmap: np.ndarray, colormap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """Blend a heatmap (any range, resized to the image) over RGB pixels."""
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgument(f"alpha must be in [0, 1]; got {alpha}")
    heat = colorize(to_uint8(resize_map(heatmap, rgb.shape[:2])), colormap)
    return cv2.addWeighted(heat, alpha, rgb, 1.0 - alpha, 0.0)


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) RGB or (H, W) grey uint8 -> PNG bytes."""
    img = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise InvalidArgument("could not encode PNG")
    return buf.tobytes()


def denormalize(x: torch.Tensor, recipe: Preprocessing) -> np.ndarray:
    """A preprocessed (C, H, W) tensor back to (H, W, 3) uint8 RGB, for overlays."""
    arr = x.detach().float().cpu().numpy().transpose(1, 2, 0)
    mean = np.asarray(recipe.mean, dtype=np.float32)[: arr.shape[2]]
    std = np.asarray(recipe.std, dtype=np.float32)[: arr.shape[2]]
    arr = np.clip((arr * std + mean) * 255.0, 0, 255).astype(np.uint8)
    return as_rgb(arr)
