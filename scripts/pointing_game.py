#!/usr/bin/env python
"""Pointing-game accuracy of every explanation method on the shapes model, as a
markdown table (docs/EXPLANATIONS.md).

    .venv/bin/python scripts/pointing_game.py                       # all methods, 600 test shapes
    .venv/bin/python scripts/pointing_game.py --methods grad_cam,layer_cam --images 300

Trains the SHAPES recipe (netscope.training.recipes) into STORE/CHECKPOINT.pt
when it is missing, starts a server on a loopback port (or uses --server),
exports test-split shapes (never trained on) at the model's input size, explains
each for its true class and scores the peaks against the boxes: on all images,
on the off-centre ones (where a map pointing at the centre misses), and with a
tolerance; beside them two maps that ignore the model (centre, random) and
Grad-CAM of the same network untrained (written to the store for the run, then
removed; with --server, the server must read the same store). `method@layer` explains another layer (`cam` needs `features`, the
layer that feeds simple_cnn's global average pooling).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time
import warnings

ALL_METHODS = [
    "grad_cam", "grad_cam_plus_plus", "smooth_grad_cam_plus_plus", "xgrad_cam", "hires_cam",
    "grad_cam_elementwise", "layer_cam", "eigen_cam", "eigen_grad_cam", "shapley_cam", "kpca_cam", "fem", "finer_cam",
    "full_grad",
    "cam@features",
    "score_cam", "ss_cam", "is_cam", "ablation_cam",
    "saliency", "input_x_gradient", "guided_backprop", "deconvolution", "guided_grad_cam", "deeplift",
    "gradient_shap", "integrated_gradients", "occlusion", "feature_ablation", "lime", "kernel_shap",
    "shapley_value_sampling",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default="models", help="model store (default models)")
    p.add_argument("--checkpoint", default="shapes", help="checkpoint name in the store (default shapes)")
    p.add_argument("--server", help="use this running server (its store must hold the checkpoint)")
    p.add_argument("--images", type=int, default=600, help="test shapes to explain (default 600)")
    p.add_argument("--methods", default=",".join(ALL_METHODS), help="comma-separated, method or method@layer")
    p.add_argument("--tolerance", type=float, default=2.0,
                   help="pixels for the tolerant column (default 2: Zhang et al.'s 15 px at 224, scaled to 32)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the in-process server and training")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from netscope.client import Client
    from netscope.cli.pointing import baseline, maps, off_centre, read_boxes
    from netscope.server.explain.pointing import pointing_game
    from netscope.training import recipes
    from netscope.training.checkpoint import randomised_copy
    from netscope.training.data import export_shapes
    from netscope.training.train import main as train

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Setting (forward, )?backward hooks")
    store = pathlib.Path(args.store)
    ckpt = store / f"{args.checkpoint}.pt"
    if not ckpt.exists():
        store.mkdir(parents=True, exist_ok=True)
        print(f"training {ckpt} with the SHAPES recipe", file=sys.stderr)
        if train(recipes.shapes_argv(ckpt, False, "--threads", str(args.threads))) != 0:
            return 1
        torch.set_num_threads(args.threads)

    server = None
    if args.server:
        address = args.server
    else:
        from netscope.server.app import Server, ServerConfig

        server = Server(ServerConfig(address="127.0.0.1:0", store=str(store), device="cpu", workers=4)).start()
        address = server.address
    try:
        with tempfile.TemporaryDirectory() as tmp, Client(address, timeout=3600) as client:
            client.wait_ready()
            images = read_boxes(export_shapes(tmp, args.images, seed=0, size=recipes.SHAPES_SIZE))
            hard = {i.file for i in off_centre(images)}
            model = f"pointing-{args.checkpoint}"
            client.load_model(model, args.checkpoint)
            boxes = [i.box for i in images]
            hard_at = [n for n, i in enumerate(images) if i.file in hard]

            def row(name, heatmaps, seconds):
                every = pointing_game(heatmaps, boxes).accuracy
                off = pointing_game([heatmaps[n] for n in hard_at], [boxes[n] for n in hard_at]).accuracy
                near = pointing_game(heatmaps, boxes, args.tolerance).accuracy
                print(f"| {name} | {every:.1%} | {off:.1%} | {near:.1%} | {seconds} |", flush=True)

            print(f"{args.images} test shapes at {recipes.SHAPES_SIZE} px, {len(hard)} of them off-centre; "
                  f"checkpoint {ckpt}\n")
            print(f"| method | all | off-centre | all, {args.tolerance:g} px | seconds |")
            print("| --- | --- | --- | --- | --- |")
            for kind in ("random", "centre"):
                every = baseline(images, kind).accuracy
                off = baseline([images[n] for n in hard_at], kind).accuracy
                near = baseline(images, kind, tolerance=args.tolerance).accuracy
                print(f"| baseline: {kind} | {every:.1%} | {off:.1%} | {near:.1%} | - |", flush=True)
            for spec in args.methods.split(","):
                method, _, layer = spec.partition("@")
                t0 = time.perf_counter()
                heatmaps = maps(client, model, images, method, **({"layers": layer} if layer else {}))
                row(spec, heatmaps, f"{time.perf_counter() - t0:.1f}")
            client.unload_model(model)

            # Model randomisation: the same network untrained must not point (Adebayo et al.)
            control = store / f"{args.checkpoint}-randomised.pt"
            randomised_copy(ckpt, control)
            try:
                client.load_model(model, control.stem)
                t0 = time.perf_counter()
                row("grad_cam, same network untrained", maps(client, model, images, "grad_cam"),
                    f"{time.perf_counter() - t0:.1f}")
                client.unload_model(model)
            finally:
                control.unlink(missing_ok=True)
    finally:
        if server is not None:
            server.stop(grace=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
