"""`netscope predict`: the top-k classes of images."""
from __future__ import annotations

from netscope.client.client import Client

from .connection import client_parser, connection
from .output import print_table, print_json
from .per_image import expand, per_image, report_errors
from .preflight import ImagesOrFolders, UsageError, declare


def add_commands(sub) -> None:
    p = client_parser(sub, "predict", "top-k classes of images", cmd_predict)
    p.add_argument("images", nargs="+", help="image files, or folders (their images, recursively, sorted); a file "
                                             "that cannot be read or decoded is reported by path and the rest go on "
                                             "(exit 1)")
    p.add_argument("--model", required=True)
    p.add_argument("-k", type=int, default=0, help="how many classes per image (default 5)")
    declare(p, ImagesOrFolders("IMAGE", "images"))  # predict takes folders too


def cmd_predict(args) -> int:
    paths = expand(args.images)
    if not paths:
        raise UsageError(f"no image files (.jpg .jpeg .png .webp .bmp) in {', '.join(args.images)}")
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        result = per_image(paths, lambda images: c.predict(args.model, images, k=args.k),
                           chunk=c.server_info().limits.max_images)
    if args.json:  # every file in order: top_k, or the error that file got
        print_json([{"image": img, "top_k": result.results[i].top_k} if i in result.results else
                    {"image": img, "error": result.errors[i]} for i, img in enumerate(paths)])
    else:
        rows = []
        for i, img in enumerate(paths):
            for rank, s in enumerate(result.results[i].top_k if i in result.results else (), 1):
                rows.append([img if rank == 1 else "", rank, s.index, s.label, f"{s.probability:.4f}",
                             f"{s.logit:.3f}"])
        if rows:
            print_table(rows, ["image", "rank", "class", "label", "probability", "logit"])
    report_errors("predict", result)
    return 1 if result.errors else 0
