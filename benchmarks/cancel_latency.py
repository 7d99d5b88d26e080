"""How soon work stops after its caller goes, and how soon a loaded server stops.

    .venv/bin/python benchmarks/cancel_latency.py [--runs 5] [--grace 2]

1. "freed": a long integrated_gradients Explain on resnet18 (128x128, 1000
   steps, about 30 s on 2 cores) loses its caller (a 1.5 s deadline, or an
   explicit cancel after 1.5 s); then a small grad_cam on another model is
   sent. It can only run once the torch thread is free, so its latency is the
   time from the caller going to the torch thread being free (plus the
   grad_cam itself, ~10-60 ms, measured alone and printed beside it).
2. "shutdown": `netscope serve` with three such Explains in flight gets
   SIGTERM; seconds to exit (grace period included) and the exit code.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from netscope.client import Client
from netscope.server.app import ModelSpec, Server, ServerConfig
from netscope.v1 import inspector_pb2 as pb
from netscope.v1 import inspector_pb2_grpc as pb_grpc


def image(size: int, seed: int = 0) -> pb.Image:
    a = np.random.default_rng(seed).standard_normal((3, size, size)).astype(np.float32)
    return pb.Image(tensor=pb.Tensor(dtype=pb.FLOAT32, shape=[3, size, size], data=a.tobytes()))


LONG = pb.ExplainRequest(model="r18", method="integrated_gradients", images=[image(128)],
                         options=pb.ExplainOptions(steps=1000, batch_size=8))
SMALL = pb.ExplainRequest(model="mnv3", method="grad_cam", images=[image(64, 1)])


def small(stub) -> float:
    start = time.monotonic()
    stub.Explain(SMALL, timeout=600)
    return time.monotonic() - start


def freed(stub, how: str) -> float:
    if how == "deadline":
        try:
            stub.Explain(LONG, timeout=1.5)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc
    else:
        future = stub.Explain.future(LONG, timeout=600)
        time.sleep(1.5)
        future.cancel()
    return small(stub)


def shutdown(grace: float) -> tuple[float, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    script = Path(sys.executable).with_name("netscope")
    with tempfile.TemporaryDirectory() as store:
        proc = subprocess.Popen([str(script), "serve", "--address", address, "--model", "r18=resnet18", "--store",
                                 store, "--device", "cpu", "--grace", str(grace), "--log-level", "WARNING"])
        with Client(address, timeout=5) as c:
            c.wait_ready(timeout=180)
        channel = grpc.insecure_channel(address)
        calls = [pb_grpc.InspectorStub(channel).Explain.future(LONG, timeout=600) for _ in range(3)]
        time.sleep(1.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=600)
        took = time.monotonic() - sent
        assert all(f.exception() is not None for f in calls)
        channel.close()
    return took, code


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--grace", type=float, default=2.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as store:
        srv = Server(ServerConfig(address="127.0.0.1:0", store=store, device="cpu",
                                  models=[ModelSpec("r18", "resnet18"), ModelSpec("mnv3", "mobilenet_v3_small")])).start()
        channel = grpc.insecure_channel(srv.address)
        stub = pb_grpc.InspectorStub(channel)
        stub.Explain(pb.ExplainRequest(model="r18", method="integrated_gradients", images=[image(128)],
                                       options=pb.ExplainOptions(steps=8, batch_size=8)), timeout=600)
        alone = statistics.median(small(stub) for _ in range(5))
        print(f"grad_cam alone: median {alone * 1e3:.0f} ms")
        for how in ("deadline", "cancel"):
            times = [freed(stub, how) for _ in range(args.runs)]
            print(f"{how}: torch thread free after median {statistics.median(times):.2f} s "
                  f"(max {max(times):.2f} s, {args.runs} runs)")
        channel.close()
        srv.stop(grace=0)
    took, code = shutdown(args.grace)
    print(f"shutdown under load (3 long Explains, grace {args.grace:g} s): exit {code} after {took:.2f} s")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
