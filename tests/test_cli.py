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
    # SOURCE:WEIGHTS, the way `serve --model ID=SOURCE:WEIGHTS` spells it, works for load too
    code, out, err = run_cli("load", "tmpsq2", "squeezenet1_1:none")
    assert code == 0 and "loaded tmpsq2: squeezenet1_1 (none)" in out, err
    assert run_cli("unload", "tmpsq2")[0] == 0


def test_errors_are_one_readable_line_and_exit_1(run_cli, photo_files):
    code, out, err = run_cli("predict", "--model", "nope", str(photo_files["chelsea"]))
    assert code == 1 and err.startswith("netscope predict: NOT_FOUND:") and "Traceback" not in err
    code, _, err = run_cli("predict", "--model", "r18", "/no/such/file.jpg")  # a usage error, before any request
    assert code == 2 and "IMAGE /no/such/file.jpg: no such file" in err and "(/no does not exist)" in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def netscope_command() -> list[str]:
    script = Path(sys.executable).with_name("netscope")
    return [str(script)] if script.exists() else [sys.executable, "-m", "netscope.cli"]


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


def test_bench_in_process_runs_the_same_explanation(run_cli, photo_files):
    args = ["bench", "--model", "mnv3", "--rpc", "explain", "--requests", "2", "--warmup", "0", "--in-process",
            "--input", str(photo_files["chelsea"]), "--json"]
    code, out, err = run_cli(*args, "--method", "eigen_cam")
    assert code == 0, err
    local, remote = json.loads(out)
    assert local["method"] == remote["method"] == "eigen_cam"
    assert not local["errors"] and local["server_ms"]["compute"] > 0 and local["server_ms"]["device_batch_size"] == 1
    # A method only an explanation can refuse: both ways refuse it the same way.
    code, out, err = run_cli(*args, "--method", "no_such_method")
    assert code == 0, err
    local, remote = json.loads(out)
    assert local["errors"] == remote["errors"] == {"INVALID_ARGUMENT": 2}
    # Options travel both ways: a valid one is used, an out-of-range one refused by both.
    code, out, err = run_cli(*args, "--method", "kpca_cam", "--option", "kpca_kernel=rbf")
    local, remote = json.loads(out)
    assert code == 0 and not local["errors"] and not remote["errors"], err
    assert local["options"] == remote["options"] == {"kpca_kernel": "rbf"}
    code, out, err = run_cli(*args, "--method", "kpca_cam", "--option", "kpca_gamma=-1")
    local, remote = json.loads(out)
    assert local["errors"] == remote["errors"] == {"INVALID_ARGUMENT": 2}


def test_bench_in_process_images_per_request_device_and_dtype(run_cli, client, photo_files):
    client.load_model("mnv3bench", "mobilenet_v3_small", max_batch_size=4, max_delay_ms=100)
    try:
        code, out, err = run_cli("bench", "--model", "mnv3bench", "--requests", "8", "--warmup", "0",
                                 "--concurrency", "4", "--in-process", "--in-process-images-per-request", "4",
                                 "--in-process-concurrency", "1", "--dtype", "bfloat16", "--device", "cpu",
                                 "--input", str(photo_files["chelsea"]), "--json")
        assert code == 0, err
        local, remote = json.loads(out)
        assert (local["images_per_request"], local["concurrency"], local["requests"]) == (4, 1, 8)
        assert local["server_ms"]["device_batch_size"] == 4  # one caller's 4 images are a full device batch
        assert local["model"]["dtype"] == "bfloat16" and remote["model"]["dtype"] == "float32"
        assert local["model"]["batching"]["max_batch_size"] == 4  # otherwise loaded as the server's
        assert (remote["images_per_request"], remote["concurrency"]) == (1, 4) and not remote["errors"]
        # The old name still works for one release, with a warning naming the new one.
        code, out, err = run_cli("bench", "--model", "mnv3bench", "--requests", "4", "--warmup", "0", "--concurrency",
                                 "4", "--in-process", "--in-process-batch", "4", "--in-process-concurrency", "1")
        assert code == 0 and "service / in-process images/s" in out and "p50:" not in out
        assert "--in-process-batch is deprecated" in err and "use --in-process-images-per-request" in err
        assert "images/req" in out
    finally:
        client.unload_model("mnv3bench")
    code, _, err = run_cli("bench", "--model", "mnv3", "--images-per-request", "0")
    assert code == 2 and "--images-per-request must be >= 1" in err
    code, _, err = run_cli("bench", "--model", "mnv3", "--batch", "0")  # not taken for --batch-size (an option)
    assert code == 2 and "--batch is deprecated" in err and "--images-per-request must be >= 1" in err


def test_load_fast_path_flags_and_bad_values(run_cli, monkeypatch):
    from netscope.server.models.compiled import BACKEND_ENV

    monkeypatch.setenv(BACKEND_ENV, "aot_eager")  # the loading path, not inductor's compile time
    code, out, err = run_cli("load", "fastcnn", "simple_cnn", "--compile", "default", "--compile-batch-sizes", "1",
                             "2", "--device-decode", "--no-pin-memory", "--max-batch-size", "2", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert (info["compile"], info["compile_batch_sizes"], info["device_decode"], info["pin_memory"]) == \
        ("default", [1, 2], True, False)
    assert info["batching"]["max_batch_size"] == 2
    code, out, _ = run_cli("unload", "fastcnn")
    assert code == 0
    for flags, words in [(["--compile", "turbo"], "unknown compile mode"),
                         (["--max-batch-size", "-1"], "max_batch_size must be"),
                         (["--max-delay-ms", "-5"], "max_delay_ms must be"),
                         (["--max-delay-ms", "nan"], "max_delay_ms must be"),
                         (["--max-queue", "-1"], "max_queue must be")]:
        code, _, err = run_cli("load", "badcnn", "simple_cnn", *flags)
        assert code == 1 and "INVALID_ARGUMENT" in err and words in err, (flags, err)


def serve_args(*argv):
    from netscope import cli

    return cli.serve.server_config(cli.build_parser().parse_args(["serve", *argv]))


def test_serve_flags_and_toml_keys_for_the_fast_path(tmp_path):
    config = serve_args("--model", "a=resnet18", "--model", "b=simple_cnn", "--compile", "reduce-overhead",
                        "--compile-batch-sizes", "1", "8", "--device-decode", "--no-pin-memory", "--max-batch-size",
                        "8", "--max-delay-ms", "2", "--decode-threads", "3", "--channels-last")
    assert config.decode_threads == 3
    for spec in config.models:
        o = spec.options.flat()  # ModelSpec holds one ModelOptions; its flat names are the flags' and TOML keys
        assert (o["compile"], o["compile_batch_sizes"], o["device_decode"], o["pin_memory"]) == \
            ("reduce-overhead", (1, 8), True, False)
        assert (o["max_batch_size"], o["max_delay_ms"], o["channels_last"]) == (8, 2.0, True)
    toml = tmp_path / "serve.toml"
    toml.write_text('decode_threads = 1\n[[models]]\nid = "a"\nsource = "resnet18"\ncompile = "default"\n'
                    'device_decode = true\n[[models]]\nid = "b"\nsource = "resnet18"\n')
    a, b = (m.options for m in serve_args("--config", str(toml), "--compile", "max-autotune").models)
    assert (a.compile, a.device_decode, a.pin_memory) == ("default", True, True)  # its table wins
    assert (b.compile, b.device_decode) == ("max-autotune", False)  # the flag fills what the table leaves
    toml.write_text('[[models]]\nid = "a"\nsource = "resnet18"\ncompile_mode = "default"\n')
    with pytest.raises(SystemExit, match="unknown key.*compile_mode.*known:"):
        serve_args("--config", str(toml))
    with pytest.raises(SystemExit, match="--decode-threads must be >= 0"):
        serve_args("--model", "a=resnet18", "--decode-threads", "-1")


def test_serve_refuses_a_bad_startup_option_with_a_reason(tmp_path):
    port = free_port()
    toml = tmp_path / "serve.toml"
    toml.write_text(f'address = "127.0.0.1:{port}"\nstore = "{tmp_path}"\n'
                    '[[models]]\nid = "sq"\nsource = "squeezenet1_1"\ndevice = "cpu"\ncompile = "fastest"\n')
    proc = subprocess.run(netscope_command() + ["serve", "--config", str(toml)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "unknown compile mode 'fastest'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("key, value, words", [("compile", "5", "compile must be a mode name"),
                                               ("compile_batch_sizes", '"8"', "compile_batch_sizes must be a list"),
                                               ("max_batch_size", '"8"', "max_batch_size must be a number")])
def test_a_startup_model_option_of_the_wrong_type_is_refused_by_name(store, key, value, words):
    import tomllib

    from netscope.server.app import ModelSpec, Server, ServerConfig
    from netscope.server.errors import InvalidArgument

    table = tomllib.loads(f'id = "sq"\nsource = "squeezenet1_1"\n{key} = {value}\n')
    srv = Server(ServerConfig(address="127.0.0.1:0", models=[ModelSpec(**table)], store=str(store), device="cpu",
                              workers=2))
    try:
        with pytest.raises(InvalidArgument, match=words):
            srv.start()
    finally:
        srv.stop(grace=0)


def test_bench_in_process_that_cannot_load_the_model_is_a_usage_error(run_cli, photo_files, tmp_path):
    # A checkpoint the server has but --store does not: the server's error and the flag to change, no traceback.
    code, out, err = run_cli("bench", "--model", "r18", "--in-process", "--source", "not_in_this_store",
                             "--store", str(tmp_path), "--input", str(photo_files["chelsea"]), "--requests", "1")
    assert code == 2, err
    assert "--in-process could not load 'not_in_this_store'" in err and "--store" in err
    assert "Traceback" not in err
