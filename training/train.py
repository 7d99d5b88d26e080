"""`netscope train`: train an image classifier and write a netscope checkpoint.

    netscope train --data shapes --arch simple_cnn --epochs 8 --out models/shapes.pt
    torchrun --nproc_per_node 2 -m netscope.training.train --data digits --epochs 5 --out models/digits.pt

Everything random (weights, shuffling, augmentation, dropout) is a function of
--seed and the epoch, so `--resume` continues to exactly the weights an
uninterrupted run reaches. Ctrl-C stops at the next batch boundary and saves a
resumable checkpoint (a second Ctrl-C aborts at once).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import pathlib
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt_mod
from . import data as data_mod
from . import models as models_mod
from . import paths as paths_mod

log = logging.getLogger("netscope.training")

from .options import DEFAULT_LR, DEFAULT_WD, INITS, OPTIMIZERS, SCHEDULERS, add_arguments, source_defaults  # noqa: F401
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake the user can fix: printed as one message, exit code 2."""


# ----------------------------------------------------------------------------- arguments


def parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(
        prog="netscope train", description="Train an image classifier into a netscope checkpoint."))


# ----------------------------------------------------------------------------- distributed


class Dist:
    """torchrun's environment: rank, world size; a no-op in a single process."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.started_here = False
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)
            self.started_here = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch.distributed.all_reduce(t)
        return t

    def broadcast_flag(self, flag: bool) -> bool:
        """True on every rank if any rank says True (a Ctrl-C seen by one stops all)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self):
        if self.enabled:
            torch.distributed.barrier()

    def close(self):
        if self.started_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled (seed, epoch) order split across ranks like DistributedSampler (padded to equal
    shares), starting `skip` samples in so an interrupted epoch resumes where it stopped."""

    def __init__(self, n: int, *, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1, pad: bool = True):
        self.n, self.seed, self.shuffle, self.rank, self.world, self.pad = n, seed, shuffle, rank, world, pad
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0):
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.pad and self.world > 1:
            total = math.ceil(self.n / self.world) * self.world
            order += order[: total - self.n]
        return order[self.rank:: self.world]

    def __iter__(self):
        return iter(self._indices()[self.skip:])

    def __len__(self):
        return max(0, len(self._indices()) - self.skip)


# ----------------------------------------------------------------------------- helpers


def pick_device(name: str) -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"bad --device {name!r}: use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"bad --device {name!r}: use auto, cpu, cuda or cuda:N")
    return dev


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 7_368_787 + epoch * 2_654_435_761 + 12_345) % (2**63 - 1)


def build_optimizer(args, model: nn.Module, head: list[str]):
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    wd = args.weight_decay if args.weight_decay is not None else DEFAULT_WD[args.optimizer]
    if args.freeze == "backbone" or (args.pretrained and args.backbone_lr != 1.0):
        head_params = {id(p) for n in head for p in model.get_submodule(n).parameters()}
        backbone = [p for p in model.parameters() if id(p) not in head_params]
        heads = [p for p in model.parameters() if id(p) in head_params]
        if args.freeze == "backbone":
            for p in backbone:
                p.requires_grad_(False)
            groups = [{"params": heads, "lr": lr}]
        else:
            groups = [{"params": backbone, "lr": lr * args.backbone_lr}, {"params": heads, "lr": lr}]
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=args.momentum, nesterov=args.nesterov, weight_decay=wd)
    if args.nesterov:
        raise UsageError("--nesterov is an SGD option")
    cls = torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, weight_decay=wd)


def build_scheduler(args, optimizer, steps_per_epoch: int):
    """(scheduler or None, whether it steps per batch)."""
    s = args.scheduler
    if s == "none":
        return None, False
    if s == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.step_size, gamma=args.gamma), False
    if s == "multistep":
        ms = args.milestones or [max(1, args.epochs // 2), max(1, (args.epochs * 3) // 4)]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=ms, gamma=args.gamma), False
    if s == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.gamma), False
    if s == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, args.epochs)), False
    if s == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=args.gamma, patience=args.patience), False
    max_lr = [g["lr"] for g in optimizer.param_groups]
    total = max(1, args.epochs) * max(1, steps_per_epoch)
    if total < 3:  # one cycle needs a step up and a step down; torch divides by zero otherwise
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), True
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, epochs=max(1, args.epochs), steps_per_epoch=max(1, steps_per_epoch),
        pct_start=max(0.25, 1.5 / total)), True


def confusion_metrics(cm: np.ndarray, names: list[str]) -> dict:
    cm = np.asarray(cm, dtype=np.int64)
    total = int(cm.sum())
    per_class = {}
    for i, name in enumerate(names):
        tp = int(cm[i, i])
        predicted, actual = int(cm[:, i].sum()), int(cm[i, :].sum())
        p = tp / predicted if predicted else 0.0
        r = tp / actual if actual else 0.0
        per_class[name] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                           "support": actual}
    return {"accuracy": float(np.trace(cm)) / total if total else 0.0, "per_class": per_class,
            "confusion_matrix": cm.tolist()}


def format_report(metrics: dict, names: list[str]) -> str:
    w = max(8, *(len(n) for n in names))
    lines = [f"{'class':<{w}}  precision  recall     f1  support"]
    for n in names:
        m = metrics["per_class"][n]
        lines.append(f"{n:<{w}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:7d}")
    lines.append(f"{'accuracy':<{w}}  {metrics['accuracy']:9.4f}")
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    cw = max(5, *(len(str(v)) + 1 for row in metrics["confusion_matrix"] for v in row))
    short = [n[: cw - 1] for n in names]
    lines.append(" " * w + "".join(f"{s:>{cw}}" for s in short))
    for n, row in zip(names, metrics["confusion_matrix"]):
        lines.append(f"{n:<{w}}" + "".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)


def confusion_image(cm, names: list[str], cell: int = 40) -> np.ndarray:
    """The confusion matrix as an RGB picture (row-normalised colours, counts written in)."""
    import cv2

    cm = np.asarray(cm, dtype=np.float64)
    k = len(names)
    margin = max(60, 8 * max(len(n) for n in names))
    img = np.full((margin + k * cell + 4, margin + k * cell + 4, 3), 255, np.uint8)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    colours = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    for i in range(k):
        cv2.putText(img, names[i][:12], (2, margin + i * cell + cell // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, names[i][:6], (margin + i * cell + 2, margin - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(k):
            y0, x0 = margin + i * cell, margin + j * cell
            colour = tuple(int(c) for c in colours[i, j][::-1])
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), colour, -1)
            text_col = (0, 0, 0) if norm[i, j] > 0.5 else (255, 255, 255)
            cv2.putText(img, str(int(cm[i, j])), (x0 + 3, y0 + cell // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        text_col, 1, cv2.LINE_AA)
    return img


class StopFlag:
    """SIGINT sets a flag checked between batches; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        print("\ninterrupt: stopping after this batch and saving a resumable checkpoint "
              "(Ctrl-C again to abort)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class Logger:
    """TensorBoard, imported lazily (the server never needs it); silent if unavailable or off."""

    def __init__(self, logdir: str | None):
        self.w = None
        if not logdir:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn("tensorboard is not installed (pip install 'netscope[train]'): no TensorBoard logs")
            return
        self.w = SummaryWriter(logdir)

    def __getattr__(self, name):
        w = self.__dict__.get("w")
        if w is None:
            return lambda *a, **k: None
        return getattr(w, name)


# ----------------------------------------------------------------------------- the run


# run-time options a resumed run takes from its own command line, never from the checkpoint
_NOT_INHERITED = {"resume", "out", "data", "arch", "device", "threads", "workers", "logdir", "no_tensorboard",
                  "no_progress", "download", "stop_after"}


def _resolve(args):
    """Fill defaults that depend on each other; read the checkpoint to resume from."""
    resume = None
    if args.resume:
        try:
            resume = ckpt_mod.load_checkpoint(args.resume)
        except ckpt_mod.CheckpointError as e:
            raise UsageError(f"--resume: {e}") from None
        rargs = resume.get("extra", {}).get("args", {})
        if args.arch and args.arch != resume["arch"]:
            raise UsageError(f"--resume {args.resume} holds a {resume['arch']} model, not {args.arch}; "
                             f"drop --arch or pass --arch {resume['arch']}")
        args.arch = resume["arch"]
        if not args.data:
            args.data = rargs.get("data")
        if not args.data:
            raise UsageError(f"--resume {args.resume} does not say what data it was trained on: pass --data")
        # options left at their defaults continue as the original run had them
        defaults = vars(parser().parse_args([]))
        for key, value in rargs.items():
            if key in _NOT_INHERITED or key not in defaults:
                continue
            if getattr(args, key, None) == defaults[key] and value != defaults[key]:
                setattr(args, key, [tuple(kv) for kv in value] if key == "arch_arg" else value)
        if args.out is None:
            args.out = args.resume
        planned = rargs.get("epochs")
        if args.scheduler == "onecycle" and planned and args.epochs != planned:
            raise UsageError(f"--resume {args.resume}: its one-cycle schedule was planned for {planned} epochs; "
                             f"resume with --epochs {planned} (or train anew)")
    if not args.data:
        raise UsageError("--data is required (imagefolder:PATH, cifar10:ROOT, mnist:ROOT, fashionmnist:ROOT, "
                         "digits or shapes)")
    args.arch = args.arch or "simple_cnn"
    apply_source_defaults(args, resuming=resume is not None)
    if args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.freeze == "backbone" and not args.pretrained:
        raise UsageError("--freeze backbone needs --pretrained (a random backbone is not worth freezing)")
    if args.out is None:
        kind = args.data.split(":")[0]
        args.out = f"models/{kind}-{args.arch}.pt"
    return resume


def apply_source_defaults(args, resuming: bool = False) -> None:
    """Options left unset take the data source's recipe (options.SOURCE_DEFAULTS), threads
    the rule of training/threads.py. A resumed run has inherited its own values first,
    and keeps its architecture's arguments."""
    from .threads import default_threads

    kind = args.data.split(":")[0].strip().lower()
    recipe = source_defaults(kind, arch=args.arch, optimizer=args.optimizer, pretrained=bool(args.pretrained))
    for key in ("image_size", "samples", "epochs", "lr", "weight_decay", "init"):
        if getattr(args, key, None) is None and key in recipe:
            setattr(args, key, recipe[key])
    args.init = args.init or "default"
    if not resuming and recipe.get("arch_arg"):
        given = {key for key, _ in args.arch_arg}
        args.arch_arg = [(k, v) for k, v in recipe["arch_arg"].items() if k not in given] + list(args.arch_arg)
    if not args.threads:  # torchrun's processes on one machine share its cores
        args.threads = max(1, default_threads() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def train(args) -> dict:
    """Run training as `args` says; returns the final metrics. Raises UsageError for user mistakes."""
    t_start = time.time()
    resume = _resolve(args)
    _check_paths(args)
    device = pick_device(args.device)
    dist = Dist(device)
    threads = torch.get_num_threads()
    try:
        return _train(args, resume, device, dist, t_start)
    finally:
        dist.close()
        torch.set_num_threads(threads)  # a caller's process (a server training its demo) keeps its own setting


def _logdir(args) -> str | None:
    """The run's TensorBoard folder (None: no logs)."""
    if args.no_tensorboard:
        return None
    return args.logdir or str(pathlib.Path("runs") / pathlib.Path(args.out).stem)


def _check_paths(args) -> None:
    """Every path the run writes, checked before any work: a UsageError naming the path and why."""
    why = paths_mod.file_problem(args.out)
    if why:
        raise UsageError(f"--out {args.out}: {why}")
    logdir = _logdir(args)
    why = paths_mod.folder_problem(logdir) if logdir else None
    if why:
        flag = "--logdir" if args.logdir else "TensorBoard folder (the default of --logdir)"
        raise UsageError(f"{flag} {logdir}: {why}; pass another --logdir, or --no-tensorboard")
    if args.download:  # torchvision downloads into the data's ROOT
        try:
            kind, root = data_mod.parse_spec(args.data)
        except data_mod.DataError as e:
            raise UsageError(str(e)) from None
        why = paths_mod.folder_problem(root) if kind in ("cifar10", "mnist", "fashionmnist") else None
        if why:
            raise UsageError(f"--data {args.data} --download: {root}: {why}")


@dataclass
class _Loaders:
    train_sampler: EpochSampler
    generator: torch.Generator  # the train loader's: reseeded each epoch
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    test: torch.utils.data.DataLoader
    steps_per_epoch: int  # train batches per epoch on this rank


@dataclass
class _Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    per_batch: bool  # the scheduler steps per batch (one-cycle), not per epoch
    use_amp: bool
    scaler: torch.amp.GradScaler
    criterion: nn.Module


@dataclass
class _Run:
    """A training run once set up, and where it stands."""

    args: argparse.Namespace
    device: torch.device
    dist: Dist
    out: pathlib.Path
    say: Callable[..., None]
    progress: bool  # progress bars (rank 0, not --no-progress)
    ds: data_mod.Datasets
    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    arch_kwargs: dict
    member: object  # with --pretrained: the torchvision weights fine-tuned from
    loaders: _Loaders
    opt: _Optimisation
    t_start: float
    start_epoch: int = 0
    skip_batches: int = 0  # batches of start_epoch already trained (a resumed interrupt)
    rng_state: torch.Tensor | None = None  # torch's RNG at the interrupt, restored mid-epoch
    resume_sums: list = field(default_factory=lambda: [0, 0, 0])  # loss*n, correct, n of that part epoch
    metrics: dict = field(default_factory=lambda: {"history": []})  # "history": a row per epoch
    logdir: str | None = None
    tb: Logger | None = None
    t_train: float = 0.0


@dataclass
class _Stop:
    """The epochs ended early (Ctrl-C or --stop-after): what train() returns and says."""

    result: dict
    message: str


def _train(args, resume, device, dist: Dist, t_start: float) -> dict:
    """Set up, train the epochs, then either the early-stop message or the test report: one exit."""
    run = _set_up(args, resume, device, dist, t_start)
    run.logdir = _logdir(args) if dist.main else None
    run.tb = Logger(run.logdir)
    tqdm = _tqdm()
    try:  # the one exit path: TensorBoard closed once, however the run ends
        _announce(run)
        with StopFlag() as stop, tqdm(range(run.start_epoch, args.epochs), desc="epochs", disable=not run.progress,
                                      position=0, initial=run.start_epoch, total=args.epochs,
                                      dynamic_ncols=True) as epochs_bar:
            ended_early = _epochs(run, stop, epochs_bar)
        if ended_early is not None:
            run.say(f"{ended_early.message}: saved {run.out}; continue with --resume {run.out}")
            return ended_early.result
        return _test(run)
    finally:
        run.tb.close()


# ----------------------------------------------------------------------------- set-up


def _set_up(args, resume, device, dist: Dist, t_start: float) -> _Run:
    """Threads and seeds, data, model, loaders, optimiser and schedule, and the resume state."""
    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    ds = _build_data(args, resume)
    model, member, head, arch_kwargs = _build_model(args, resume, ds, device)
    loaders = _build_loaders(args, ds, dist, device)
    net = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = _build_optimisation(args, model, head, loaders.steps_per_epoch, device)
    say = (lambda *a: print(*a, flush=True)) if dist.main else (lambda *a: None)
    run = _Run(args=args, device=device, dist=dist, out=pathlib.Path(args.out), say=say,
               progress=dist.main and not args.no_progress and _terminal(), ds=ds, model=model, net=net, arch_kwargs=arch_kwargs,
               member=member, loaders=loaders, opt=opt, t_start=t_start)
    if resume:
        _restore(run, resume)
    return run


def _build_data(args, resume) -> data_mod.Datasets:
    ours = args.arch in models_mod.OUR_ARCHITECTURES
    if not ours and args.arch not in models_mod.torchvision_architectures():
        raise UsageError(str(models_mod._unknown(args.arch)))
    channels = args.channels or (None if ours else 3)
    if args.pretrained and channels == 1:
        raise UsageError("--pretrained backbones take 3 channels; drop --channels 1")
    split = resume.get("extra", {}).get("data", {}).get("split") if resume else None
    try:
        ds = data_mod.build_datasets(
            args.data, image_size=args.image_size, channels=channels, augment=args.augment,
            download=args.download, seed=args.seed, samples=args.samples, limit=args.limit,
            imagenet_norm=bool(args.pretrained), split=split)
    except data_mod.DataError as e:
        raise UsageError(str(e)) from None
    if resume and resume["num_classes"] != ds.num_classes:
        raise UsageError(f"--resume {args.resume} has {resume['num_classes']} classes; {args.data} has "
                         f"{ds.num_classes}")
    return ds


def _build_model(args, resume, ds, device) -> tuple[nn.Module, object, list[str], dict]:
    """(model on `device`, pretrained weights member or None, head module names, arch kwargs)."""
    pre = ds.preprocessing
    ours = args.arch in models_mod.OUR_ARCHITECTURES
    arch_kwargs = dict(args.arch_arg)
    if ours:
        arch_kwargs = {"in_channels": pre["channels"], "input_size": pre["crop"][0], **arch_kwargs}
    if resume:
        arch_kwargs = dict(resume.get("arch_kwargs", {}))
    head: list[str] = []
    member = None
    try:
        if args.pretrained and not resume:
            if ours:
                raise UsageError(f"--pretrained: {args.arch} is ours and has no pretrained weights")
            model, member, head = models_mod.build_pretrained(args.arch, ds.num_classes, args.pretrained,
                                                              download=args.download)
            models_mod.init_weights(model, args.init, only=head)
        else:
            model = models_mod.build_model(args.arch, ds.num_classes, **arch_kwargs)
            if args.pretrained:
                member = models_mod.torchvision_weights(args.arch, args.pretrained)
                head = _head_names(args.arch, ds.num_classes)
            if not resume:
                models_mod.init_weights(model, args.init)
    except models_mod.WeightsUnavailable as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    if resume:
        try:
            model.load_state_dict(resume["model_state_dict"])
        except RuntimeError as e:
            raise UsageError(f"--resume {args.resume}: its weights do not fit {args.arch} "
                             f"({str(e).splitlines()[0]})") from None
    model.to(device)
    _check_input(model, pre, device, args.arch)
    return model, member, head, arch_kwargs


def _build_loaders(args, ds, dist: Dist, device) -> _Loaders:
    train_sampler = EpochSampler(len(ds.train), seed=args.seed, shuffle=True, rank=dist.rank, world=dist.world)
    common = dict(batch_size=args.batch_size, num_workers=args.workers, pin_memory=device.type == "cuda")
    generator = torch.Generator()
    train_loader = torch.utils.data.DataLoader(ds.train, sampler=train_sampler, generator=generator, **common)

    def eval_loader(dset):
        s = EpochSampler(len(dset), seed=0, shuffle=False, rank=dist.rank, world=dist.world, pad=False)
        return torch.utils.data.DataLoader(dset, sampler=s, **common)

    return _Loaders(train_sampler, generator, train_loader, eval_loader(ds.val), eval_loader(ds.test),
                    steps_per_epoch=math.ceil(len(train_sampler._indices()) / args.batch_size))


def _build_optimisation(args, model, head: list[str], steps_per_epoch: int, device) -> _Optimisation:
    optimizer = build_optimizer(args, model, head)
    scheduler, per_batch = build_scheduler(args, optimizer, steps_per_epoch)
    use_amp = device.type == "cuda" and args.amp != "off"
    if args.amp == "on" and device.type != "cuda":
        log.warning("--amp on: mixed precision is for CUDA; training in float32 on %s", device)
    return _Optimisation(optimizer, scheduler, per_batch, use_amp, torch.amp.GradScaler("cuda", enabled=use_amp),
                         nn.CrossEntropyLoss(label_smoothing=args.label_smoothing))


def _restore(run: _Run, resume: dict) -> None:
    """Optimiser, schedule, scaler and position of the checkpoint `run` resumes from."""
    args, opt = run.args, run.opt
    run.start_epoch = int(resume.get("epoch", 0))
    state = resume.get("extra", {}).get("resume", {})
    run.skip_batches = int(state.get("batch", 0))
    run.metrics["history"] = list(resume.get("metrics", {}).get("history", []))
    run.rng_state = state.get("rng")
    run.resume_sums = state.get("sums", [0, 0, 0])
    try:
        if resume.get("optimizer_state_dict"):
            opt.optimizer.load_state_dict(resume["optimizer_state_dict"])
        if opt.scheduler is not None and resume.get("scheduler_state_dict"):
            opt.scheduler.load_state_dict(resume["scheduler_state_dict"])
        if state.get("scaler") and opt.use_amp:
            opt.scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise UsageError(f"--resume {args.resume}: optimiser/scheduler state does not fit these options "
                         f"({e}); resume with the options of the original run") from None
    if run.start_epoch >= args.epochs:
        raise UsageError(f"--resume {args.resume} already has {run.start_epoch} epochs; pass --epochs above that")
    run.say(f"resuming {args.resume} at epoch {run.start_epoch + 1}"
            + (f", batch {run.skip_batches + 1}" if run.skip_batches else ""))


def _announce(run: _Run) -> None:
    """The run's one-line summary; the first samples to TensorBoard when starting afresh."""
    args, ds, dist = run.args, run.ds, run.dist
    pre = ds.preprocessing
    run.say(f"training {args.arch} on {args.data}: {len(ds.train)} train / {len(ds.val)} val / {len(ds.test)} test "
            f"images, {ds.num_classes} classes, input {pre['channels']}x{pre['crop'][0]}x{pre['crop'][1]}, "
            f"augment {ds.augment}, {run.device}" + (f", {dist.world} processes" if dist.enabled else "")
            + (", mixed precision" if run.opt.use_amp else ""))
    if ds.info.get("skipped"):
        run.say(f"skipped {ds.info['skipped']} corrupt image(s)")
    if run.tb.w is not None and run.start_epoch == 0 and run.skip_batches == 0:
        _log_samples(run.tb, ds, pre)


# ----------------------------------------------------------------------------- checkpoints


def _arg_record(args) -> dict:
    """The options as the checkpoint records them (what --resume inherits)."""
    record = {k: v for k, v in vars(args).items() if not callable(v) and k not in ("command",)}
    record["arch_arg"] = [list(kv) for kv in args.arch_arg]
    return record


def _save(run: _Run, epoch_done: int, resume_state: dict | None = None) -> None:
    """Write the checkpoint (rank 0 only) after `epoch_done` whole epochs; `resume_state`: where
    inside the next epoch an interrupted run stopped."""
    if not run.dist.main:
        return
    args, ds, opt = run.args, run.ds, run.opt
    extra = {"args": _arg_record(args), "data": ds.info, "augment": ds.augment, "seed": args.seed}
    if args.pretrained:
        extra["pretrained"] = str(run.member)
    if resume_state:
        extra["resume"] = resume_state
    elif opt.use_amp:
        extra["resume"] = {"scaler": opt.scaler.state_dict()}
    ckpt_mod.save_checkpoint(
        run.out, arch=args.arch, num_classes=ds.num_classes, class_names=ds.class_names,
        preprocessing=ds.preprocessing, model_state_dict=run.model.state_dict(), arch_kwargs=run.arch_kwargs,
        optimizer_state_dict=opt.optimizer.state_dict(),
        scheduler_state_dict=opt.scheduler.state_dict() if opt.scheduler is not None else None,
        epoch=epoch_done, metrics=run.metrics, extra=extra)


# ----------------------------------------------------------------------------- epochs


def _epochs(run: _Run, stop: StopFlag, epochs_bar) -> _Stop | None:
    """Train the remaining epochs, a checkpoint after each; a _Stop if they end early."""
    args, out = run.args, run.out
    run.t_train = time.time()
    for epoch in epochs_bar:
        sums, batch_index, stopped = _train_epoch(run, epoch, stop)
        steps = run.loaders.steps_per_epoch
        if stopped and batch_index < steps:  # (stopped right at the end of an epoch: finish it normally)
            state = {"batch": batch_index, "rng": torch.get_rng_state(), "sums": sums.tolist()}
            if run.opt.use_amp:
                state["scaler"] = run.opt.scaler.state_dict()
            run.metrics["interrupted"] = {"epoch": epoch, "batch": batch_index}
            _save(run, epoch, state)
            return _Stop({"interrupted": True, "epoch": epoch, "batch": batch_index, "out": str(out)},
                         f"interrupted in epoch {epoch + 1} after batch {batch_index}/{steps}")
        row = _end_epoch(run, epoch, sums)
        epochs_bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_acc']:.3f}",
                               val_acc=f"{row['val_acc']:.3f}", refresh=False)
        _save(run, epoch + 1)
        if args.stop_after and epoch + 1 >= args.stop_after and epoch + 1 < args.epochs:
            return _Stop({"interrupted": False, "stopped": True, "epoch": epoch + 1, "out": str(out)},
                         f"stopped after epoch {epoch + 1} of {args.epochs} as asked")
        if run.dist.broadcast_flag(stop.set):
            return _Stop({"interrupted": True, "epoch": epoch + 1, "batch": 0, "out": str(out)},
                         f"interrupted after epoch {epoch + 1}")
    return None


def _train_epoch(run: _Run, epoch: int, stop: StopFlag) -> tuple[torch.Tensor, int, bool]:
    """One pass over this rank's share of the training set (from the resumed batch on):
    (float64 [loss*n, correct, n] of this rank, batches done, whether a Ctrl-C stopped it)."""
    args, loaders, opt, tb = run.args, run.loaders, run.opt, run.tb
    run.ds.train.set_epoch(epoch)
    loaders.train_sampler.set_epoch(epoch, run.skip_batches * args.batch_size)
    torch.manual_seed(epoch_seed(args.seed, epoch))
    loaders.generator.manual_seed(epoch_seed(args.seed, epoch))
    batches = iter(loaders.train)
    run.net.train()
    sums = torch.zeros(3, dtype=torch.float64)  # loss*n, correct, n
    if run.rng_state is not None:  # resuming mid-epoch: dropout etc. go on from where they stopped
        torch.set_rng_state(run.rng_state)
        run.rng_state = None
        sums += torch.tensor(run.resume_sums, dtype=torch.float64)
    batch_index, run.skip_batches = run.skip_batches, 0
    with _tqdm()(batches, total=loaders.steps_per_epoch, initial=batch_index, desc=f"epoch {epoch + 1}/{args.epochs}",
                 leave=False, position=1, disable=not run.progress, dynamic_ncols=True) as batch_bar:
        for x, y in batch_bar:
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=opt.use_amp):
                logits = run.net(x)
                loss = opt.criterion(logits, y)
            opt.optimizer.zero_grad(set_to_none=True)
            opt.scaler.scale(loss).backward()
            opt.scaler.step(opt.optimizer)
            opt.scaler.update()
            if opt.scheduler is not None and opt.per_batch:
                opt.scheduler.step()
            batch_index += 1
            with torch.no_grad():
                sums += torch.tensor([loss.item() * len(y), (logits.argmax(1) == y).sum().item(), len(y)],
                                     dtype=torch.float64)
            if run.progress:
                batch_bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{sums[1] / sums[2]:.3f}",
                                      lr=f"{opt.optimizer.param_groups[-1]['lr']:.2e}", refresh=False)
            if tb.w is not None:
                tb.add_scalar("batch/loss", loss.item(), epoch * loaders.steps_per_epoch + batch_index)
            if run.dist.broadcast_flag(stop.set):
                return sums, batch_index, True
    return sums, batch_index, False


def _end_epoch(run: _Run, epoch: int, sums: torch.Tensor) -> dict:
    """Totals over all ranks, validation, the per-epoch scheduler step, history and logs: the epoch's row."""
    args, opt = run.args, run.opt
    sums = run.dist.all_sum(sums)
    train_loss, train_acc = float(sums[0] / sums[2]), float(sums[1] / sums[2])
    val_loss, val_cm = evaluate(run.model, run.loaders.val, run.device, run.ds.num_classes, run.dist, opt.use_amp)
    val_acc = float(np.trace(val_cm) / max(1, val_cm.sum()))
    lr = opt.optimizer.param_groups[-1]["lr"]
    if opt.scheduler is not None and not opt.per_batch:
        if isinstance(opt.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            opt.scheduler.step(val_loss)
        else:
            opt.scheduler.step()
    row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
           "val_acc": val_acc, "lr": lr, "seconds": round(time.time() - run.t_train, 2)}
    run.metrics["history"].append(row)
    run.metrics.update(row)
    run.metrics.pop("interrupted", None)
    if not run.progress:
        run.say(f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4f} acc {train_acc:.4f}, "
                f"val loss {val_loss:.4f} acc {val_acc:.4f}, lr {lr:.2e}")
    if run.tb.w is not None:
        _log_epoch(run.tb, run.model, row, epoch + 1)
    return row


# ----------------------------------------------------------------------------- the end


def _test(run: _Run) -> dict:
    """Test-set evaluation, the final checkpoint, the report; returns the final metrics."""
    args, ds, tb, metrics = run.args, run.ds, run.tb, run.metrics
    test_loss, test_cm = evaluate(run.model, run.loaders.test, run.device, ds.num_classes, run.dist, run.opt.use_amp)
    report = confusion_metrics(test_cm, ds.class_names)
    metrics.update(test_loss=test_loss, test_acc=report["accuracy"], per_class=report["per_class"],
                   confusion_matrix=report["confusion_matrix"], train_seconds=round(time.time() - run.t_train, 2),
                   total_seconds=round(time.time() - run.t_start, 2))
    _save(run, args.epochs)
    if tb.w is not None:
        tb.add_scalar("test/accuracy", report["accuracy"], args.epochs)
        tb.add_image("test/confusion_matrix", confusion_image(test_cm, ds.class_names), args.epochs, dataformats="HWC")
    run.say("")
    run.say(f"test set ({int(test_cm.sum())} images):")
    run.say(format_report(report, ds.class_names))
    run.say(f"\ntest accuracy {report['accuracy']:.4f}; trained in {metrics['train_seconds']:.1f}s; wrote {run.out}")
    if run.logdir:
        run.say(f"TensorBoard logs: tensorboard --logdir {run.logdir}")
    return {"interrupted": False, "out": str(run.out), **metrics}


def _terminal() -> bool:
    """Progress bars only on a terminal: in a log (`netscope serve > log` training
    its demo) they are hundreds of lines of escape codes, and the epoch lines say it all."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _tqdm():
    from tqdm.auto import tqdm

    return tqdm


def _head_names(arch: str, num_classes: int) -> list[str]:
    """Names of the classifier modules of a torchvision arch (those producing num_classes outputs)."""
    m = models_mod.build_model(arch, num_classes)
    return [n for n, mod in m.named_modules()
            if (isinstance(mod, nn.Linear) and mod.out_features == num_classes)
            or (isinstance(mod, nn.Conv2d) and mod.out_channels == num_classes)]


def _check_input(model: nn.Module, pre: dict, device, arch: str) -> None:
    """One forward pass on a dummy batch, so a too-small input fails now, clearly."""
    x = torch.zeros(2, pre["channels"], *pre["crop"], device=device)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as e:
        raise UsageError(f"{arch} cannot take {pre['channels']}x{pre['crop'][0]}x{pre['crop'][1]} inputs "
                         f"({str(e).splitlines()[0]}); try a larger --image-size, e.g. 224") from None
    finally:
        model.train(was)


@torch.no_grad()
def evaluate(model, loader, device, num_classes: int, dist: Dist | None = None, amp: bool = False):
    """(mean loss, confusion matrix) over the loader, summed over all ranks."""
    was = model.training
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loss_sum = torch.zeros(2, dtype=torch.float64)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += torch.tensor([nn.functional.cross_entropy(logits, y, reduction="sum").item(), len(y)],
                                 dtype=torch.float64)
        pred = logits.argmax(1).cpu()
        cm += torch.bincount(y.cpu() * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)
    if dist is not None:
        cm = dist.all_sum(cm)
        loss_sum = dist.all_sum(loss_sum)
    model.train(was)
    return float(loss_sum[0] / max(1, loss_sum[1])), cm.numpy()


def _log_samples(tb, ds, pre):
    import torchvision

    n = min(32, len(ds.train))
    xs = torch.stack([ds.train[i][0] for i in range(n)])
    mean = torch.tensor(pre["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(pre["std"]).view(1, -1, 1, 1)
    grid = torchvision.utils.make_grid((xs * std + mean).clamp(0, 1), nrow=8)
    tb.add_image("train/samples", grid, 0)


def _log_epoch(tb, model, row, step):
    for k in ("train_loss", "val_loss"):
        tb.add_scalar(f"loss/{k.split('_')[0]}", row[k], step)
    for k in ("train_acc", "val_acc"):
        tb.add_scalar(f"accuracy/{k.split('_')[0]}", row[k], step)
    tb.add_scalar("lr", row["lr"], step)
    for name, p in model.named_parameters():
        tb.add_histogram(f"weights/{name}", p.detach().cpu(), step)
        if p.grad is not None:
            tb.add_histogram(f"grads/{name}", p.grad.detach().cpu(), step)
    tb.flush()


def run(args) -> int:
    """Train; return the exit code (0 done, 2 user mistake, 130 interrupted with a checkpoint saved)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = train(args)
    except UsageError as e:
        print(f"netscope train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("netscope train: aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_INTERRUPTED if result.get("interrupted") else 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
