#!/usr/bin/env python
"""Writes what is generated from the method registry (server/explain/methods.py):

- cli/explain_schema.json: the methods and option schema the CLI's flags
  and --help read without starting torch;
- the tables between `<!-- BEGIN generated: NAME -->` and
  `<!-- END generated: NAME -->` in README.md (methods, options) and
  docs/EXPLANATIONS.md (methods by family).

    .venv/bin/python scripts/gen_schema.py          # rewrite them
    .venv/bin/python scripts/gen_schema.py --check  # exit 1 naming each stale one (tests/test_docs.py)

Commit the results with the change to the registry.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def schema() -> dict:
    """The registry's methods and options as the committed JSON holds them."""
    from netscope.cli import explain_schema
    from netscope.client.server_info import MethodInfo, OptionSchema
    from netscope.server.explain import methods as registry
    from netscope.server.rpc import server_info

    specs = list(registry.methods().values())
    methods = [MethodInfo(**vars(server_info.method_info(m))) for m in specs]
    options = []
    for spec in registry.options().values():
        o = vars(server_info.option_info(spec, specs, {}))
        options.append(OptionSchema(**{**o, "ceiling": o["ceiling"] or ""}))
    return explain_schema.to_dict(methods, options, registry.DEFAULT_METHOD)


def outputs(d: dict) -> dict[Path, str]:
    """Each generated file's expected content."""
    from netscope.cli import explain_schema

    methods, options = explain_schema.from_dict(d)
    blocks = {
        ROOT / "README.md": {"methods": explain_schema.methods_table(methods, options),
                             "options": explain_schema.options_table(options)},
        ROOT / "docs" / "EXPLANATIONS.md": {"methods by family": explain_schema.methods_by_family(methods)},
    }
    out = {explain_schema.SCHEMA_FILE: json.dumps(d, indent=1) + "\n"}
    for path, named in blocks.items():
        text = path.read_text()
        for name, content in named.items():
            text = replace_block(text, name, content, path)
        out[path] = text
    return out


def replace_block(text: str, name: str, content: str, path: Path) -> str:
    begin, end = f"<!-- BEGIN generated: {name} -->", f"<!-- END generated: {name} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path.relative_to(ROOT)} has no `{begin}` ... `{end}` block; add one where the table goes")
    return pattern.sub(lambda _: f"{begin}\n{content}\n{end}", text, count=1)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, content in outputs(schema()).items():
        if path.exists() and path.read_text() == content:
            continue
        if check:
            stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(content)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"stale, generated from the method registry: {', '.join(stale)}; run scripts/gen_schema.py and commit",
              file=sys.stderr)
        return 1
    if check:
        print("generated schema and docs tables are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
