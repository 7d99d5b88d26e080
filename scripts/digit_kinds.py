"""Accuracy per kind of digit image (training/digit_images.py) of a digits checkpoint,
through the server's own preprocessing, in-process:

    .venv/bin/python scripts/digit_kinds.py models/demo.pt [-n 200]

docs/TRAINING.md ("The demo model") records its output for the demo before and after.
"""
from __future__ import annotations

import argparse

import torch

from netscope.server.imaging import Preprocessing, preprocess
from netscope.training import digit_images
from netscope.training.checkpoint import load_checkpoint
from netscope.training.models import build_model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("-n", type=int, default=200, help="images per kind (default 200)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    ck = load_checkpoint(a.checkpoint)
    model = build_model(ck["arch"], ck["num_classes"], **ck.get("arch_kwargs", {}))
    model.load_state_dict(ck["model_state_dict"])
    model.eval()
    recipe = Preprocessing.from_dict(ck["preprocessing"])

    @torch.no_grad()
    def predict(images):
        return model(torch.stack([preprocess(im, recipe) for im in images])).argmax(1).tolist()

    for kind, acc in digit_images.accuracy_by_kind(predict, n=a.n).items():
        print(f"{kind:18s} {acc:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
