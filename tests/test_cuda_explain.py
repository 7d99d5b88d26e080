"""Explanations on a CUDA device equal the same explanations on the CPU
(needs CUDA: skipped elsewhere; scripts/gpu_check.sh runs it on a lent GPU).

TF32 is switched off here so the comparison checks our code on the device,
not TF32's rounding; a half-precision model must still give float32 maps.
"""
from __future__ import annotations

import copy

import pytest
import torch

from netscope.server.explain import Options, explain, normalize

from .explain.conftest import batch, model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

METHODS = [
    ("grad_cam", {}), ("grad_cam_plus_plus", {}), ("layer_cam", {}), ("eigen_cam", {}), ("fem", {}),
    ("finer_cam", {}), ("score_cam", dict(batch_size=64)), ("ablation_cam", dict(batch_size=64)),
    ("full_grad", {}), ("integrated_gradients", dict(steps=16)), ("saliency", {}), ("guided_backprop", {}),
    ("deeplift", {}), ("occlusion", dict(window=32, stride=32)),
]


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("method,options", METHODS, ids=[m for m, _ in METHODS])
def test_cuda_maps_equal_cpu_maps(method, options):
    cpu = model("resnet18")
    gpu = copy.deepcopy(cpu).cuda()
    x = batch(4, 128, seed=21)
    on_cpu = explain(cpu, x, method, options=Options(**options))
    on_gpu = explain(gpu, x.cuda(), method, options=Options(**options))
    assert [img[0].target for img in on_gpu] == [img[0].target for img in on_cpu]
    a = normalize(torch.stack([img[0].upsampled for img in on_gpu]))
    b = normalize(torch.stack([img[0].upsampled for img in on_cpu]))
    assert a.device.type == "cpu" and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    assert all(p.grad is None for p in gpu.parameters())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_give_float32_maps_close_to_float32(dtype):
    cpu = model("resnet18")
    half = copy.deepcopy(cpu).cuda().to(dtype)
    x = batch(2, 128, seed=22)
    ref = normalize(torch.stack([img[0].upsampled for img in explain(cpu, x, "grad_cam", targets=[1, 2])]))
    got = explain(half, x.cuda(), "grad_cam", targets=[1, 2])
    maps = torch.stack([img[0].upsampled for img in got])
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all()
    # Half precision moves a normalised map by a few percent at most.
    assert (normalize(maps) - ref).abs().mean() < 0.05
