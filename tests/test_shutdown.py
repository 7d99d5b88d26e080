"""Shutdown is prompt: `netscope serve` under load, SIGTERM, exit 0 within
the grace period and a few seconds (server/app.py, server/runtime/cancel.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from netscope.client import Client
from netscope.v1 import inspector_pb2 as pb
from netscope.v1 import inspector_pb2_grpc as pb_grpc

from .test_cli import free_port, netscope_command

GRACE_S = 2.0
SLACK_S = 8.0  # "a few seconds": on a loaded 2-core machine, generous


def long_explain(seed: int) -> pb.ExplainRequest:
    a = np.random.default_rng(seed).standard_normal((3, 128, 128)).astype(np.float32)
    image = pb.Image(tensor=pb.Tensor(dtype=pb.FLOAT32, shape=[3, 128, 128], data=a.tobytes()))
    # About 30 s each on 2 cores: far beyond the grace period.
    return pb.ExplainRequest(model="r18", method="integrated_gradients", images=[image],
                             options=pb.ExplainOptions(steps=1000, batch_size=8))


def test_sigterm_under_load_drains_cancels_and_exits_0_promptly(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "serve.log"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log, "w") as out:
        proc = subprocess.Popen(netscope_command() + [
            "serve", "--address", address, "--model", "r18=resnet18", "--store", str(tmp_path), "--device", "cpu",
            "--grace", str(GRACE_S)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        with Client(address, timeout=5) as c:
            c.wait_ready(timeout=180)
        channel = grpc.insecure_channel(address)
        stub = pb_grpc.InspectorStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        seen: list[int] = []

        def watch():
            try:
                for r in health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120):
                    seen.append(r.status)
            except grpc.RpcError:
                pass

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        calls = [stub.Explain.future(long_explain(i), timeout=300) for i in range(3)]  # one runs, two queue
        time.sleep(1.5)
        assert not any(f.done() for f in calls)
        assert seen and seen[-1] == health_pb2.HealthCheckResponse.SERVING

        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=GRACE_S + 60)
        took = time.monotonic() - sent
        text = log.read_text()
        assert code == 0, text
        assert took < GRACE_S + SLACK_S, f"exited {took:.1f} s after SIGTERM (grace {GRACE_S} s)\n{text}"
        watcher.join(10)
        assert health_pb2.HealthCheckResponse.NOT_SERVING in seen, seen
        for f in calls:  # cut off after the grace period, never OK
            assert f.exception(timeout=10) is not None
            assert f.exception().code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        try:
            stub.Predict(pb.PredictRequest(model="r18", images=[pb.Image(encoded=b"x")]), timeout=5)
            raise AssertionError("a call after shutdown was answered")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
        assert "stopped in" in text and "exiting with threads still running" not in text, text
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_stop_of_an_idle_server_is_immediate(store):
    """No calls in flight: stop does not wait out the grace period."""
    from netscope.server.app import Server, ServerConfig

    srv = Server(ServerConfig(address="127.0.0.1:0", store=str(store), device="cpu", grace_s=30)).start()
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 5
