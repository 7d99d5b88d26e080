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

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt_mod
from . import data as data_mod
from . import models as models_mod

log = logging.getLogger("netscope.training")

from .options import DEFAULT_LR, DEFAULT_WD, INITS, OPTIMIZERS, SCHEDULERS, add_arguments  # noqa: F401
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


def train(args) -> dict:
    """Run training as `args` says; returns the final metrics. Raises UsageError for user mistakes."""
    t_start = time.time()
    resume = _resolve(args)
    device = pick_device(args.device)
    dist = Dist(device)
    try:
        return _train(args, resume, device, dist, t_start)
    finally:
        dist.close()


def _train(args, resume, device, dist: Dist, t_start: float) -> dict:
    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    out = pathlib.Path(args.out)
    progress = dist.main and not args.no_progress
    say = (lambda *a: print(*a, flush=True)) if dist.main else (lambda *a: None)

    # ------------------------------------------------------------------ model and data
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
    pre = ds.preprocessing
    if resume and resume["num_classes"] != ds.num_classes:
        raise UsageError(f"--resume {args.resume} has {resume['num_classes']} classes; {args.data} has "
                         f"{ds.num_classes}")

    arch_kwargs = dict(args.arch_arg)
    if ours:
        arch_kwargs = {"in_channels": pre["channels"], "input_size": pre["crop"][0], **arch_kwargs}
    if resume:
        arch_kwargs = dict(resume.get("arch_kwargs", {}))
    head: list[str] = []
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

    # ------------------------------------------------------------------ loaders
    train_sampler = EpochSampler(len(ds.train), seed=args.seed, shuffle=True, rank=dist.rank, world=dist.world)
    common = dict(batch_size=args.batch_size, num_workers=args.workers, pin_memory=device.type == "cuda")
    loader_gen = torch.Generator()
    train_loader = torch.utils.data.DataLoader(ds.train, sampler=train_sampler, generator=loader_gen, **common)

    def eval_loader(dset):
        s = EpochSampler(len(dset), seed=0, shuffle=False, rank=dist.rank, world=dist.world, pad=False)
        return torch.utils.data.DataLoader(dset, sampler=s, **common)

    val_loader, test_loader = eval_loader(ds.val), eval_loader(ds.test)
    steps_per_epoch = math.ceil(len(train_sampler._indices()) / args.batch_size)

    net = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(args, model, head)
    scheduler, per_batch = build_scheduler(args, optimizer, steps_per_epoch)
    use_amp = device.type == "cuda" and args.amp != "off"
    if args.amp == "on" and device.type != "cuda":
        log.warning("--amp on: mixed precision is for CUDA; training in float32 on %s", device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    start_epoch, skip_batches, history, rng_state = 0, 0, [], None
    if resume:
        start_epoch = int(resume.get("epoch", 0))
        state = resume.get("extra", {}).get("resume", {})
        skip_batches = int(state.get("batch", 0))
        history = list(resume.get("metrics", {}).get("history", []))
        rng_state = state.get("rng")
        try:
            if resume.get("optimizer_state_dict"):
                optimizer.load_state_dict(resume["optimizer_state_dict"])
            if scheduler is not None and resume.get("scheduler_state_dict"):
                scheduler.load_state_dict(resume["scheduler_state_dict"])
            if state.get("scaler") and use_amp:
                scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise UsageError(f"--resume {args.resume}: optimiser/scheduler state does not fit these options "
                             f"({e}); resume with the options of the original run") from None
        if start_epoch >= args.epochs:
            raise UsageError(f"--resume {args.resume} already has {start_epoch} epochs; pass --epochs above that")
        say(f"resuming {args.resume} at epoch {start_epoch + 1}" + (f", batch {skip_batches + 1}" if skip_batches
                                                                     else ""))

    logdir = None
    if dist.main and not args.no_tensorboard:
        logdir = args.logdir or str(pathlib.Path("runs") / out.stem)
    tb = Logger(logdir)
    arg_record = {k: v for k, v in vars(args).items() if not callable(v) and k not in ("command",)}
    arg_record["arch_arg"] = [list(kv) for kv in args.arch_arg]

    say(f"training {args.arch} on {args.data}: {len(ds.train)} train / {len(ds.val)} val / {len(ds.test)} test "
        f"images, {ds.num_classes} classes, input {pre['channels']}x{pre['crop'][0]}x{pre['crop'][1]}, "
        f"augment {ds.augment}, {device}" + (f", {dist.world} processes" if dist.enabled else "")
        + (", mixed precision" if use_amp else ""))
    if ds.info.get("skipped"):
        say(f"skipped {ds.info['skipped']} corrupt image(s)")
    if tb.w is not None and start_epoch == 0 and skip_batches == 0:
        _log_samples(tb, ds, pre)

    def save(epoch_done: int, metrics: dict, resume_state: dict | None = None):
        if not dist.main:
            return
        extra = {"args": arg_record, "data": ds.info, "augment": ds.augment, "seed": args.seed}
        if args.pretrained:
            extra["pretrained"] = str(member)
        if resume_state:
            extra["resume"] = resume_state
        elif use_amp:
            extra["resume"] = {"scaler": scaler.state_dict()}
        ckpt_mod.save_checkpoint(
            out, arch=args.arch, num_classes=ds.num_classes, class_names=ds.class_names, preprocessing=pre,
            model_state_dict=model.state_dict(), arch_kwargs=arch_kwargs,
            optimizer_state_dict=optimizer.state_dict(),
            scheduler_state_dict=scheduler.state_dict() if scheduler is not None else None,
            epoch=epoch_done, metrics=metrics, extra=extra)

    metrics: dict = {"history": history}
    tqdm = _tqdm()
    epochs_bar = tqdm(range(start_epoch, args.epochs), desc="epochs", disable=not progress, position=0,
                      initial=start_epoch, total=args.epochs, dynamic_ncols=True)
    t_train = time.time()
    with StopFlag() as stop:
        for epoch in epochs_bar:
            ds.train.set_epoch(epoch)
            train_sampler.set_epoch(epoch, skip_batches * args.batch_size)
            torch.manual_seed(epoch_seed(args.seed, epoch))
            loader_gen.manual_seed(epoch_seed(args.seed, epoch))
            batches = iter(train_loader)
            net.train()
            sums = torch.zeros(3, dtype=torch.float64)  # loss*n, correct, n
            if rng_state is not None:  # resuming mid-epoch: dropout etc. go on from where they stopped
                torch.set_rng_state(rng_state)
                rng_state = None
                sums += torch.tensor(resume.get("extra", {}).get("resume", {}).get("sums", [0, 0, 0]),
                                     dtype=torch.float64)
            batch_bar = tqdm(batches, total=steps_per_epoch, initial=skip_batches,
                             desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, position=1,
                             disable=not progress, dynamic_ncols=True)
            batch_index = skip_batches
            skip_batches = 0
            stopped = False
            for x, y in batch_bar:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                    logits = net(x)
                    loss = criterion(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if scheduler is not None and per_batch:
                    scheduler.step()
                batch_index += 1
                with torch.no_grad():
                    sums += torch.tensor([loss.item() * len(y), (logits.argmax(1) == y).sum().item(), len(y)],
                                         dtype=torch.float64)
                lr = optimizer.param_groups[-1]["lr"]
                if progress:
                    batch_bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{sums[1] / sums[2]:.3f}",
                                          lr=f"{lr:.2e}", refresh=False)
                if tb.w is not None:
                    tb.add_scalar("batch/loss", loss.item(), epoch * steps_per_epoch + batch_index)
                if dist.broadcast_flag(stop.set):
                    stopped = True
                    break
            batch_bar.close()
            if stopped:
                state = {"batch": batch_index, "rng": torch.get_rng_state(), "sums": sums.tolist()}
                if use_amp:
                    state["scaler"] = scaler.state_dict()
                if batch_index >= steps_per_epoch:  # stopped right at the end of an epoch: finish it normally
                    state = None
                    stopped = False
                else:
                    metrics["interrupted"] = {"epoch": epoch, "batch": batch_index}
                    save(epoch, metrics, state)
                    epochs_bar.close()
                    say(f"interrupted in epoch {epoch + 1} after batch {batch_index}/{steps_per_epoch}: saved {out}; "
                        f"continue with --resume {out}")
                    tb.close()
                    return {"interrupted": True, "epoch": epoch, "batch": batch_index, "out": str(out)}
            sums = dist.all_sum(sums)
            train_loss, train_acc = float(sums[0] / sums[2]), float(sums[1] / sums[2])
            val_loss, val_cm = evaluate(model, val_loader, device, ds.num_classes, dist, use_amp)
            val_acc = float(np.trace(val_cm) / max(1, val_cm.sum()))
            lr = optimizer.param_groups[-1]["lr"]
            if scheduler is not None and not per_batch:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(val_loss)
                else:
                    scheduler.step()
            row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                   "val_acc": val_acc, "lr": lr, "seconds": round(time.time() - t_train, 2)}
            history.append(row)
            metrics.update(row)
            metrics.pop("interrupted", None)
            epochs_bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{train_acc:.3f}", val_acc=f"{val_acc:.3f}",
                                   refresh=False)
            if not progress:
                say(f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4f} acc {train_acc:.4f}, "
                    f"val loss {val_loss:.4f} acc {val_acc:.4f}, lr {lr:.2e}")
            if tb.w is not None:
                _log_epoch(tb, model, row, epoch + 1)
            save(epoch + 1, metrics)
            if args.stop_after and epoch + 1 >= args.stop_after and epoch + 1 < args.epochs:
                epochs_bar.close()
                say(f"stopped after epoch {epoch + 1} of {args.epochs} as asked: saved {out}; "
                    f"continue with --resume {out}")
                tb.close()
                return {"interrupted": False, "stopped": True, "epoch": epoch + 1, "out": str(out)}
            if dist.broadcast_flag(stop.set):
                epochs_bar.close()
                say(f"interrupted after epoch {epoch + 1}: saved {out}; continue with --resume {out}")
                tb.close()
                return {"interrupted": True, "epoch": epoch + 1, "batch": 0, "out": str(out)}
    epochs_bar.close()

    test_loss, test_cm = evaluate(model, test_loader, device, ds.num_classes, dist, use_amp)
    report = confusion_metrics(test_cm, ds.class_names)
    metrics.update(test_loss=test_loss, test_acc=report["accuracy"], per_class=report["per_class"],
                   confusion_matrix=report["confusion_matrix"], train_seconds=round(time.time() - t_train, 2),
                   total_seconds=round(time.time() - t_start, 2))
    save(args.epochs, metrics)
    if tb.w is not None:
        tb.add_scalar("test/accuracy", report["accuracy"], args.epochs)
        tb.add_image("test/confusion_matrix", confusion_image(test_cm, ds.class_names), args.epochs, dataformats="HWC")
        tb.close()
    say("")
    say(f"test set ({int(test_cm.sum())} images):")
    say(format_report(report, ds.class_names))
    say(f"\ntest accuracy {report['accuracy']:.4f}; trained in {metrics['train_seconds']:.1f}s; wrote {out}")
    if logdir:
        say(f"TensorBoard logs: tensorboard --logdir {logdir}")
    return {"interrupted": False, "out": str(out), **metrics}


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
