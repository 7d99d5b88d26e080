"""One command-line flag per explanation option, typed and explained by the schema.

`add_option_flags(parser)` gives `netscope explain`, `pointing` and
`bench` a `--NAME` flag (underscores as dashes) for every option in the
committed schema (cli/explain_schema.py), with the option's description
as its help; `chosen_options(args)` returns the ones set, ready for
`Client.explain(**options)` / ExplainOptions; `option_flag(parser)` adds
`--option KEY=VALUE` for any option, typed the same way. Ranges are the server's to
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


def explain_option(text: str) -> tuple[str, object]:
    """argparse type of --option KEY=VALUE: any explanation option, typed by
    the committed schema (cli/explain_schema.json), else by its typed
    ExplainOptions field, else by the value's look (true/false, an integer,
    a number, else text). The server checks the name and the range."""
    from netscope.v1 import inspector_pb2 as pb

    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key or key in ("faithfulness", "parameters"):  # faithfulness is --metrics
        raise argparse.ArgumentTypeError(f"{text!r}: use KEY=VALUE with KEY an option's name "
                                         f"(`netscope methods` lists them)")
    kinds = {o.name: o.type for o in explain_schema.load()[1]}
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
