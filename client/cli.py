"""The `netscope` command: run a server, or talk to one."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from .client import DEFAULT_SERVER, Client, NetscopeError
from . import discovery_commands
from .connection import ConnectionSettingsError
from .out_folder import OutPathError, file_part, out_folder
from .option_flags import add_option_flags, chosen_options


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
    p.add_argument("--workers", type=int, help="RPC worker threads (default 16)")
    p.add_argument("--max-message-mb", type=int, help="largest request/response in MiB (default 64)")
    p.add_argument("--max-pixels", type=int, help="largest decoded image in pixels")
    p.add_argument("--max-batch", type=int, help="most images in one request (default 256)")
    p.add_argument("--stream-batch", type=int, help="most images per device batch on ExplainStream (default 32)")
    p.add_argument("--allow-download", action="store_true", default=None,
                   help="let LoadModel download pretrained weights that are not in the local torch cache")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this HTTP port")
    p.add_argument("--grace", dest="grace_s", type=float, metavar="SECONDS",
                   help="on SIGTERM/SIGINT, let in-flight calls finish for this long, then cancel the rest (default 30)")
    p.add_argument("--decode-threads", type=int,
                   help="threads that decode and preprocess a request's images in parallel (1: serially; "
                        "default min(8, cores))")
    p.add_argument("--explain-limit", action="append", type=explain_limit, metavar="NAME=N",
                   help="raise or lower one ceiling on explanations (repeatable): batch_size (256), steps (1024), "
                        "samples (1000), nt_samples (200), finer_classes (100), top_k (100), faithfulness_maps (64), "
                        "memory_mb (4096, the predicted working memory of one request)")
    add_model_options(p.add_argument_group(
        "model options", "how every model loaded at startup is served, unless its [[models]] table sets the key "
                         "(--device and --dtype are also the defaults of models loaded later)"))
    g = p.add_argument_group("security", "who may call what; a non-loopback --address needs TLS, tokens or --insecure")
    g.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve TLS (with --tls-key)")
    g.add_argument("--tls-key", metavar="FILE", help="PEM private key (unencrypted) of --tls-cert")
    g.add_argument("--tls-client-ca", metavar="FILE",
                   help="PEM CA: mutual TLS, clients must present a certificate it signed")
    g.add_argument("--auth-tokens", metavar="FILE",
                   help="bearer tokens, one `TOKEN ROLE` a line (role read: every RPC but LoadModel/UnloadModel; "
                        "admin: all); calls without a known token get UNAUTHENTICATED")
    g.add_argument("--open-reflection", action="store_true", default=None,
                   help="server reflection without a token (health is always open)")
    g.add_argument("--insecure", action="store_true", default=None,
                   help="allow a non-loopback --address with neither TLS nor tokens")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(run=cmd_serve)


# How a model is served (server/models/model_options.py): one flag per option, shared by `serve` and `load`;
# the dests are the options' flat names (the TOML [[models]] keys, Client.load_model's keywords).
MODEL_OPTION_FLAGS = (
    ("--device", dict(help="auto, cpu, cuda or cuda:N (default: the server's, auto)")),
    ("--dtype", dict(help="float32, float16 or bfloat16 (default: the server's, float32)")),
    ("--max-batch-size", dict(type=int, metavar="N", help="dynamic batching: concurrent requests share device "
                                                          "batches of up to N images (default 1: off)")),
    ("--max-delay-ms", dict(type=float, metavar="MS", help="how long a batch may wait to fill (default 0)")),
    ("--max-queue", dict(type=int, metavar="N", help="requests queued for a batch before RESOURCE_EXHAUSTED "
                                                     "(default 256)")),
    ("--channels-last", dict(action="store_true", help="channels-last memory format")),
    ("--compile", dict(metavar="MODE", help="torch.compile Predict's forward at load: default, reduce-overhead "
                                            "(CUDA graphs), max-autotune, max-autotune-no-cudagraphs")),
    ("--compile-batch-sizes", dict(type=int, nargs="+", metavar="N",
                                   help="batch sizes to compile (default 1 and --max-batch-size); others pad up or "
                                        "run eager")),
    ("--device-decode", dict(action="store_true", help="decode JPEGs on the model's device (nvJPEG on CUDA) and "
                                                       "preprocess there")),
    ("--no-pin-memory", dict(dest="pin_memory", action="store_false",
                             help="no pinned host batches / non-blocking copies (CUDA models)")),
)
MODEL_OPTION_NAMES = tuple(kw.get("dest", flag[2:].replace("-", "_")) for flag, kw in MODEL_OPTION_FLAGS)
# Server-wide on `serve` (ServerConfig.device/dtype, the default of every model), per model on `load`.
SERVER_WIDE_OPTIONS = ("device", "dtype")


def add_model_options(parser) -> None:
    """The model-option flags (MODEL_OPTION_FLAGS) on a parser or group; each
    defaults to None, meaning "not given": the server's default applies."""
    for flag, kwargs in MODEL_OPTION_FLAGS:
        parser.add_argument(flag, default=None, **kwargs)


def model_options(args) -> dict:
    """{flat option name: value} of the model-option flags given on the command line."""
    return {name: getattr(args, name) for name in MODEL_OPTION_NAMES if getattr(args, name, None) is not None}


def server_config(args):
    from netscope.server.app import ModelSpec, ServerConfig

    values: dict = {}
    if args.config:
        import tomllib

        try:
            values = tomllib.loads(args.config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"netscope serve: cannot read {args.config}: {exc}")
    per_model = {k: v for k, v in model_options(args).items() if k not in SERVER_WIDE_OPTIONS}
    models = []
    for table in values.pop("models", []):
        unknown = set(table) - set(ModelSpec.KEYS)
        if unknown:
            raise SystemExit(f"netscope serve: unknown key(s) {', '.join(sorted(unknown))} in a [[models]] table of "
                             f"{args.config}; known: {', '.join(ModelSpec.KEYS)}")
        models.append(ModelSpec(**{**per_model, **table}))
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
            models = [ModelSpec.parse(m).with_options(**per_model) for m in args.model]
        except ValueError as exc:
            raise SystemExit(f"netscope serve: {exc}")
    if getattr(args, "explain_limit", None):
        values["explain_limits"] = {**values.get("explain_limits", {}), **dict(args.explain_limit)}
    config = ServerConfig(**values)
    try:
        from netscope.server.explain import Ceilings

        Ceilings().with_overrides(config.explain_limits)
    except ValueError as exc:
        raise SystemExit(f"netscope serve: {exc}")
    if config.decode_threads < 0:
        raise SystemExit(f"netscope serve: --decode-threads must be >= 0 (1: decode serially); got {config.decode_threads}")
    check_security(config)  # before the demo model trains for a minute
    config.models = models or [m.with_options(**per_model) for m in default_models(config)]
    return config


def check_security(config) -> None:
    """Refuse (exit 2) a bad TLS or tokens file, or a public address in the clear, before any slow startup work."""
    from netscope.server.rpc.security import ConfigError, configure

    try:
        configure(config.address, tls_cert=config.tls_cert, tls_key=config.tls_key, tls_client_ca=config.tls_client_ca,
                  auth_tokens=config.auth_tokens, open_reflection=config.open_reflection, insecure=config.insecure,
                  warn=False)
    except ConfigError as exc:
        print(f"netscope serve: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def default_models(config) -> list:
    """The embedded default: `demo`, the digits model of netscope.training, trained
    into the store first if it is not there yet (about a minute on CPU, with a
    progress bar); beside it resnet18 with ImageNet weights when they are in the
    local torch cache. If the demo cannot be trained, resnet18 (untrained when
    its weights are not cached) so the server still starts, and says why."""
    import torchvision

    from netscope.server.app import ModelSpec
    from netscope.server.models.registry import weights_cache_path

    cached = weights_cache_path(torchvision.models.ResNet18_Weights.DEFAULT).exists()
    resnet = ModelSpec("resnet18", "resnet18", "DEFAULT" if cached else "none")
    try:
        from netscope.training.demo import ensure_demo

        demo = ensure_demo(config.store)
    except Exception as exc:  # the server must come up even if training fails
        logging.getLogger("netscope").error("could not train the demo model (%s): serving resnet18 instead", exc)
        return [resnet]
    return [ModelSpec("demo", demo.stem)] + ([resnet] if cached else [])


def cmd_serve(args) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from netscope.server.app import serve

    return serve(server_config(args))


# ---------------------------------------------------------------- train

def add_train(sub) -> None:
    from netscope.training.options import add_arguments

    p = sub.add_parser("train", help="train an image classifier into a checkpoint the server serves",
                       description="Train an image classifier and write a netscope checkpoint, e.g. "
                                   "netscope train --data digits --epochs 12 --out models/digits.pt (docs/TRAINING.md has a shapes recipe); "
                                   "then netscope serve --model digits=digits serves it.")
    add_arguments(p)
    p.set_defaults(run=cmd_train)


def cmd_train(args) -> int:
    from netscope.training.train import run

    return run(args)


# ---------------------------------------------------------------- models

def cmd_models(args) -> int:
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
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
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        info = c.model_info(args.model, args.input_size or ())
    if args.json:
        print_json(info)
        return 0
    print(f"{info.model}: {info.arch} from {info.source} ({info.weights}) on {info.device} as {info.dtype}")
    if info.note:
        print(f"note: {info.note}")
    p = info.preprocessing
    print(f"input {info.input_size} (runs on H, W >= {info.min_input_size}); resize {p['resize']}, crop {p['crop']}, "
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
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        info = c.load_model(args.model, args.source, weights=args.weights, arch=args.arch,
                            num_classes=args.num_classes, **model_options(args))
    if args.json:
        print_json(info)
    else:
        print(f"loaded {info.model}: {info.arch} ({info.weights}) on {info.device} as {info.dtype}"
              + (f", compiled ({info.compile}) for batch sizes {info.compile_batch_sizes}" if info.compile else "")
              + (f" — {info.note}" if info.note else ""))
    return 0


def cmd_unload(args) -> int:
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        c.unload_model(args.model)
    if not args.json:
        print(f"unloaded {args.model}")
    return 0


def cmd_predict(args) -> int:
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
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


def explain_limit(text: str) -> tuple[str, int]:
    """argparse type of serve --explain-limit NAME=N."""
    from netscope.server.explain import Ceilings

    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or key not in Ceilings.names():
        raise argparse.ArgumentTypeError(f"{text!r}: use NAME=N with NAME one of {', '.join(Ceilings.names())}")
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: N must be a whole number >= 1")
    return key, n


def explain_option(text: str) -> tuple[str, object]:
    """argparse type of --option KEY=VALUE: any explanation option, typed by
    the committed schema (client/explain_schema.json), else by its typed
    ExplainOptions field, else by the value's look (true/false, an integer,
    a number, else text). The server checks the name and the range."""
    from netscope.v1 import inspector_pb2 as pb

    from .explain_schema import load

    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key or key in ("faithfulness", "parameters"):  # faithfulness is --metrics
        raise argparse.ArgumentTypeError(f"{text!r}: use KEY=VALUE with KEY an option's name "
                                         f"(`netscope methods` lists them)")
    kinds = {o.name: o.type for o in load()[1]}
    fields = pb.ExplainOptions.DESCRIPTOR.fields_by_name
    if key not in kinds and key in fields:
        f = fields[key]
        kinds[key] = {f.TYPE_BOOL: "bool", f.TYPE_INT32: "int", f.TYPE_INT64: "int", f.TYPE_FLOAT: "float",
                      f.TYPE_DOUBLE: "float"}.get(f.type, "str")
    kind = kinds.get(key) or _look(value)
    try:
        if kind == "bool":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return key, value.lower() in ("true", "1", "yes")
        if kind == "int":
            return key, int(value)
        if kind == "float":
            return key, float(value)
    except ValueError:
        wanted = {"bool": "true or false", "int": "an integer"}.get(kind, "a number")
        raise argparse.ArgumentTypeError(f"{key} takes {wanted}; got {value!r}") from None
    return key, value


def _look(value: str) -> str:
    """An unknown option's type, from its value: true/false, an integer, a number, else text."""
    if value.lower() in ("true", "false"):
        return "bool"
    for kind, cast in (("int", int), ("float", float)):
        try:
            cast(value)
            return kind
        except ValueError:
            pass
    return "str"


def option_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """--option KEY=VALUE, repeatable, collected as args.options [(key, typed value), ...]."""
    parser.add_argument("--option", dest="options", action="append", type=explain_option, metavar="KEY=VALUE",
                        help=help)


def cmd_explain(args) -> int:
    from tqdm import tqdm

    from . import jobs
    from .client import explain_request
    from .job_summary import job_summary, method_summary, table

    options = chosen_options(args)
    methods = list(dict.fromkeys(args.methods or ["grad_cam"]))
    out = out_folder(args.out)
    images = jobs.find_images(args.inputs, exclude=out)
    try:
        labels = jobs.folder_labels(args.inputs, images) if args.target_from_folder else None
    except ValueError as exc:
        print(f"netscope explain: {exc}", file=sys.stderr)
        return 2
    per_method = []
    first_error: dict[str, str] = {}  # status -> the first image's message

    def lost(server: str, why: str, handed_back: int) -> None:
        tqdm.write(f"netscope explain: {server} failed ({why}); {handed_back} image(s) go to the other servers",
                   file=sys.stderr)

    with tqdm(total=len(images) * len(methods), unit="img", disable=args.json or not sys.stderr.isatty()) as bar:
        for method in methods:
            # One method keeps the plain layout (OUT/index.csv), so its reruns resume;
            # several get a folder each.
            folder = out if len(methods) == 1 else out / method
            spec = explain_request(args.model, [], method, args.target, args.layer or (), True, False,
                                   args.colormap, args.alpha, args.metrics, 0, options, sign=args.sign,
                                   clip_percentile=args.clip_percentile)
            job = jobs.ExplainJob(args.servers or [DEFAULT_SERVER], spec, folder, in_flight=args.in_flight,
                                  timeout=args.timeout, on_server_lost=lost, connect=connection(args), labels=labels)
            bar.set_description(method)
            report = job.run(images=images, progress=bar.update)
            if report.replaced:
                tqdm.write(f"netscope explain: {report.replaced}", file=sys.stderr)
            rows = job.index.export_json()
            for row in rows:  # one message per kind of failure, shown with its count below
                if row["status"] != "ok":
                    first_error.setdefault(row["status"], f"{row['id']}: {row['error']}")
            per_method.append(method_summary(method, folder.relative_to(out).as_posix(), rows, report))
    summary = job_summary(per_method)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if args.json:
        print_json(summary)
    else:
        if len(methods) > 1 or args.metrics:
            header, rows = table(summary)
            print_table(rows, header)
        print(f"{summary['explained']} explained, {summary['failed']} failed, {summary['skipped']} already done "
              f"of {summary['total']}; index: {out / ('index.csv' if len(methods) == 1 else 'METHOD/index.csv')}, "
              f"summary: {out / 'summary.json'}")
        for status, n in summary["errors"].items():
            print(f"  {n} x {status}" + (f" (e.g. {first_error[status]})" if status in first_error else ""))
    return 0 if not summary["failed"] else 3


def cmd_pointing(args) -> int:
    from .pointing import BASELINES, baseline, maps, off_centre, read_boxes
    from netscope.server.explain.pointing import pointing_game

    try:
        images = read_boxes(args.folder)
    except (OSError, KeyError, ValueError) as exc:
        print(f"netscope pointing: {args.folder} needs a boxes.csv (file, class, x0, y0, x1, y1, width, height), "
              f"as export_shapes writes: {exc}", file=sys.stderr)
        return 2
    hard = {i.file for i in off_centre(images)}
    rows = []
    for name in BASELINES:
        rows.append({"method": name, "layer": "", "all": baseline(images, name, tolerance=args.tolerance).accuracy,
                     "off_centre": baseline([i for i in images if i.file in hard], name,
                                            tolerance=args.tolerance).accuracy if hard else None})
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        for spec in dict.fromkeys(args.methods or ["grad_cam"]):
            method, _, layer = spec.partition("@")
            try:
                heat = maps(c, args.model, images, method, layers=[layer] if layer else (), **chosen_options(args))
            except ValueError as exc:  # maps and boxes in different frames
                print(f"netscope pointing: {exc}", file=sys.stderr)
                return 2
            boxes = [i.box for i in images]
            hard_idx = [n for n, i in enumerate(images) if i.file in hard]
            rows.append({"method": method, "layer": layer,
                         "all": pointing_game(heat, boxes, args.tolerance).accuracy,
                         "off_centre": pointing_game([heat[n] for n in hard_idx], [boxes[n] for n in hard_idx],
                                                     args.tolerance).accuracy if hard_idx else None})
    report = {"model": args.model, "images": len(images), "off_centre_images": len(hard),
              "tolerance": args.tolerance, "results": rows}
    if args.json:
        print_json(report)
        return 0
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    print_table([[r["method"] + (f"@{r['layer']}" if r["layer"] else ""), pct(r["all"]), pct(r["off_centre"])]
                 for r in rows], ["method", f"all ({len(images)})", f"off-centre ({len(hard)})"])
    return 0


def cmd_bench(args) -> int:
    from . import bench

    servers = args.servers or [DEFAULT_SERVER]
    for flag, value, low in (("--batch", args.batch, 1), ("--concurrency", args.concurrency, 1),
                             ("--in-process-batch", args.in_process_batch, 0),
                             ("--in-process-concurrency", args.in_process_concurrency, 0)):
        if value < low:
            print(f"netscope bench: {flag} must be >= {low}; got {value}", file=sys.stderr)
            return 2
    results = bench.run(servers, args.model, rpc=args.rpc, method=args.method, batch=args.batch,
                        concurrency=args.concurrency, duration=args.duration, requests=args.requests,
                        inputs=args.input, warmup=args.warmup, in_process=args.in_process, source=args.source,
                        store=args.store, device=args.device, dtype=args.dtype,
                        in_process_batch=args.in_process_batch, in_process_concurrency=args.in_process_concurrency,
                        options=chosen_options(args), connect=connection(args))
    if args.json:
        print_json(results)
        return 0
    rows = []
    for r in results:
        lat = r.latency_ms or {}
        rows.append([r.target, r.batch, r.concurrency, r.requests, f"{lat.get('p50', 0):.2f}", f"{lat.get('p90', 0):.2f}",
                     f"{lat.get('p99', 0):.2f}", f"{lat.get('max', 0):.2f}", f"{r.requests_per_s:.1f}",
                     f"{r.images_per_s:.1f}", ", ".join(f"{k}={v}" for k, v in r.errors.items()) or "-"])
    print(f"{args.rpc}{' ' + args.method if args.rpc == 'explain' else ''} on {args.model}")
    print_table(rows, ["target", "batch", "callers", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms", "req/s",
                       "img/s", "errors"])
    for r in results:
        if r.server_ms:
            split = ", ".join(f"{k} {v:.2f}" for k, v in r.server_ms.items() if k != "device_batch_size")
            print(f"server time per request (ms): {split}; mean device batch {r.server_ms['device_batch_size']:.1f}")
    if len(results) == 2 and results[0].latency_ms and results[1].latency_ms:
        local, remote = results
        if (local.batch, local.concurrency) == (remote.batch, remote.concurrency):
            print(f"service / in-process p50: {remote.latency_ms['p50'] / local.latency_ms['p50']:.3f}x")
        print(f"service / in-process images/s: {remote.images_per_s / local.images_per_s:.3f}x")
    return 0


# ---------------------------------------------------------------- inspection

def _target_arg(text: str | None):
    if text is None:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def _image_names(paths: list[str]) -> list[str]:
    """A file-name stem per image, made unique by its position when two collide."""
    stems = [Path(p).stem for p in paths]
    return [s if stems.count(s) == 1 else f"{i}-{s}" for i, s in enumerate(stems)]


def _top(channels, means, n: int = 5) -> str:
    best = sorted(zip(channels, means), key=lambda cm: -cm[1])[:n]
    return ", ".join(f"{c}:{m:.3g}" for c, m in best) + (" ..." if len(channels) > n else "")


def cmd_features(args) -> int:
    out_dir = out_folder(args.out)  # before any request: a bad folder is a usage error, not lost work
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        maps = c.feature_maps(args.model, [Path(p) for p in args.images], args.layer, channels=args.channels or (),
                              top_channels=args.top, tensors=args.npy, grid=not args.no_grid, colormap=args.colormap,
                              upsample=args.upsample, max_tiles=args.max_tiles, nrow=args.nrow,
                              tile_size=args.tile_size)
    report, rows = [], []
    for path, name, layers in zip(args.images, _image_names(args.images), maps):
        entry = {"image": path, "layers": []}
        for layer, fm in layers.items():
            png = npy = None
            if fm.grid_png:
                png = out_dir / f"{name}.{layer}.png"
                png.write_bytes(fm.grid_png)
            if fm.activation is not None:
                import numpy as np

                npy = out_dir / f"{name}.{layer}.npy"
                np.save(npy, fm.activation)
            entry["layers"].append({"layer": layer, "shape": fm.shape, "channel_axis": fm.channel_axis,
                                    "channels": fm.channels, "channel_mean": fm.channel_mean,
                                    "channel_max": fm.channel_max, "png": str(png) if png else None,
                                    "npy": str(npy) if npy else None})
            rows.append([path if not entry["layers"][1:] else "", layer, tuple(fm.shape), len(fm.channels),
                         _top(fm.channels, fm.channel_mean), str(png or npy or "")])
        report.append(entry)
    if args.json:
        print_json(report)
    else:
        print_table(rows, ["image", "layer", "shape", "channels", "highest mean (channel:mean)", "written"])
    return 0


def cmd_kernels(args) -> int:
    folder = out_folder(args.out)
    stem = folder / f"{file_part(args.model)}.{file_part(args.layer)}.kernels"
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        k = c.kernels(args.model, args.layer, mode=args.mode, tensor=args.npy, colormap=args.colormap,
                      max_tiles=args.max_tiles, nrow=args.nrow, tile_size=args.tile_size)
    out = stem.with_name(stem.name + ".png")
    out.write_bytes(k.grid_png)
    shape = npy = None
    if k.weight is not None:
        import numpy as np

        npy = stem.with_name(stem.name + ".npy")
        np.save(npy, k.weight)
        shape = list(k.weight.shape)
    if args.json:
        print_json({"layer": k.layer, "mode": k.mode, "tiles": k.tiles, "total_tiles": k.total_tiles,
                    "weight_shape": shape, "png": str(out), "npy": str(npy) if npy else None})
    else:
        print(f"{k.layer}: {k.mode}, {k.tiles} of {k.total_tiles} tiles -> {out}"
              + (f"; weight {tuple(shape)} -> {npy}" if shape else ""))
    return 0


_BARS = " ▁▂▃▄▅▆▇█"


def spark(counts) -> str:
    """A histogram as one line of block characters."""
    top = max(counts) if len(counts) else 0
    if not top:
        return ""
    return "".join(_BARS[min(8, -(-int(c) * 8 // int(top)))] for c in counts)


def cmd_stats(args) -> int:
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        result = c.layer_stats(args.model, args.layer or (), bins=args.bins,
                               hist_range=tuple(args.range) if args.range else None,
                               images=[Path(p) for p in args.images] if args.images else None,
                               target=_target_arg(args.target), labels=args.labels)
    if args.json:
        print_json({"layers": result.layers, "loss": result.loss})
        return 0
    grads = result.loss is not None
    header = ["layer", "param", "shape", "mean", "std", "min", "max", "l2", "zeros", "values"]
    if grads:
        header += ["grad l2", "grad mean", "grad std", "grads", "layer grad", "ratio"]
    rows = []
    for ls in result.layers:
        for i, p in enumerate(ls.parameters):
            v = p.value
            row = [f"{ls.layer} ({ls.type})" if i == 0 else "", p.name + ("" if p.trainable else " (frozen)"),
                   tuple(p.shape), f"{v.mean:.4g}", f"{v.std:.4g}", f"{v.min:.4g}", f"{v.max:.4g}",
                   f"{v.l2_norm:.4g}", f"{100 * v.zero_fraction:.1f}%", spark(v.hist_counts)]
            if grads:
                g = p.grad
                row += [f"{g.l2_norm:.4g}", f"{g.mean:.3g}", f"{g.std:.3g}", spark(g.hist_counts)] if g else ["-"] * 4
                row += [f"{ls.grad_norm:.4g}", f"{ls.grad_norm_ratio:.3g}" if ls.grad_norm_ratio else "-"] if i == 0 else ["", ""]
            rows.append(row)
    print_table(rows, header)
    if grads:
        print(f"\nloss {result.loss:.6g}; ratio = a layer's gradient norm over the next layer's towards the output "
              "(far below 1 along the depth: vanishing; far above: exploding)")
    return 0


_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def summary_report(info, depth: int) -> dict:
    """torchinfo's numbers from a ModelInfo: per-layer rows (containers with the
    totals of what they hold) and the totals."""
    total, trainable = {}, {}
    for l in info.layers:
        inside = [m for m in info.layers if m.name == l.name or m.name.startswith(l.name + ".")]
        total[l.name] = sum(m.num_parameters for m in inside)
        trainable[l.name] = sum(m.trainable_parameters for m in inside)
    size = _DTYPE_BYTES.get(info.dtype, 4)
    leaf_out = sum(_numel(l.output_shape) for l in info.layers if l.is_leaf and l.output_shape)
    mb = 1e6
    input_mb = _numel(info.input_size) * 4 / mb
    pass_mb = 2 * leaf_out * size / mb
    params_mb = info.parameter_bytes / mb
    rows = [{"name": l.name, "type": l.type, "depth": l.depth, "input_shape": l.input_shape,
             "output_shape": l.output_shape, "params": total[l.name], "trainable_params": trainable[l.name],
             "mult_adds": l.mult_adds} for l in info.layers if l.depth <= depth]
    return {
        "model": info.model, "arch": info.arch, "input_size": info.input_size, "layers": rows,
        "total_params": info.num_parameters, "trainable_params": info.trainable_parameters,
        "non_trainable_params": info.num_parameters - info.trainable_parameters,
        "mult_adds": info.mult_adds, "flops": info.flops, "input_mb": input_mb,
        "forward_backward_pass_mb": pass_mb, "params_mb": params_mb,
        "estimated_total_mb": input_mb + pass_mb + params_mb,
    }


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def cmd_summary(args) -> int:
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        info = c.model_info(args.model, args.input_size or ())
    report = summary_report(info, args.depth)
    if args.json:
        print_json(report)
        return 0
    rows = [[f"{'│ ' * (r['depth'] - 1)}├─{r['name'].rsplit('.', 1)[-1]} ({r['type']}): {r['depth']}", r["input_shape"],
             r["output_shape"], f"{r['params']:,}" if r["params"] else "--", f"{r['mult_adds']:,}" if r["mult_adds"] else "--",
             "--" if not r["params"] else ("yes" if r["trainable_params"] == r["params"] else
                                           "no" if not r["trainable_params"] else "partly")]
            for r in report["layers"]]
    header = ["Layer (type): depth", "Input Shape", "Output Shape", "Param #", "Mult-Adds", "Trainable"]
    print(f"{info.model} ({info.arch}), input {list(info.input_size)}, {info.dtype} on {info.device}")
    rule = "=" * 100
    print(rule)
    print_table(rows, header)
    print(rule)
    print(f"Total params: {report['total_params']:,}")
    print(f"Trainable params: {report['trainable_params']:,}")
    print(f"Non-trainable params: {report['non_trainable_params']:,}")
    print(f"Total mult-adds: {report['mult_adds']:,} ({human(report['mult_adds'])})")
    print(rule)
    print(f"Input size (MB): {report['input_mb']:.2f}")
    print(f"Forward/backward pass size (MB): {report['forward_backward_pass_mb']:.2f}")
    print(f"Params size (MB): {report['params_mb']:.2f}")
    print(f"Estimated Total Size (MB): {report['estimated_total_mb']:.2f}")
    print(rule)
    return 0


# ---------------------------------------------------------------- main

def client_parser(sub, name: str, help: str, run, *, fleet: bool = False,
                  timeout_help: str = "deadline per call in seconds", **kw) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, **kw)
    if fleet:  # several servers share the work
        p.add_argument("--server", dest="servers", action="append", metavar="HOST:PORT",
                       help=f"a server (repeatable; default {DEFAULT_SERVER}, or $NETSCOPE_SERVER)")
        p.set_defaults(server=None)
    else:
        p.add_argument("--server", default=DEFAULT_SERVER, help=f"host:port of the server (default {DEFAULT_SERVER}, or $NETSCOPE_SERVER)")
    p.add_argument("--timeout", type=float, default=120.0, help=timeout_help)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    g = p.add_argument_group("security", "TLS and tokens; each falls back to its environment variable")
    g.add_argument("--tls", action="store_true", help="TLS with the system's root certificates")
    g.add_argument("--tls-ca", metavar="FILE", help="PEM CA that signed the server's certificate; implies --tls "
                                                    "($NETSCOPE_TLS_CA)")
    g.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate for mutual TLS ($NETSCOPE_TLS_CERT)")
    g.add_argument("--tls-key", metavar="FILE", help="PEM key of --tls-cert ($NETSCOPE_TLS_KEY)")
    g.add_argument("--tls-server-name", metavar="NAME", help="the name the server's certificate carries, "
                                                             "when it differs from the host dialled")
    token = g.add_mutually_exclusive_group()
    token.add_argument("--token", help="bearer token ($NETSCOPE_TOKEN); --token-file keeps it out of `ps`")
    token.add_argument("--token-file", metavar="FILE", help="file whose first line is the bearer token")
    p.set_defaults(run=run)
    return p


def connection(args) -> dict:
    """Client keywords from the security flags (None: the Client reads the
    environment variable). Raises OSError for an unreadable --token-file."""
    token = args.token
    if args.token_file:
        try:
            lines = [l.strip() for l in Path(args.token_file).read_text().splitlines() if l.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise OSError(f"cannot read --token-file {args.token_file}: {getattr(exc, 'strerror', None) or exc}") from None
        if not lines:
            raise OSError(f"--token-file {args.token_file} is empty")
        token = lines[0]
    return {"tls": args.tls, "root_certificates": args.tls_ca, "client_cert": args.tls_cert,
            "client_key": args.tls_key, "token": token, "server_name_override": args.tls_server_name}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netscope", description="Look inside torchvision image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve(sub)
    add_train(sub)
    client_parser(sub, "models", "list loaded models and the store's checkpoints", cmd_models)
    discovery_commands.add_commands(sub, client_parser)  # methods, server-info
    p = client_parser(sub, "info", "a model's details and layer table", cmd_info)
    p.add_argument("model")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="shapes for this input size")
    p.add_argument("--all", action="store_true", help="every module, not only leaves and top-level blocks")
    p = client_parser(sub, "load", "load a model into the server", cmd_load)
    p.add_argument("model", help="the id to serve it under")
    p.add_argument("source", help="an architecture (resnet18) or a checkpoint name in the store")
    p.add_argument("--weights", default="", help="none, DEFAULT or a weights enum name")
    p.add_argument("--arch", default="", help="architecture of a plain state_dict checkpoint")
    p.add_argument("--num-classes", type=int, default=0, help="class count of a plain state_dict checkpoint")
    add_model_options(p.add_argument_group("model options", "how the model is served"))
    p = client_parser(sub, "unload", "unload a model", cmd_unload)
    p.add_argument("model")
    p = client_parser(sub, "predict", "top-k classes of images", cmd_predict)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True)
    p.add_argument("-k", type=int, default=0, help="how many classes per image (default 5)")
    p = client_parser(sub, "features", "feature maps of layers for images: PNG grids and a table", cmd_features)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True)
    p.add_argument("--layer", action="append", required=True, help="a layer's qualified name (repeatable)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--channels", type=int, nargs="+", help="only these channels")
    which.add_argument("--top", type=int, default=0, metavar="N", help="the N channels of highest mean activation")
    p.add_argument("--out", default=".", help="folder (created if missing) for the PNG grids and .npy files, "
                   "named IMAGE.LAYER.png / IMAGE.LAYER.npy (default: the current folder)")
    p.add_argument("--npy", action="store_true", help="also fetch the activations and save them as .npy")
    p.add_argument("--no-grid", action="store_true", help="no PNG grids, statistics only")
    p.add_argument("--colormap", default="", help="gray (default), viridis, jet, inferno, ...")
    p.add_argument("--upsample", action="store_true", help="scale each map to the input's size")
    p.add_argument("--max-tiles", type=int, default=0, help="most channels drawn per grid (default 64)")
    p.add_argument("--nrow", type=int, default=0, help="tiles per row")
    p.add_argument("--tile-size", type=int, default=0, help="pixels per tile (default: natural size)")
    p = client_parser(sub, "kernels", "a conv layer's kernels as a PNG grid", cmd_kernels)
    p.add_argument("--model", required=True)
    p.add_argument("--layer", required=True, help="a Conv2d layer's qualified name")
    p.add_argument("--mode", choices=["auto", "rgb", "per_channel", "mean_input"], default="auto")
    p.add_argument("--out", default=".", help="folder (created if missing) for MODEL.LAYER.kernels.png and, with "
                   "--npy, MODEL.LAYER.kernels.npy (default: the current folder)")
    p.add_argument("--npy", action="store_true", help="also fetch the weight tensor and save it as .npy")
    p.add_argument("--colormap", default="", help="for grey tiles: gray (default), viridis, jet, ...")
    p.add_argument("--max-tiles", type=int, default=0, help="most tiles drawn (default 64)")
    p.add_argument("--nrow", type=int, default=0, help="tiles per row")
    p.add_argument("--tile-size", type=int, default=32, help="pixels per tile (default 32; 0: one per weight)")
    p = client_parser(sub, "stats", "weight (and, with images, gradient) statistics per layer", cmd_stats)
    p.add_argument("images", nargs="*", help="image files: also one backward pass and gradient statistics")
    p.add_argument("--model", required=True)
    p.add_argument("--layer", action="append", help="a layer (repeatable; default every layer with parameters)")
    p.add_argument("--bins", type=int, default=0, help="histogram bins (default 30)")
    p.add_argument("--range", type=float, nargs=2, metavar=("MIN", "MAX"), help="histogram range (default: the data's)")
    p.add_argument("--target", help="class index or label whose logit is differentiated (default: top-1)")
    p.add_argument("--labels", type=int, nargs="+", help="true label per image: differentiate the cross-entropy")
    p = client_parser(sub, "summary", "torchinfo-style summary of a model", cmd_summary)
    p.add_argument("model")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="summarise for this input size")
    p.add_argument("--depth", type=int, default=3, help="deepest nesting level shown (default 3)")
    p = client_parser(sub, "explain", "explain images or folders: overlay PNGs and an index.csv", cmd_explain, fleet=True,
                      timeout_help="seconds a server may hold images without answering before its images "
                                   "go to the other servers")
    p.add_argument("inputs", nargs="+", help="image files and folders (walked recursively)")
    p.add_argument("--model", required=True)
    p.add_argument("--method", dest="methods", action="append", metavar="METHOD",
                   help="explanation method (repeatable: each gets OUT/METHOD/; default grad_cam)")
    p.add_argument("--out", required=True,
                   help="folder (created if missing) for overlays/, index.csv, index.json and summary.json; "
                        "rerun to resume")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--target", type=lambda v: int(v) if v.lstrip("-").isdigit() else v, default=None,
                       help="class index or label for every image (default: each image's top-1)")
    which.add_argument("--target-from-folder", action="store_true",
                       help="explain each image for its true class: the name of its class folder, as torchvision's "
                            "ImageFolder reads a dataset (INPUT/CLASS/.../image); a name that is not one of the "
                            "model's classes fails that image")
    p.add_argument("--layer", action="append", help="layer to explain at (default: the architecture's)")
    option_flag(p, "any other explanation option (repeatable), e.g. samples=200, seed=1, aug_smooth=true, "
                   "noise_tunnel=smoothgrad, fem_k=1.5, kpca_kernel=rbf")
    add_option_flags(p)
    p.add_argument("--colormap", default="",
                   help="overlay colormap (default: the sign's: jet for heat, bwr for all, reds/blues/greens for "
                        "positive/negative/absolute_value)")
    p.add_argument("--alpha", type=float, default=0.0,
                   help="overlay opacity in [0, 1] (default 0.5 for heat; 0.8 at the strongest signed value)")
    p.add_argument("--sign", default="", choices=["auto", "heat", "all", "positive", "negative", "absolute_value"],
                   help="how the map's sign is drawn (default auto: heat for CAMs, all for signed attributions: "
                        "a diverging map centred on 0 blended as an alpha mask, absolute_value for saliency)")
    p.add_argument("--clip-percentile", type=float, default=None, metavar="PERCENT",
                   help="signed modes: percent of the |attribution| mass that saturates the colormap, as Captum's "
                        "outlier_perc (default 2)")
    p.add_argument("--metrics", action="store_true",
                   help="faithfulness metrics per image in the index, and their means per method")
    p.add_argument("--in-flight", type=int, default=64, help="images on the wire per server")
    p = client_parser(sub, "pointing", "pointing-game accuracy of explanation methods on images with known boxes",
                      cmd_pointing)
    p.add_argument("folder", help="images plus boxes.csv (netscope.training.data.export_shapes writes one)")
    p.add_argument("--model", required=True)
    p.add_argument("--method", dest="methods", action="append", metavar="METHOD[@LAYER]",
                   help="explanation method, optionally @layer (repeatable; default grad_cam)")
    p.add_argument("--tolerance", type=float, default=0.0, help="a peak this many pixels from its box still hits")
    option_flag(p, "an explanation option for every method (repeatable), e.g. samples=400")
    add_option_flags(p, "explanation options, for every method")
    p = client_parser(sub, "bench", "measure latency and throughput", cmd_bench, fleet=True)
    p.add_argument("--model", required=True)
    p.add_argument("--rpc", choices=["predict", "explain"], default="predict")
    p.add_argument("--method", default="grad_cam", help="explanation method for --rpc explain")
    option_flag(p, "an option of that explanation (repeatable), e.g. batch_size=64")
    add_option_flags(p, "explanation options, for --rpc explain")
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
    p.add_argument("--device", default="", help="device of the --in-process model (default: the server's)")
    p.add_argument("--dtype", default="", help="dtype of the --in-process model (default: the server's)")
    p.add_argument("--in-process-batch", type=int, default=0, metavar="N",
                   help="images per in-process request (default --batch), e.g. 64 against 64 callers of batch 1")
    p.add_argument("--in-process-concurrency", type=int, default=0, metavar="N",
                   help="in-process callers (default --concurrency)")
    return parser


def print_error_details(exc: NetscopeError) -> None:
    """What the status details add to the message: the request field at fault,
    and the closest names when the message did not already list them."""
    for field_name, _ in exc.field_violations:
        print(f"  field: {field_name}", file=sys.stderr)
    if exc.closest and "closest" not in exc.message:
        print(f"  closest: {', '.join(exc.closest)}", file=sys.stderr)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except NetscopeError as exc:
        print(f"netscope {args.command}: {exc.code.name}: {exc.message}", file=sys.stderr)
        print_error_details(exc)
        return 1
    except OSError as exc:
        print(f"netscope {args.command}: {exc}", file=sys.stderr)
        return 1
    except (ConnectionSettingsError, OutPathError) as exc:  # half an mTLS pair, ...; an --out that is no folder
        print(f"netscope {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
