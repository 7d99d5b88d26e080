"""The embedded default model `demo`: a small CNN that reads one digit as people
make it: handwritten, typed or drawn, white on black or black on white.

`ensure_demo(store)` returns `store/demo.pt`, training it first when it is
missing (about a minute on two CPU cores, with a progress bar). The recipe is
fixed and seeded, so every machine trains the same model; a file lock keeps two
servers starting at once from training it twice.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pathlib
import time

from . import checkpoint as ckpt_mod

log = logging.getLogger("netscope.training")

# The demo recipe is the defaults of its data source, `mixed_digits` (options.SOURCE_DEFAULTS:
# 8000 generated 32x32 grey images of sklearn's digits upscaled nearest and bilinear,
# Hershey and TrueType font digits and hand-drawn strokes, either polarity; simple_cnn
# with two convs per block, widths 16-32-64 (maps 16x16, 8x8, 4x4), PyTorch's init,
# AdamW 6e-3 one-cycle, 8 epochs, shift augmentation), so `netscope train --data
# mixed_digits` trains the same model. Threads follow training/threads.py's rule.
# Shapes stay a data source (`netscope train --data shapes`), but learning shapes on
# cluttered backgrounds takes far longer than a server start should.
DEMO_ARGS = ["--data", "mixed_digits", "--seed", "0", "--no-tensorboard"]


def demo_argv(out, progress: bool = True) -> list[str]:
    return [*DEMO_ARGS, "--out", str(out), *([] if progress else ["--no-progress"])]


@contextlib.contextmanager
def _lock(path: pathlib.Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the atomic write still keeps the file whole
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _usable(path: pathlib.Path) -> bool:
    if not path.is_file():
        return False
    try:
        ckpt_mod.load_checkpoint(path)
        return True
    except ckpt_mod.CheckpointError as e:
        log.warning("demo checkpoint %s is unusable (%s): training it again", path, e)
        return False


def ensure_demo(store_dir, name: str = "demo", progress: bool = True) -> pathlib.Path:
    """`store_dir/<name>.pt`, trained first if missing or unreadable."""
    store = pathlib.Path(store_dir)
    path = store / f"{name}.pt"
    if _usable(path):
        return path
    store.mkdir(parents=True, exist_ok=True)
    with _lock(store / f".{name}.lock"):
        if _usable(path):  # another process trained it while we waited
            return path
        from . import train as train_mod

        log.info("no %s model in %s: training it (mixed_digits, simple_cnn; about a minute on CPU)", name, store)
        t0 = time.time()
        args = train_mod.parser().parse_args(demo_argv(path, progress))
        with _single_process_env():
            result = train_mod.train(args)  # which puts the caller's thread count back
        if result.get("interrupted"):
            raise KeyboardInterrupt(f"training of the {name} model was interrupted")
        log.info("trained %s in %.0fs: test accuracy %.4f -> %s", name, time.time() - t0, result["test_acc"], path)
    return path


@contextlib.contextmanager
def _single_process_env():
    """The demo is trained in this process even if it was started by torchrun."""
    saved = {k: os.environ.pop(k) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m netscope.training.demo", description="Train the demo model.")
    p.add_argument("store", nargs="?", default="models", help="model store folder (default models)")
    p.add_argument("--force", action="store_true", help="train again even if it exists")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if a.force:
        (pathlib.Path(a.store) / "demo.pt").unlink(missing_ok=True)
    print(ensure_demo(a.store))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
