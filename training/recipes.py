"""Measured `netscope train` recipes, in one place for the docs, the tests and the
scripts that rely on them (docs/TRAINING.md has their accuracies and times).

SHAPES trains simple_cnn on the generated shapes at 32x32 in about a minute on one
CPU thread, to 94-97% test accuracy (seeds 0-2): two convs per block and
PyTorch's own layer init are what it needs (docs/TRAINING.md, "Why the demo is
digits"). Its last block's last ReLU, `features.2.5` (the default CAM layer),
gives 8x8 CAMs; the shapes' boxes
make it the model the pointing game is measured on (scripts/pointing_game.py).
"""
from __future__ import annotations

SHAPES = [
    "--data", "shapes", "--image-size", "32", "--samples", "4000",
    "--arch", "simple_cnn", "--arch-arg", "widths=[16,32,64]", "--arch-arg", "convs=2", "--init", "torch",
    "--epochs", "10", "--batch-size", "64", "--optimizer", "adamw", "--lr", "6e-3", "--weight-decay", "0.01",
    "--scheduler", "onecycle", "--seed", "0", "--threads", "1", "--no-tensorboard",
]
SHAPES_SIZE = 32  # the input side SHAPES trains at: export shapes at this size to score maps against boxes


def shapes_argv(out, progress: bool = False, *overrides: str) -> list[str]:
    """`netscope train` arguments for SHAPES writing `out`; later options in
    `overrides` win (argparse keeps the last), e.g. "--samples", "3000"."""
    return [*SHAPES, "--out", str(out), *([] if progress else ["--no-progress"]), *overrides]
