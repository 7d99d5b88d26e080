"""`netscope explain` (a resumable job over images and folders, on one or more
servers) and `netscope pointing` (the pointing game against known boxes)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading

from netscope.client.client import DEFAULT_METRICS, DEFAULT_SERVER, FAITHFULNESS_METRICS, Client

from .connection import client_parser, connection
from . import explain_schema
from .option_flags import add_option_flags, chosen_options, option_flag
from .out_folder import out_folder
from .progress import job_progress
from . import explain_ray
from .preflight import ImagesOrFolders, OutFolder, ReadFolder, declare
from .output import print_json, print_table


def add_commands(sub) -> None:
    p = client_parser(sub, "explain", "explain images or folders: overlay PNGs and an index.csv", cmd_explain, fleet=True,
                      timeout_help="seconds a server may hold images without progress (no answer, no progress "
                                   "message) before its images go to the other servers; one slow image is progress")
    p.add_argument("inputs", nargs="*", help="image files and folders (walked recursively)")
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
    p.add_argument("--metrics", nargs="?", action=MetricsFlag, default=None, metavar="NAME[,NAME...]",
                   help="faithfulness metrics per image in the index, and their means per method: any of "
                        f"{', '.join(FAITHFULNESS_METRICS)} or all (bare --metrics: {', '.join(DEFAULT_METRICS)}; "
                        "ROAD alone costs as much on a CPU as the other four together)")
    p.add_argument("--in-flight", type=int, default=64, help="images on the wire per server")
    explain_ray.add_flags(p)
    declare(p, ImagesOrFolders("INPUT", "inputs"), OutFolder("--out"))
    p = client_parser(sub, "pointing", "pointing-game accuracy of explanation methods on images with known boxes",
                      cmd_pointing)
    p.add_argument("folder", help="images plus boxes.csv (netscope.training.data.export_shapes writes one)")
    p.add_argument("--model", required=True)
    p.add_argument("--method", dest="methods", action="append", metavar="METHOD[@LAYER]",
                   help="explanation method, optionally @layer (repeatable; default grad_cam)")
    p.add_argument("--tolerance", type=float, default=0.0, help="a peak this many pixels from its box still hits")
    option_flag(p, "an explanation option for every method (repeatable), e.g. samples=400")
    add_option_flags(p, "explanation options, for every method")
    declare(p, ReadFolder("FOLDER", "folder"))


class MetricsFlag(argparse.Action):
    """--metrics [NAME,NAME...]: the names, or DEFAULT_METRICS when bare. A
    bare --metrics before an input (`--metrics photos/ --out out/`) is read
    as bare, and the input as an input: a value that names a path, or holds a
    '/' or a '.', is never a metric list. Unknown names are the server's to
    refuse (INVALID_ARGUMENT, METRIC_NOT_FOUND, naming the valid ones)."""

    def __call__(self, parser, namespace, value, option_string=None):
        names = list(getattr(namespace, self.dest, None) or [])
        if value is None or "/" in value or "." in value or os.path.exists(value):
            if value is not None:
                namespace.metrics_inputs = [*(getattr(namespace, "metrics_inputs", None) or []), value]
                namespace.inputs = [*(getattr(namespace, "inputs", None) or []), value]  # for the preflight
            chosen = list(DEFAULT_METRICS)
        else:
            chosen = [n.strip() for n in value.split(",") if n.strip()]
            chosen = list(FAITHFULNESS_METRICS) if chosen == ["all"] else chosen
        setattr(namespace, self.dest, list(dict.fromkeys(names + chosen)))


def options_per_method(methods: list[str], options: dict) -> dict[str, dict]:
    """With several methods, each gets the options it uses (by the committed
    schema): `--steps 16` with integrated_gradients and grad_cam goes to
    integrated_gradients alone. An option none of them uses is a ValueError
    (a usage error before any work). One method, or a method the schema does
    not know (a newer server), gets them all and the server judges."""
    if len(methods) == 1:
        return {methods[0]: dict(options)}
    methods_info, options_info = explain_schema.load()
    uses = {m.name: set(m.options) for m in methods_info}
    everyone = {o.name for o in options_info if not o.methods}  # e.g. seed: every method accepts it
    unused = [k for k in options if k not in everyone and all(m in uses and k not in uses[m] for m in methods)]
    if unused:
        users = {o.name: o.methods for o in options_info}
        said = "; ".join(f"{k} (used by {', '.join(users.get(k, ())) or 'no method'})" for k in unused)
        raise ValueError(f"no method of {', '.join(methods)} uses {said}")
    return {m: {k: v for k, v in options.items() if m not in uses or k in uses[m] or k in everyone} for m in methods}


def cmd_explain(args) -> int:
    from tqdm import tqdm

    from netscope.client import jobs
    from netscope.client.client import explain_request
    from netscope.client.job_summary import job_summary, method_summary, table

    # An input right after a bare --metrics went to it (MetricsFlag); argparse may have reset inputs since.
    args.inputs = list(dict.fromkeys([*(args.inputs or []), *getattr(args, "metrics_inputs", [])]))
    if not args.inputs:
        print("netscope explain: give at least one image file or folder to explain", file=sys.stderr)
        return 2
    if (code := explain_ray.check(args)) is not None:
        return code
    options = chosen_options(args)
    methods = list(dict.fromkeys(args.methods or ["grad_cam"]))
    try:
        options_of = options_per_method(methods, options)
    except ValueError as exc:
        print(f"netscope explain: {exc}", file=sys.stderr)
        return 2
    out = out_folder(args.out)
    ray_engine = args.engine == "ray"
    images = explain_ray.find_images(args, out) if ray_engine else jobs.find_images(args.inputs, exclude=out)
    try:
        labels = jobs.folder_labels(args.inputs, images) if args.target_from_folder else None
    except ValueError as exc:
        print(f"netscope explain: {exc}", file=sys.stderr)
        return 2
    per_method = []
    first_error: dict[str, str] = {}  # status -> the first image's message

    def lost(server: str, why: str, handed_back: int) -> None:
        others = len(args.servers or ()) > 1  # one server: the job's own error says what is left and how to resume
        tqdm.write(f"netscope explain: {server} failed ({why})"
                   + (f"; {handed_back} image(s) go to the other servers" if others else ""), file=sys.stderr)

    total, done = len(images) * len(methods), [0]

    def progress(n: int) -> None:
        done[0] += n
        bar.update(n)

    def skipped(n: int) -> None:  # done before this run: counted, not in the rate
        done[0] += n
        getattr(bar, "skipped", bar.update)(n)

    with job_progress(total) as bar, \
            interrupted_says(lambda: f"interrupted: {done[0]} of {total} done; rerun the same command to resume"), \
            (explain_ray.engine_session() if ray_engine else contextlib.nullcontext()):
        for method in methods:
            # One method keeps the plain layout (OUT/index.csv), so its reruns resume;
            # several get a folder each.
            folder = out if len(methods) == 1 else out / method
            spec = explain_request(args.model, [], method, args.target, args.layer or (), True, False,
                                   args.colormap, args.alpha, False, 0, options_of[method], sign=args.sign,
                                   clip_percentile=args.clip_percentile, metrics=args.metrics or ())
            job = explain_ray.make_job(args, spec, folder, labels) if ray_engine else jobs.ExplainJob(
                args.servers or [DEFAULT_SERVER], spec, folder, in_flight=args.in_flight, timeout=args.timeout,
                on_server_lost=lost, connect=connection(args), labels=labels)
            bar.set_description(method)
            report = job.run(images=images, progress=progress, **({} if ray_engine else {"skipped": skipped}))
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


@contextlib.contextmanager
def interrupted_says(message):
    """Within the block, Ctrl-C (SIGINT) and SIGTERM print `message()` to
    stderr and raise KeyboardInterrupt (exit 130): a killed job says how far
    it got and how to go on, where it used to print nothing."""
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        def on_term(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt:
        print(f"netscope explain: {message()}", file=sys.stderr)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def cmd_pointing(args) -> int:
    from netscope.server.explain.pointing import pointing_game

    from .pointing import BASELINES, baseline, maps, off_centre, read_boxes

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
