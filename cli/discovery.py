"""`netscope methods` and `netscope server-info`: what a server can do, from GetServerInfo."""
from __future__ import annotations

import re
import sys

from netscope.client.client import Client
from netscope.client.server_info import ServerInfo

from .connection import client_parser, connection
from .explain_schema import default_text, range_text
from .output import print_json, print_table


def add_commands(sub) -> None:
    p = client_parser(sub, "methods", "the server's explanation methods and their options (--json: the whole schema)",
                      cmd_methods)
    p.add_argument("method", nargs="?", help="show this method's options in detail")
    client_parser(sub, "server-info", "the server's version, build, devices, dtypes, colormaps, limits and models",
                  cmd_server_info)


def _fetch(args) -> ServerInfo:
    with Client(args.server, timeout=args.timeout, **connection(args)) as c:
        return c.server_info()


def _range(o) -> str:
    """">= 1, <= 1024": the option's bounds with this server's ceiling."""
    return range_text(o, ceiling="" if o.ceiling_value is None else str(o.ceiling_value))


def cmd_methods(args) -> int:
    info = _fetch(args)
    if args.method:
        try:
            m = info.method(args.method)
        except KeyError as exc:
            print(f"netscope methods: {exc.args[0]}", file=sys.stderr)
            return 2
        if args.json:
            print_json({"method": m, "options": [info.option(n) for n in m.options]})
            return 0
        print(f"{m.name} ({m.family}, {m.cost}): {m.description}")
        print(f"source: {m.source}")
        print(f"needs: {', '.join(m.needs) or '-'}; draws noise: {'yes' if m.draws_noise else 'no'}; "
              f"may batch: {'yes' if m.may_batch else 'no'}; signed maps: {'yes' if m.signed else 'no'}\n")
        print_table([[o.name, o.type, default_for(o, m.name), _range(o) or "/".join(o.choices) or "-", o.description]
                     for o in (info.option(n) for n in m.options)],
                    ["option", "type", "default", "range", "what it does"])
        return 0
    if args.json:
        print_json({"default_method": info.default_method, "methods": info.methods, "options": info.options,
                    "limits": info.limits})
        return 0
    options = {o.name: o for o in info.options}
    print_table([[m.name + (" *" if m.name == info.default_method else ""), m.family, m.cost,
                  ", ".join(_with_default(options.get(n), n, m.name) for n in m.options) or "-"] for m in info.methods],
                ["method", "family", "cost", "options (default)"])
    print(f"\n* the default method. `netscope methods NAME` for one method's options in detail; "
          f"set an option with --NAME VALUE or --option NAME=VALUE.")
    return 0


def _with_default(o, name: str, method: str) -> str:
    value = "" if o is None else default_for(o, method)
    return f"{name}={value}" if value and value != UNSET else name


UNSET = "unset"  # no default: the option does nothing until given (noise_tunnel, seed)


def default_for(o, method: str) -> str:
    """The value an option takes for `method` when not given, as a person
    reads it. The schema's `default` when it has one; else (None: "the
    method's own") the value its description states for this method
    ("integration steps: integrated_gradients (50), is_cam ... (10)", "noise
    ... (0.3; gradient_shap 0)") or for every method ("(default 32)",
    "(default: half the window)"); UNSET when it states none."""
    if o.default is not None:
        return default_text(o)
    text = o.description
    # "is_cam mask intensities (10)", "kernel_shap and shapley_value_sampling 25", "gradient_shap 0"
    own = re.search(rf"\b{re.escape(method)}\b(?: and \w+)?(?: [a-z ]*\(| )([0-9][0-9.]*)", text)
    if own:
        return own.group(1)
    said = re.search(r"\(\s*(?:method )?default:? ([^);]+?)(?:,| as |\)|;)", text) or \
        re.search(r"\(([0-9][0-9.]*)[;)]", text) or re.search(r": ([^:(]+?) \(default\)", text)
    return said.group(1).strip() if said else UNSET


def cmd_server_info(args) -> int:
    info = _fetch(args)
    if args.json:
        print_json(info.to_dict())
        return 0
    b = info.build
    print(f"netscope {info.version}" + (f" (commit {b.git_commit})" if b.git_commit else ""))
    print(f"build: python {b.python}, torch {b.torch}, torchvision {b.torchvision}, captum {b.captum or '-'}, "
          f"grpc {b.grpc}, cuda {b.cuda or '-'}")
    print("devices: " + "; ".join(
        d.name + (f" {d.description} ({d.total_memory_bytes / 2**30:.1f} GiB, compute "
                  f"{'.'.join(map(str, d.capability))})" if d.description else "") for d in info.devices))
    print(f"dtypes: {', '.join(info.dtypes)}")
    print(f"colormaps: {', '.join(info.colormaps)}")
    lim = info.limits
    print(f"limits: {lim.max_message_bytes / 2**20:g} MiB per message, {lim.max_pixels:,} pixels per image, "
          f"{lim.max_images} images per request, {lim.stream_batch} per ExplainStream device batch")
    print("explanation limits: " + ", ".join(f"{k} {v}" for k, v in lim.explain.items()))
    print(f"methods: {len(info.methods)} (default {info.default_method}; `netscope methods` lists them)")
    print(f"models: {', '.join(info.models) or 'none loaded'}")
    return 0
