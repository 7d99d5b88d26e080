"""`netscope serve`: run the gRPC server. The server is imported only when a
command runs (or a flag is checked), so `netscope --help` never starts torch."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from .deprecated import add_renamed_flag, warn_renamed
from .model_flags import SERVER_WIDE_OPTIONS, add_model_options, model_options
from .preflight import ReadFile, UsageError, bind_problem, declare, read_folder_problem


def add_commands(sub) -> None:
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
    p.add_argument("--max-images", type=int, help="most images in one request (default 256)")
    add_renamed_flag(p, "--max-batch", "--max-images", type=int, why="images in one request")
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
    declare(p, ReadFile("--config"))


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


def server_config(args):
    from netscope.server.app import ModelSpec, ServerConfig

    values: dict = {}
    if args.config:
        import tomllib

        try:
            values = tomllib.loads(args.config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"netscope serve: cannot read {args.config}: {exc}")
        rename_keys(values, args.config)
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
    check_store_and_ports(config, trains_demo=not models or any(m.source in ("demo", "demo.pt") for m in models))
    config.models = models or [m.with_options(**per_model) for m in default_models(config)]
    return config


# Config keys renamed, old -> new; the old ones are read (with a warning) for one release.
RENAMED_KEYS = {"max_batch": "max_images"}


def rename_keys(values: dict, path) -> None:
    """Move the deprecated top-level keys of a config file to their new names,
    warning; SystemExit when a file sets both the old and the new name."""
    for old, new in RENAMED_KEYS.items():
        if old in values:
            if new in values:
                raise SystemExit(f"netscope serve: {path} sets both {old} and {new}; keep only {new}")
            warn_renamed("netscope serve", f"the key {old} in {path}", new, "images in one request")
            values[new] = values.pop(old)


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


def check_store_and_ports(config, trains_demo: bool) -> None:
    """What serve writes and listens on, before the demo trains: the store (a
    folder; writable when the demo must be trained into it) and, when the demo
    trains first, the gRPC address and the metrics port (free to listen on;
    otherwise the server binds them before it loads any model). Raises UsageError (exit 2)."""
    from netscope.training.paths import folder_problem

    store = Path(config.store)
    why = read_folder_problem(store) if store.exists() else None
    if not why and trains_demo and not (store / "demo.pt").is_file():
        why = folder_problem(store)
        why = why and f"the demo model is trained into it, but {why}"
    if why:
        raise UsageError(f"--store {store}: {why}; pass another --store")
    if not trains_demo:
        return
    why = bind_problem(config.address, "--address")
    if not why and config.metrics_port:
        host = config.address.rpartition(":")[0] or "127.0.0.1"
        why = bind_problem(f"{host}:{config.metrics_port}", "--metrics-port")
    if why:
        raise UsageError(why)


def default_models(config) -> list:
    """The embedded default: `demo`, the digits model of netscope.training, trained
    into the store first if it is not there yet (about a minute on CPU, with a
    progress bar); beside it resnet18 with ImageNet weights when they are in the
    local torch cache. If the demo cannot be trained, resnet18 (untrained when
    its weights are not cached) so the server still starts, and says why."""
    import torchvision

    from netscope.server.app import ModelSpec
    from netscope.server.models.registry import weights_cache_path

    weights = weights_cache_path(torchvision.models.ResNet18_Weights.DEFAULT)
    cached = weights.exists() or bool(config.allow_download)  # with --allow-download, fetched (hash-checked) at load
    resnet = ModelSpec("resnet18", "resnet18", "DEFAULT" if cached else "none")
    if not cached:
        logging.getLogger("netscope").warning(
            "resnet18 is not served beside the demo: its ImageNet weights are not in the torch cache (looked for "
            "%s); start once with --allow-download to fetch them there, or copy %s into %s (TORCH_HOME sets the "
            "cache)", weights, weights.name, weights.parent)
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

    config = server_config(args)
    ensure_named_demo(config)
    return serve(config)


def ensure_named_demo(config) -> None:
    """`--model ID=demo` names the embedded default: like a plain `netscope
    serve`, train it into the store first when it is not there yet (the help's
    own example, `demo=demo`, failed on a fresh store)."""
    if any(m.source in ("demo", "demo.pt") for m in config.models):
        from netscope.training.demo import ensure_demo

        ensure_demo(config.store)
