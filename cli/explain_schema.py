"""The explanation methods and option schema, as a committed copy for offline use.

The server's registry (server/explain/methods.py) is the source; GetServerInfo
serves it live (`netscope methods`). The CLI's flags and `--help` text must
not start torch to print help, so a copy of the schema is committed beside
this module (explain_schema.json), written by `scripts/gen_schema.py`
together with the method and option tables in README.md and
docs/EXPLANATIONS.md; tests/test_docs.py fails when any of them is stale
(as tests/test_proto.py does for the stubs).

The JSON has the shape of `netscope methods --json` less the server's own
facts: {"default_method": str, "methods": [MethodInfo...], "options":
[OptionSchema...]} with `ceiling_value` null.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path

from netscope.client.server_info import MethodInfo, OptionSchema

SCHEMA_FILE = Path(__file__).with_name("explain_schema.json")


@functools.cache
def load() -> tuple[list[MethodInfo], list[OptionSchema]]:
    """(methods, options) from the committed schema file, in registry order."""
    return from_dict(json.loads(SCHEMA_FILE.read_text()))


def from_dict(d: dict) -> tuple[list[MethodInfo], list[OptionSchema]]:
    methods = [MethodInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in m.items()})
               for m in d.get("methods", ())]
    options = [OptionSchema(**{k: tuple(v) if isinstance(v, list) else v for k, v in o.items()})
               for o in d.get("options", ())]
    return methods, options


def to_dict(methods, options, default_method: str = "") -> dict:
    """The JSON-ready schema (the committed file's content)."""
    return {"default_method": default_method, "methods": [asdict(m) for m in methods],
            "options": [asdict(o) for o in options]}


def default_text(o: OptionSchema) -> str:
    """An option's default as a person reads it ("method's" when the method decides)."""
    if o.default is None:
        return "method's"
    if isinstance(o.default, bool):
        return "true" if o.default else "false"
    return str(o.default)


# ---------------------------------------------------------------- the docs' tables

def methods_table(methods, options) -> str:
    """A Markdown table of the methods: name, family, cost, options, what it does, source."""
    rows = ["| method | family | cost | options | what it does | source |", "| --- | --- | --- | --- | --- | --- |"]
    for m in methods:
        own = ", ".join(f"`{o}`" for o in m.options) or "-"
        rows.append(f"| `{m.name}` | {m.family} | {m.cost} | {own} | {_cell(m.description)} | {_cell(m.source)} |")
    return "\n".join(rows)


def options_table(options) -> str:
    """A Markdown table of the options: type, default, range, choices, methods, description."""
    rows = ["| option | type | default | range | methods | what it does |", "| --- | --- | --- | --- | --- | --- |"]
    for o in options:
        span = range_text(o, ceiling=f"`{o.ceiling}` limit" if o.ceiling else "")
        if o.choices:
            span = " / ".join(f"`{c}`" for c in o.choices)
        used = ", ".join(o.methods) if len(o.methods) <= 6 else f"{len(o.methods)} methods"
        rows.append(f"| `{o.name}` | {o.type} | {default_text(o)} | {span or '-'} | {used or '-'} "
                    f"| {_cell(o.description)} |")
    return "\n".join(rows)


def range_text(o: OptionSchema, ceiling: str = "") -> str:
    """">= 1, <= 1024", "> 0", "<= the input's side": the bounds a value must keep."""
    parts = []
    if o.minimum is not None:
        parts.append(f"{'>' if o.minimum_exclusive else '>='} {o.minimum:g}")
    if ceiling:
        parts.append(f"<= {ceiling}")
    if o.within_input:
        parts.append("<= the input's shorter side")
    return ", ".join(parts)


def methods_by_family(methods) -> str:
    """One Markdown bullet per family listing its methods."""
    families: dict[str, list[str]] = {}
    for m in methods:
        families.setdefault(m.family, []).append(m.name)
    return "\n".join(f"- {family}: " + ", ".join(f"`{n}`" for n in names) for family, names in families.items())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
