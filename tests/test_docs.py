"""The docs' method lists agree with the method registry (issue 13 §3):
README.md's and docs/EXPLANATIONS.md's tables are generated from it
(scripts/gen_schema.py), every registered method appears in both, and no
method they list or measure is unknown."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from netscope.server.explain import methods as registry

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXPLANATIONS = (ROOT / "docs" / "EXPLANATIONS.md").read_text()


def block(text: str, name: str) -> str:
    m = re.search(rf"<!-- BEGIN generated: {re.escape(name)} -->(.*?)<!-- END generated: {re.escape(name)} -->",
                  text, re.S)
    assert m, f"no generated block {name!r}"
    return m.group(1)


def first_cells(table_text: str) -> list[str]:
    """The first cell of each body row of the Markdown tables in the text."""
    cells = []
    for line in table_text.splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells.append(line.split("|")[1].strip())
    return [c for c in cells if c not in ("method", "method@layer", "option")]


def test_generated_schema_and_tables_are_current():
    """cli/explain_schema.json and the tables between the `generated`
    markers are what scripts/gen_schema.py writes from the registry today."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_schema.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_every_registered_method_is_listed_in_both():
    for doc, text in (("README.md", block(README, "methods")),
                      ("docs/EXPLANATIONS.md", block(EXPLANATIONS, "methods by family"))):
        missing = [name for name in registry.methods() if f"`{name}`" not in text]
        assert not missing, f"{doc} does not list {missing}"
    options = [o for o in registry.options() if f"`{o}`" not in block(README, "options")]
    assert not options, f"README.md's options table lacks {options}"


def test_no_listed_method_is_unknown():
    known = set(registry.methods())
    listed = [c.strip("`") for c in first_cells(block(README, "methods"))]
    assert set(listed) <= known, set(listed) - known
    family_lines = block(EXPLANATIONS, "methods by family")
    assert set(re.findall(r"`(\w+)`", family_lines)) <= known
    # The measured rows: "grad_cam", "cam (layer `features`, 4x4)", "grad_cam@features.2.3 (...)",
    # "lime (50 samples)", "grad_cam, the same network untrained"; baselines are not methods.
    start = EXPLANATIONS.index("## Shapes, every method")
    measured = EXPLANATIONS[start:EXPLANATIONS.index("\n## ", start + 1)]
    names = [re.split(r"[\s@,(]", c, maxsplit=1)[0] for c in first_cells(measured) if not c.startswith("baseline")]
    assert names and set(names) <= known, set(names) - known
