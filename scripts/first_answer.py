"""Seconds to an ExplainStream's first and last answers, with faithfulness
metrics, for the stream as it is and as it was before issue 16 §2 (answers
after a whole device batch of up to 32 is scored), in one run on one server:

    .venv/bin/python scripts/first_answer.py [--images 12] [--model resnet18|tiny] [--old-commit 13484bc]

The old pipeline is the file server/runtime/stream.py at --old-commit, loaded
beside the new one and swapped into the same server (same model, same
images, same metrics: the cheap default set). Figures for docs/PERFORMANCE.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from netscope.client import Client
from netscope.client.client import DEFAULT_METRICS
from netscope.server.app import ModelSpec, Server, ServerConfig
from netscope.v1 import inspector_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent


def old_stream_class(commit: str):
    source = subprocess.run(["git", "show", f"{commit}:server/runtime/stream.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "stream_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("netscope.server.runtime.stream_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.ExplainStream


def images(n: int) -> list[bytes]:
    import skimage.data

    photos = [skimage.data.chelsea(), skimage.data.astronaut(), skimage.data.coffee(), skimage.data.rocket()]
    return [cv2.imencode(".jpg", cv2.cvtColor(photos[i % len(photos)], cv2.COLOR_RGB2BGR))[1].tobytes()
            for i in range(n)]


def run(client: Client, model: str, data: list[bytes]) -> tuple[float, float]:
    def items():
        for n, encoded in enumerate(data):
            req = pb.ExplainRequest(model=model, method="grad_cam",
                                    options=pb.ExplainOptions(metrics=list(DEFAULT_METRICS)))
            req.images.add(encoded=encoded)
            yield pb.ExplainStreamRequest(id=str(n), request=req)

    started = time.monotonic()
    arrivals = [time.monotonic() - started for resp in client.stub.ExplainStream(items(), timeout=3600)
                if not resp.HasField("progress")]
    return arrivals[0], arrivals[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--old-commit", default="13484bc")
    args = ap.parse_args()
    store = tempfile.mkdtemp()
    config = ServerConfig(address="127.0.0.1:0", models=[ModelSpec("m", args.model)], store=store, device="cpu")
    server = Server(config).start()
    data = images(args.images)
    try:
        with Client(server.address, timeout=600) as client:
            client.wait_ready()
            new = server.service.stream
            old = old_stream_class(args.old_commit)(server.service, stream_batch=new.stream_batch)
            run(client, "m", data[:1])  # warm-up
            for name, stream in (("before", old), ("now", new)):
                server.service.stream = stream
                first, last = run(client, "m", data)
                print(f"{name:7s} {args.model} {args.images} images, grad_cam + {','.join(DEFAULT_METRICS)}: "
                      f"first answer {first:.1f} s, last {last:.1f} s", flush=True)
    finally:
        server.stop(grace=1)


if __name__ == "__main__":
    main()
