"""How faithful is a saliency map to the model? Numbers, not looks.

All metrics perturb the model's (preprocessed) input following the map's
ranking of pixels and watch the target class's probability:

- deletion AUC: remove the most salient pixels first (replace by the
  baseline, the per-channel mean of the input's normalisation, i.e. 0);
  the area under probability vs fraction removed. Lower is better.
- insertion AUC: start from a heavily blurred input and put the most salient
  pixels back first. Higher is better.
- average drop / increase in confidence: the input multiplied by the map
  (scaled to 0..1); the % of the target's probability lost, and whether it rose.
- ROAD: remove a fraction of pixels, most relevant first (MoRF; lower is
  better) or least relevant first (LeRF; higher is better), filling them by
  noisy linear imputation (each removed pixel the weighted mean of its
  neighbours, solved as one sparse linear system, plus a little noise) so the
  mask's shape leaks no class evidence; averaged over fractions 10%..90%.

A request names the metrics it wants (`METRICS`, by name); only those are
computed, and each declares its cost (forward passes per map, and a cost
class as the method registry's), which limits and the stream's batch sizing
read. ROAD's imputations are 18 sparse solves of up to H x W unknowns: on a
CPU it costs as much as the other four together, twice deletion and
insertion (docs/EXPLANATIONS.md has the figures), so the default set
(`DEFAULT_METRICS`) leaves it out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from ..runtime import torch_thread
from ..errors import InvalidArgument, closest, closest_metadata, shown

Forward = Callable[[torch.Tensor], torch.Tensor]  # (N, C, H, W) float32 -> (N, classes) logits

ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_NEIGHBOURS = [(-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
               (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12)]


@dataclass(frozen=True)
class Metric:
    """One faithfulness metric as a request names it.

    fields: the Faithfulness fields it fills. passes: forward passes per
    map (at the default 20 steps). cost: its class in methods.COSTS (cheap
    ~1 forward pass, moderate ~10, expensive ~100 or CPU work as long)."""

    name: str
    fields: tuple[str, ...]
    passes: int
    cost: str
    description: str


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("deletion", ("deletion_auc",), 21, "moderate",
           "AUC of the target's probability as the most salient pixels are removed first (lower is better)"),
    Metric("insertion", ("insertion_auc",), 21, "moderate",
           "AUC as the most salient pixels are put back into a blurred input first (higher is better)"),
    Metric("average_drop", ("average_drop",), 2, "cheap",
           "% of the target's probability lost keeping only the map's region (lower is better)"),
    Metric("increase_in_confidence", ("increase_in_confidence",), 2, "cheap",
           "1 when the map's region alone raises the target's probability, else 0"),
    Metric("road", ("road_morf", "road_lerf"), 18, "expensive",
           "ROAD: most / least relevant pixels removed by noisy linear imputation (18 sparse solves per map)"),
)}
# What a bare `--metrics` asks for: everything but ROAD, whose imputations cost
# as much on a CPU as the other four together (seconds per image at 224 x 224).
DEFAULT_METRICS = ("deletion", "insertion", "average_drop", "increase_in_confidence")
# The passes of every metric together: what the faithfulness_maps ceiling was sized for.
ALL_PASSES = 21 + 21 + 2 + 18


def chosen(names) -> tuple[str, ...]:
    """The metrics a request names, validated and in METRICS' order (none
    named: all of them, as before requests could choose). InvalidArgument
    (reason METRIC_NOT_FOUND, field options.metrics) naming the valid ones."""
    names = [str(n) for n in names]
    for name in names:
        if name not in METRICS:
            raise InvalidArgument(
                f"unknown faithfulness metric {shown(name)}{closest(name, METRICS)}; choose from "
                f"{', '.join(METRICS)}", reason="METRIC_NOT_FOUND", field="options.metrics",
                metadata={"metrics": ",".join(METRICS), **closest_metadata(name, METRICS)})
    return tuple(m for m in METRICS if m in names) if names else tuple(METRICS)


def passes(metrics) -> int:
    """Forward passes per map of these metrics (average_drop and
    increase_in_confidence share theirs)."""
    shared = {"average_drop", "increase_in_confidence"}
    return sum(METRICS[m].passes for m in metrics if m not in shared) + (2 if shared & set(metrics) else 0)


@dataclass
class Faithfulness:
    """One map's scores; a metric not asked for is None."""

    deletion_auc: float | None = None
    insertion_auc: float | None = None
    average_drop: float | None = None
    increase_in_confidence: float | None = None
    road_morf: float | None = None
    road_lerf: float | None = None


def probabilities(forward: Forward, batch: torch.Tensor, target: int, batch_size: int) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for chunk in batch.split(batch_size):
            # A check point: stop here if the caller has gone; a waiting Predict runs (server/runtime/torch_thread.py).
            torch_thread.checkpoint()
            out.append(torch.softmax(forward(chunk).float(), dim=1)[:, target].cpu())
    return torch.cat(out).numpy()


def auc(values: np.ndarray) -> float:
    """Trapezoidal area under values sampled evenly on [0, 1]."""
    if len(values) == 1:
        return float(values[0])
    return float((values[:-1] + values[1:]).sum() / 2.0 / (len(values) - 1))


def ranking(saliency: np.ndarray) -> np.ndarray:
    """Pixel indices, most salient first (ties broken by position, deterministic)."""
    return np.argsort(-saliency.reshape(-1), kind="stable")


def progressive(x: torch.Tensor, start: torch.Tensor, end: torch.Tensor, order: np.ndarray, steps: int) -> torch.Tensor:
    """steps + 1 images going from `start` to `end`, switching pixels in `order`."""
    c, h, w = x.shape
    n = h * w
    frames = []
    for s in range(steps + 1):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.from_numpy(order[: round(n * s / steps)])] = True
        mask = mask.view(1, h, w)
        frames.append(torch.where(mask, end, start))
    return torch.stack(frames)


def blurred(x: torch.Tensor) -> torch.Tensor:
    """A strong Gaussian blur of a (C, H, W) tensor: the insertion baseline."""
    arr = x.detach().cpu().numpy().transpose(1, 2, 0)
    k = max(3, (min(arr.shape[:2]) // 4) | 1)
    out = cv2.GaussianBlur(np.ascontiguousarray(arr), (k, k), 0)
    out = out[:, :, None] if out.ndim == 2 else out
    return torch.from_numpy(out.transpose(2, 0, 1).copy()).to(x.dtype)


def impute(x: torch.Tensor, removed: np.ndarray, noise: float, rng: np.random.Generator) -> torch.Tensor:
    """Noisy linear imputation: removed pixels become the weighted mean of their
    neighbours (one sparse solve shared by all channels), plus Gaussian noise."""
    c, h, w = x.shape
    removed = removed.reshape(h, w)
    ids = -np.ones((h, w), dtype=np.int64)
    ys, xs = np.nonzero(removed)
    ids[ys, xs] = np.arange(len(ys))
    if len(ys) == 0:
        return x.clone()
    img = x.detach().cpu().numpy().reshape(c, h, w).astype(np.float64)
    rows, cols, vals = [np.arange(len(ys))], [np.arange(len(ys))], [np.ones(len(ys))]
    b = np.zeros((len(ys), c))
    weight_sum = np.zeros(len(ys))
    for dy, dx, wgt in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        weight_sum[inside] += wgt
    for dy, dx, wgt in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        i = np.nonzero(inside)[0]
        ww = wgt / weight_sum[i]
        unknown = ids[ny[i], nx[i]]
        is_unknown = unknown >= 0
        rows.append(i[is_unknown]); cols.append(unknown[is_unknown]); vals.append(-ww[is_unknown])
        known = i[~is_unknown]
        b[known] += (ww[~is_unknown])[:, None] * img[:, ny[known], nx[known]].T
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(ys), len(ys))).tocsc()
    solved = spsolve(a, b)
    solved = solved.reshape(len(ys), c)
    out = img.copy()
    out[:, ys, xs] = solved.T + rng.normal(0.0, noise, size=(c, len(ys)))
    return torch.from_numpy(out.astype(np.float32)).to(x.dtype)


def evaluate(forward: Forward, x: torch.Tensor, saliency: np.ndarray, target: int, *, steps: int = 20,
             batch_size: int = 32, road_noise: float = 0.01, seed: int = 0,
             metrics=tuple(METRICS)) -> Faithfulness:
    """The `metrics` (names of METRICS; default all) for one preprocessed
    image x (C, H, W) and its map (H, W) at the input's resolution; the
    others are None. Probabilities are the target's softmax, float32."""
    metrics = chosen(metrics)
    saliency = np.asarray(saliency, dtype=np.float64)
    if saliency.shape != tuple(x.shape[1:]):
        raise InvalidArgument(f"saliency map {saliency.shape} must match the input's size {tuple(x.shape[1:])}")
    if steps < 1:
        raise InvalidArgument("faithfulness needs at least 1 step")
    saliency = np.nan_to_num(saliency)
    x = x.detach().float().cpu()
    order = ranking(saliency)
    out = Faithfulness()
    if "deletion" in metrics:
        out.deletion_auc = auc(probabilities(forward, progressive(x, x, torch.zeros_like(x), order, steps), target,
                                             batch_size))
    if "insertion" in metrics:
        out.insertion_auc = auc(probabilities(forward, progressive(x, blurred(x), x, order, steps), target, batch_size))
    if "average_drop" in metrics or "increase_in_confidence" in metrics:
        lo, hi = saliency.min(), saliency.max()
        weights = torch.from_numpy(((saliency - lo) / (hi - lo) if hi > lo else np.zeros_like(saliency))
                                   .astype(np.float32))
        y, o = probabilities(forward, torch.stack([x, x * weights]), target, batch_size)
        if "average_drop" in metrics:
            out.average_drop = max(0.0, float(y - o)) / max(float(y), 1e-12) * 100.0
        if "increase_in_confidence" in metrics:
            out.increase_in_confidence = float(o > y)
    if "road" in metrics:
        out.road_morf, out.road_lerf = road(forward, x, order, target, batch_size, road_noise, seed)
    return out


def road(forward: Forward, x: torch.Tensor, order: np.ndarray, target: int, batch_size: int, noise: float,
         seed: int) -> tuple[float, float]:
    """(MoRF, LeRF): the target's mean probability with ROAD_FRACTIONS of the
    pixels removed, most / least relevant first (`order`: most salient first)."""
    rng = np.random.default_rng(seed)
    n = order.size
    road_inputs = []
    for fraction in ROAD_FRACTIONS:
        k = round(n * fraction)
        for chosen_pixels in (order[:k], order[::-1][:k]):  # MoRF, then LeRF
            torch_thread.checkpoint()  # each imputation is a sparse solve: stop between them if the caller has gone
            removed = np.zeros(n, dtype=bool)
            removed[chosen_pixels] = True
            road_inputs.append(impute(x, removed, noise, rng))
    probs = probabilities(forward, torch.stack(road_inputs), target, batch_size)
    return float(probs[0::2].mean()), float(probs[1::2].mean())
