"""Data sources for `netscope train --data SPEC`.

    imagefolder:PATH   one folder per class; split 8:1:1 (seeded, stratified) once and recorded
    cifar10:ROOT       torchvision's loaders; --download fetches them (online users only)
    mnist:ROOT
    fashionmnist:ROOT
    digits             scikit-learn's bundled 8x8 handwritten digits, upscaled (default 32x32)
    mixed_digits       digits as people make them (training/digit_images.py): sklearn's, upscaled
                       nearest and bilinear, beside font and hand-drawn digits, either polarity
    shapes             generated with OpenCV: filled shapes on cluttered backgrounds, with boxes

Every source gives a `Datasets`: train/val/test sets yielding (normalised float
CHW tensor, label), the class names, and the preprocessing recipe (the keys of
the server's `Preprocessing`) that turns any RGB image into what the model saw.
Augmentation is a pure function of (seed, epoch, sample index), so a resumed
run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import pathlib
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger("netscope.training")

SOURCES = ("imagefolder", "cifar10", "mnist", "fashionmnist", "digits", "mixed_digits", "shapes")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
from .options import AUGMENTATIONS  # noqa: E402
# What "auto" means per source: digits must not be mirrored, photos like crops.
AUTO_AUGMENT = {
    "shapes": "flip",
    "digits": "shift",
    "mixed_digits": "shift",
    "mnist": "shift",
    "fashionmnist": "crop",
    "cifar10": "crop",
    "imagefolder": "rrc",
}


MIXED_DIGITS_SAMPLES = 8000  # mixed_digits' default train images (val and test an eighth each)


class DataError(ValueError):
    """The data a user pointed at can't be used; the message says why and what to do."""


# ----------------------------------------------------------------------------- spec


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'cifar10:/data' -> ('cifar10', '/data'); 'digits' -> ('digits', None)."""
    kind, sep, arg = (spec or "").partition(":")
    kind = kind.strip().lower()
    if kind not in SOURCES:
        raise DataError(
            f"unknown data source {spec!r}; use one of imagefolder:PATH, cifar10:ROOT, mnist:ROOT, "
            "fashionmnist:ROOT, digits, mixed_digits, shapes"
        )
    if kind in ("digits", "mixed_digits", "shapes"):
        if arg:
            raise DataError(f"{kind} takes no path (got {spec!r})")
        return kind, None
    if not arg:
        raise DataError(f"{kind} needs a folder: --data {kind}:PATH")
    return kind, arg


# ----------------------------------------------------------------------------- shapes

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross", "heart")


def _polygon(kind: str, r: float) -> np.ndarray:
    """Unit polygon of a shape scaled to 'radius' r, centred at 0, unrotated (N, 2)."""
    if kind == "square":
        a = r * 0.8
        return np.array([[-a, -a], [a, -a], [a, a], [-a, a]])
    if kind == "triangle":
        t = np.deg2rad(np.array([-90, 30, 150]))
        return np.stack([np.cos(t), np.sin(t)], 1) * r
    if kind == "star":
        t = np.deg2rad(np.arange(10) * 36 - 90)
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.42)
        return np.stack([np.cos(t) * rad, np.sin(t) * rad], 1)
    if kind == "cross":
        a, b = r * 0.85, r * 0.3
        return np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b],
                         [-a, -b], [-b, -b]])
    if kind == "heart":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return np.stack([x, y + 2.5], 1) * (r / 16.5)
    raise ValueError(kind)


def render_shape(rng: np.random.Generator, label: int, size: int = 64, classes=SHAPE_CLASSES):
    """One cluttered image with one shape of class `label`: (rgb uint8 HxWx3, box (x0, y0, x1, y1))."""
    s = size / 64.0
    # background: a linear gradient between two random colours, plus noise
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    t = np.clip(0.5 + ramp[None, :] * np.float32(np.cos(ang)) + ramp[:, None] * np.float32(np.sin(ang)), 0, 1)
    img = c0 + t[..., None] * (c1 - c0)
    img += rng.standard_normal((size, size, 3), dtype=np.float32) * np.float32(rng.uniform(4, 14))
    img = np.clip(img, 0, 255).astype(np.uint8)
    bg_mean = (c0 + c1) / 2
    # clutter: thin lines, small dots and short arcs in random colours
    for _ in range(int(rng.integers(4, 9))):
        col = tuple(int(v) for v in rng.uniform(0, 255, 3))
        kind = rng.integers(3)
        if kind == 0:
            p0, p1 = rng.integers(0, size, 2), rng.integers(0, size, 2)
            cv2.line(img, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), col, 1, cv2.LINE_AA)
        elif kind == 1:
            p = rng.integers(0, size, 2)
            cv2.circle(img, (int(p[0]), int(p[1])), int(max(1, rng.integers(1, 4) * s)), col, -1, cv2.LINE_AA)
        else:
            p = rng.integers(0, size, 2)
            ax = int(max(2, rng.integers(3, 9) * s))
            a0 = float(rng.uniform(0, 360))
            cv2.ellipse(img, (int(p[0]), int(p[1])), (ax, ax), 0, a0, a0 + float(rng.uniform(60, 180)), col, 1,
                        cv2.LINE_AA)
    # the object: a filled shape of a colour that stands out from the background
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - bg_mean).sum() > 160:
            break
    r = rng.uniform(10, 22) * s
    kind = classes[label]
    rot = rng.uniform(0, 2 * np.pi)
    cx, cy = rng.uniform(r + 1, size - r - 1, 2)
    mask = np.zeros((size, size), np.uint8)
    if kind == "circle":
        cv2.circle(mask, (int(round(cx * 16)), int(round(cy * 16))), int(round(r * 0.9 * 16)), 255, -1, cv2.LINE_AA,
                   shift=4)
    else:
        pts = _polygon(kind, r)
        rm = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
        pts = pts @ rm.T + [cx, cy]
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    alpha = mask.astype(np.float32)[..., None] * np.float32(1 / 255)
    img = np.clip(img + alpha * (colour.astype(np.float32) - img), 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(mask > 127)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return img, box


_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


class ShapesDataset(Dataset):
    """Generated shapes, deterministic per (seed, split, index).

    `ds[i]` is (image, label): a (3, size, size) uint8 tensor, or `transform`
    of it. `ds.box(i)` is the object's bounding box (x0, y0, x1, y1) in pixels,
    x1/y1 exclusive (slice-style: the object is `img[y0:y1, x0:x1]`). Labels
    cycle through the classes so every class is equally frequent.
    """

    classes = list(SHAPE_CLASSES)

    def __init__(self, n: int, seed: int = 0, split: str = "train", size: int = 64, transform=None, cache=True):
        if n < 1:
            raise DataError(f"shapes: need at least one sample, got {n}")
        self.n, self.seed, self.split, self.size, self.transform = int(n), int(seed), split, int(size), transform
        self._stream = _SPLIT_STREAM.get(split, split if isinstance(split, int) else 3)
        self._cache = np.zeros((self.n, self.size, self.size, 3), np.uint8) if cache else None
        self._boxes = np.full((self.n, 4), -1, np.int32)

    def __len__(self) -> int:
        return self.n

    def label(self, i: int) -> int:
        return int(i) % len(self.classes)

    def render(self, i: int):
        """(rgb HxWx3 uint8, label, box) for sample i, generated (or from the cache)."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        if self._boxes[i, 0] >= 0 and self._cache is not None:
            return self._cache[i], self.label(i), tuple(int(v) for v in self._boxes[i])
        rng = np.random.default_rng([self.seed, self._stream, int(i)])
        img, box = render_shape(rng, self.label(i), self.size, SHAPE_CLASSES)
        self._boxes[i] = box
        if self._cache is not None:
            self._cache[i] = img
        return img, self.label(i), box

    def box(self, i: int) -> tuple[int, int, int, int]:
        return self.render(i)[2]

    @property
    def targets(self) -> list[int]:
        return [self.label(i) for i in range(self.n)]

    def pixels(self) -> np.ndarray:
        """All images as one (N, H, W, 3) uint8 array."""
        return np.stack([self.render(i)[0] for i in range(self.n)])

    def __getitem__(self, i: int):
        img, label, _ = self.render(i)
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return (self.transform(x) if self.transform else x), label


def export_shapes(directory, n: int, seed: int = 0, size: int = 64, split: str = "test") -> pathlib.Path:
    """Write n shapes as PNGs, one folder per class (so it is also an `imagefolder:`), with
    `boxes.csv` and `boxes.json` (file, label, class, x0, y0, x1, y1, width, height; x1/y1
    exclusive). Returns the folder."""
    directory = pathlib.Path(directory)
    ds = ShapesDataset(n, seed=seed, split=split, size=size, cache=False)
    rows = []
    for i in range(n):
        img, label, (x0, y0, x1, y1) = ds.render(i)
        cls = SHAPE_CLASSES[label]
        rel = f"{cls}/{i:06d}.png"
        (directory / cls).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(directory / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rows.append({"file": rel, "label": label, "class": cls, "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                     "width": size, "height": size})
    with open(directory / "boxes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    meta = {"seed": seed, "split": split, "size": size, "classes": list(SHAPE_CLASSES),
            "box_format": "x0,y0,x1,y1 in pixels, x1 and y1 exclusive", "images": rows}
    (directory / "boxes.json").write_text(json.dumps(meta, indent=1))
    return directory


# ----------------------------------------------------------------------------- array datasets


class ArrayDataset(Dataset):
    """Images held in memory: (N, H, W, C) uint8 -> (C, H, W) uint8 tensors (and transform)."""

    def __init__(self, pixels: np.ndarray, targets, transform=None):
        self.pixels = pixels
        self.targets = [int(t) for t in targets]
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = torch.from_numpy(np.ascontiguousarray(self.pixels[i].transpose(2, 0, 1)))
        return (self.transform(x) if self.transform else x), self.targets[i]


class Subset(Dataset):
    def __init__(self, base, indices, transform=None):
        self.base, self.indices, self.transform = base, list(indices), transform

    @property
    def targets(self):
        t = self.base.targets
        return [t[i] for i in self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        x, y = self.base[self.indices[i]]
        return (self.transform(x) if self.transform else x), y


class ImageFiles(Dataset):
    """Image files decoded with OpenCV to (3, H, W) uint8 RGB tensors (grey and alpha handled)."""

    def __init__(self, files, targets, transform=None):
        self.files, self.targets, self.transform = [str(f) for f in files], [int(t) for t in targets], transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = read_rgb(self.files[i])
        if img is None:
            raise DataError(f"could not decode {self.files[i]} (it changed after the folder was scanned?)")
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return (self.transform(x) if self.transform else x), self.targets[i]


def read_rgb(path) -> np.ndarray | None:
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------- transforms


class Augmented(Dataset):
    """Applies a transform to (uint8 CHW, label) samples, with its randomness a pure
    function of (seed, epoch, index): resuming mid-run, or changing the number of
    loader workers, replays exactly the same augmented batches."""

    def __init__(self, base, transform, seed: int = 0, random: bool = True):
        self.base, self.transform, self.seed, self.random, self.epoch = base, transform, int(seed), random, 0

    @property
    def targets(self):
        return self.base.targets

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        if not self.random:
            return self.transform(x), y
        # seed the CPU generator for this sample only, and put the caller's state back
        # (torch.manual_seed would also touch CUDA, and costs 100x more)
        gen = torch.default_generator
        saved = gen.get_state()
        try:
            gen.manual_seed((self.seed * 1_000_003 + self.epoch * 7_919 + int(i) * 104_729) % (2**63 - 1))
            return self.transform(x), y
        finally:
            gen.set_state(saved)


def eval_transform(pre: dict):
    """What the server does to an image, on uint8 CHW tensors: resize shorter side,
    centre crop, to float, grey if one channel, normalise."""
    from torchvision.transforms import v2

    ops = [v2.ToDtype(torch.float32, scale=True)]
    if pre["resize"]:
        ops.append(v2.Resize(pre["resize"], antialias=True))
    ops.append(v2.CenterCrop(pre["crop"]))
    return _finish(ops, pre)


def _finish(ops, pre):
    from torchvision.transforms import v2

    ops.append(ToChannels(pre["channels"]))
    ops.append(v2.Normalize(pre["mean"], pre["std"]))
    return v2.Compose(ops)


class ToChannels(torch.nn.Module):
    """Grey to RGB by repetition, RGB to grey with the server's weights (picklable, for loader workers)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = int(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _channels(x, self.channels)


def _channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[0] == channels:
        return x
    if channels == 1:  # same weights as the server's RGB -> grey
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(3, 1, 1)
        return (x * w).sum(0, keepdim=True)
    return x.expand(channels, *x.shape[1:]) if x.shape[0] == 1 else x


def train_transform(pre: dict, preset: str, native: int):
    """Augmentation preset then the eval pipeline's finish (float, channels, normalise)."""
    from torchvision.transforms import v2

    crop = pre["crop"]
    size = crop[0]
    pad = max(2, size // 16)
    ops = [v2.ToDtype(torch.float32, scale=True)]  # float first: padding uint8 tensors is slow
    if preset == "rrc":
        ops.append(v2.RandomResizedCrop(crop, scale=(0.35, 1.0), antialias=True))
    else:
        if pre["resize"]:
            ops.append(v2.Resize(pre["resize"], antialias=True))
        if preset in ("shift", "crop", "color"):
            ops.append(v2.RandomCrop(crop, padding=pad, padding_mode="reflect"))
        else:
            ops.append(v2.CenterCrop(crop))
    if preset in ("flip", "crop", "color", "rrc"):
        ops.append(v2.RandomHorizontalFlip())
    if preset in ("color", "rrc"):
        ops.append(v2.ColorJitter(0.3, 0.3, 0.3, 0.02))
    return _finish(ops, pre)


# ----------------------------------------------------------------------------- building


@dataclass
class Datasets:
    train: Dataset
    val: Dataset
    test: Dataset
    class_names: list[str]
    preprocessing: dict
    source: str
    augment: str
    info: dict = field(default_factory=dict)  # recorded in the checkpoint (split, skipped files, sizes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def stratified_split(targets, seed: int, fractions=(0.8, 0.1, 0.1)) -> tuple[list[int], list[int], list[int]]:
    """Per class, a seeded shuffle cut 8:1:1 (val and test get at least one where a class has 3+)."""
    rng = np.random.default_rng(seed)
    targets = np.asarray(targets)
    parts = ([], [], [])
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        n = len(idx)
        n_val = max(1, int(round(n * fractions[1]))) if n >= 3 else 0
        n_test = max(1, int(round(n * fractions[2]))) if n >= 3 else 0
        parts[1].extend(idx[:n_val].tolist())
        parts[2].extend(idx[n_val:n_val + n_test].tolist())
        parts[0].extend(idx[n_val + n_test:].tolist())
    return tuple(sorted(p) for p in parts)


def _mean_std(pixels: np.ndarray, channels: int) -> tuple[list[float], list[float]]:
    x = pixels.astype(np.float32) / 255.0
    if channels == 1 and x.shape[-1] == 3:
        x = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = x[..., None]
    flat = x.reshape(-1, x.shape[-1])
    mean, std = flat.mean(0), flat.std(0)
    if channels == 3 and flat.shape[1] == 1:
        mean, std = np.repeat(mean, 3), np.repeat(std, 3)
    return [round(float(m), 4) for m in mean], [round(float(max(s, 1e-3)), 4) for s in std]


def _pre(size: int, channels: int, mean, std, resize: int | None = None) -> dict:
    return {"resize": int(resize if resize is not None else size), "crop": [int(size), int(size)],
            "mean": [float(m) for m in mean], "std": [float(s) for s in std], "interpolation": "bilinear",
            "channels": int(channels)}


def _limit(indices, n):
    return indices if not n or n >= len(indices) else indices[:n]


def scan_imagefolder(root) -> tuple[list[str], list[str], list[int], list[str]]:
    """(class names, files, targets, skipped files) of a folder with one sub-folder per class.
    Files that can't be decoded are skipped, each with a warning."""
    root = pathlib.Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class folders: put each class's images in a sub-folder named after it")
    files, targets, skipped, empty = [], [], [], []
    for ci, cls in enumerate(classes):
        found = 0
        for p in sorted((root / cls).rglob("*")):
            if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith("."):
                continue
            if not _readable(p):
                warnings.warn(f"skipping corrupt image {p}", stacklevel=2)
                log.warning("skipping corrupt image %s", p)
                skipped.append(str(p.relative_to(root)))
                continue
            files.append(str(p.relative_to(root)))
            targets.append(ci)
            found += 1
        if found == 0:
            empty.append(cls)
    if empty:
        raise DataError(
            f"class folder(s) with no readable images in {root}: {', '.join(empty)} "
            f"(images are {', '.join(IMAGE_EXTENSIONS)}); remove the folder or add images"
        )
    if len(classes) < 2:
        raise DataError(f"{root} has only one class folder ({classes[0]}); a classifier needs at least two")
    return classes, files, targets, skipped


def _readable(path: pathlib.Path) -> bool:
    """Cheap structural check (header and, for PNG/JPEG, the stream) without a full decode of big files."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:
        return False


def build_datasets(
    spec: str,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    augment: str = "auto",
    download: bool = False,
    seed: int = 0,
    samples: int | None = None,
    limit: int | None = None,
    imagenet_norm: bool = False,
    split: dict | None = None,
) -> Datasets:
    """The train/val/test sets of a --data spec.

    image_size: side of the square input (default: the source's own); channels: 1
    or 3 (default: the source's own); samples: size of the generated train set
    (shapes; val and test get an eighth each, keeping 8:1:1); limit: cap each
    split (quick tries); imagenet_norm: use ImageNet mean/std (pretrained
    backbones); split: a split recorded in a checkpoint, reused as it was.
    """
    kind, arg = parse_spec(spec)
    if augment not in AUGMENTATIONS:
        raise DataError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
    preset = AUTO_AUGMENT[kind] if augment == "auto" else augment
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    if image_size is not None and image_size < 8:
        raise DataError(f"image size {image_size} is too small (at least 8)")
    info: dict = {"source": spec, "kind": kind}

    if kind == "shapes":
        size = image_size or 64
        ch = channels or 3
        n_train = int(samples or 6000)
        n_eval = max(len(SHAPE_CLASSES), n_train // 8)
        tr = ShapesDataset(n_train, seed=seed, split="train", size=size)
        va = ShapesDataset(n_eval, seed=seed, split="val", size=size)
        te = ShapesDataset(n_eval, seed=seed, split="test", size=size)
        bases = [Subset(d, _limit(list(range(len(d))), limit)) for d in (tr, va, te)]
        sample_pixels = np.stack([tr.render(i)[0] for i in range(min(len(tr), 512))])
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet_norm and ch == 3 else _mean_std(sample_pixels, ch)
        pre = _pre(size, ch, mean, std)
        names = list(SHAPE_CLASSES)
        info.update(seed=seed, samples=[len(b) for b in bases], generator_seed=seed)
        native = size
    elif kind == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        size = image_size or 32
        ch = channels or 1
        imgs = np.clip(d.images * 16.0, 0, 255).astype(np.uint8)  # 0..16 -> 0..255, white ink on black
        big = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in imgs])[..., None]
        targets = d.target.tolist()
        base = ArrayDataset(big, targets)
        idx = _split_of(split, targets, seed)
        bases = [Subset(base, _limit(i, limit)) for i in idx]
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet_norm and ch == 3 else _mean_std(big[idx[0]], ch)
        pre = _pre(size, ch, mean, std)
        names = [str(c) for c in d.target_names]
        info.update(split={"seed": seed, "train": idx[0], "val": idx[1], "test": idx[2]})
        native = size
    elif kind == "mixed_digits":
        from . import digit_images

        size = image_size or 32
        ch = channels or 1
        _, digit_targets = digit_images.sklearn_digits()
        sk_idx = stratified_split(digit_targets.tolist(), seed)  # each split upscales its own sklearn images
        n_train = int(samples or MIXED_DIGITS_SAMPLES)
        counts = (n_train, max(10, n_train // 8), max(10, n_train // 8))
        bases = []
        for stream, (n, idx) in enumerate(zip(counts, sk_idx)):
            pixels, labels = digit_images.mixed_digits(n, seed, stream, size, idx)
            bases.append(Subset(ArrayDataset(pixels, labels), _limit(list(range(n)), limit)))
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet_norm and ch == 3 else \
            _mean_std(bases[0].base.pixels[:2048], ch)
        pre = _pre(size, ch, mean, std)
        names = [str(c) for c in range(10)]
        info.update(seed=seed, samples=[len(b) for b in bases], generator_seed=seed)
        native = size
    elif kind in ("cifar10", "mnist", "fashionmnist"):
        bases, names, pre, native, extra = _torchvision_source(kind, arg, image_size, channels, download, seed, limit,
                                                               imagenet_norm, split)
        info.update(extra)
    else:  # imagefolder
        root = pathlib.Path(arg).expanduser()
        if split and split.get("files"):
            names, files = split["classes"], split["files"]
            targets, skipped = split["targets"], split.get("skipped", [])
            missing = [f for f in files if not (root / f).is_file()]
            if missing:
                raise DataError(f"{len(missing)} image(s) of the recorded split are gone from {root}, "
                                f"e.g. {missing[0]}")
        else:
            names, files, targets, skipped = scan_imagefolder(root)
        if skipped:
            msg = f"skipped {len(skipped)} corrupt image(s) in {root}"
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
        idx = _split_of(split, targets, seed)
        size = image_size or 224
        ch = channels or 3
        full = ImageFiles([root / f for f in files], targets)
        bases = [Subset(full, _limit(i, limit)) for i in idx]
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if ch == 1:
            mean, std = (0.449,), (0.226,)
        pre = _pre(size, ch, mean, std, resize=int(round(size * 8 / 7)))
        native = size
        info.update(root=str(root), skipped=len(skipped), skipped_files=skipped[:100],
                    split={"seed": seed, "classes": names, "files": files, "targets": targets, "skipped": skipped,
                           "train": idx[0], "val": idx[1], "test": idx[2]})
    if min(len(b) for b in bases) == 0:
        raise DataError(f"{spec}: too few images for a train/val/test split "
                        f"(got {', '.join(str(len(b)) for b in bases)}); each class needs at least 3")
    randomised = preset != "none"
    tr_t = train_transform(pre, preset, native) if randomised else eval_transform(pre)
    ev_t = eval_transform(pre)
    train = Augmented(bases[0], tr_t, seed=seed, random=randomised)
    val, test = Augmented(bases[1], ev_t, random=False), Augmented(bases[2], ev_t, random=False)
    info["sizes"] = {"train": len(train), "val": len(val), "test": len(test)}
    return Datasets(train, val, test, names, pre, spec, preset, info)


def _split_of(split: dict | None, targets, seed: int):
    if split and all(k in split for k in ("train", "val", "test")):
        n = len(targets)
        idx = [list(split[k]) for k in ("train", "val", "test")]
        if any(i < 0 or i >= n for part in idx for i in part):
            raise DataError("the split recorded in the checkpoint does not fit this data")
        return idx
    return list(stratified_split(targets, seed))


_TV_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashionmnist": ((0.2860,), (0.3530,)),
}


def _torchvision_source(kind, root, image_size, channels, download, seed, limit, imagenet_norm, split):
    import torchvision.datasets as tvd

    cls = {"cifar10": tvd.CIFAR10, "mnist": tvd.MNIST, "fashionmnist": tvd.FashionMNIST}[kind]
    root = pathlib.Path(root).expanduser()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train_full = cls(str(root), train=True, download=download)
            test_set = cls(str(root), train=False, download=download)
    except RuntimeError as e:
        if download:
            raise DataError(f"could not download {kind} into {root}: {e}") from e
        raise DataError(
            f"{kind} is not under {root} ({str(e).strip()}); pass --download to fetch it if you are online"
        ) from e
    except (OSError, ValueError) as e:
        raise DataError(f"could not read {kind} from {root}: {e}") from e
    data = train_full.data
    data = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    tdata = test_set.data
    tdata = tdata.numpy() if isinstance(tdata, torch.Tensor) else np.asarray(tdata)
    if data.ndim == 3:
        data, tdata = data[..., None], tdata[..., None]
    native = data.shape[1]
    size = image_size or native
    native_ch = data.shape[-1]
    ch = channels or native_ch
    targets = [int(t) for t in train_full.targets]
    if split and "train" in split:
        tr_idx, va_idx = list(split["train"]), list(split["val"])
    else:  # torchvision's test set is the test split; hold out a seeded, stratified tenth of train for val
        rng = np.random.default_rng(seed)
        tr_idx, va_idx = [], []
        tarr = np.asarray(targets)
        for c in np.unique(tarr):
            idx = np.flatnonzero(tarr == c)
            rng.shuffle(idx)
            k = max(1, len(idx) // 10)
            va_idx += idx[:k].tolist()
            tr_idx += idx[k:].tolist()
        tr_idx, va_idx = sorted(tr_idx), sorted(va_idx)
    base_tr = ArrayDataset(data, targets)
    base_te = ArrayDataset(tdata, [int(t) for t in test_set.targets])
    bases = [Subset(base_tr, _limit(tr_idx, limit)), Subset(base_tr, _limit(va_idx, limit)),
             Subset(base_te, _limit(list(range(len(base_te))), limit))]
    mean, std = _TV_STATS[kind]
    if imagenet_norm and ch == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif ch != len(mean):
        mean, std = ((sum(mean) / 3,), (sum(std) / 3,)) if ch == 1 else (mean * 3, std * 3)
    pre = _pre(size, ch, mean, std)
    names = [str(c) for c in train_full.classes]
    return bases, names, pre, native, {"root": str(root), "split": {"seed": seed, "train": tr_idx, "val": va_idx}}
