"""The `netscope` command: run a server, or talk to one."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from .client import DEFAULT_SERVER, Client, NetscopeError


# ---------------------------------------------------------------- output helpers

def print_table(rows: list[list], header: list[str]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def print_json(obj) -> None:
    def default(o):
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        if hasattr(o, "tolist"):
            return o.tolist()
        raise TypeError(type(o).__name__)

    print(json.dumps(obj, default=default, indent=2))


def human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.1f}{unit}" if unit else f"{int(n)}"
        n /= 1000
    return f"{n:.1f}P"


# ---------------------------------------------------------------- serve

def add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run the gRPC server",
                       description="Run the netscope server. With no --model, serves the embedded default model.")
    p.add_argument("--config", type=Path, help="TOML file with any of the options below, and [[models]] tables")
    p.add_argument("--address", help="host:port to listen on (default 127.0.0.1:50051)")
    p.add_argument("--model", action="append", default=None, metavar="ID=SOURCE[:WEIGHTS]",
                   help="preload a model: an architecture (r18=resnet18:DEFAULT) or a checkpoint in the store (demo=demo)")
    p.add_argument("--store", help="model store directory (default ./models)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--dtype", help="float32, float16 or bfloat16 (default float32)")
    p.add_argument("--workers", type=int, help="RPC worker threads (default 16)")
    p.add_argument("--max-message-mb", type=int, help="largest request/response in MiB (default 64)")
    p.add_argument("--max-pixels", type=int, help="largest decoded image in pixels")
    p.add_argument("--max-batch", type=int, help="most images in one request (default 256)")
    p.add_argument("--allow-download", action="store_true", default=None,
                   help="let LoadModel download pretrained weights that are not in the local torch cache")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this HTTP port")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(run=cmd_serve)


def server_config(args):
    from netscope.server.app import ModelSpec, ServerConfig

    values: dict = {}
    if args.config:
        import tomllib

        try:
            values = tomllib.loads(args.config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"netscope serve: cannot read {args.config}: {exc}")
    models = [ModelSpec(**m) for m in values.pop("models", [])]
    known = {f.name for f in dataclasses.fields(ServerConfig)}
    unknown = set(values) - known
    if unknown:
        raise SystemExit(f"netscope serve: unknown option(s) in {args.config}: {', '.join(sorted(unknown))}")
    for name in known - {"models"}:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
    if args.model:
        try:
            models = [ModelSpec.parse(m) for m in args.model]
        except ValueError as exc:
            raise SystemExit(f"netscope serve: {exc}")
    config = ServerConfig(**values)
    config.models = models or default_models(config)
    return config


def default_models(config) -> list:
    """The embedded default: resnet18 with ImageNet weights if they are in the
    local torch cache, else untrained (the server says so in its log and info)."""
    import torchvision

    from netscope.server.app import ModelSpec
    from netscope.server.registry import weights_cache_path

    cached = weights_cache_path(torchvision.models.ResNet18_Weights.DEFAULT).exists()
    return [ModelSpec("resnet18", "resnet18", "DEFAULT" if cached else "none")]


def cmd_serve(args) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from netscope.server.app import serve

    return serve(server_config(args))


# ---------------------------------------------------------------- models

def cmd_models(args) -> int:
    with Client(args.server, timeout=args.timeout) as c:
        models = c.list_models()
        ckpts = c.checkpoints()
    if args.json:
        print_json({"models": models, "checkpoints": ckpts})
        return 0
    if models:
        print_table([[m.model, m.arch, m.source, m.device, m.dtype, m.num_classes, "yes" if m.pretrained else "no"]
                     for m in models], ["model", "arch", "source", "device", "dtype", "classes", "trained"])
    else:
        print("no models loaded")
    if ckpts:
        print("\ncheckpoints in the store: " + ", ".join(ckpts))
    return 0


def cmd_info(args) -> int:
    with Client(args.server, timeout=args.timeout) as c:
        info = c.model_info(args.model, args.input_size or ())
    if args.json:
        print_json(info)
        return 0
    print(f"{info.model}: {info.arch} from {info.source} ({info.weights}) on {info.device} as {info.dtype}")
    if info.note:
        print(f"note: {info.note}")
    p = info.preprocessing
    print(f"input {info.input_size}; resize {p['resize']}, crop {p['crop']}, "
          f"mean {[round(m, 4) for m in p['mean']]}, std {[round(s, 4) for s in p['std']]}")
    print(f"{len(info.class_names)} classes: {', '.join(info.class_names[:8])}{' ...' if len(info.class_names) > 8 else ''}")
    print(f"parameters {info.num_parameters:,} ({info.trainable_parameters:,} trainable), "
          f"{human(info.flops)}FLOPs / {human(info.mult_adds)} mult-adds per image\n")
    layers = info.layers if args.all else [l for l in info.layers if l.is_leaf or l.depth == 1]
    print_table([["  " * (l.depth - 1) + l.name, l.type, l.input_shape, l.output_shape, f"{l.num_parameters:,}",
                  human(l.mult_adds), "cam" if l.cam_target else ""] for l in layers],
                ["layer", "type", "input", "output", "params", "mult-adds", ""])
    return 0


def cmd_load(args) -> int:
    with Client(args.server, timeout=args.timeout) as c:
        info = c.load_model(args.model, args.source, weights=args.weights, device=args.device, dtype=args.dtype,
                            arch=args.arch, num_classes=args.num_classes)
    if args.json:
        print_json(info)
    else:
        print(f"loaded {info.model}: {info.arch} ({info.weights}) on {info.device} as {info.dtype}"
              + (f" — {info.note}" if info.note else ""))
    return 0


def cmd_unload(args) -> int:
    with Client(args.server, timeout=args.timeout) as c:
        c.unload_model(args.model)
    if not args.json:
        print(f"unloaded {args.model}")
    return 0


def cmd_predict(args) -> int:
    with Client(args.server, timeout=args.timeout) as c:
        preds = c.predict(args.model, [Path(p) for p in args.images], k=args.k)
    if args.json:
        print_json([{"image": img, "top_k": p.top_k} for img, p in zip(args.images, preds)])
        return 0
    rows = []
    for img, p in zip(args.images, preds):
        for rank, s in enumerate(p.top_k, 1):
            rows.append([img if rank == 1 else "", rank, s.index, s.label, f"{s.probability:.4f}", f"{s.logit:.3f}"])
    print_table(rows, ["image", "rank", "class", "label", "probability", "logit"])
    return 0


def cmd_bench(args) -> int:
    from . import bench

    servers = args.servers or [args.server]
    results = bench.run(servers, args.model, rpc=args.rpc, method=args.method, batch=args.batch,
                        concurrency=args.concurrency, duration=args.duration, requests=args.requests,
                        inputs=args.input, warmup=args.warmup, in_process=args.in_process, source=args.source,
                        store=args.store)
    if args.json:
        print_json(results)
        return 0
    rows = []
    for r in results:
        lat = r.latency_ms or {}
        rows.append([r.target, r.requests, f"{lat.get('p50', 0):.2f}", f"{lat.get('p90', 0):.2f}",
                     f"{lat.get('p99', 0):.2f}", f"{lat.get('max', 0):.2f}", f"{r.requests_per_s:.1f}",
                     f"{r.images_per_s:.1f}", ", ".join(f"{k}={v}" for k, v in r.errors.items()) or "-"])
    print(f"{args.rpc} on {args.model}: batch {args.batch}, {args.concurrency} caller(s)")
    print_table(rows, ["target", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms", "req/s", "img/s", "errors"])
    for r in results:
        if r.server_ms:
            split = ", ".join(f"{k} {v:.2f}" for k, v in r.server_ms.items() if k != "device_batch_size")
            print(f"server time per request (ms): {split}; mean device batch {r.server_ms['device_batch_size']:.1f}")
    if len(results) == 2 and results[0].latency_ms and results[1].latency_ms:
        print(f"service / in-process p50: {results[1].latency_ms['p50'] / results[0].latency_ms['p50']:.3f}x")
    return 0


# ---------------------------------------------------------------- main

def client_parser(sub, name: str, help: str, run, **kw) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, **kw)
    p.add_argument("--server", default=DEFAULT_SERVER, help=f"host:port of the server (default {DEFAULT_SERVER}, or $NETSCOPE_SERVER)")
    p.add_argument("--timeout", type=float, default=120.0, help="deadline per call in seconds")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netscope", description="Look inside torchvision image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve(sub)
    client_parser(sub, "models", "list loaded models and the store's checkpoints", cmd_models)
    p = client_parser(sub, "info", "a model's details and layer table", cmd_info)
    p.add_argument("model")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="shapes for this input size")
    p.add_argument("--all", action="store_true", help="every module, not only leaves and top-level blocks")
    p = client_parser(sub, "load", "load a model into the server", cmd_load)
    p.add_argument("model", help="the id to serve it under")
    p.add_argument("source", help="an architecture (resnet18) or a checkpoint name in the store")
    p.add_argument("--weights", default="", help="none, DEFAULT or a weights enum name")
    p.add_argument("--device", default="")
    p.add_argument("--dtype", default="")
    p.add_argument("--arch", default="", help="architecture of a plain state_dict checkpoint")
    p.add_argument("--num-classes", type=int, default=0)
    p = client_parser(sub, "unload", "unload a model", cmd_unload)
    p.add_argument("model")
    p = client_parser(sub, "predict", "top-k classes of images", cmd_predict)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True)
    p.add_argument("-k", type=int, default=0, help="how many classes per image (default 5)")
    p = client_parser(sub, "bench", "measure latency and throughput", cmd_bench)
    p.add_argument("--model", required=True)
    p.add_argument("--rpc", choices=["predict", "explain"], default="predict")
    p.add_argument("--method", default="grad_cam", help="explanation method for --rpc explain")
    p.add_argument("--batch", type=int, default=1, help="images per request")
    p.add_argument("--concurrency", type=int, default=1, help="concurrent callers")
    p.add_argument("--duration", type=float, default=10.0, help="seconds to run (unless --requests)")
    p.add_argument("--requests", type=int, default=0, help="run exactly this many requests")
    p.add_argument("--warmup", type=int, default=5, help="requests before measuring")
    p.add_argument("--input", nargs="*", default=["random"], help="image files, or `random` (default)")
    p.add_argument("--in-process", action="store_true",
                   help="also run the same decode + preprocess + forward in this process, and print the ratio")
    p.add_argument("--source", default="", help="model source for --in-process (default: the server's)")
    p.add_argument("--store", default="models", help="model store for --in-process checkpoints")
    p.add_argument("--target", dest="servers", action="append", metavar="HOST:PORT",
                   help="a server of a fleet (repeatable; callers rotate over them)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except NetscopeError as exc:
        print(f"netscope {args.command}: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"netscope {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
