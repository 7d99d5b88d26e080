"""`netscope predict`: the top-k classes of images."""
from __future__ import annotations

from pathlib import Path

from netscope.client.client import Client

from .connection import client_parser, connection
from .output import print_table, print_json
from .preflight import Images, declare


def add_commands(sub) -> None:
    p = client_parser(sub, "predict", "top-k classes of images", cmd_predict)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True)
    p.add_argument("-k", type=int, default=0, help="how many classes per image (default 5)")
    declare(p, Images("IMAGE", "images"))


def cmd_predict(args) -> int:
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        preds = c.predict(args.model, [Path(p) for p in args.images], k=args.k)
    if args.json:
        print_json([{"image": img, "top_k": p.top_k} for img, p in zip(args.images, preds)])
        return 0
    rows = []
    for img, p in zip(args.images, preds):
        for rank, s in enumerate(p.top_k, 1):
            rows.append([img if rank == 1 else "", rank, s.index, s.label, f"{s.probability:.4f}", f"{s.logit:.3f}"])
    print_table(rows, ["image", "rank", "class", "label", "probability", "logit"])
    return 0
