"""The pointing game: does a saliency map's peak land on the object?

Zhang et al., "Top-down Neural Attention by Excitation Backprop" (ECCV 2016):
for an image whose object boxes are known and a map explaining that object's
class, the map scores a hit when its maximum lies inside one of the class's
boxes; the accuracy is hits / images. Its tolerant variant counts a maximum
within `tolerance` pixels (Euclidean) of a box as a hit too: 15 px on 224 px
inputs in the paper, so scale it with your input (about 2 px at 32).

Conventions, decided here:

- The map is at the boxes' resolution: for netscope, the explanation's
  `upsampled` / `heatmap_upsampled` map, at the model input's size, with boxes
  in the same pixels (resize them if preprocessing resized the image).
- A box is (x0, y0, x1, y1) in pixels with x1/y1 exclusive, as
  `netscope.training.data.ShapesDataset.box` gives them: the object is
  `map[y0:y1, x0:x1]`.
- Ties: a hit when ANY pixel holding the maximum is inside (as Quantus's
  PointingGame). Taking the first argmax instead would make the score depend
  on raster order (a plateau's top-left corner).
- A map without a peak is a miss: constant (all maxima, e.g. all zero: a
  Grad-CAM whose gradients all vanished) or with no finite value. Otherwise a
  flat map would point everywhere and always win. NaN and inf pixels are
  ignored when looking for the peak.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import InvalidArgument

Box = Sequence[float]  # (x0, y0, x1, y1), x1/y1 exclusive


@dataclass(frozen=True)
class PointingResult:
    hits: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.hits / self.total if self.total else 0.0


def peaks(heatmap) -> np.ndarray:
    """(K, 2) array of the (y, x) pixels holding the map's maximum; empty when the
    map has no peak (constant, or no finite value)."""
    m = np.asarray(heatmap, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise InvalidArgument(f"the pointing game takes one 2-D map (H, W); got shape {m.shape}")
    finite = np.isfinite(m)
    if not finite.any():
        return np.empty((0, 2), dtype=np.int64)
    values = np.where(finite, m, -np.inf)
    top = values.max()
    if top == m[finite].min():  # constant: no point is singled out
        return np.empty((0, 2), dtype=np.int64)
    return np.argwhere(values == top)


def _boxes(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4 or len(b) == 0:
        raise InvalidArgument(f"boxes are (x0, y0, x1, y1), one or an (N, 4) array; got shape {b.shape}")
    if np.any(b[:, 2] <= b[:, 0]) or np.any(b[:, 3] <= b[:, 1]):
        raise InvalidArgument(f"a box needs x1 > x0 and y1 > y0 (x1/y1 exclusive); got {b.tolist()}")
    return b


def hit(heatmap, boxes, tolerance: float = 0.0) -> bool:
    """Whether the map's peak lies in (or, with `tolerance`, within that many pixels
    of) one of `boxes`: one (x0, y0, x1, y1) box or an (N, 4) array of them."""
    if not tolerance >= 0:
        raise InvalidArgument(f"tolerance is a distance in pixels, >= 0; got {tolerance}")
    b = _boxes(boxes)
    p = peaks(heatmap)
    if len(p) == 0:
        return False
    y, x = p[:, 0:1].astype(np.float64), p[:, 1:2].astype(np.float64)  # (K, 1) against (N,) boxes
    # distance from each peak pixel to the nearest pixel of each box (0 inside)
    dx = np.maximum(np.maximum(b[:, 0] - x, x - (b[:, 2] - 1)), 0.0)
    dy = np.maximum(np.maximum(b[:, 1] - y, y - (b[:, 3] - 1)), 0.0)
    return bool(np.any(dx * dx + dy * dy <= float(tolerance) ** 2))


def pointing_game(heatmaps: Iterable, boxes: Iterable, tolerance: float = 0.0) -> PointingResult:
    """Hits over pairs of (map, boxes of the explained class)."""
    hits = total = 0
    for heatmap, b in zip(heatmaps, boxes, strict=True):
        hits += hit(heatmap, b, tolerance)
        total += 1
    return PointingResult(hits, total)
