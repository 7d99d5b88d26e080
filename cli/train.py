"""`netscope train`: train a classifier into a checkpoint; netscope.training does the work."""
from __future__ import annotations


def add_commands(sub) -> None:
    from netscope.training.options import add_arguments

    p = sub.add_parser("train", help="train an image classifier into a checkpoint the server serves",
                       description="Train an image classifier and write a netscope checkpoint, e.g. "
                                   "netscope train --data shapes --out models/shapes.pt (each data source's defaults are its working "
                                   "recipe, docs/TRAINING.md; a flag given wins); "
                                   "then netscope serve --model shapes=shapes serves it.")
    add_arguments(p)
    p.set_defaults(run=cmd_train)


def cmd_train(args) -> int:
    from netscope.training.train import run

    return run(args)
