"""The README, followed as a newcomer would, from a fresh clone (issue 17 §6).

`git clone` this checkout into a temporary folder, run the README's two
commands as they are written there (parsed from README.md, so the test fails
when the README drifts from what works), then its first-steps examples
(predict, explain, features on `demo`) on real photos against that server,
and stop the server with SIGINT (it must exit 0).

What differs from a newcomer's machine, and why:
- the clone's `.venv` is made here (as setup.sh would) with a `.pth` file that
  puts this checkout's `.venv` site-packages on its path, so setup.sh's pip
  finds torch and the extras already installed instead of downloading ~2 GB;
  setup.sh itself still runs as written, and installs netscope (editable, from
  the clone) into the clone's `.venv`;
- `.venv-triton` is a link to this checkout's, for the same reason;
- `serve` gets `--address` with a free port (other servers may hold 50051) and
  the client commands find it through `$NETSCOPE_SERVER`, so they run as written;
- the second command's `pytest` collects the suite (`--collect-only`) instead of
  running it: the whole suite runs in CI, not inside one of its tests.

Slow (a clone, two editable installs, the demo's first training): NETSCOPE_SLOW=1.
NETSCOPE_NEWCOMER_WORKTREE=1 also carries the checkout's uncommitted changes and
new files into the clone, to try work before committing it.
"""
from __future__ import annotations

import csv
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from netscope.client import Client

from .conftest import CHECKOUT, encode, photo

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.environ.get("NETSCOPE_SLOW"),
                                 reason="clones, installs and trains the demo (minutes); NETSCOPE_SLOW=1"),
              pytest.mark.timeout(1800)]

README = Path(CHECKOUT) / "README.md"


def sh_blocks(text: str) -> list[list[str]]:
    """The README's ```sh blocks, as lists of lines (comments kept)."""
    return [block.strip("\n").splitlines() for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def the_two_commands(text: str) -> tuple[str, str]:
    """The first two sh blocks of "## The two commands": serve, then the tests."""
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in sh_blocks(section) if len(b) == 1]
    assert len(blocks) >= 2, "README: '## The two commands' should hold two one-line sh blocks"
    return blocks[0][0], blocks[1][0]


def first_steps(text: str) -> dict[str, list[str]]:
    """The README's `.venv/bin/netscope predict|explain|features` lines, by command, comments dropped."""
    steps = {}
    for block in sh_blocks(text):
        for line in block:
            if not line.startswith(".venv/bin/netscope "):
                continue
            words = shlex.split(line, comments=True)
            if words[:1] == [".venv/bin/netscope"] and len(words) > 1 and words[1] in ("predict", "explain", "features"):
                steps.setdefault(words[1], words)
    return steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: str, cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def the_newcomers_images(root: Path) -> None:
    """The files the README's examples name, made from real pictures: a digit
    drawn large on white (PNG), a photo (JPEG) and a folder of photos."""
    from sklearn.datasets import load_digits

    import cv2

    digit = load_digits().images[3]  # 8x8, 0..16: a "3"
    big = cv2.resize((255 - digit * 255 / 16).astype(np.uint8), (128, 128), interpolation=cv2.INTER_LINEAR)
    (root / "digit.png").write_bytes(encode(np.repeat(big[:, :, None], 3, axis=2), ".png"))
    (root / "photo.jpg").write_bytes(encode(photo("chelsea"), ".jpg"))
    (root / "photos").mkdir()
    (root / "photos" / "coffee.jpg").write_bytes(encode(photo("coffee"), ".jpg"))
    (root / "photos" / "camera.png").write_bytes(encode(photo("camera"), ".png"))


def a_fresh_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "netscope"
    subprocess.run(["git", "clone", "-q", CHECKOUT, str(clone)], check=True, timeout=300)
    if os.environ.get("NETSCOPE_NEWCOMER_WORKTREE"):  # try uncommitted work too: the checkout's changes and new files
        diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=CHECKOUT, capture_output=True, check=True).stdout
        subprocess.run(["git", "apply", "--allow-empty"], cwd=clone, input=diff, check=True)
        new = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "-z"], cwd=CHECKOUT,
                             capture_output=True, text=True, check=True).stdout.split("\0")
        for name in filter(None, new):
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            (clone / name).write_bytes((Path(CHECKOUT) / name).read_bytes())
    # The clone's .venv, as setup.sh makes it, seeing this checkout's installed packages (see the module's doc).
    subprocess.run([sys.executable, "-m", "venv", str(clone / ".venv")], check=True, timeout=300)
    site = Path(sysconfig.get_paths()["purelib"])
    [clone_site] = (clone / ".venv" / "lib").glob("python3*/site-packages")
    (clone_site / "newcomer-shared.pth").write_text(f"{site}\n")
    triton = Path(CHECKOUT) / ".venv-triton"
    if triton.exists():
        (clone / ".venv-triton").symlink_to(triton)
    return clone


def test_the_readme_from_a_fresh_clone(tmp_path):
    text = README.read_text()
    serve_line, test_line = the_two_commands(text)
    steps = first_steps(text)
    assert set(steps) == {"predict", "explain", "features"}, f"README: first steps found: {sorted(steps)}"
    clone = a_fresh_clone(tmp_path)
    port = free_port()
    env = {**os.environ, "NETSCOPE_SERVER": f"127.0.0.1:{port}", "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)

    # The first command: setup, then the server in the background until it answers health.
    setup, _, serve = (part.strip() for part in serve_line.partition("&&"))
    assert serve == ".venv/bin/netscope serve", serve_line
    run(setup, clone, env, timeout=900)
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([*shlex.split(serve), "--address", f"127.0.0.1:{port}"], cwd=clone, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        with Client(f"127.0.0.1:{port}", timeout=30) as c:
            c.wait_ready(timeout=900)  # the demo trains first (about a minute on 2 idle cores)
            assert "demo" in [m.model for m in c.list_models()]
        assert (clone / "models" / "demo.pt").is_file()

        the_newcomers_images(clone)
        out = run(shlex.join(steps["predict"]), clone, env, timeout=300).stdout
        for name in ("digit.png", "photo.jpg"):
            assert name in out, out
        run(shlex.join(steps["explain"]), clone, env, timeout=600)
        rows = list(csv.DictReader(open(clone / "explained" / "index.csv")))
        assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}, rows
        assert all((clone / "explained" / r["overlay"]).is_file() for r in rows), rows
        out = run(shlex.join(steps["features"]), clone, env, timeout=300).stdout
        assert sorted(p.name for p in (clone / "maps").iterdir()) == ["digit.features.1.png"], out
    finally:
        server.send_signal(signal.SIGINT)
        try:
            code = server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            code = "still running 120 s after SIGINT"
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]

    # The second command: the tests' setup as written; pytest collects the suite (it runs in CI).
    setup, _, tests = (part.strip() for part in test_line.partition("&&"))
    assert tests == ".venv/bin/python -m pytest", test_line
    run(setup, clone, env, timeout=900)
    out = run(f"{tests} --collect-only -q -p no:cacheprovider", clone, env, timeout=600).stdout
    assert re.search(r"\d+ tests? collected", out) and "error" not in out.splitlines()[-1].lower(), out[-2000:]
