"""The one checkpoint format netscope writes and the server reads.

A checkpoint is a `torch.save`d dict of tensors and plain Python values only
(str, int, float, bool, None, list, tuple, dict), so `torch.load(weights_only=True)`
reads it without executing anything from the file:

    format               "netscope-checkpoint"
    format_version       1
    arch                 "simple_cnn", or any torchvision classification name
    arch_kwargs          keyword arguments for `netscope.training.models.build_model`
    num_classes          int
    class_names          list[str], num_classes of them
    preprocessing        {"resize", "crop", "mean", "std", "interpolation", "channels"}
    model_state_dict     the model's weights (no "module." prefix)
    optimizer_state_dict for resuming, or None
    scheduler_state_dict for resuming, or None
    epoch                completed epochs
    metrics              accuracies, losses, per-class precision/recall, confusion matrix
    extra                data source and split, training arguments, resume state
    created_at, torch_version

Build the model back with
`build_model(ckpt["arch"], ckpt["num_classes"], **ckpt.get("arch_kwargs", {}))`
and `load_state_dict(ckpt["model_state_dict"])`.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import pathlib
from collections import OrderedDict
from typing import Any, Mapping

import torch

from netscope.client.atomic_file import write_atomically

FORMAT = "netscope-checkpoint"
FORMAT_VERSION = 1
PREPROCESSING_KEYS = ("resize", "crop", "mean", "std", "interpolation", "channels")
REQUIRED_KEYS = ("arch", "num_classes", "class_names", "preprocessing", "model_state_dict")


class CheckpointError(ValueError):
    """A file that is not a netscope checkpoint we can read, said so a person can act on it."""


def plain(value: Any, where: str = "value") -> Any:
    """Turn numpy scalars/arrays, paths and tuples-of-them into values `weights_only` loads.

    Tensors pass through (detached, on the CPU). Anything else that is not a
    plain value raises TypeError naming where it was found.
    """
    if value is None:
        return None
    # exact builtin types: numpy.float64 is a float subclass the safe loader refuses
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        cls = OrderedDict if isinstance(value, OrderedDict) else dict
        return cls((plain(k, where), plain(v, f"{where}[{k!r}]")) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    # numpy (and numpy-like) scalars and arrays, without importing numpy here
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return plain(value.tolist(), where)
    if isinstance(value, torch.Size):
        return list(value)
    raise TypeError(f"{where}: {type(value).__name__} is not a plain value a checkpoint may hold")


def check_preprocessing(pre: Mapping) -> dict:
    """Validate and normalise the preprocessing dict the server reads."""
    missing = [k for k in PREPROCESSING_KEYS if k not in pre]
    if missing:
        raise CheckpointError(f"preprocessing is missing {', '.join(missing)} (needs {', '.join(PREPROCESSING_KEYS)})")
    crop = pre["crop"]
    crop = [int(crop), int(crop)] if isinstance(crop, (int, float)) else [int(c) for c in crop]
    out = {
        "resize": int(pre["resize"] or 0),
        "crop": crop,
        "mean": [float(m) for m in pre["mean"]],
        "std": [float(s) for s in pre["std"]],
        "interpolation": str(pre["interpolation"]),
        "channels": int(pre["channels"]),
    }
    if len(out["mean"]) != out["channels"] or len(out["std"]) != out["channels"]:
        raise CheckpointError(f"preprocessing: mean and std need {out['channels']} values, one per channel")
    if any(not math.isfinite(s) or s <= 0 for s in out["std"]):
        raise CheckpointError("preprocessing: std values must be positive")
    return out


def save_checkpoint(
    path,
    *,
    arch: str,
    num_classes: int,
    class_names,
    preprocessing: dict,
    model_state_dict,
    arch_kwargs: dict | None = None,
    optimizer_state_dict=None,
    scheduler_state_dict=None,
    epoch: int = 0,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> pathlib.Path:
    """Write a checkpoint atomically (temporary file in the same folder, then rename)."""
    class_names = [str(c) for c in class_names]
    if len(class_names) != int(num_classes):
        raise CheckpointError(f"{len(class_names)} class names for {num_classes} classes")
    state = OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in model_state_dict.items())
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": str(arch),
        "arch_kwargs": plain(dict(arch_kwargs or {}), "arch_kwargs"),
        "num_classes": int(num_classes),
        "class_names": class_names,
        "preprocessing": check_preprocessing(preprocessing),
        "model_state_dict": plain(state, "model_state_dict"),
        "optimizer_state_dict": plain(optimizer_state_dict, "optimizer_state_dict"),
        "scheduler_state_dict": plain(scheduler_state_dict, "scheduler_state_dict"),
        "epoch": int(epoch),
        "metrics": plain(dict(metrics or {}), "metrics"),
        "extra": plain(dict(extra or {}), "extra"),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__.split("+")[0],
    }
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda f: torch.save(ckpt, f), fsync=True)


def is_netscope_checkpoint(obj) -> bool:
    """True for a loaded dict in our format (any version), False for anything else (a plain state_dict...)."""
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def validate(obj, source: str = "checkpoint") -> dict:
    """Check a loaded object is a readable netscope checkpoint; return it as a dict."""
    if not is_netscope_checkpoint(obj):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(
                f"{source} is a plain state_dict, not a netscope checkpoint: load it with its architecture "
                "and number of classes given"
            )
        raise CheckpointError(f"{source} is not a netscope checkpoint (no format {FORMAT!r} marker)")
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has checkpoint format version {version!r}; this netscope reads version {FORMAT_VERSION}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{source} is missing {', '.join(missing)}")
    if len(obj["class_names"]) != obj["num_classes"]:
        raise CheckpointError(f"{source}: {len(obj['class_names'])} class names for {obj['num_classes']} classes")
    check_preprocessing(obj["preprocessing"])
    return dict(obj)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint safely (`weights_only=True`) and validate its format and version."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, foreign pickle with code in it, not a torch file at all
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} could not be read as a checkpoint: {first}") from e
    return validate(obj, str(path))


def randomised_copy(src, dst, *, seed: int = 0, init: str = "torch") -> pathlib.Path:
    """`src`'s architecture, classes and preprocessing with freshly initialised
    weights, written to `dst`: the control of the model-randomisation sanity
    check (Adebayo et al., 2018). An explanation that scores as well on it as on
    the trained model reflects the input or the architecture, not what was learned."""
    from .models import build_model, init_weights

    ckpt = load_checkpoint(src)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(ckpt["arch"], ckpt["num_classes"], **ckpt["arch_kwargs"])
        init_weights(model, init)
    return save_checkpoint(dst, arch=ckpt["arch"], num_classes=ckpt["num_classes"], class_names=ckpt["class_names"],
                           preprocessing=ckpt["preprocessing"], model_state_dict=model.state_dict(),
                           arch_kwargs=ckpt["arch_kwargs"], extra={"randomised_from": str(src), "seed": seed})
