"""Old names kept for one release: a flag or config key that was renamed still
works, with a warning on stderr naming the new one. (argparse's own
`deprecated=True` needs Python 3.13; netscope runs on 3.11.)"""
from __future__ import annotations

import argparse
import sys


def warn_renamed(prog: str, old: str, new: str, why: str = "") -> None:
    """Print `prog: OLD is deprecated; use NEW (WHY)` on stderr."""
    print(f"{prog}: {old} is deprecated and goes in the next release; use {new}" + (f" ({why})" if why else ""),
          file=sys.stderr)


class RenamedFlag(argparse.Action):
    """A hidden alias of a renamed flag: stores into the new flag's dest and
    warns. Add it with `add_renamed_flag`."""

    def __init__(self, option_strings, dest, *, new: str, why: str = "", **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new, self.why = new, why

    def __call__(self, parser, namespace, values, option_string=None):
        warn_renamed(parser.prog, option_string, self.new, self.why)
        setattr(namespace, self.dest, values)


def add_renamed_flag(parser, old: str, new: str, *, why: str = "", **kwargs) -> None:
    """`old` (e.g. "--max-batch") keeps working as `new` ("--max-images"),
    hidden from --help; `kwargs` (type, ...) as for `new`. Call it after
    adding `new`, so both share its dest and default."""
    dest = new.lstrip("-").replace("-", "_")
    parser.add_argument(old, dest=dest, action=RenamedFlag, new=new, why=why, help=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, **kwargs)
