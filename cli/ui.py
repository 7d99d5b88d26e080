"""`netscope ui`: the browser viewer (netscope.ui), a client of the server like
every other command here. Gradio is imported only when the command runs, so
the CLI works without the `ui` extra."""
from __future__ import annotations

import sys

from netscope.client.client import Client

from .connection import client_parser, connection


def add_commands(sub) -> None:
    p = client_parser(sub, "ui", "open the browser viewer: models, predictions, explanations, layers, statistics, "
                                 "batch jobs", cmd_ui)
    p.add_argument("--job", default="", metavar="OUT/", help="a `netscope explain` --out folder to open on the "
                                                             "batch-job tab (running or finished)")
    p.add_argument("--images", default="", metavar="DIR", help="the folder that job read, to show each image's "
                                                               "original beside its overlay")
    p.add_argument("--host", default="127.0.0.1", help="address the page listens on (default 127.0.0.1: this "
                                                       "machine only)")
    p.add_argument("--port", type=int, default=7860, help="port of the page (default 7860)")


def cmd_ui(args) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("netscope ui: the viewer needs Gradio and its friends: pip install 'netscope[ui]' "
              "(from a checkout: .venv/bin/pip install -e '.[ui]')", file=sys.stderr)
        return 2
    from netscope.ui.app import launch

    client = Client(args.server, timeout=args.timeout, **connection(args))
    try:
        client.wait_ready(timeout=min(args.timeout, 30.0))
        print(f"netscope ui: http://{args.host}:{args.port}/ (server {args.server}); Ctrl-C to stop", file=sys.stderr)
        launch(client, host=args.host, port=args.port, job=args.job, images=args.images)
    except TimeoutError as exc:
        print(f"netscope ui: {exc}; is `netscope serve` running there?", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0
