"""`netscope explain --engine ray`: the flags, and the job the explain command
runs in place of the gRPC fan-out (netscope.jobs.ray). Nothing here imports
Ray or the server until a Ray job starts."""
from __future__ import annotations

import contextlib
import sys

ENGINES = ("grpc", "ray")


def add_flags(p) -> None:
    g = p.add_argument_group("engine", "who computes the job: netscope servers over gRPC (default), or a Ray cluster")
    g.add_argument("--engine", choices=ENGINES, default="grpc",
                   help="grpc: stream to --server(s); ray: a Ray Data pipeline whose actors load --model themselves "
                        "(needs pip install 'netscope[ray]')")
    g.add_argument("--ray-address", metavar="auto|HOST:PORT",
                   help="--engine ray: the cluster (auto: the one `ray start` began here; default $RAY_ADDRESS, "
                        "else a new local Ray); INPUTs may then be URIs Ray reads (s3://bucket/photos/)")
    g.add_argument("--store", default="models",
                   help="--engine ray: the model store --model's checkpoints are read from, on every node "
                        "(default ./models)")
    g.add_argument("--actors", type=int, default=None, metavar="N",
                   help="--engine ray: at most N explaining actors (default: one per GPU, else half the CPUs)")


def usage_error(args) -> str | None:
    """Why this Ray job cannot start (a usage error, exit 2), or None."""
    if args.engine != "ray":
        for flag, value in (("--ray-address", args.ray_address), ("--actors", args.actors)):
            if value is not None:
                return f"{flag} is for --engine ray"
        return None
    if args.servers:
        return "--server is for --engine grpc: with --engine ray the job runs on the Ray cluster (--ray-address)"
    if args.actors is not None and args.actors < 1:
        return f"--actors must be at least 1; got {args.actors}"
    try:
        from netscope.jobs.ray import require_ray

        require_ray()
    except ImportError as exc:
        return str(exc)
    try:
        model_source(args)
    except ValueError as exc:
        return str(exc)
    return None


def model_source(args):
    from pathlib import Path

    from netscope.jobs.ray import ModelSource

    store = Path(args.store).expanduser()
    # Absolute, so the workers (whose working folder is Ray's) read the store given here.
    return ModelSource.parse(args.model, store=str(store.resolve() if "://" not in args.store else args.store))


def find_images(args, out):
    from netscope.jobs.ray import find_images

    return find_images(args.inputs, exclude=out)


def make_job(args, spec, folder, labels):
    from tqdm import tqdm

    from netscope.jobs.ray import RayJob

    where = args.ray_address or "a local Ray (or $RAY_ADDRESS)"
    tqdm.write(f"netscope explain: starting the Ray pipeline on {where}; the first answer comes once its actors "
               f"have started and loaded {args.model} (about 15 s on a small machine)", file=sys.stderr)
    return RayJob(spec, folder, model_source(args), address=args.ray_address, labels=labels, actors=args.actors)


@contextlib.contextmanager
def engine_session():
    """The Ray jobs of one command: stdout goes to stderr while Ray is up in
    this process, and Ray is shut down before the result is printed. Ray
    reports the cluster's events (a worker died, ...) to stdout from a
    background thread, at any moment until then, and stdout is the result's
    (`--json`)."""
    with contextlib.redirect_stdout(sys.stderr):
        try:
            yield
        finally:
            from netscope.jobs.ray import disconnect

            disconnect()


def check(args) -> int | None:
    """Exit status 2 with the reason on stderr, or None to go on."""
    why = usage_error(args)
    if why is None:
        return None
    print(f"netscope explain: {why}", file=sys.stderr)
    return 2
