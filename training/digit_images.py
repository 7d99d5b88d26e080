"""Digits as people make them: typed in fonts, drawn as strokes, and scikit-learn's
handwritten digits upscaled, in either polarity, at any size and position.

The `mixed_digits` data source (the demo's) trains on these, and the tests
measure the demo on a held-out set of them (`held_out`). Every image is a pure
function of (seed, stream, index), so every machine renders the same pixels.

Each renderer draws a digit's ink as a float mask in [0, 1] on a square canvas
of `size` pixels; `finish` turns a mask into grey uint8 pixels with a random
polarity (white on black or black on white), ink and paper levels, and
sometimes blur and noise.

Kinds (`KINDS`):
    hershey           OpenCV's Hershey fonts (putText), upright and italic,
                      random scale, thickness, offset and rotation
    font              a TrueType font: Pillow's bundled default (Aileron)
    strokes           hand-drawn-like digits: jittered polylines and arcs
                      (cv2.polylines), random slant, width and stroke width
    sklearn_nearest   scikit-learn's 8x8 digits, nearest-neighbour upscaled
    sklearn_bilinear  the same, bilinearly upscaled
    dejavu            DejaVu Sans/Serif (held out: never in training; only
                      where the font files are installed, see `dejavu_fonts`)
"""
from __future__ import annotations

import functools
import pathlib

import cv2
import numpy as np

KINDS = ("hershey", "font", "strokes", "sklearn_nearest", "sklearn_bilinear")
HELD_OUT_KINDS = (*KINDS, "dejavu")
SIZES = (28, 128)  # side of a rendered image in pixels, inclusive range

_HERSHEY = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
            cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
            cv2.FONT_HERSHEY_SCRIPT_COMPLEX)
_GLYPH = 96  # glyphs are drawn this tall, then placed (scaled, rotated, shifted) onto the canvas


# ----------------------------------------------------------------------------- glyphs (ink masks)


def _bbox_crop(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask > 0.05)
    if len(ys) == 0:
        return mask
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def hershey_glyph(rng: np.random.Generator, digit: int) -> np.ndarray:
    """A digit in a random Hershey font and thickness: float32 ink mask cropped to the glyph."""
    font = _HERSHEY[int(rng.integers(len(_HERSHEY)))] | (cv2.FONT_ITALIC if rng.random() < 0.25 else 0)
    text = str(digit)
    scale = cv2.getFontScaleFromHeight(font, _GLYPH)
    thickness = int(rng.integers(2, 16))
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    canvas = np.zeros((h + base + 2 * thickness + 8, w + 2 * thickness + 8), np.uint8)
    cv2.putText(canvas, text, (thickness + 4, h + thickness + 4), font, scale, 255, thickness, cv2.LINE_AA)
    return _bbox_crop(canvas.astype(np.float32) / 255.0)


@functools.lru_cache(maxsize=64)
def _pil_font(path: str | None, size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size) if path is None else ImageFont.truetype(path, size)


def font_glyph(rng: np.random.Generator, digit: int, path: str | None = None) -> np.ndarray:
    """A digit in a TrueType font (`path`; None: Pillow's bundled default), random weight."""
    from PIL import Image, ImageDraw

    font = _pil_font(path, _GLYPH)
    stroke = int(rng.integers(0, 5))
    img = Image.new("L", (2 * _GLYPH, 2 * _GLYPH), 0)
    ImageDraw.Draw(img).text((_GLYPH // 2, _GLYPH // 4), str(digit), fill=255, font=font, stroke_width=stroke,
                             stroke_fill=255)
    return _bbox_crop(np.asarray(img, np.float32) / 255.0)


def _arc(cx, cy, rx, ry, a0, a1, n=14):
    t = np.deg2rad(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _line(*pts):
    return np.array(pts, np.float64)


# Each digit as pen strokes in a box 0.6 wide and 1 tall (y down; angle 270 is the top of an arc).
_STROKES = {
    0: lambda r: [_arc(0.3, 0.5, 0.28, 0.48, 0, 360, 24)],
    1: lambda r: [_line((0.12, 0.22), (0.32, 0.0), (0.32, 1.0))] + ([_line((0.1, 1.0), (0.54, 1.0))]
                                                                     if r.random() < 0.4 else []),
    2: lambda r: [np.concatenate([_arc(0.3, 0.27, 0.27, 0.27, 195, 385), _line((0.0, 1.0), (0.6, 1.0))])],
    3: lambda r: [np.concatenate([_arc(0.3, 0.25, 0.26, 0.25, 200, 450), _arc(0.3, 0.75, 0.29, 0.25, 270, 520)])],
    4: lambda r: [_line((0.45, 1.0), (0.45, 0.0), (0.0, 0.68), (0.6, 0.68))],
    5: lambda r: [np.concatenate([_line((0.56, 0.0), (0.08, 0.0), (0.06, 0.44)),
                                  _arc(0.3, 0.68, 0.28, 0.31, 225, 520)])],
    6: lambda r: [np.concatenate([_line((0.52, 0.02), (0.26, 0.2), (0.08, 0.5)), _arc(0.3, 0.75, 0.25, 0.24, 180, 540)])],
    7: lambda r: [_line((0.0, 0.0), (0.6, 0.0), (0.2, 1.0))] + ([_line((0.16, 0.52), (0.5, 0.52))]
                                                                if r.random() < 0.3 else []),
    8: lambda r: [_arc(0.3, 0.25, 0.22, 0.24, 0, 360, 20), _arc(0.3, 0.74, 0.27, 0.26, 0, 360, 20)],
    9: lambda r: [_arc(0.3, 0.27, 0.26, 0.26, 0, 360, 20), _line((0.56, 0.27), (0.5, 1.0))],
}


def stroke_glyph(rng: np.random.Generator, digit: int) -> np.ndarray:
    """A hand-drawn-like digit: its pen strokes jittered, slanted, squeezed, drawn with a random pen."""
    strokes = _STROKES[digit](rng)
    shear, squeeze = rng.uniform(-0.3, 0.3), rng.uniform(0.7, 1.3)
    a = np.array([[squeeze, -shear], [0.0, 1.0]])
    pen = int(rng.integers(4, 17))
    pad = pen + 8
    canvas = np.zeros((_GLYPH + 2 * pad, int(_GLYPH * 1.2) + 2 * pad), np.uint8)
    for s in strokes:
        pts = s @ a.T + rng.normal(0, 0.025, s.shape)
        pts = pts * _GLYPH + [pad + 0.3 * _GLYPH, pad]
        cv2.polylines(canvas, [np.round(pts * 16).astype(np.int32)], False, 255, pen, cv2.LINE_AA, shift=4)
    return _bbox_crop(canvas.astype(np.float32) / 255.0)


# ----------------------------------------------------------------------------- placing and finishing


def place(rng: np.random.Generator, glyph: np.ndarray, size: int) -> np.ndarray:
    """The glyph scaled to 45-85% of the canvas height (at most 90% of its width),
    rotated up to 12 degrees, its centre shifted up to 12% of the side: (size, size) float32."""
    gh, gw = glyph.shape
    height = rng.uniform(0.45, 0.85) * size
    scale = min(height / gh, 0.9 * size / gw)
    angle = rng.uniform(-12, 12)
    centre = size / 2 + rng.uniform(-0.12, 0.12, 2) * size
    m = cv2.getRotationMatrix2D((gw / 2, gh / 2), angle, scale)
    m[:, 2] += centre - np.array([gw / 2, gh / 2])
    flag = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(glyph, m, (size, size), flags=flag, borderValue=0)


def sklearn_mask(rng: np.random.Generator, image8: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    """An 8x8 scikit-learn digit (0..16) padded by 0-2 blank pixels a side, upscaled to
    (size, size) by `nearest` or `bilinear`: float32 ink mask."""
    pads = rng.integers(0, 3, 4)
    m = np.pad(image8.astype(np.float32) / 16.0, ((pads[0], pads[1]), (pads[2], pads[3])))
    flag = cv2.INTER_NEAREST if interpolation == "nearest" else cv2.INTER_LINEAR
    return cv2.resize(m, (size, size), interpolation=flag)


def finish(rng: np.random.Generator, mask: np.ndarray, polarity: str | None = None) -> np.ndarray:
    """Ink mask -> grey uint8: `polarity` "light_on_dark" or "dark_on_light" (None: either),
    ink and paper levels at least 110 apart, sometimes a blur and noise."""
    dark_paper = rng.random() < 0.5 if polarity is None else polarity == "light_on_dark"
    paper, ink = rng.uniform(0, 70), rng.uniform(180, 255)
    if not dark_paper:
        paper, ink = 255 - paper, 255 - ink
    img = paper + mask * (ink - paper)
    size = mask.shape[0]
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2) * size / 32)
    if rng.random() < 0.3:
        img = img + rng.normal(0, rng.uniform(2, 12), img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def to_model_size(grey: np.ndarray, side: int) -> np.ndarray:
    """What the server does to reach the model's side: INTER_AREA when shrinking, bilinear when enlarging."""
    if grey.shape[0] == side:
        return grey
    flag = cv2.INTER_AREA if grey.shape[0] > side else cv2.INTER_LINEAR
    return cv2.resize(grey, (side, side), interpolation=flag)


# ----------------------------------------------------------------------------- one image


@functools.lru_cache(maxsize=1)
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: (N, 8, 8) float 0..16 images and (N,) int labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int64)


def dejavu_fonts() -> list[str]:
    """DejaVu TrueType files on this machine (matplotlib's copy, or the system's); [] when none."""
    found = []
    try:
        import matplotlib

        found += sorted(str(p) for p in (pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("DejaVu*.ttf"))
    except ImportError:
        pass
    found += sorted(str(p) for p in pathlib.Path("/usr/share/fonts/truetype/dejavu").glob("DejaVu*.ttf"))
    return [p for p in found if "Math" not in p and "ExtraLight" not in p]


def render(rng: np.random.Generator, kind: str, digit: int, size: int, *, sklearn_index: int | None = None,
           polarity: str | None = None, font: str | None = None) -> np.ndarray:
    """One (size, size) grey uint8 image of `digit` of `kind` (see the module doc).
    sklearn kinds draw scikit-learn image `sklearn_index` (its label is the digit);
    `font`: a TTF path for "font"/"dejavu" (None: Pillow's default font)."""
    if kind == "hershey":
        mask = place(rng, hershey_glyph(rng, digit), size)
    elif kind in ("font", "dejavu"):
        mask = place(rng, font_glyph(rng, digit, font), size)
    elif kind == "strokes":
        mask = place(rng, stroke_glyph(rng, digit), size)
    elif kind in ("sklearn_nearest", "sklearn_bilinear"):
        mask = sklearn_mask(rng, sklearn_digits()[0][sklearn_index], size, kind.split("_")[1])
    else:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(HELD_OUT_KINDS)}")
    return finish(rng, mask, polarity)


def held_out(kind: str, n: int, seed: int = 2024, sklearn_indices=None) -> list[tuple[np.ndarray, int]]:
    """`n` RGB uint8 images of `kind` with their labels, as a person would send them:
    sizes spread evenly over 28-128 px, polarities alternating, labels cycling 0-9.

    sklearn kinds draw from `sklearn_indices` (default: the demo's test split, images
    it never trained on); "dejavu" cycles through `dejavu_fonts()` and raises
    LookupError when there are none. Stream 7 of the seed: never a training stream."""
    images, targets = sklearn_digits()
    if kind.startswith("sklearn") and sklearn_indices is None:
        from .data import stratified_split

        sklearn_indices = stratified_split(targets.tolist(), 0)[2]
    fonts = dejavu_fonts() if kind == "dejavu" else [None]
    if not fonts:
        raise LookupError("no DejaVu fonts on this machine")
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 7, i])
        size = int(round(SIZES[0] + (SIZES[1] - SIZES[0]) * (i / max(1, n - 1))))
        polarity = ("light_on_dark", "dark_on_light")[i % 2]
        if kind.startswith("sklearn"):
            idx = int(sklearn_indices[i % len(sklearn_indices)])
            digit = int(targets[idx])
            grey = render(rng, kind, digit, size, sklearn_index=idx, polarity=polarity)
        else:
            digit = (i // 2) % 10  # both polarities of each digit
            grey = render(rng, kind, digit, size, polarity=polarity, font=fonts[(i // 20) % len(fonts)])
        out.append((np.repeat(grey[:, :, None], 3, axis=2), digit))
    return out


# ----------------------------------------------------------------------------- the training mixture

# The share of each kind in the mixed_digits source (sklearn's images count twice: two upscalings).
MIXTURE = {"sklearn_bilinear": 0.2, "sklearn_nearest": 0.2, "hershey": 0.25, "strokes": 0.25, "font": 0.1}


def mixed_sample(seed: int, stream: int, index: int, side: int, sklearn_indices) -> tuple[np.ndarray, int]:
    """Sample `index` of a mixed_digits stream: ((side, side) grey uint8 as the server would
    feed the model, label). The kind follows MIXTURE; the rendered size is 28-128 px."""
    rng = np.random.default_rng([seed, stream, index])
    kinds, shares = list(MIXTURE), np.array(list(MIXTURE.values()))
    kind = kinds[int(rng.choice(len(kinds), p=shares / shares.sum()))]
    size = int(rng.integers(SIZES[0], SIZES[1] + 1))
    if kind.startswith("sklearn"):
        idx = int(sklearn_indices[int(rng.integers(len(sklearn_indices)))])
        digit = int(sklearn_digits()[1][idx])
        grey = render(rng, kind, digit, size, sklearn_index=idx)
    else:
        digit = index % 10
        grey = render(rng, kind, digit, size)
    return to_model_size(grey, side), digit


def mixed_digits(n: int, seed: int, stream: int, side: int, sklearn_indices) -> tuple[np.ndarray, list[int]]:
    """`n` samples of a stream as one (n, side, side, 1) uint8 array and their labels."""
    pixels = np.empty((n, side, side, 1), np.uint8)
    labels = []
    for i in range(n):
        pixels[i, :, :, 0], y = mixed_sample(seed, stream, i, side, sklearn_indices)
        labels.append(y)
    return pixels, labels


def accuracy_by_kind(predict, kinds=HELD_OUT_KINDS, n: int = 100, seed: int = 2024) -> dict[str, float]:
    """{kind: accuracy} of `predict(list of RGB uint8 images) -> list of int labels` on
    `held_out(kind, n, seed)`; kinds without their fonts here are left out."""
    result = {}
    for kind in kinds:
        try:
            items = held_out(kind, n, seed)
        except LookupError:
            continue
        preds = predict([img for img, _ in items])
        result[kind] = float(np.mean([int(p) == y for p, (_, y) in zip(preds, items)]))
    return result


__all__ = ["KINDS", "HELD_OUT_KINDS", "MIXTURE", "held_out", "render", "mixed_digits", "accuracy_by_kind",
           "dejavu_fonts"]
