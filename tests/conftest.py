"""A real netscope server on an ephemeral loopback port, shared by the session,
and the typed client and CLI that talk to it."""
from __future__ import annotations

import contextlib
import io
import os

import cv2
import numpy as np
import pytest
import torch

from netscope.client import Client
from netscope import cli
from netscope.server.app import ModelSpec, Server, ServerConfig

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# Small models, untrained with the registry's fixed seed, so a test can build
# the same weights in-process with registry.build_architecture.
SESSION_MODELS = [ModelSpec("r18", "resnet18"), ModelSpec("mnv3", "mobilenet_v3_small")]
MAX_PIXELS = 2_000_000


def photo(name: str) -> np.ndarray:
    """An RGB uint8 photo that ships with scikit-image (astronaut, chelsea, coffee, rocket, ...)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    return img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2)


def encode(rgb: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
def server(store):
    config = ServerConfig(address="127.0.0.1:0", models=SESSION_MODELS, store=str(store), device="cpu",
                          workers=16, max_pixels=MAX_PIXELS, max_images=64, grace_s=5)
    srv = Server(config).start()
    yield srv
    srv.stop(grace=1)


@pytest.fixture(scope="session")
def client(server):
    with Client(server.address, timeout=120) as c:
        c.wait_ready()
        yield c


@pytest.fixture(scope="session")
def photos():
    """Named test photos as RGB arrays."""
    return {name: photo(name) for name in ("chelsea", "astronaut", "coffee", "rocket")}


@pytest.fixture(scope="session")
def photo_files(tmp_path_factory, photos):
    """The photos written as JPEG and PNG files."""
    root = tmp_path_factory.mktemp("photos")
    paths = {}
    for i, (name, rgb) in enumerate(photos.items()):
        ext = ".jpg" if i % 2 == 0 else ".png"
        path = root / f"{name}{ext}"
        path.write_bytes(encode(rgb, ext))
        paths[name] = path
    return paths


@pytest.fixture
def run_cli(server):
    """Run the `netscope` command in-process against the session server:
    returns (exit code, stdout, stderr)."""

    def run(*args: str):
        argv = list(args)
        if argv and argv[0] != "serve":
            argv[1:1] = ["--server", server.address]
        return run_netscope(*argv)

    return run


def run_netscope(*argv: str) -> tuple[int, str, str]:
    """`netscope ARGV` in-process: (exit code, stdout, stderr); argparse's exits become codes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- the checkout stays clean (issue 17)

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Caches and environments that belong in the checkout; everything else a test writes goes to tmp_path.
_ALLOWED = (".venv", ".venv-triton", ".hypothesis", ".pytest_cache", ".benchmarks", ".ts", ".whl", "build", "dist")
_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy", ".npz", ".pt", ".csv", ".json", ".onnx", ".log")


def checkout_leftovers() -> set[str] | None:
    """What a run may leave in the checkout by mistake: ignored files outside the
    allowed caches (runs/, models/, ...), and untracked outputs (images, arrays,
    checkpoints, tables). None when this is not a git checkout."""
    import subprocess

    exclude = [f":(exclude){p}" for p in _ALLOWED] + [":(exclude,glob)**/__pycache__/**", ":(exclude,glob)*.egg-info/**"]
    try:
        proc = subprocess.run(["git", "status", "--porcelain", "--ignored", "-uall", "--", ".", *exclude], cwd=CHECKOUT,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode:
        return None
    return {line[3:] for line in proc.stdout.splitlines()
            if line.startswith("!! ") or (line.startswith("?? ") and line.endswith(_SUFFIXES))}


def pytest_sessionstart(session):
    session.config.stash[_LEFTOVERS] = checkout_leftovers()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when tests wrote into the checkout (a runs/ TensorBoard folder,
    a models/ store, a PNG in the current folder): tests write under tmp_path."""
    before = session.config.stash.get(_LEFTOVERS, None)
    after = checkout_leftovers()
    if before is None or after is None:
        return
    new = sorted(after - before)
    if new:
        shown = "\n  ".join(new[:20]) + ("\n  ..." if len(new) > 20 else "")
        session.config.get_terminal_writer().line(
            f"\nthe tests wrote into the checkout ({CHECKOUT}); write under tmp_path instead "
            f"(e.g. train --logdir/--no-tensorboard, serve --store, --out):\n  {shown}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_LEFTOVERS = pytest.StashKey()
