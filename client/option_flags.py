"""One command-line flag per explanation option, typed and explained by the schema.

`add_option_flags(parser)` gives `netscope explain`, `pointing` and
`bench` a `--NAME` flag (underscores as dashes) for every option in the
committed schema (client/explain_schema.py), with the option's description
as its help; `chosen_options(args)` returns the ones set, ready for
`Client.explain(**options)` / ExplainOptions. Ranges are the server's to
check (it names the limit in its answer); types and choices are checked
here, so `--steps ten` fails before any call.
"""
from __future__ import annotations

import argparse

from . import explain_schema

_DEST = "explain_option_"  # args attribute prefix of these flags


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")


_TYPES = {"int": int, "float": float, "str": str}


def help_text(o) -> str:
    """The option's description, its default, and which methods take it."""
    text = o.description
    if o.default is not None and "default" not in text:
        text += f" (default {explain_schema.default_text(o)})"
    if o.requires:
        text += f"; only with --{o.requires.replace('_', '-')}"
    if o.methods and len(o.methods) <= 4:
        text += f" [{', '.join(o.methods)}]"
    return text.replace("%", "%%")  # argparse formats help with %


def add_option_flags(parser: argparse.ArgumentParser, title: str = "explanation options") -> None:
    """A flag for every option of the schema that the parser does not
    already have (a name it does have stays reachable by --option)."""
    group = parser.add_argument_group(title, "from the method registry (`netscope methods` lists which method "
                                             "takes which); unset: the method's default")
    taken = set(parser._option_string_actions)
    for o in explain_schema.load()[1]:
        flag = "--" + o.name.replace("_", "-")
        if flag in taken:
            continue
        kw: dict = {"dest": _DEST + o.name, "default": None, "help": help_text(o)}
        if o.type == "bool":
            kw.update(nargs="?", const=True, type=_bool, metavar="BOOL")
        else:
            kw.update(type=_TYPES[o.type], metavar=o.type.upper() if not o.choices else None)
            if o.choices:
                kw["choices"] = list(o.choices)
        group.add_argument(flag, **kw)


def chosen_options(args: argparse.Namespace) -> dict:
    """{option: value} of the option flags given on the command line, then
    the --option KEY=VALUE pairs (which win)."""
    chosen = {k[len(_DEST):]: v for k, v in vars(args).items() if k.startswith(_DEST) and v is not None}
    chosen.update(getattr(args, "options", None) or ())
    return chosen
