"""A tiny served model, a folder of generated images, `netscope serve` and
`netscope explain` as processes, and the checks every job test makes of an
output folder."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

from netscope.client import Client
from netscope.client.job_index import FIELDS
from netscope.training.data import SHAPE_CLASSES, export_shapes

from ..test_cli import free_port, netscope_command

SIZE = 64  # the tiny model's input
SHOWN = 256  # its overlays: SIZE enlarged for display by a whole factor to >= 224 px (imaging.for_display)


def save_tiny_checkpoint(store: Path, name: str = "tiny") -> None:
    """An untrained (seeded) simple_cnn on 64x64 inputs with the shapes' classes:
    a job of a few hundred images takes seconds on 2 CPU cores."""
    import torch

    from netscope.training.checkpoint import save_checkpoint
    from netscope.training.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("simple_cnn", len(SHAPE_CLASSES), input_size=SIZE)
    save_checkpoint(Path(store) / f"{name}.pt", arch="simple_cnn", num_classes=len(SHAPE_CLASSES),
                    class_names=SHAPE_CLASSES, model_state_dict=model.state_dict(), arch_kwargs={"input_size": SIZE},
                    preprocessing=dict(resize=0, crop=SIZE, mean=[0.5] * 3, std=[0.25] * 3,
                                       interpolation="bilinear", channels=3))


def shapes_folder(root: Path, n: int) -> tuple[Path, list[str]]:
    """n generated PNGs in one sub-folder per class; returns the folder and the image ids."""
    folder = export_shapes(Path(root), n, seed=3, size=SIZE)
    ids = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert len(ids) == n
    return folder, ids


class ServeProcess:
    """`netscope serve` of the tiny model on a free loopback port, as its own process."""

    def __init__(self, store: Path, log: Path):
        self.store, self.log = store, log
        self.address = f"127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServeProcess":
        env = dict(os.environ, OMP_NUM_THREADS="1")  # two servers and a client share 2 cores
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(netscope_command() + [
                "serve", "--address", self.address, "--model", "tiny=tiny", "--store", str(self.store),
                "--device", "cpu", "--log-level", "WARNING"], stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def wait_ready(self, timeout: float = 120) -> "ServeProcess":
        with Client(self.address, timeout=5) as c:
            c.wait_ready(timeout=timeout)
        return self

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; its clients see the connection drop."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def explain_process(folder: Path, out: Path, servers: list[str], *extra: str) -> subprocess.Popen:
    """`netscope explain --json` over a folder, as a user would run it."""
    argv = netscope_command() + ["explain", "--model", "tiny", str(folder), "--out", str(out), "--json", *extra]
    for s in servers:
        argv += ["--server", s]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    """Wait for a job; one still running after `timeout` s (a few hundred tiny images take
    seconds) is killed and fails the test."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the job hung: still running after {timeout} s\n{err}") from None
    return proc.returncode, out, err


def index_lines(out: Path) -> int:
    """Rows in index.csv as written so far (whole lines, header excluded)."""
    path = out / "index.csv"
    return max(0, path.read_bytes().count(b"\n") - 1) if path.exists() else 0


def wait_for_rows(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Block until the job has written at least n rows; fails if it ended first."""
    deadline = time.monotonic() + timeout
    while (rows := index_lines(out)) < n:
        assert proc.poll() is None, f"the job ended after {rows} rows, before the kill: {proc.communicate()}"
        assert time.monotonic() < deadline, f"only {rows} rows after {timeout} s"
        time.sleep(0.01)
    return rows


def raw_rows(out: Path) -> list[dict]:
    """index.csv exactly as on disk, every line a whole row of every field."""
    raw = (out / "index.csv").read_bytes()
    assert raw.endswith(b"\n"), "index.csv ends in a torn line"
    lines = list(csv.reader(raw.decode().splitlines()))
    assert lines[0] == FIELDS
    assert all(len(line) == len(FIELDS) for line in lines[1:]), "a row with missing fields"
    return [dict(zip(FIELDS, line)) for line in lines[1:]]


def decoded_png(path: Path) -> np.ndarray:
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), f"{path} is not a PNG"
    img = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"{path} does not decode"
    return img


def check_whole_rows(out: Path) -> list[dict]:
    """Every row on disk is whole and each ok row's overlay is a decodable PNG of
    the model's input size; no image has two ok rows. Returns the rows."""
    rows = raw_rows(out)
    ok = [r["id"] for r in rows if r["status"] == "ok"]
    assert len(ok) == len(set(ok)), "an image explained twice"
    for r in rows:
        if r["status"] == "ok":
            assert r["label"] == SHAPE_CLASSES[int(r["target"])]
            assert 0 < float(r["probability"]) <= 1 and np.isfinite(float(r["score"]))
            assert decoded_png(out / r["overlay"]).shape == (SHOWN, SHOWN, 3)
    return rows


def check_complete(out: Path, ids: list[str]) -> list[dict]:
    """Every image in the index exactly once, explained, with its overlay; index.json agrees."""
    rows = check_whole_rows(out)
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert {r["status"] for r in rows} == {"ok"}
    as_json = json.loads((out / "index.json").read_text())
    assert [r["id"] for r in as_json] == [r["id"] for r in rows]
    assert [r["target"] for r in as_json] == [int(r["target"]) for r in rows]
    return rows
