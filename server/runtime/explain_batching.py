"""Explain through the model's dynamic batcher.

Concurrent Explain calls on one model that ask for the same explanation
(everything but the images equal: method, layers, target, options, rendering)
share one device batch, under the model's batching settings, when the
method's map for one image does not depend on the other images of the batch.

Which methods are batched, and why:

- Every method here computes an image's map from that image alone. The model
  runs in eval mode (BatchNorm uses its running statistics, dropout is off);
  targets are chosen per image; gradients of the summed target scores split
  per image; Score-CAM, Ablation-CAM, Occlusion and Feature Ablation pack
  masked copies of several images into one forward pass but score each copy
  on its own; Integrated Gradients integrates each image along its own path;
  the zeros, blur and mean baselines are per image; FullGrad normalises per
  image; Eigen-CAM's SVD, KPCA-CAM's kernel and FEM's thresholds are per
  image; Finer-CAM picks each image's rival classes from that image's
  logits. So the gradient CAMs (finer_cam, shapley_cam too), cam,
  eigen_cam, kpca_cam, fem, the Score-CAM family, ablation_cam, full_grad
  and the Captum methods batch.
  Only float rounding can differ with the batch size (other kernels), so a
  batched map equals the map alone to about 1e-5 relative, not bit for bit.
- `cam` checks that the logits are the classifier applied to the pooled
  layer, with a tolerance scaled by the batch's largest logit: a check of the
  model, not of an image.
- Methods that draw random noise (those declared with draws_noise in the
  registry, server/explain/methods.py: smooth_grad_cam_plus_plus, ss_cam,
  random_cam, gradient_shap, lime, kernel_shap, shapley_value_sampling; and
  any method with an option value that draws noise: any noise_tunnel, the
  "noise" baseline) draw it for the
  whole batch at once, so with a fixed seed the noise an image gets depends
  on its place in the batch and the answer would differ from the one it gets
  alone: seeded random requests are not batched (they run at once, alone,
  reproducibly). Without a seed every image gets fresh independent noise
  batched or not, so those batch.
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import batching
from .. import explain
from ..explain import methods
from .batching import Batched
from ..explain import Explanation, Options
from ..models.registry import LoadedModel


def draws_noise(method: str, options: Options) -> bool:
    """Whether the method's answer depends on random draws: the method is
    declared so, or one of its options' values draws noise (OptionSpec.draws_noise)."""
    if methods.method(method).draws_noise:
        return True
    return any(methods.option(name).draws_noise is not None and bool(methods.option(name).draws_noise(value))
               for name, value in options.items())


def batchable(method: str, options: Options) -> bool:
    """Whether concurrent requests for this explanation may share a batch (see the module's docstring)."""
    spec = methods.method(method)
    return spec.may_batch and not (draws_noise(method, options) and options.seed is not None)


def explain_batched(model: LoadedModel, x: torch.Tensor, key: bytes, method: str, *, targets,
                    layers: Sequence[str] | None, options: Options, per_image: bool = False) -> Batched:
    """explain.explain on x, through the model's batcher with the other
    requests of equal `key` (the request minus its images, and its targets
    when per_image) when the method is batchable. per_image: `targets` is a
    list of one target per image of x, and travels with those images into
    the batch. The result's value is this request's Explanation."""

    def run(batch: torch.Tensor, row_targets: list | None = None) -> Explanation:
        return explain.explain(model.module, model.to_device(batch), method,
                               targets=row_targets if per_image else targets, layers=layers,
                               options=options, arch=model.arch, class_names=model.class_names)

    def rows(result: Explanation, start: int, stop: int) -> Explanation:
        return Explanation(result.method, result.layers, result.images[start:stop])

    work = batching.Work("Explain", key if batchable(method, options) else None, run, rows,
                         row_args=tuple(targets) if per_image else None)
    return batching.run(model, x, work)
