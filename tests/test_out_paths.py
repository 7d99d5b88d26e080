"""One rule for every command's --out: a folder, created if missing, checked
before any request (a bad one is a usage error, exit 2, with no work lost)."""
from __future__ import annotations

import contextlib
import io

import pytest

from netscope import cli

# Commands that write files, each with the arguments it needs besides --out.
WRITERS = {
    "features": ["features", "IMAGE", "--model", "r18", "--layer", "layer1"],
    "kernels": ["kernels", "--model", "r18", "--layer", "conv1"],
    "explain": ["explain", "IMAGE", "--model", "r18"],
}


def run_unreachable(*args: str):
    """The CLI against a port nobody listens on: any request would fail with
    UNAVAILABLE (exit 1), so exit 2 shows the path was refused first."""
    out, err = io.StringIO(), io.StringIO()
    argv = [args[0], "--server", "127.0.0.1:9", "--timeout", "2", *args[1:]]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def args_for(command: str, image) -> list[str]:
    return [str(image) if a == "IMAGE" else a for a in WRITERS[command]]


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_folder_that_cannot_be_created_fails_at_once(command, tmp_path, photo_files):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run_unreachable(*args_for(command, photo_files["chelsea"]), "--out", str(blocker / "sub"))
    assert code == 2, err
    assert f"netscope {command}: --out {blocker / 'sub'}: cannot create the folder" in err
    code, _, err = run_unreachable(*args_for(command, photo_files["chelsea"]), "--out", str(blocker))
    assert code == 2 and "is a file; --out is always a folder" in err


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_file_name_is_refused_not_made_a_folder(command, tmp_path, photo_files):
    target = tmp_path / "kern.png"
    code, _, err = run_unreachable(*args_for(command, photo_files["chelsea"]), "--out", str(target))
    assert code == 2, err
    assert "looks like a file name; --out is always a folder" in err and f"--out {tmp_path}" in err
    assert not target.exists()


def test_kernels_out_is_a_folder_created_with_its_parents(run_cli, tmp_path):
    folder = tmp_path / "deep" / "kern"
    code, out, err = run_cli("kernels", "--model", "r18", "--layer", "conv1", "--out", f"{folder}/")
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["r18.conv1.kernels.png"]
    assert str(folder / "r18.conv1.kernels.png") in out


def test_features_and_explain_create_their_folder(run_cli, tmp_path, photo_files):
    code, _, err = run_cli("features", str(photo_files["chelsea"]), "--model", "r18", "--layer", "layer1",
                           "--out", str(tmp_path / "f" / "g"))
    assert code == 0, err
    assert (tmp_path / "f" / "g" / "chelsea.layer1.png").is_file()
    code, _, err = run_cli("explain", str(photo_files["chelsea"]), "--model", "r18", "--out", str(tmp_path / "e" / "x"))
    assert code == 0, err
    assert (tmp_path / "e" / "x" / "index.csv").is_file()


def test_the_current_folder_is_the_default(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("kernels", "--model", "r18", "--layer", "layer1.0.conv1")
    assert code == 0, err
    assert (tmp_path / "r18.layer1.0.conv1.kernels.png").is_file()
