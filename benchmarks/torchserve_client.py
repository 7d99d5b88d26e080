"""The Python half of benchmarks/torchserve_vs_netscope.sh.

Runs in netscope's own environment (.venv). Two subcommands:

  prepare DIR   write the test JPEGs (from skimage.data) and a traced resnet18
                with exactly the weights `netscope serve --model r18=resnet18`
                builds (torchvision's init under netscope's seed), for TorchServe
  run ...       send the same JPEGs, one per request, to a TorchServe HTTP
                inference endpoint and to a netscope server, with the same
                callers and request counts, and print a side-by-side table

The timing loop and the percentiles are netscope's own (`netscope.cli.bench`
`drive` and `summarize`), so both servers are measured by the same code.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import sys
import threading
import time
from pathlib import Path

import grpc

from netscope.client import Client, NetscopeError
from netscope.cli.bench import BenchResult, drive, summarize
from netscope.v1 import inspector_pb2 as pb

IMAGES = ("chelsea", "astronaut", "coffee")  # skimage.data names, all RGB photographs
JPEG_QUALITY = 90


# ---------------------------------------------------------------- prepare

def prepare(out: Path) -> None:
    import cv2
    import skimage.data
    import torch

    from netscope.server.models.registry import build_architecture

    out.mkdir(parents=True, exist_ok=True)
    for name in IMAGES:
        rgb = getattr(skimage.data, name)()
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise SystemExit(f"could not encode {name} as JPEG")
        (out / f"{name}.jpg").write_bytes(buf.tobytes())
        print(f"wrote {out / f'{name}.jpg'} ({rgb.shape[1]}x{rgb.shape[0]}, {len(buf)} bytes)")
    # The same untrained weights netscope's registry gives "resnet18" with
    # weights "none" (seeded), so both servers run the same network.
    model = build_architecture("resnet18", 1000).eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(1, 3, 224, 224))
    traced.save(str(out / "r18.pt"))
    print(f"wrote {out / 'r18.pt'} (traced resnet18, netscope's seeded random weights)")


# ---------------------------------------------------------------- callers

_HTTP_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
               413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE,
               507: grpc.StatusCode.RESOURCE_EXHAUSTED}


class TorchServeCaller:
    """POSTs one JPEG per call to /predictions/MODEL over a kept-alive HTTP
    connection per thread. Failures raise NetscopeError (an HTTP status mapped
    to the nearest gRPC code) so `drive` counts them like netscope's."""

    def __init__(self, url: str, model: str, images: list[bytes], timeout: float = 120.0):
        hostport = url.split("://", 1)[-1].rstrip("/")
        self.host, _, port = hostport.rpartition(":")
        self.port = int(port)
        self.path = f"/predictions/{model}"
        self.images = images
        self.timeout = timeout
        self.turn = itertools.count()
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return conn

    def post(self, body: bytes) -> dict:
        conn = self._conn()
        try:
            conn.request("POST", self.path, body=body, headers={"Content-Type": "application/octet-stream"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self.local.conn = None
            raise NetscopeError(grpc.StatusCode.UNAVAILABLE, f"TorchServe: {exc}") from None
        if resp.status != 200:
            raise NetscopeError(_HTTP_CODES.get(resp.status, grpc.StatusCode.INTERNAL),
                                f"TorchServe HTTP {resp.status}: {data[:200]!r}")
        return json.loads(data)

    def __call__(self):
        self.post(self.images[next(self.turn) % len(self.images)])
        return None  # no server-side split from TorchServe

    def top1(self, image: bytes) -> int:
        scores = self.post(image)
        return int(max(scores, key=scores.get))


class NetscopeCaller:
    """One Predict (one JPEG, top-5, as TorchServe's handler answers) per call;
    returns the server's Timing so the split is reported too."""

    def __init__(self, client: Client, model: str, images: list[bytes]):
        self.client = client
        self.model = model
        self.images = [pb.Image(encoded=b) for b in images]
        self.turn = itertools.count()

    def predict(self, image: pb.Image) -> pb.PredictResponse:
        return self.client.call("Predict", pb.PredictRequest(model=self.model, images=[image], top_k=5))

    def __call__(self):
        return self.predict(self.images[next(self.turn) % len(self.images)]).timing

    def top1(self, image: bytes) -> int:
        return self.predict(pb.Image(encoded=image)).predictions[0].top_k[0].index


class InProcessCaller:
    """netscope's decode + preprocess + forward + top-5 on a local copy of the
    same model, with no server in between: the floor both servers add to."""

    def __init__(self, images: list[bytes]):
        import tempfile

        from netscope.server.rpc import convert
        from netscope.server.models import predict
        from netscope.server.imaging import DEFAULT_MAX_PIXELS
        from netscope.server.models.registry import Registry

        self.convert, self.predict, self.max_pixels = convert, predict, DEFAULT_MAX_PIXELS
        self.model = Registry(tempfile.mkdtemp(prefix="netscope-store-")).load("r18", "resnet18", weights="none",
                                                                               device="cpu", dtype="float32")
        self.images = [pb.Image(encoded=b) for b in images]
        self.turn = itertools.count()

    def __call__(self):
        image = self.images[next(self.turn) % len(self.images)]
        x = self.convert.images_to_batch([image], self.model.recipe, max_pixels=self.max_pixels, max_images=2)
        self.predict.predict(self.model, x, 5)


# ---------------------------------------------------------------- run

def measure(name: str, call, concurrency: int, requests: int, warmup: int, rounds_log: list) -> tuple:
    lat, secs, errs, timings = drive(call, concurrency=concurrency, duration=0.0, requests=requests, warmup=warmup)
    one = summarize(name, "predict", 1, concurrency, lat, secs, errs, timings)
    rounds_log.append({"target": name, "concurrency": concurrency, "p50_ms": one.latency_ms.get("p50"),
                       "images_per_s": one.images_per_s, "errors": dict(errs)})
    print(f"  {name:<10} c={concurrency}: p50 {one.latency_ms.get('p50', float('nan')):7.2f} ms, "
          f"{one.images_per_s:6.1f} img/s, {len(lat)} ok, errors {dict(errs) or '-'}", flush=True)
    return lat, secs, errs, timings


def pooled(name: str, concurrency: int, runs: list[tuple]) -> BenchResult:
    """One result from several rounds: all latencies together, images/s over
    the summed measuring time."""
    lat = [x for r in runs for x in r[0]]
    secs = sum(r[1] for r in runs)
    errs: dict = {}
    for r in runs:
        for k, v in r[2].items():
            errs[k] = errs.get(k, 0) + v
    timings = [t for r in runs for t in r[3]]
    return summarize(name, "predict", 1, concurrency, lat, secs, errs, timings)


def print_table(results: dict, concurrencies: list[int], reference: BenchResult | None) -> None:
    header = ["callers", "server", "requests", "p50 ms", "p90 ms", "p99 ms", "img/s", "errors"]
    rows = []
    for c in concurrencies:
        for name in ("torchserve", "netscope"):
            r = results[(name, c)]
            lat = r.latency_ms or {}
            rows.append([c, name, r.requests, f"{lat.get('p50', 0):.2f}", f"{lat.get('p90', 0):.2f}",
                         f"{lat.get('p99', 0):.2f}", f"{r.images_per_s:.1f}",
                         ", ".join(f"{k}={v}" for k, v in r.errors.items()) or "-"])
    if reference is not None:
        lat = reference.latency_ms
        rows.append([reference.concurrency, "in-process", reference.requests, f"{lat['p50']:.2f}",
                     f"{lat['p90']:.2f}", f"{lat['p99']:.2f}", f"{reference.images_per_s:.1f}", "-"])
    cells = [header] + [[str(x) for x in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(x.rjust(w) if i not in (1, 7) else x.ljust(w) for i, (x, w) in enumerate(zip(row, widths))).rstrip())
    print()
    for c in concurrencies:
        ts, ns = results[("torchserve", c)], results[("netscope", c)]
        if ts.latency_ms and ns.latency_ms:
            print(f"{c} caller(s): netscope/TorchServe p50 {ns.latency_ms['p50'] / ts.latency_ms['p50']:.3f}x, "
                  f"p99 {ns.latency_ms['p99'] / ts.latency_ms['p99']:.3f}x, "
                  f"images/s {ns.images_per_s / ts.images_per_s:.3f}x")
    if reference is not None:
        for name in ("torchserve", "netscope"):
            r = results.get((name, reference.concurrency))
            if r is not None and r.latency_ms:
                print(f"{reference.concurrency} caller(s): {name} p50 / in-process p50 "
                      f"{r.latency_ms['p50'] / reference.latency_ms['p50']:.3f}x")
    for c in concurrencies:
        split = results[("netscope", c)].server_ms
        if split:
            print(f"netscope server time per request at {c} caller(s) (ms): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in split.items() if k != "device_batch_size"))


def run(args) -> int:
    images = [Path(p).read_bytes() for p in args.images]
    ts = TorchServeCaller(args.torchserve, args.ts_model, images)
    client = Client(args.netscope, timeout=120)
    try:
        client.wait_ready(timeout=120)
        ns = NetscopeCaller(client, args.model, images)
        # Same network on both sides? Top-1 of each image (random weights, so
        # a near tie can flip under the two different resize implementations).
        agree = [ts.top1(b) == ns.top1(b) for b in images]
        print(f"top-1 agreement between the two servers: {sum(agree)} of {len(images)} images")
        callers = {"torchserve": ts, "netscope": ns}
        results, rounds_log = {}, []
        for c in args.concurrency:
            runs = {name: [] for name in callers}
            for r in range(args.rounds):
                # Alternate who goes first, so drift in the machine's load
                # lands on both sides alike.
                order = ["torchserve", "netscope"] if r % 2 == 0 else ["netscope", "torchserve"]
                print(f"round {r + 1}/{args.rounds}, {c} caller(s):", flush=True)
                for name in order:
                    runs[name].append(measure(name, callers[name], c, args.requests, args.warmup, rounds_log))
            for name in callers:
                results[(name, c)] = pooled(name, c, runs[name])
        reference = None
        if args.in_process:
            print("in-process reference (netscope decode + preprocess + forward, no server), 1 caller:", flush=True)
            call = InProcessCaller(images)
            reference = pooled("in-process", 1, [measure("in-process", call, 1, args.requests, args.warmup,
                                                         rounds_log)])
    finally:
        client.close()
    print()
    print(f"resnet18, batch 1, one JPEG per request ({', '.join(Path(p).name for p in args.images)} in turn), "
          f"{args.requests} requests x {args.rounds} round(s) per row after {args.warmup} warm-up")
    print_table(results, args.concurrency, reference)
    if args.json:
        out = {"results": [vars(r) for r in results.values()] + ([vars(reference)] if reference else []),
               "rounds": rounds_log, "top1_agreement": sum(agree), "images": [str(p) for p in args.images],
               "requests": args.requests, "warmup": args.warmup, "rounds_per_row": args.rounds,
               "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"\nwrote {args.json}")
    failed = sum(sum(r.errors.values()) for r in results.values())
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the JPEGs and the traced model")
    p.add_argument("dir", type=Path)
    p = sub.add_parser("run", help="measure both servers side by side")
    p.add_argument("--torchserve", required=True, help="TorchServe inference address, http://127.0.0.1:PORT")
    p.add_argument("--ts-model", default="r18", help="model name in TorchServe")
    p.add_argument("--netscope", required=True, help="netscope address, 127.0.0.1:PORT")
    p.add_argument("--model", default="r18", help="model id in netscope")
    p.add_argument("--images", nargs="+", required=True, help="JPEG files, sent one per request in turn")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    p.add_argument("--requests", type=int, default=200, help="measured requests per server, caller count and round")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2, help="rounds per caller count, alternating who goes first")
    p.add_argument("--in-process", action="store_true", help="also measure the work in-process, 1 caller")
    p.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.dir)
        return 0
    if any(not (a.startswith("127.") or a.startswith("localhost") or "//127." in a or "//localhost" in a)
           for a in (args.torchserve, args.netscope)):
        raise SystemExit("only loopback addresses (127.0.0.0/8, localhost) are measured")
    if args.requests <= 0:
        raise SystemExit("--requests must be a positive count")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
