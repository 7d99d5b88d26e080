"""Pixels: decode, preprocess, normalise, colour, tile, overlay, encode (OpenCV).

Everything here works on numpy arrays in RGB order (OpenCV's BGR stays inside
this module) except `preprocess`, which hands the model a float tensor.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

# OpenCV's own limit on decoded pixels, a second line behind the header check
# in `decode`: read from the environment once, when cv2 is first imported
# (server/__init__.py sets it before any module imports cv2).
OPENCV_MAX_PIXELS = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30))

import cv2  # noqa: E402  (after the limit is read)
import numpy as np
import torch

from . import image_header
from ..errors import InvalidArgument, shown

# Decoded images above this many pixels are refused (decompression bombs).
DEFAULT_MAX_PIXELS = 64_000_000
# A preprocessed float image may hold at most this many times the model
# input's pixels (and never more than max_pixels): a forward pass's
# activations grow with them, and 16x (896x896 for a 224x224 model) is well
# past any resolution a classifier is run at on purpose.
FLOAT_IMAGE_FACTOR = 16
# While the shorter-side resize stays within this many times the crop's
# pixels, the whole image is resized (exactly OpenCV's result); beyond (an
# extreme aspect ratio enlarged), only the crop's window is resampled, so no
# step allocates more than this multiple of the model input.
FULL_RESIZE_FACTOR = 16

_COLORMAPS = {
    name[len("COLORMAP_"):].lower(): getattr(cv2, name) for name in dir(cv2) if name.startswith("COLORMAP_")
}


def _ramp(*stops: tuple[int, int, int], at: tuple[int, ...] | None = None) -> np.ndarray:
    """A (256, 3) uint8 RGB lookup table linear between stops at indices `at`
    (default: equally spaced from 0 to 255)."""
    at = np.linspace(0, 255, len(stops)) if at is None else np.asarray(at, np.float64)
    x = np.arange(256, dtype=np.float64)
    return np.stack([np.interp(x, at, [s[c] for s in stops]) for c in range(3)], axis=1).round().astype(np.uint8)


_CENTRE = 128  # the index a signed 0 maps to: exactly white on bwr
# Our own lookup tables beside OpenCV's. "bwr" is diverging (blue for the
# lowest value, white in the middle, red for the highest: matplotlib's bwr),
# for signed maps drawn centred on zero; the sequential ones fade from white
# (no attribution) to one hue, for a single sign or the magnitude.
_LUTS = {
    "bwr": _ramp((0, 0, 255), (255, 255, 255), (255, 0, 0), at=(0, _CENTRE, 255)),
    "reds": _ramp((255, 255, 255), (255, 0, 0)),
    "blues": _ramp((255, 255, 255), (0, 0, 255)),
    "greens": _ramp((255, 255, 255), (0, 140, 0)),
}
COLORMAPS = sorted(["gray", *_COLORMAPS, *_LUTS])

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
    """Encoded JPEG/PNG/WebP/BMP bytes -> (H, W, 3) uint8 RGB (grey, alpha,
    16-bit and CMYK sources are converted; EXIF orientation is applied).

    The format (by magic bytes) and the size its header declares are checked
    before anything is decoded, so a small file that declares a huge image
    costs nothing. Raises InvalidArgument (field images[index]) for empty
    bytes, another format, an unreadable header, a zero or over-max_pixels
    size, and bytes the decoder cannot decode (truncated, corrupt)."""
    field = f"images[{index}]"
    if not data:
        raise InvalidArgument(f"image {index}: empty image bytes", field=field)
    try:
        header = image_header.read(data)
    except image_header.HeaderError as exc:
        raise InvalidArgument(f"image {index}: could not decode {len(data)} bytes: {exc}; "
                              f"send {', '.join(image_header.ACCEPTED[:-1])} or {image_header.ACCEPTED[-1]}",
                              reason="UNSUPPORTED_IMAGE", field=field,
                              metadata={"accepted": ",".join(image_header.ACCEPTED)}) from None
    if header.width < 1 or header.height < 1:
        raise InvalidArgument(f"image {index}: its {header.format} header declares {header.width}x{header.height} "
                              "pixels; send an image of at least 1x1", reason="EMPTY_IMAGE", field=field)
    check_pixels(header.height, header.width, max_pixels, index)
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. OpenCV's own pixel limit, a codec's internal failure
        detail = (str(exc).strip().splitlines() or [""])[-1][:200]
        raise InvalidArgument(f"image {index}: could not decode {len(data)} bytes as {header.format}: {detail}",
                              reason="UNDECODABLE_IMAGE", field=field) from None
    if img is None or img.size == 0:
        raise InvalidArgument(f"image {index}: could not decode {len(data)} bytes as {header.format} "
                              f"(truncated or corrupt?)", reason="UNDECODABLE_IMAGE", field=field)
    check_pixels(img.shape[0], img.shape[1], max_pixels, index)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)


def check_pixels(height: int, width: int, max_pixels: int, index: int) -> None:
    """InvalidArgument when height x width is over max_pixels (or OpenCV's own
    limit, when that is lower)."""
    limit = min(max_pixels, OPENCV_MAX_PIXELS)
    if height * width > limit:
        raise InvalidArgument(
            f"image {index}: {width}x{height} = {height * width} pixels is over the server's limit of {limit}; "
            "send a smaller image", reason="IMAGE_TOO_LARGE", field=f"images[{index}]",
            metadata={"limit": str(limit), "pixels": str(height * width)})


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


def resize_mode(height: int, width: int, size: int, interpolation: str = "bilinear") -> str | None:
    """How the shorter side reaches `size`: None (unchanged), "area" when
    shrinking (OpenCV's INTER_AREA, close to torchvision's antialiased
    resize), else the recipe's interpolation (bilinear, bicubic, nearest)."""
    if resized_size(height, width, size) == (height, width):
        return None
    if size < min(height, width):
        return "area"
    return interpolation if interpolation in _INTERPOLATION else "bilinear"


def resize_shorter(rgb: np.ndarray, size: int, interpolation: str = "bilinear") -> np.ndarray:
    h, w = rgb.shape[:2]
    mode = resize_mode(h, w, size, interpolation)
    if mode is None:
        return rgb
    new_h, new_w = resized_size(h, w, size)
    flag = cv2.INTER_AREA if mode == "area" else _INTERPOLATION[mode]
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


@dataclass(frozen=True)
class Span:
    """The part of one axis of a centre crop that lies on the image: crop
    indices [offset, offset + count) are image indices [start, start + count);
    the rest of the crop is zero padding."""

    offset: int
    start: int
    count: int


def crop_spans(height: int, width: int, crop: tuple[int, int]) -> tuple[Span, Span]:
    """(rows, columns) of the centre crop of (ch, cw) from an image of
    height x width, padding included (crop_box, without materialising it)."""
    pad, top, left = crop_box(height, width, crop)

    def span(length: int, n: int, before: int, corner: int) -> Span:
        first = corner - before  # image index of crop index 0
        lo, hi = max(first, 0), min(first + n, length)
        return Span(lo - first, lo, max(0, hi - lo))

    return span(height, crop[0], pad[0], top), span(width, crop[1], pad[2], left)


def center_crop(rgb: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """The centre (ch, cw) of the image, zero-padded where the image is
    smaller (only the crop is allocated, never the padded image)."""
    rows, cols = crop_spans(rgb.shape[0], rgb.shape[1], crop)
    if (rows.offset, rows.count, cols.offset, cols.count) == (0, crop[0], 0, crop[1]):
        return rgb[rows.start : rows.start + rows.count, cols.start : cols.start + cols.count]
    out = np.zeros((*crop, *rgb.shape[2:]), dtype=rgb.dtype)
    out[rows.offset : rows.offset + rows.count, cols.offset : cols.offset + cols.count] = \
        rgb[rows.start : rows.start + rows.count, cols.start : cols.start + cols.count]
    return out


def _cubic(t: np.ndarray) -> np.ndarray:
    """OpenCV's (and torch's) cubic convolution weights, A = -0.75, for the
    taps at offsets -1, 0, 1, 2 of a fractional position t: (n, 4)."""
    a = -0.75
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return np.stack([w0, w1, w2, 1 - w0 - w1 - w2], axis=1)


def resample_matrix(src: int, dst: int, start: int, count: int, mode: str | None) -> tuple[int, np.ndarray]:
    """Rows start .. start + count - 1 of the (dst, src) matrix that resizes
    one axis of `src` pixels to `dst` as cv2.resize does (and
    torch.nn.functional.interpolate, align_corners=False): returns (first,
    m), m a (count, window) float64 matrix acting on source pixels
    [first, first + window). The window covers only what those output pixels
    read (plus the interpolation kernel's reach), so its cost is bounded by
    the crop, whatever the source's length or aspect ratio.

    mode: None (identity), "area" (shrinking: each output pixel the
    area-weighted mean of the input span it covers, OpenCV's INTER_AREA),
    "bilinear", "bicubic" (A = -0.75) or "nearest"; borders replicate."""
    d = np.arange(start, start + count, dtype=np.float64)
    scale = src / dst
    if mode is None:
        index, weight = d.astype(np.int64)[:, None], np.ones((count, 1))
    elif mode == "nearest":
        # OpenCV multiplies by 1 / (dst / src), which floors differently at exact multiples.
        index, weight = np.minimum(np.floor(d * (1.0 / (dst / src))), src - 1).astype(np.int64)[:, None], np.ones((count, 1))
    elif mode == "area":
        lo, hi = d * scale, np.minimum((d + 1) * scale, src)
        taps = int(math.ceil(scale)) + 1
        index = np.floor(lo).astype(np.int64)[:, None] + np.arange(taps)[None, :]
        overlap = np.clip(np.minimum(hi[:, None], index + 1) - np.maximum(lo[:, None], index), 0, None)
        overlap[overlap <= 1e-3] = 0  # OpenCV drops slivers this thin
        weight = overlap / (hi - lo)[:, None]
    else:
        pos = (d + 0.5) * scale - 0.5
        if mode == "bicubic":
            base = np.floor(pos)
            index = base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
            weight = _cubic(pos - base)
        else:  # bilinear: positions before the first pixel read the first pixel
            pos = np.maximum(pos, 0)
            base = np.floor(pos)
            index = base.astype(np.int64)[:, None] + np.arange(2)[None, :]
            weight = np.stack([1 - (pos - base), pos - base], axis=1)
    index = np.clip(index, 0, src - 1)
    first = int(index.min()) if count else 0
    window = int(index.max()) - first + 1 if count else 0
    m = np.zeros((count, window))
    np.add.at(m, (np.repeat(np.arange(count), index.shape[1]), (index - first).ravel()), weight.ravel())
    return first, m


def _fit_window(rgb: np.ndarray, recipe: Preprocessing) -> np.ndarray:
    """What center_crop(resize_shorter(rgb)) gives, computed from only the
    source pixels the crop reads: two small matrix products in float32,
    rounded to whole levels. Agrees with the full OpenCV resize to within one
    grey level (OpenCV's 11-bit fixed-point weights against float ones)."""
    h, w = rgb.shape[:2]
    new_h, new_w = resized_size(h, w, recipe.resize)
    mode = resize_mode(h, w, recipe.resize, recipe.interpolation)
    rows, cols = crop_spans(new_h, new_w, recipe.crop)
    y0, my = resample_matrix(h, new_h, rows.start, rows.count, mode)
    x0, mx = resample_matrix(w, new_w, cols.start, cols.count, mode)
    src = rgb[y0 : y0 + my.shape[1], x0 : x0 + mx.shape[1]].astype(np.float32)
    part = np.tensordot(my.astype(np.float32), src, axes=(1, 0))           # (rows, window_w, C)
    part = np.tensordot(mx.astype(np.float32), part, axes=(1, 1))          # (cols, rows, C)
    out = np.zeros((*recipe.crop, rgb.shape[2]), dtype=np.uint8)
    out[rows.offset : rows.offset + rows.count, cols.offset : cols.offset + cols.count] = \
        np.clip(np.rint(part.transpose(1, 0, 2)), 0, 255)
    return out


def fit(rgb: np.ndarray, recipe: Preprocessing) -> np.ndarray:
    """Resize (shorter side to recipe.resize) and centre-crop (H, W, C) uint8
    pixels to what the model sees: (crop_h, crop_w, C) uint8.

    Memory stays bounded by the crop whatever the aspect ratio: when the full
    resize would exceed FULL_RESIZE_FACTOR times the crop's pixels (a 1x8000
    strip enlarged to 256 rows would be 2 million columns), only the crop's
    window is resampled (_fit_window, within one grey level of the full
    resize). Shrinking never grows the image, so it always takes the full
    (exact OpenCV) path."""
    h, w = rgb.shape[:2]
    new_h, new_w = resized_size(h, w, recipe.resize)
    mode = resize_mode(h, w, recipe.resize, recipe.interpolation)
    if mode in (None, "area") or new_h * new_w <= FULL_RESIZE_FACTOR * recipe.crop[0] * recipe.crop[1]:
        return center_crop(resize_shorter(rgb, recipe.resize, recipe.interpolation), recipe.crop)
    return _fit_window(rgb, recipe)


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
    if name in _LUTS:
        return _LUTS[name][gray]
    if name not in _COLORMAPS:
        raise InvalidArgument(f"unknown colormap {shown(colormap)}; choose one of {', '.join(COLORMAPS)}")
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


DISPLAY_MIN_SIDE = 224  # px: a picture for a person is at least this on its short side


def for_display(picture: np.ndarray, min_side: int = DISPLAY_MIN_SIDE) -> np.ndarray:
    """(H, W[, 3]) uint8 -> the same picture enlarged by the smallest whole
    factor that makes its short side at least `min_side` (a 32 px digit
    becomes 224 px), each pixel a square block: nearest-neighbour, so a
    person sees the very pixels the model saw, not an interpolation of them.
    Pictures already that large are returned as they are."""
    factor = display_factor(*picture.shape[:2], min_side=min_side)
    if factor == 1:
        return picture
    return np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


def display_factor(height: int, width: int, min_side: int = DISPLAY_MIN_SIDE) -> int:
    """The whole factor for_display enlarges an (height, width) picture by (1: none)."""
    return max(1, -(-min_side // max(1, min(height, width))))


def overlay(rgb: np.ndarray, heatmap: np.ndarray, colormap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """Blend a heatmap (any range, resized to the image) over RGB pixels."""
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgument(f"alpha must be in [0, 1]; got {alpha}")
    heat = colorize(to_uint8(resize_map(heatmap, rgb.shape[:2])), colormap)
    return cv2.addWeighted(heat, alpha, rgb, 1.0 - alpha, 0.0)


# ---------------------------------------------------------------- signed maps
# Drawn as Captum's `visualize_image_attr` draws attributions (without
# matplotlib): keep one sign (or all, or the magnitude), scale so that the
# largest values holding `clip_percentile` % of the total |mass| saturate, and
# blend the colour over the photo with an opacity proportional to |value|, so
# where the attribution is 0 the photo shows unchanged.

SIGNS = ("all", "positive", "negative", "absolute_value")
DEFAULT_CLIP_PERCENTILE = 2.0  # Captum's outlier_perc
DEFAULT_SIGN_COLORMAP = {"all": "bwr", "positive": "reds", "negative": "blues", "absolute_value": "greens"}


def clip_threshold(magnitudes: np.ndarray, clip_percentile: float) -> float:
    """The value at which the sorted non-negative `magnitudes`' cumulative sum
    first reaches (100 - clip_percentile) % of their total (Captum's
    `_cumulative_sum_threshold`): values above it hold the outlier share."""
    ordered = np.sort(np.asarray(magnitudes, dtype=np.float64).ravel())
    if ordered.size == 0:
        return 0.0
    cum = np.cumsum(ordered)
    at = np.searchsorted(cum, cum[-1] * 0.01 * (100.0 - clip_percentile))
    return float(ordered[min(int(at), ordered.size - 1)])  # rounding may put 100 % past the end


def normalize_attr(values: np.ndarray, sign: str, clip_percentile: float = DEFAULT_CLIP_PERCENTILE) -> np.ndarray:
    """A 2-D attribution map (any finite float) -> float32 of the same shape,
    as Captum's `_normalize_attr`: "all" in [-1, 1] (sign kept), "positive"
    and "absolute_value" in [0, 1], "negative" in [0, 1] (1: most negative).
    A map with nothing of the chosen sign is all 0 (Captum would divide by 0).
    Raises InvalidArgument for an unknown sign."""
    attr = np.asarray(values, dtype=np.float32)
    if sign == "all":
        pass
    elif sign == "positive":
        attr = np.maximum(attr, 0)
    elif sign == "negative":
        attr = np.minimum(attr, 0)
    elif sign == "absolute_value":
        attr = np.abs(attr)
    else:
        raise InvalidArgument(f"unknown sign {shown(sign)}; choose one of heat, {', '.join(SIGNS)}", field="render.sign")
    threshold = clip_threshold(np.abs(attr), clip_percentile)
    if not threshold > 0.0:
        return np.zeros(attr.shape, dtype=np.float32)
    if sign == "negative":
        threshold = -threshold
    return np.clip(attr / np.float32(threshold), -1.0, 1.0).astype(np.float32)


def _sign_indices(norm: np.ndarray, sign: str) -> np.ndarray:
    """Normalised values -> colormap indices 0..255; for "all", -1 -> 0,
    0 -> 128 (the centre), 1 -> 255."""
    if sign == "all":
        index = _CENTRE + norm * np.where(norm < 0, _CENTRE, 255 - _CENTRE)
    else:
        index = norm * 255.0
    return np.clip(np.rint(index), 0, 255).astype(np.uint8)


def signed_heatmap(values: np.ndarray, sign: str, colormap: str = "", *,
                   clip_percentile: float = DEFAULT_CLIP_PERCENTILE) -> np.ndarray:
    """A 2-D attribution map -> (H, W, 3) uint8 RGB: the normalised map
    (`normalize_attr`) through `colormap` (default per sign: bwr for "all",
    so 0 is white, positive red, negative blue)."""
    norm = normalize_attr(values, sign, clip_percentile)
    return colorize(_sign_indices(norm, sign), colormap or DEFAULT_SIGN_COLORMAP[sign])


def signed_overlay(rgb: np.ndarray, values: np.ndarray, sign: str, colormap: str = "", alpha: float = 0.8, *,
                   clip_percentile: float = DEFAULT_CLIP_PERCENTILE) -> np.ndarray:
    """Blend an attribution map (resized to the image) over (H, W, 3) uint8
    RGB as an alpha mask: each pixel's opacity is `alpha` x |normalised value|,
    so pixels with no attribution keep the photo's own colour. Raises
    InvalidArgument for alpha outside [0, 1] or an unknown sign/colormap."""
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgument(f"alpha must be in [0, 1]; got {alpha}", field="render.alpha")
    norm = normalize_attr(resize_map(values, rgb.shape[:2]), sign, clip_percentile)
    colour = colorize(_sign_indices(norm, sign), colormap or DEFAULT_SIGN_COLORMAP[sign]).astype(np.float32)
    mask = (np.abs(norm) * np.float32(alpha))[:, :, None]
    out = rgb.astype(np.float32) * (1.0 - mask) + colour * mask
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


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
