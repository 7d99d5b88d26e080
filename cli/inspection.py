"""`netscope features`, `kernels` and `stats`: what is inside a model's layers."""
from __future__ import annotations

import sys
from pathlib import Path

from netscope.client.client import Client

from .connection import client_parser, connection
from .out_folder import file_part, out_folder
from .output import print_json, print_table
from .per_image import per_image, report_errors
from .preflight import Images, OutFolder, UsageError, declare


def add_commands(sub) -> None:
    p = client_parser(sub, "features", "feature maps of layers for images: PNG grids and a table", cmd_features)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True)
    p.add_argument("--layer", action="append", help="a layer's qualified name (repeatable; default: the layer CAMs "
                                                    "explain, the model's default_cam_layer)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--channels", type=int, nargs="+", help="only these channels")
    which.add_argument("--top", type=int, default=0, metavar="N", help="the N channels of highest mean activation")
    p.add_argument("--out", default=".", help="folder (created if missing) for the PNG grids and .npy files, "
                   "named IMAGE.LAYER.png / IMAGE.LAYER.npy (default: the current folder)")
    p.add_argument("--npy", action="store_true", help="also fetch the activations and save them as .npy")
    p.add_argument("--no-grid", action="store_true", help="no PNG grids, statistics only")
    p.add_argument("--colormap", default="", help="gray (default), viridis, jet, inferno, ...")
    p.add_argument("--upsample", action="store_true", help="scale each map to the input's size")
    p.add_argument("--max-tiles", type=int, default=0, help="most channels drawn per grid (default 64)")
    p.add_argument("--nrow", type=int, default=0, help="tiles per row")
    p.add_argument("--tile-size", type=int, default=0, help=f"pixels per tile (default: natural size; maps under "
                                                           f"{MIN_TILE} px enlarged by a whole factor to at least that)")
    declare(p, Images("IMAGE", "images"), OutFolder("--out"))
    p = client_parser(sub, "kernels", "a conv layer's kernels as a PNG grid", cmd_kernels)
    p.add_argument("--model", required=True)
    p.add_argument("--layer", required=True, help="a Conv2d layer's qualified name")
    p.add_argument("--mode", choices=["auto", "rgb", "per_channel", "mean_input"], default="auto")
    p.add_argument("--out", default=".", help="folder (created if missing) for MODEL.LAYER.kernels.png and, with "
                   "--npy, MODEL.LAYER.kernels.npy (default: the current folder)")
    p.add_argument("--npy", action="store_true", help="also fetch the weight tensor and save it as .npy")
    p.add_argument("--colormap", default="", help="for grey tiles: gray (default), viridis, jet, ...")
    p.add_argument("--max-tiles", type=int, default=0, help="most tiles drawn (default 64)")
    p.add_argument("--nrow", type=int, default=0, help="tiles per row")
    p.add_argument("--tile-size", type=int, default=32, help="pixels per tile (default 32; 0: one per weight)")
    declare(p, OutFolder("--out"))
    p = client_parser(sub, "stats", "weight (and, with images, gradient) statistics per layer", cmd_stats)
    p.add_argument("images", nargs="*", help="image files: also one backward pass and gradient statistics")
    p.add_argument("--model", required=True)
    p.add_argument("--layer", action="append", help="a layer (repeatable; default every layer with parameters)")
    p.add_argument("--bins", type=int, default=0, help="histogram bins (default 30)")
    p.add_argument("--range", type=float, nargs=2, metavar=("MIN", "MAX"), help="histogram range (default: the data's)")
    p.add_argument("--target", help="class index or label whose logit is differentiated (default: top-1)")
    p.add_argument("--labels", type=int, nargs="+", help="true label per image: differentiate the cross-entropy")
    declare(p, Images("IMAGE", "images"))


def _target_arg(text: str | None):
    if text is None:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def _image_names(paths: list[str]) -> list[str]:
    """A file-name stem per image, made unique by its position when two collide."""
    stems = [Path(p).stem for p in paths]
    return [s if stems.count(s) == 1 else f"{i}-{s}" for i, s in enumerate(stems)]


def _top(channels, means, n: int = 5) -> str:
    best = sorted(zip(channels, means), key=lambda cm: -cm[1])[:n]
    return ", ".join(f"{c}:{m:.3g}" for c, m in best) + (" ..." if len(channels) > n else "")


MIN_TILE = 32  # px: a grid's tiles are at least this for a person to see (a demo map is 4 x 4)


def tile_sizes(info, layers: list[str], upsample: bool) -> dict[int, list[str]]:
    """{tile size: layers}: natural-size tiles (0) for maps of MIN_TILE px or
    more; smaller maps enlarged by the smallest whole factor that reaches
    MIN_TILE (nearest-neighbour on the server, so each activation is a square
    block). Layers the table does not know, or without a spatial output, keep 0."""
    shapes = {l.name: l.output_shape for l in info.layers}
    groups: dict[int, list[str]] = {}
    for layer in layers:
        shape = list(info.input_size) if upsample else shapes.get(layer) or []
        side = max(shape[-2:]) if len(shape) >= 3 else 0
        tile = side * -(-MIN_TILE // side) if 0 < side < MIN_TILE else 0
        groups.setdefault(tile, []).append(layer)
    return groups


def cmd_features(args) -> int:
    out_dir = out_folder(args.out)  # before any request: a bad folder is a usage error, not lost work
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        layers = args.layer
        info = c.model_info(args.model) if not layers or not (args.tile_size or args.no_grid) else None
        if not layers:
            layers = [info.default_cam_layer] if info.default_cam_layer else \
                [l.name for l in info.layers if l.cam_target][-1:]
            if not layers:
                raise UsageError(f"{args.model} has no default layer: name one with --layer "
                                 f"(`netscope info {args.model}` lists them)")
            print(f"netscope features: no --layer given: {layers[0]}, the layer CAMs explain by default "
                  f"(`netscope info {args.model}` lists every layer)", file=sys.stderr)
        groups = {args.tile_size: layers} if info is None else tile_sizes(info, layers, args.upsample)

        def call(images):
            per = [dict() for _ in images]
            for tile, names in groups.items():
                got = c.feature_maps(args.model, images, names, channels=args.channels or (), top_channels=args.top,
                                     tensors=args.npy, grid=not args.no_grid, colormap=args.colormap,
                                     upsample=args.upsample, max_tiles=args.max_tiles, nrow=args.nrow, tile_size=tile)
                for mine, theirs in zip(per, got):
                    mine.update(theirs)
            return [{n: d[n] for n in layers if n in d} for d in per]  # in the order asked

        result = per_image(list(args.images), call, chunk=c.server_info().limits.max_images)
    report, rows = [], []
    for i, (path, name) in enumerate(zip(args.images, _image_names(args.images))):
        if i not in result.results:
            report.append({"image": path, "error": result.errors[i]})
            continue
        layers = result.results[i]
        entry = {"image": path, "layers": []}
        for layer, fm in layers.items():
            png = npy = None
            if fm.grid_png:
                png = out_dir / f"{name}.{layer}.png"
                png.write_bytes(fm.grid_png)
            if fm.activation is not None:
                import numpy as np

                npy = out_dir / f"{name}.{layer}.npy"
                np.save(npy, fm.activation)
            entry["layers"].append({"layer": layer, "shape": fm.shape, "channel_axis": fm.channel_axis,
                                    "channels": fm.channels, "channel_mean": fm.channel_mean,
                                    "channel_max": fm.channel_max, "png": str(png) if png else None,
                                    "npy": str(npy) if npy else None})
            rows.append([path if not entry["layers"][1:] else "", layer, tuple(fm.shape), len(fm.channels),
                         _top(fm.channels, fm.channel_mean), str(png or npy or "")])
        report.append(entry)
    if args.json:
        print_json(report)
    elif rows:
        print_table(rows, ["image", "layer", "shape", "channels", "highest mean (channel:mean)", "written"])
    report_errors("features", result)
    return 1 if result.errors else 0


def cmd_kernels(args) -> int:
    folder = out_folder(args.out)
    stem = folder / f"{file_part(args.model)}.{file_part(args.layer)}.kernels"
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        k = c.kernels(args.model, args.layer, mode=args.mode, tensor=args.npy, colormap=args.colormap,
                      max_tiles=args.max_tiles, nrow=args.nrow, tile_size=args.tile_size)
    out = stem.with_name(stem.name + ".png")
    out.write_bytes(k.grid_png)
    shape = npy = None
    if k.weight is not None:
        import numpy as np

        npy = stem.with_name(stem.name + ".npy")
        np.save(npy, k.weight)
        shape = list(k.weight.shape)
    if args.json:
        print_json({"layer": k.layer, "mode": k.mode, "tiles": k.tiles, "total_tiles": k.total_tiles,
                    "weight_shape": shape, "png": str(out), "npy": str(npy) if npy else None})
    else:
        print(f"{k.layer}: {k.mode}, {k.tiles} of {k.total_tiles} tiles -> {out}"
              + (f"; weight {tuple(shape)} -> {npy}" if shape else ""))
    return 0


_BARS = " ▁▂▃▄▅▆▇█"


def spark(counts) -> str:
    """A histogram as one line of block characters."""
    top = max(counts) if len(counts) else 0
    if not top:
        return ""
    return "".join(_BARS[min(8, -(-int(c) * 8 // int(top)))] for c in counts)


def cmd_stats(args) -> int:
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        result = c.layer_stats(args.model, args.layer or (), bins=args.bins,
                               hist_range=tuple(args.range) if args.range else None,
                               images=[Path(p) for p in args.images] if args.images else None,
                               target=_target_arg(args.target), labels=args.labels)
    if args.json:
        print_json({"layers": result.layers, "loss": result.loss, "differentiated": _differentiated(args)})
        return 0
    grads = result.loss is not None
    header = ["layer", "param", "shape", "mean", "std", "min", "max", "l2", "zeros", "values"]
    if grads:
        header += ["grad l2", "grad mean", "grad std", "grads", "layer grad", "ratio"]
    rows = []
    for ls in result.layers:
        for i, p in enumerate(ls.parameters):
            v = p.value
            row = [f"{ls.layer} ({ls.type})" if i == 0 else "", p.name + ("" if p.trainable else " (frozen)"),
                   tuple(p.shape), f"{v.mean:.4g}", f"{v.std:.4g}", f"{v.min:.4g}", f"{v.max:.4g}",
                   f"{v.l2_norm:.4g}", f"{100 * v.zero_fraction:.1f}%", spark(v.hist_counts)]
            if grads:
                g = p.grad
                row += [f"{g.l2_norm:.4g}", f"{g.mean:.3g}", f"{g.std:.3g}", spark(g.hist_counts)] if g else ["-"] * 4
                row += [f"{ls.grad_norm:.4g}", f"{ls.grad_norm_ratio:.3g}" if ls.grad_norm_ratio else "-"] if i == 0 else ["", ""]
            rows.append(row)
    print_table(rows, header)
    if grads:
        print(f"\n{_differentiated(args)} {result.loss:.6g}; ratio = a layer's gradient norm over the next layer's "
              "towards the output (far below 1 along the depth: vanishing; far above: exploding)")
    return 0


def _differentiated(args) -> str | None:
    """What the server differentiated (inspection's _score): the cross-entropy
    with --labels, else a logit averaged over the images: --target's, or
    each image's top-1."""
    if not args.images:
        return None
    if args.labels:
        return "cross-entropy loss"
    if args.target is not None:
        return f"logit of target {args.target} (mean over images)"
    return "top-1 logit (mean over images)"
