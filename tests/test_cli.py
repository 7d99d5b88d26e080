"""The `netscope` command against a real server, and `netscope serve` as a process."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netscope.client import Client


def test_predict_table_and_json(run_cli, client, photo_files):
    paths = [str(photo_files["chelsea"]), str(photo_files["coffee"])]
    code, out, err = run_cli("predict", "--model", "r18", *paths, "-k", "3")
    assert code == 0, err
    assert "probability" in out and paths[0] in out and paths[1] in out
    code, out, _ = run_cli("predict", "--json", "--model", "r18", *paths, "-k", "3")
    rows = json.loads(out)
    expected = client.predict("r18", [Path(p) for p in paths], k=3)
    assert [r["image"] for r in rows] == paths
    for row, pred in zip(rows, expected):
        assert [s["index"] for s in row["top_k"]] == [s.index for s in pred.top_k]
        assert [s["probability"] for s in row["top_k"]] == pytest.approx([s.probability for s in pred.top_k])


def test_models_and_info(run_cli):
    code, out, _ = run_cli("models", "--json")
    assert code == 0 and {"r18", "mnv3"} <= {m["model"] for m in json.loads(out)["models"]}
    code, out, _ = run_cli("info", "r18")
    assert code == 0 and "layer4" in out and "FLOPs" in out and "untrained" in out
    code, out, _ = run_cli("info", "r18", "--json")
    assert json.loads(out)["arch"] == "resnet18"


def test_load_and_unload(run_cli):
    code, out, err = run_cli("load", "tmpsq", "squeezenet1_1", "--max-batch-size", "4", "--max-delay-ms", "2")
    assert code == 0, err
    assert "loaded tmpsq" in out
    code, out, _ = run_cli("unload", "tmpsq")
    assert code == 0 and "unloaded" in out


def test_errors_are_one_readable_line_and_exit_1(run_cli, photo_files):
    code, out, err = run_cli("predict", "--model", "nope", str(photo_files["chelsea"]))
    assert code == 1 and err.startswith("netscope predict: NOT_FOUND:") and "Traceback" not in err
    code, _, err = run_cli("predict", "--model", "r18", "/no/such/file.jpg")
    assert code == 1 and "No such file" in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def netscope_command() -> list[str]:
    script = Path(sys.executable).with_name("netscope")
    return [str(script)] if script.exists() else [sys.executable, "-m", "netscope.client.cli"]


def test_serve_process_preloads_and_stops_gracefully_on_sigterm(tmp_path, photo_files):
    port = free_port()
    config = tmp_path / "netscope.toml"
    config.write_text(f'address = "127.0.0.1:{port}"\nstore = "{tmp_path}"\nworkers = 4\n'
                      '[[models]]\nid = "sq"\nsource = "squeezenet1_1"\ndevice = "cpu"\n')
    proc = subprocess.Popen(netscope_command() + ["serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with Client(f"127.0.0.1:{port}", timeout=10) as c:
            c.wait_ready(timeout=120)
            assert [m.model for m in c.list_models()] == ["sq"]
            assert c.predict("sq", photo_files["rocket"], k=1)[0].top1.label
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        log = proc.stdout.read()
        assert "SIGTERM" in log and "stopped" in log
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_rejects_a_bad_model_flag():
    proc = subprocess.run(netscope_command() + ["serve", "--model", "justaname"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "id=source" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_reports_in_process_and_service(run_cli, photo_files):
    code, out, err = run_cli("bench", "--model", "mnv3", "--requests", "4", "--warmup", "1", "--concurrency", "2",
                             "--input", str(photo_files["chelsea"]), "--in-process", "--json")
    assert code == 0, err
    local, remote = json.loads(out)
    assert local["target"] == "in-process" and remote["requests"] == 4 and not remote["errors"]
    assert remote["latency_ms"]["p50"] > 0 and remote["server_ms"]["compute"] > 0
    code, out, _ = run_cli("bench", "--model", "mnv3", "--requests", "2", "--warmup", "0", "--in-process")
    assert code == 0 and "service / in-process p50" in out
    code, _, err = run_cli("bench", "--model", "nope", "--requests", "1")
    assert code == 1 and "NOT_FOUND" in err
