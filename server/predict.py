"""Forward pass and top-k."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import InvalidArgument
from .registry import LoadedModel

DEFAULT_TOP_K = 5


@dataclass
class Prediction:
    indices: list[int]
    labels: list[str]
    probabilities: list[float]
    logits: list[float]
    all_probabilities: np.ndarray | None = None  # (num_classes,) float32


def resolve_k(k: int, num_classes: int) -> int:
    """0 means the default (5, or fewer when the model has fewer classes)."""
    if k == 0:
        return min(DEFAULT_TOP_K, num_classes)
    if k < 1 or k > num_classes:
        raise InvalidArgument(f"top_k must be between 1 and {num_classes} (the model's class count); got {k}")
    return k


def predict(model: LoadedModel, x: torch.Tensor, k: int, return_probabilities: bool = False) -> list[Prediction]:
    """Top-k of each image of a preprocessed (N, C, H, W) batch, in batch order.
    Softmax runs in float32 whatever the model's dtype."""
    k = resolve_k(k, model.num_classes)
    with torch.inference_mode():
        logits = model.forward(x)
        probs = torch.softmax(logits, dim=1)
        top_p, top_i = probs.topk(k, dim=1)
        top_l = logits.gather(1, top_i)
        # One copy back to the host for everything the answer needs.
        parts = [top_p, top_i.float(), top_l] + ([probs] if return_probabilities else [])
        host = torch.cat(parts, dim=1).cpu().numpy()
    out = []
    for row in host:
        idx = row[k : 2 * k].astype(np.int64).tolist()
        out.append(Prediction(
            indices=idx,
            labels=[model.class_names[i] for i in idx],
            probabilities=row[:k].tolist(),
            logits=row[2 * k : 3 * k].tolist(),
            all_probabilities=row[3 * k :].copy() if return_probabilities else None,
        ))
    return out
