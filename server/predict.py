"""Forward pass and top-k."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import batching
from .batching import Batched
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


def logits_work(model: LoadedModel) -> batching.Work:
    """The forward pass as batchable work: every Predict on a model may share a batch."""
    return batching.Work("Predict", "logits", model.infer, lambda logits, start, stop: logits[start:stop])


def predict(model: LoadedModel, x: torch.Tensor, k: int, return_probabilities: bool = False
            ) -> tuple[list[Prediction], Batched]:
    """Top-k of each image of a preprocessed (N, C, H, W) batch, in batch order,
    through the model's dynamic batcher when it has one."""
    k = resolve_k(k, model.num_classes)
    run = batching.run(model, x, logits_work(model))
    return model.run(top_k, model, run.value, k, return_probabilities), run


def top_k(model: LoadedModel, logits: torch.Tensor, k: int, return_probabilities: bool) -> list[Prediction]:
    """Softmax in float32 whatever the model's dtype, then the k best per row."""
    probs = torch.softmax(logits.float(), dim=1)
    top_p, top_i = probs.topk(k, dim=1)
    top_l = logits.float().gather(1, top_i)
    out = []
    for row in range(logits.shape[0]):
        idx = top_i[row].tolist()
        out.append(Prediction(
            indices=idx,
            labels=[model.class_names[i] for i in idx],
            probabilities=top_p[row].tolist(),
            logits=top_l[row].tolist(),
            all_probabilities=probs[row].numpy() if return_probabilities else None,
        ))
    return out
