"""Issue 17 item 5: the small things a newcomer trips on, each through the real
CLI or client against a real server on loopback."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import trustme

from netscope.client import Client
from netscope.client.client import NetscopeError
from netscope.client.connection import with_port
from netscope.server.app import Server, ServerConfig

from .conftest import encode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "0", "NETSCOPE_SERVER": ""}


# ---------------------------------------------------------------- where and how to connect

@pytest.mark.parametrize("given, dialled", [
    ("localhost", "localhost:50051"), ("10.0.0.7", "10.0.0.7:50051"), ("host:7000", "host:7000"),
    ("::1", "[::1]:50051"), ("[::1]", "[::1]:50051"), ("[::1]:7000", "[::1]:7000"),
    ("unix:/tmp/netscope.sock", "unix:/tmp/netscope.sock"), ("dns:///host:7000", "dns:///host:7000")])
def test_a_host_without_a_port_means_50051(given, dialled):
    assert with_port(given) == dialled
    with Client(given) as c:  # every command and the typed client build their channel here
        assert c.target == dialled


def test_server_help_says_the_default_port(run_cli):
    code, out, _ = run_cli("predict", "--help")
    assert code == 0 and "port 50051 when" in " ".join(out.split())


def test_refused_connection_asks_whether_serve_runs(run_cli):
    port = free_port()
    code, _, err = run_cli("models", "--server", f"127.0.0.1:{port}", "--timeout", "5")
    assert code == 1
    assert f"is `netscope serve` running at 127.0.0.1:{port}?" in err
    assert "failed to connect to all addresses" not in err  # gRPC's own words stay in exc.transport


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A TLS server (no models) and its CA file."""
    root = tmp_path_factory.mktemp("trips-pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    (root / "server.pem").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(root / "server.key"))
    srv = Server(ServerConfig(address="127.0.0.1:0", models=[], store=str(root / "store"), device="cpu", workers=2,
                              grace_s=1, tls_cert=str(root / "server.pem"), tls_key=str(root / "server.key"))).start()
    yield f"127.0.0.1:{srv.port}", root / "ca.pem"
    srv.stop(0)


def test_plaintext_against_tls_and_tls_against_plaintext_say_which(run_cli, tls, server):
    address, ca = tls
    code, _, err = run_cli("models", "--server", address, "--timeout", "5")
    assert code == 1 and "add --tls or --tls-ca" in err, err
    with Client(server.address, root_certificates=str(ca), timeout=5, retries=False) as c, \
            pytest.raises(NetscopeError) as exc:
        c.list_models()
    assert "speaks plaintext" in exc.value.message and "drop --tls" in exc.value.message
    assert exc.value.transport  # gRPC's text kept for whoever needs it


# ---------------------------------------------------------------- output into a closed pipe

def test_a_reader_that_leaves_early_is_no_error(server):
    """`netscope methods | head`: head exits, the next write meets a closed pipe."""
    proc = subprocess.Popen([sys.executable, "-m", "netscope.cli", "methods", "--server", server.address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    proc.stdout.close()  # the reader has gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141  # as a command SIGPIPE ended (128 + 13)
    assert "Broken pipe" not in err and "BrokenPipeError" not in err and "Traceback" not in err, err


# ---------------------------------------------------------------- predict and features, file by file

@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, photos):
    """Two photos, a file that is no image and a truncated JPEG, in one folder."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "a_chelsea.jpg").write_bytes(encode(photos["chelsea"]))
    (root / "b_broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "c_coffee.png").write_bytes(encode(photos["coffee"], ".png"))
    (root / "d_truncated.jpg").write_bytes(encode(photos["rocket"])[:300])
    (root / "notes.txt").write_text("not an image: a folder's other files are left alone")
    return root


def test_predict_reports_bad_files_by_path_and_goes_on(run_cli, client, mixed_folder):
    code, out, err = run_cli("predict", str(mixed_folder), "--model", "r18", "-k", "1")
    assert code == 1, err
    good = [mixed_folder / "a_chelsea.jpg", mixed_folder / "c_coffee.png"]
    want = client.predict("r18", good, k=1)
    for path, p in zip(good, want):
        assert re.search(rf"{re.escape(str(path))}\s+1\s+{p.top1.index}\s", out), out
    for bad in ("b_broken.jpg", "d_truncated.jpg"):
        assert f"{mixed_folder / bad}: INVALID_ARGUMENT" in err
    assert not re.search(r"image \d+:", err)  # the path, not the position in a request
    code, out, err = run_cli("predict", "--json", str(mixed_folder / "b_broken.jpg"), str(good[0]), "--model", "r18")
    rows = json.loads(out)
    assert code == 1 and [set(r) for r in rows] == [{"image", "error"}, {"image", "top_k"}]
    assert rows[1]["top_k"][0]["index"] == want[0].top1.index


def test_features_defaults_to_the_cam_layer_and_goes_on_past_bad_files(run_cli, mixed_folder, tmp_path):
    files = [str(mixed_folder / n) for n in ("a_chelsea.jpg", "b_broken.jpg")]
    code, out, err = run_cli("features", *files, "--model", "r18", "--top", "4", "--out", str(tmp_path))
    assert code == 1
    assert "layer4, the layer CAMs explain by default" in err and f"{files[1]}: INVALID_ARGUMENT" in err
    grid = cv2.imdecode(np.fromfile(tmp_path / "a_chelsea.layer4.png", np.uint8), cv2.IMREAD_COLOR)
    # four 7x7 maps, each drawn as a 35 px tile (the smallest whole factor to 32 px), 2 x 2 with padding 2
    assert grid.shape == (2 * 35 + 3 * 2, 2 * 35 + 3 * 2, 3)


# ---------------------------------------------------------------- what files and numbers look like

@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_written_files_follow_the_umask(run_cli, photo_files, tmp_path, mask):
    from netscope.training.checkpoint import load_checkpoint, save_checkpoint

    with umask(mask):
        code, _, err = run_cli("explain", str(photo_files["chelsea"]), "--model", "r18", "--out", str(tmp_path / "x"))
        assert code == 0, err
        import torch

        save_checkpoint(tmp_path / "c.pt", arch="resnet18", num_classes=1, class_names=["a"],
                        preprocessing={"resize": 32, "crop": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3,
                                       "interpolation": "bilinear", "channels": 3},
                        model_state_dict={"w": torch.zeros(1)})
    want = 0o666 & ~mask
    for path in (tmp_path / "x" / "index.csv", tmp_path / "x" / "index.json", tmp_path / "c.pt"):
        assert path.stat().st_mode & 0o777 == want, path
    assert load_checkpoint(tmp_path / "c.pt")["class_names"] == ["a"]


def test_info_shows_classes_and_si_units(run_cli):
    code, out, _ = run_cli("info", "r18")
    assert code == 0
    assert "1000 classes:" in out and "... and 900 more (--classes 0 shows all" in out
    assert "tench" in out and "toilet tissue" not in out
    assert re.search(r"\d\.\d GFLOPs / \d\.\d GMACs", out), out  # a space, SI prefixes, no "1.8GFLOPs"
    code, out, _ = run_cli("info", "r18", "--classes", "0")
    assert "toilet tissue" in out and "more (--classes" not in out


def test_stats_names_what_it_differentiated(run_cli, photo_files):
    image = str(photo_files["chelsea"])
    code, out, err = run_cli("stats", image, "--model", "r18", "--layer", "fc", "--target", "3")
    assert code == 0, err
    assert re.search(r"^logit of target 3 \(mean over images\) -?\d", out, re.M) and not re.search(r"^loss ", out, re.M)
    code, out, _ = run_cli("stats", image, "--model", "r18", "--layer", "fc", "--labels", "3")
    assert re.search(r"^cross-entropy loss \d", out, re.M)
    code, out, _ = run_cli("stats", "--json", image, "--model", "r18", "--layer", "fc")
    assert json.loads(out)["differentiated"] == "top-1 logit (mean over images)"


def test_methods_show_each_options_default(run_cli):
    code, out, _ = run_cli("methods", "integrated_gradients")
    assert code == 0 and "method's" not in out
    assert re.search(r"^steps\s+int\s+50\s", out, re.M) and re.search(r"^batch_size\s+int\s+32\s", out, re.M)
    _, out, _ = run_cli("methods", "is_cam")
    assert re.search(r"^steps\s+int\s+10\s", out, re.M)
    _, out, _ = run_cli("methods")
    assert "samples=25" in out.split("kernel_shap", 1)[1].splitlines()[0]


# ---------------------------------------------------------------- the server's own words

def test_resnet18_left_out_says_why_and_how(tmp_path, monkeypatch, caplog):
    from types import SimpleNamespace

    from netscope.cli.serve import default_models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    store = tmp_path / "store-is-a-file"
    store.write_text("")  # the demo cannot be trained here: default_models falls back at once
    with caplog.at_level(logging.WARNING, logger="netscope"):
        default_models(SimpleNamespace(store=str(store), allow_download=False))
    said = caplog.text
    assert "resnet18 is not served" in said and str(tmp_path / "torch" / "hub" / "checkpoints") in said
    assert "--allow-download" in said


@pytest.fixture(scope="module")
def small_cnn(client, store):
    """The demo's architecture and 32 px input, untrained, as a checkpoint in the store: loads in a second."""
    from netscope.server.models.registry import build_architecture
    from netscope.training.checkpoint import save_checkpoint

    save_checkpoint(store / "trips_cnn.pt", arch="simple_cnn", num_classes=10, class_names=list("0123456789"),
                    preprocessing={"resize": 0, "crop": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3,
                                   "interpolation": "bilinear", "channels": 3},
                    model_state_dict=build_architecture("simple_cnn", 10).state_dict())
    client.load_model("trips_cnn", "trips_cnn")
    yield "trips_cnn"
    client.unload_model("trips_cnn")


def test_cam_refusal_names_the_layer_that_works(client, small_cnn, photos):
    image = encode(photos["coffee"])
    with pytest.raises(NetscopeError) as exc:
        client.explain(small_cnn, image, method="cam")
    m = re.search(r"on this model cam works at layers='([\w.]+)'", exc.value.message)
    assert m, exc.value.message
    assert exc.value.metadata["cam_layer"] == m.group(1)
    [[cm]] = client.explain(small_cnn, image, method="cam", layers=[m.group(1)])
    assert np.isfinite(cm.heatmap).all() and cm.heatmap.shape[0] > 1


def test_small_inputs_overlays_are_enlarged_pixel_for_pixel(client, small_cnn, photos):
    [[cm]] = client.explain(small_cnn, encode(photos["coffee"]), overlay=True, heatmap_png=True)
    overlay = cv2.imdecode(np.frombuffer(cm.overlay_png, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (224, 224, 3)  # 32 px x 7
    small = overlay[::7, ::7]
    np.testing.assert_array_equal(overlay, np.repeat(np.repeat(small, 7, axis=0), 7, axis=1))
    assert cv2.imdecode(np.frombuffer(cm.heatmap_png, np.uint8), cv2.IMREAD_COLOR).shape == (224, 224, 3)


def test_untrained_vit_note_says_its_head_is_zero(run_cli):
    code, out, err = run_cli("load", "trips_vit", "vit_b_32", "--weights", "none")
    try:
        assert code == 0, err
        assert "head 'heads.head' is all zeros" in out
        _, out, _ = run_cli("info", "trips_vit")
        assert re.search(r"^note: .*all zeros.*load trained weights", out, re.M)
    finally:
        run_cli("unload", "trips_vit")


# ---------------------------------------------------------------- a job that is stopped

def test_a_killed_explain_says_how_far_and_how_to_resume(server, tmp_path, photos):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n in range(60):  # more work than the test waits for
        (folder / f"{n:03d}.png").write_bytes(encode(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8), ".png"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "netscope.cli", "explain", str(folder), "--model", "r18",
                             "--server", server.address, "--out", str(out), "--in-flight", "2",
                             "--method", "integrated_gradients", "--steps", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        index = out / "index.csv"
        if index.exists() and len(index.read_text().splitlines()) >= 2:  # a header and a row: under way
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 130, err
    m = re.search(r"interrupted: (\d+) of 60 done; rerun the same command to resume", err)
    assert m and 1 <= int(m.group(1)) < 60, err
