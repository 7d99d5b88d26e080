"""Forward pass and top-k."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..runtime import batching
from ..runtime.batching import Batched
from ..errors import FailedPrecondition, InvalidArgument, shown
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
    """The forward pass as batchable work: every Predict on a model may share
    a batch, and it is urgent: it does not wait behind long explanations.
    An onnxruntime model's forward is not torch work: it runs in the
    request's (or the batcher's) thread, beside the torch thread."""
    return batching.Work("Predict", "logits", model.infer, lambda logits, start, stop: logits[start:stop],
                         urgent=True, torch_thread=model.predicts_on_torch_thread)


def logits(model: LoadedModel, x: torch.Tensor) -> tuple[torch.Tensor, Batched]:
    """The logits of a preprocessed (N, C, H, W) batch: (N, num_classes)
    float32 on the host, in batch order, through the model's dynamic batcher
    when it has one (its value; the Batched also says the queue and compute
    time and the device batch it rode in). The one forward pass of both
    protocols' inference (netscope.v1 Predict, OIP ModelInfer). Raises
    FailedPrecondition for a non-finite logit."""
    run = batching.run(model, x, logits_work(model))
    check_finite_logits(model, run.value)
    return run.value, run


def predict(model: LoadedModel, x: torch.Tensor, k: int, return_probabilities: bool = False
            ) -> tuple[list[Prediction], Batched]:
    """Top-k of each image of a preprocessed (N, C, H, W) batch, in batch order,
    through the model's dynamic batcher when it has one."""
    k = resolve_k(k, model.num_classes)
    z, run = logits(model, x)
    return top_k(model, z, k, return_probabilities), run


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) float32 logits, in float32 (max subtracted
    first): the probabilities both protocols answer with."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def check_finite_logits(model: LoadedModel, logits: torch.Tensor) -> None:
    """FailedPrecondition when a logit is NaN or infinite: a broken model (NaN
    weights, float16 overflow) never answers OK with NaN probabilities."""
    bad = ~torch.isfinite(logits).all(dim=1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise FailedPrecondition(
            f"model {shown(model.id)} produced non-finite logits for image {first} (NaN or infinity); its weights "
            f"or its precision ({str(model.dtype).replace('torch.', '')}) cannot represent this input: check the "
            f"checkpoint, or load it as float32", reason="NON_FINITE", field=f"images[{first}]",
            metadata={"model": model.id[:64]})


def top_k(model: LoadedModel, logits: torch.Tensor, k: int, return_probabilities: bool) -> list[Prediction]:
    """Softmax in float32 (the logits already are, on the host), then the k
    highest logits per row. In numpy, in the request's thread: no second trip to a
    CPU model's torch thread, which may be busy with a long explanation."""
    z = logits.numpy()
    probs = softmax(z)
    # Rank by logit: the same order as the probabilities, but not tied where
    # float32 softmax rounds nearby logits to one value (an untrained model's).
    top_i = np.argsort(-z, axis=1, kind="stable")[:, :k]
    out = []
    for row in range(z.shape[0]):
        idx = top_i[row].tolist()
        out.append(Prediction(
            indices=idx,
            labels=[model.class_names[i] for i in idx],
            probabilities=probs[row, idx].tolist(),
            logits=z[row, idx].tolist(),
            all_probabilities=probs[row] if return_probabilities else None,
        ))
    return out
