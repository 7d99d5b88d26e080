"""One rule for every command's --out: a folder, created if missing, checked
before any request (a bad one is a usage error, exit 2, with no work lost)."""
from __future__ import annotations

import argparse
import importlib
import os
import socket

import pytest

from netscope import cli

from .conftest import run_netscope

# Commands that write files, each with the arguments it needs besides --out.
WRITERS = {
    "features": ["features", "IMAGE", "--model", "r18", "--layer", "layer1"],
    "kernels": ["kernels", "--model", "r18", "--layer", "conv1"],
    "explain": ["explain", "IMAGE", "--model", "r18"],
}


def run_unreachable(*args: str):
    """The CLI against a port nobody listens on: any request would fail with
    UNAVAILABLE (exit 1), so exit 2 shows the path was refused first."""
    return run_netscope(args[0], "--server", "127.0.0.1:9", "--timeout", "2", *args[1:])


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


# ---------------------------------------------------------------- every command, before any work (issue 17)

def refused(tmp_path, *args: str):
    """Run a command in `tmp_path` (client commands against a port nobody
    listens on): exit 2 shows the argument was refused before any request,
    training or startup. Returns (code, stderr)."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        if args[0] in ("serve", "train"):
            code, _, err = run_netscope(*args)
            return code, err
        code, _, err = run_unreachable(*args)
        return code, err
    finally:
        os.chdir(cwd)


# The paths each case uses: F is a regular file, so F/x cannot be created (root ignores
# modes, so "cannot write" is a path under a file or in /proc); M is missing; I an image.
CASES = {
    "serve": (["serve", "--store", "F/store", "--address", "127.0.0.1:0"], "--store F/store: the demo model is trained"),
    "serve-config": (["serve", "--config", "M/netscope.toml"], "--config M/netscope.toml: no such file"),
    "serve-store-unwritable": (["serve", "--store", "/proc/netscope-store"],
                               "--store /proc/netscope-store: the demo model is trained into it, but cannot create"),
    "train": (["train", "--data", "digits", "--out", "/proc/netscope.pt"], "--out /proc/netscope.pt: cannot create files in /proc"),
    "train-logdir": (["train", "--data", "digits", "--out", "m.pt", "--logdir", "F"], "--logdir F: is a file, not a folder"),
    "models": (["models", "--tls-ca", "F/ca.pem"], "--tls-ca F/ca.pem: cannot be used (Not a directory)"),
    "info": (["info", "r18", "--token-file", "M"], "--token-file M: no such file"),
    "load": (["load", "x", "resnet18", "--tls-cert", "F", "--tls-key", "M/key.pem"], "--tls-key M/key.pem: no such file"),
    "unload": (["unload", "x", "--token-file", "."], "--token-file .: is a folder, not a file"),
    "summary": (["summary", "r18", "--tls-ca", "M"], "--tls-ca M: no such file"),
    "methods": (["methods", "--token-file", "M/t"], "--token-file M/t: no such file"),
    "server-info": (["server-info", "--tls-ca", "."], "--tls-ca .: is a folder, not a file"),
    "predict": (["predict", "--model", "r18", "I", "M/cat.jpg"], "IMAGE M/cat.jpg: no such file"),
    "features": (["features", "--model", "r18", "--layer", "layer1", "I", "--out", "F/maps"],
                 "--out F/maps: cannot create the folder ("),
    "features-image": (["features", "--model", "r18", "--layer", "layer1", ".", "--out", "maps"],
                       "IMAGE .: is a folder, not a file"),
    "kernels": (["kernels", "--model", "r18", "--layer", "conv1", "--out", "/proc/netscope-kernels"],
                "--out /proc/netscope-kernels: cannot create the folder (cannot create files in /proc"),
    "stats": (["stats", "--model", "r18", "M"], "IMAGE M: no such file"),
    "explain": (["explain", "--model", "r18", "M", "--out", "maps"], "INPUT M: no such file or folder"),
    "explain-out": (["explain", "--model", "r18", "I", "--out", "F"], "--out F is a file; --out is always a folder"),
    "pointing": (["pointing", "F", "--model", "r18"], "FOLDER F: is a file, not a folder"),
    "bench": (["bench", "--model", "r18", "--input", "I", "M.jpg"], "--input M.jpg: no such file"),
    "ui": (["ui", "--tls-ca", "M"], "--tls-ca M: no such file"),
}


def commands() -> set[str]:
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    return set(sub.choices)


def test_every_command_has_a_case():
    """A new command (or one renamed) needs a case below: what it reads and writes is checked before work."""
    assert commands() - {argv[0] for argv, _ in CASES.values()} == set()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_path_is_refused_before_any_work_and_leaves_nothing(case, tmp_path, photo_files):
    argv, expected = CASES[case]
    if argv[0] not in commands():
        pytest.skip(f"no {argv[0]} command in this build")
    (tmp_path / "F").write_text("a file, not a folder")
    (tmp_path / "I.jpg").write_bytes(photo_files["chelsea"].read_bytes())
    argv = [a if a != "I" else "I.jpg" for a in argv]
    code, err = refused(tmp_path, *argv)
    assert code == 2, err
    assert err.startswith(f"netscope {argv[0]}: ") and expected in err, err
    assert "Traceback" not in err
    # nothing created: no output folder, no TensorBoard run, no store, no checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["F", "I.jpg"]


@pytest.mark.parametrize("flag", ["--address", "--metrics-port"])
def test_serve_refuses_a_port_in_use_before_training_the_demo(flag, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        address = ["--address", f"127.0.0.1:{port}"] if flag == "--address" else \
            ["--address", "127.0.0.1:0", "--metrics-port", str(port)]
        code, err = refused(tmp_path, "serve", "--store", "store", *address)
    assert code == 2, err
    assert f"{flag} 127.0.0.1:{port}: cannot listen there (Address already in use)" in err
    assert not (tmp_path / "store").exists()  # refused before the demo trained into it


def test_an_env_variable_path_is_named_as_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSCOPE_TLS_CA", str(tmp_path / "nope.pem"))
    code, err = refused(tmp_path, "models")
    assert code == 2 and f"$NETSCOPE_TLS_CA {tmp_path / 'nope.pem'}: no such file" in err


def test_a_uri_input_is_left_to_the_ray_engine_and_refused_by_the_grpc_one(tmp_path):
    code, _, err = run_unreachable("explain", "s3://bucket/photos/", "--model", "r18", "--out", str(tmp_path / "o"))
    assert code == 2 and "s3://bucket/photos/: a URI; local paths only here, or --engine ray" in err
    preflight = importlib.import_module("netscope.cli.preflight")  # the package also has a preflight()
    args = argparse.Namespace(engine="ray", inputs=["s3://bucket/photos/"],
                              preflight=[preflight.ImagesOrFolders("INPUT", "inputs")])
    preflight.check(args)  # Ray's readers open it on the workers
