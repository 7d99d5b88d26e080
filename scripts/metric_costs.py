"""Seconds per image of each faithfulness metric, in-process, for the table in
docs/EXPLANATIONS.md ("What each metric costs"):

    .venv/bin/python scripts/metric_costs.py [--device cpu|cuda] [--images 3] [--json OUT.json]

Models: resnet18 (weights none) at 224 x 224, and the demo's architecture
(simple_cnn, widths 16/32/64, one channel, 32 x 32; untrained: a metric's cost
does not depend on the weights). Each metric runs alone on a Grad-CAM map of
each image (a random photo-sized input), after one warm-up image; the figure
is the median over images. The metrics take turns on each image, so a
machine whose load changes during the run moves them alike and their ratios
hold. Default steps (20) and batch_size (32).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from netscope.server import explain
from netscope.server.explain import faithfulness as F


def models(device: str):
    import torchvision

    from netscope.training.models import build_model

    torch.manual_seed(0)
    r18 = torchvision.models.resnet18(weights=None).eval().to(device)
    demo = build_model("simple_cnn", 10, widths=[16, 32, 64], in_channels=1, input_size=32).eval().to(device)
    return [("resnet18 224x224", r18, (3, 224, 224)), ("demo 32x32", demo, (1, 32, 32))]


def seconds(model, shape, images: int, device: str) -> dict[str, float]:
    """{metric: median seconds per image}."""
    times = {m: [] for m in F.METRICS}
    gen = torch.Generator().manual_seed(1)
    for n in range(images + 1):
        x = torch.randn(1, *shape, generator=gen).to(device)
        cm = explain.explain(model, x, "grad_cam").images[0][0]
        for metric in F.METRICS:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            F.evaluate(model, x[0], cm.upsampled.numpy(), cm.target, metrics=[metric])
            if device == "cuda":
                torch.cuda.synchronize()
            if n:  # the first image warms up
                times[metric].append(time.perf_counter() - t0)
    return {m: statistics.median(t) for m, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    for name, model, shape in models(args.device):
        for metric, s in seconds(model, shape, args.images, args.device).items():
            rows.append({"model": name, "metric": metric, "seconds_per_image": s, "device": args.device})
            print(f"{name:18s} {metric:24s} {s * 1000:10.1f} ms/image", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
