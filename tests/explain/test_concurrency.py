"""Many explanations at once on ONE model never mix, whatever the method:
context-local captures for the CAMs, a private module tree for the Captum
methods that hook modules. None of pytorch-grad-cam, TorchCAM or Captum is
safe to use like this (their hooks live on the shared modules)."""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import torch

from netscope.server.explain import Options, Target, explain

from .conftest import batch, model, untouched

JOBS = [
    ("grad_cam", dict(targets=1)),
    ("grad_cam", dict(targets=2, layers=["layer3"])),
    ("hires_cam", dict(targets=Target(top_k=2))),
    ("layer_cam", dict(layers=["layer2", "layer4"])),
    ("eigen_cam", dict()),
    ("grad_cam_plus_plus", dict(options=Options(aug_smooth=True))),
    ("full_grad", dict(targets=3)),
    ("guided_backprop", dict(targets=4)),
    ("deconvolution", dict()),
    ("deeplift", dict(targets=5)),
    ("guided_grad_cam", dict(targets=6)),
    ("saliency", dict(targets=7)),
    ("integrated_gradients", dict(options=Options(steps=4))),
]


def run(m, x, job):
    method, kwargs = job
    r = explain(m, x, method, **kwargs)
    return torch.stack([torch.stack([c.upsampled for c in img]) for img in r])


def test_concurrent_explanations_on_one_model_equal_sequential_ones():
    m = model("resnet18")
    x = batch(2, 64, seed=41)
    before = untouched(m)
    alone = [run(m, x, job) for job in JOBS]
    work = list(range(len(JOBS))) * 3
    random.Random(0).shuffle(work)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: (i, run(m, x, JOBS[i])), work))
    for i, got in results:
        want = alone[i]
        scale = float(want.abs().max()) or 1.0
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale, msg=f"{JOBS[i]} mixed with another request")
    assert untouched(m) == before
