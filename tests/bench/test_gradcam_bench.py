"""Grad-CAM speed, in one run on the same model and input: ours against
pytorch-grad-cam, Captum's LayerGradCam, and the floor (the bare forward pass
plus one torch.autograd.grad to the layer's output).

CI runs each once as a test (pyproject: --benchmark-disable) at a small input.
To measure (docs/PERFORMANCE.md, "Explanations"):

    NETSCOPE_BENCH_SIZE=224 .venv/bin/python -m pytest tests/bench/test_gradcam_bench.py \
        --benchmark-enable --benchmark-json=gradcam.json
    .venv/bin/python tests/bench/gradcam_ratios.py gradcam.json
"""
from __future__ import annotations

import os

import pytest
import torch
import torchvision
from torch import nn

from netscope.server.explain import explain
from netscope.server.inspection.hooks import hook_count

SIZE = int(os.environ.get("NETSCOPE_BENCH_SIZE", "64"))
DEVICE = torch.device(os.environ.get("NETSCOPE_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
torch.set_num_threads(max(1, min(int(os.environ.get("NETSCOPE_BENCH_THREADS", "2")), os.cpu_count() or 1)))


def _model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = torchvision.models.resnet18()
    return m.eval().to(DEVICE)


MODEL = _model()


def _input(n: int) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(n)).to(DEVICE)


def _sync(result):
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return result


def floor(x: torch.Tensor):
    """What any Grad-CAM must do: a forward pass and the gradient at one layer."""
    acts = []
    handle = MODEL.layer4.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        out = MODEL(x)
    finally:
        handle.remove()
    t = out.argmax(1, keepdim=True)
    (g,) = torch.autograd.grad(out.gather(1, t).sum(), acts[0])
    return _sync(g)


def ours(x: torch.Tensor):
    return _sync(explain(MODEL, x, "grad_cam", layers=["layer4"]))


def make_pytorch_grad_cam():
    from pytorch_grad_cam import GradCAM

    cam = GradCAM(model=MODEL, target_layers=[MODEL.layer4])

    def run(x):
        return _sync(cam(input_tensor=x, targets=None))

    run.close = cam.activations_and_grads.release  # its hooks stay on layer4 until released
    return run


def make_captum():
    from captum.attr import LayerAttribution, LayerGradCam

    lgc = LayerGradCam(MODEL, MODEL.layer4)

    def run(x):
        with torch.no_grad():
            t = MODEL(x).argmax(1)  # Captum needs the target; top-1 costs it a forward pass
        raw = lgc.attribute(x, target=t, relu_attributions=True)
        return _sync(LayerAttribution.interpolate(raw, tuple(x.shape[-2:]), "bilinear").detach().cpu())

    return run


IMPLEMENTATIONS = {
    "floor": lambda: floor,
    "ours": lambda: ours,
    "pytorch_grad_cam": make_pytorch_grad_cam,
    "captum": make_captum,
}


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("batch", [1, 32])
def test_gradcam_speed(benchmark, batch, layout, impl):
    """Every implementation gets the same batch, in either memory layout (a
    model loaded with channels_last=True is fed channels-last batches), and
    the model bare: hooks left on layer4 (pytorch-grad-cam's stay until
    released) change every later case's timings."""
    assert hook_count(MODEL) == 0, "an earlier case left hooks on the model"
    x = _input(batch)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    fn = IMPLEMENTATIONS[impl]()
    fn(x)  # warm-up (allocator, first-call costs)
    benchmark.group = f"grad_cam resnet18 {SIZE}x{SIZE} batch {batch} {layout} on {DEVICE.type}"
    benchmark.extra_info.update(impl=impl, batch=batch, size=SIZE, layout=layout, device=DEVICE.type)
    rounds = 5 if batch > 1 and SIZE >= 160 else 15
    try:
        benchmark.pedantic(fn, args=(x,), rounds=rounds, iterations=1, warmup_rounds=1)
    finally:
        getattr(fn, "close", lambda: None)()
    assert all(p.grad is None for p in MODEL.parameters() if impl != "pytorch_grad_cam")
    MODEL.zero_grad(set_to_none=True)  # pytorch-grad-cam runs a full backward
