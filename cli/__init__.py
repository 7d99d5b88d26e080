"""The `netscope` command: run a server, or talk to one. Each command group is
one module of this package (serve, train, models, discovery, predict,
inspection, explain, bench, ui); `build_parser` asks each to add its sub-commands."""
from __future__ import annotations

import argparse
import os
import select
import sys

from netscope.client.client import NetscopeError
from netscope.client.connection import ConnectionSettingsError

from . import bench, discovery, explain, inspection, models, predict, serve, train, ui
from .preflight import UsageError, check as preflight

# In the order `netscope --help` lists them.
GROUPS = (serve, train, models, discovery, predict, inspection, explain, bench, ui)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netscope", description="Look inside torchvision image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(sub)
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
        preflight(args)  # every path and port the command declared, before any work
        code = args.run(args)
        sys.stdout.flush()  # here, so a reader that left (`| head`) is seen inside the try
        return code
    except BrokenPipeError as exc:
        if not _stdout_gone():
            print(f"netscope {args.command}: {exc}", file=sys.stderr)
            return 1
        return 141  # as a command killed by SIGPIPE: the shell's 128 + 13, and no message
    except NetscopeError as exc:
        print(f"netscope {args.command}: {exc.code.name}: {exc.message}", file=sys.stderr)
        print_error_details(exc)
        return 1
    except OSError as exc:
        print(f"netscope {args.command}: {exc}", file=sys.stderr)
        return 1
    except (ConnectionSettingsError, UsageError) as exc:  # half an mTLS pair, ...; a path or port that cannot work
        print(f"netscope {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _stdout_gone() -> bool:
    """Whether stdout's reader has gone (`netscope ... | head`). If so, point
    stdout at /dev/null so the interpreter's own flush at exit stays quiet too.
    A flush alone cannot tell: the failed write has already dropped the
    buffer, so the pipe itself is asked (POLLERR once its reader closed)."""
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0)):
            return False
    except BrokenPipeError:
        pass
    except (OSError, ValueError):  # not a real file (a test's StringIO): nothing to ask
        return False
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return True
