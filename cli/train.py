"""`netscope train`: train a classifier into a checkpoint; netscope.training does the work."""
from __future__ import annotations


def add_commands(sub) -> None:
    from netscope.training.options import add_arguments

    p = sub.add_parser("train", help="train an image classifier into a checkpoint the server serves",
                       description="Train an image classifier and write a netscope checkpoint, e.g. "
                                   "netscope train --data digits --epochs 12 --out models/digits.pt (docs/TRAINING.md has a shapes recipe); "
                                   "then netscope serve --model digits=digits serves it.")
    add_arguments(p)
    p.set_defaults(run=cmd_train)


def cmd_train(args) -> int:
    from netscope.training.train import run

    return run(args)
