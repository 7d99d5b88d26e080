"""`netscope models`, `info`, `load`, `unload` and `summary`: the models a server holds."""
from __future__ import annotations

from netscope.client.client import Client

from .connection import client_parser, connection
from .model_flags import add_model_options, model_options
from .output import print_json, print_table, si


def add_commands(sub) -> None:
    client_parser(sub, "models", "list loaded models and the store's checkpoints", cmd_models)
    p = client_parser(sub, "info", "a model's details and layer table", cmd_info)
    p.add_argument("model")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="shapes for this input size")
    p.add_argument("--all", action="store_true", help="every module, not only leaves and the blocks of the first two levels")
    p.add_argument("--classes", type=int, default=None, metavar="N",
                   help="class names shown (default: all of them up to 100, wrapped; 0: all)")
    p = client_parser(sub, "load", "load a model into the server", cmd_load)
    p.add_argument("model", help="the id to serve it under")
    p.add_argument("source", help="an architecture (resnet18, or resnet18:DEFAULT with its weights as serve --model takes it) or a checkpoint name in the store")
    p.add_argument("--weights", default="", help="none, DEFAULT or a weights enum name")
    p.add_argument("--arch", default="", help="architecture of a plain state_dict checkpoint")
    p.add_argument("--num-classes", type=int, default=0, help="class count of a plain state_dict checkpoint")
    add_model_options(p.add_argument_group("model options", "how the model is served"))
    p = client_parser(sub, "unload", "unload a model", cmd_unload)
    p.add_argument("model")
    p = client_parser(sub, "summary", "torchinfo-style summary of a model", cmd_summary)
    p.add_argument("model")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="summarise for this input size")
    p.add_argument("--depth", type=int, default=3, help="deepest nesting level shown (default 3)")


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
    print(backend_line(info.backend))
    p = info.preprocessing
    print(f"input {info.input_size} (runs on H, W >= {info.min_input_size}); resize {p['resize']}, crop {p['crop']}, "
          f"mean {[round(m, 4) for m in p['mean']]}, std {[round(s, 4) for s in p['std']]}")
    print_classes(info.class_names, args.classes)
    print(f"parameters {info.num_parameters:,} ({info.trainable_parameters:,} trainable), "
          f"{si(info.flops, 'FLOPs')} / {si(info.mult_adds, 'MACs')} (mult-adds) per image\n")
    # Blocks of the first two levels too (layer4.1, features.1): the usual layers to ask for maps of.
    layers = info.layers if args.all else [l for l in info.layers if l.is_leaf or l.depth <= 2]
    print_table([["  " * (l.depth - 1) + l.name, l.type, l.input_shape, l.output_shape, f"{l.num_parameters:,}",
                  si(l.mult_adds, "MACs"), "cam" if l.cam_target else ""] for l in layers],
                ["layer", "type", "input", "output", "params", "mult-adds", ""])
    return 0


CLASSES_SHOWN = 100  # ImageNet's 1000 would fill screens: the first 100, and how to see the rest


def print_classes(names: list[str], limit: int | None) -> None:
    """The class names, wrapped to the terminal: all of them up to `limit`
    (None: CLASSES_SHOWN; 0: every one), then how many more and the flag."""
    import shutil
    import textwrap

    shown = names if limit == 0 or len(names) <= (limit or CLASSES_SHOWN) else names[:limit or CLASSES_SHOWN]
    text = ", ".join(shown)
    if len(shown) < len(names):
        text += f", ... and {len(names) - len(shown)} more (--classes 0 shows all, --json lists them)"
    width = max(40, shutil.get_terminal_size((100, 24)).columns)
    print(f"{len(names)} classes:")
    print(textwrap.fill(text, width=width, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False))


def cmd_load(args) -> int:
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        source, weights = args.source, args.weights
        if not weights and ":" in source:  # SOURCE:WEIGHTS, as `serve --model ID=SOURCE:WEIGHTS` takes it
            source, weights = source.split(":", 1)
        info = c.load_model(args.model, source, weights=weights, arch=args.arch,
                            num_classes=args.num_classes, **model_options(args))
    if args.json:
        print_json(info)
    else:
        print(f"loaded {info.model}: {info.arch} ({info.weights}) on {info.device} as {info.dtype}"
              + (f", compiled ({info.compile}) for batch sizes {info.compile_batch_sizes}" if info.compile else "")
              + (f"; {backend_line(info.backend)}" if info.backend.get("name", "torch") != "torch" else "")
              + (f" — {info.note}" if info.note else ""))
    return 0


def backend_line(backend: dict) -> str:
    """What runs Predict, in one line: `predict backend torch`, or onnxruntime with its providers."""
    name = backend.get("name") or "torch"
    if name == "torch":
        return "predict backend torch"
    return (f"predict backend {name} ({', '.join(backend.get('providers', []))}; {backend.get('session_dtype')}, "
            f"{backend.get('intra_op_threads')} threads), exported with the {backend.get('exporter')} exporter in "
            f"{backend.get('export_ms', 0) / 1e3:.2f} s; logits within {backend.get('parity_max_abs_diff', 0):.2g} "
            f"of torch's at load")


def cmd_unload(args) -> int:
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        c.unload_model(args.model)
    if not args.json:
        print(f"unloaded {args.model}")
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
    print(f"Total mult-adds: {report['mult_adds']:,} ({si(report['mult_adds'], 'MACs')})")
    print(rule)
    print(f"Input size (MB): {report['input_mb']:.2f}")
    print(f"Forward/backward pass size (MB): {report['forward_backward_pass_mb']:.2f}")
    print(f"Params size (MB): {report['params_mb']:.2f}")
    print(f"Estimated Total Size (MB): {report['estimated_total_mb']:.2f}")
    print(rule)
    return 0
