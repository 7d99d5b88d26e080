"""The pointing game over RPC: explain the images of a folder with known object
boxes through a running server and score each map's peak against its box
(`netscope.server.explain.pointing` holds the rule).

The folder is what `netscope.training.data.export_shapes` writes: images plus a
`boxes.csv` with columns file, label, class, x0, y0, x1, y1, width, height
(x1/y1 exclusive). Each image is explained for its own class, named by its
class name (not index), so the model's class order does not matter. Maps come
back at the model input's size; the boxes are in the image's pixels, so the
images must already be at that size (export them with the model's input size):
a map of any other size is refused rather than compared with boxes in another
frame.
"""
from __future__ import annotations

import csv
import pathlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from netscope.server.explain.pointing import PointingResult, hit, pointing_game


@dataclass(frozen=True)
class BoxedImage:
    file: pathlib.Path
    label: str  # the class name, the explanation's target
    box: tuple[int, int, int, int]  # x0, y0, x1, y1; x1/y1 exclusive
    size: tuple[int, int]  # the image's (height, width): the frame of the box


def read_boxes(folder) -> list[BoxedImage]:
    """The images and boxes listed in `folder/boxes.csv`, in file order."""
    folder = pathlib.Path(folder)
    with open(folder / "boxes.csv", newline="") as f:
        return [BoxedImage(folder / row["file"], row["class"],
                           (int(row["x0"]), int(row["y0"]), int(row["x1"]), int(row["y1"])),
                           (int(row["height"]), int(row["width"])))
                for row in csv.DictReader(f)]


def maps(client, model: str, images: list[BoxedImage], method: str = "grad_cam", *, batch_size: int = 32,
         **options) -> list[np.ndarray]:
    """Each image's map for its own class, at the model input's size, in `images`'
    order: `method` and `options` as `Client.explain` takes them."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for n, item in enumerate(images):
        by_class[item.label].append(n)
    out: list[np.ndarray | None] = [None] * len(images)
    for label, indices in by_class.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            answers = client.explain(model, [images[n].file for n in chunk], method=method, target=label, **options)
            for n, (explained,) in zip(chunk, answers, strict=True):
                heatmap = explained.heatmap_upsampled
                if heatmap.shape != images[n].size:
                    raise ValueError(f"{images[n].file}: the map is {heatmap.shape[1]}x{heatmap.shape[0]} (the "
                                     f"model's input) but the box is in a {images[n].size[1]}x{images[n].size[0]} "
                                     "image; export the images at the model's input size")
                out[n] = heatmap
    return out


def play(client, model: str, images: list[BoxedImage], method: str = "grad_cam", *, tolerance: float = 0.0,
         batch_size: int = 32, **options) -> PointingResult:
    """Explain every image for its own class and count the maps whose peak hits its box."""
    heatmaps = maps(client, model, images, method, batch_size=batch_size, **options)
    return pointing_game(heatmaps, [i.box for i in images], tolerance)


BASELINES = ("centre", "random")


def centre_map(height: int, width: int) -> np.ndarray:
    """A map peaking at the image centre (the middle pixels tie on even sides)."""
    ys, xs = np.mgrid[0:height, 0:width]
    return -np.hypot(ys - (height - 1) / 2, xs - (width - 1) / 2)


def baseline(images: list[BoxedImage], kind: str = "centre", *, tolerance: float = 0.0, seed: int = 0) -> PointingResult:
    """What a map that ignores the model scores: `centre` always points at the image
    centre (Zhang et al.'s centre baseline), `random` at a uniformly random pixel
    (its accuracy estimates the boxes' mean share of the image). A method must
    beat both to claim it localises anything."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")
    rng = np.random.default_rng(seed)
    hits = 0
    for item in images:
        heatmap = centre_map(*item.size) if kind == "centre" else rng.random(item.size)
        hits += hit(heatmap, item.box, tolerance)
    return PointingResult(hits, len(images))


def off_centre(images: list[BoxedImage]) -> list[BoxedImage]:
    """The images whose box misses the image centre: there the centre baseline
    scores 0, so a map's hits are its own. Objects that fill much of the image
    (shapes at 32 px: the centre baseline hits about 80%) need this harder subset,
    as Zhang et al. report a "difficult" subset beside all images."""
    return [i for i in images if not hit(centre_map(*i.size), i.box)]
