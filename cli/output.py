"""What every command prints: aligned tables, JSON of dataclasses and arrays, human-sized numbers."""
from __future__ import annotations

import dataclasses
import json


def print_table(rows: list[list], header: list[str]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def print_json(obj) -> None:
    def default(o):
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        if hasattr(o, "tolist"):
            return o.tolist()
        raise TypeError(type(o).__name__)

    print(json.dumps(obj, default=default, indent=2))


def si(n: float, unit: str = "") -> str:
    """A count with an SI prefix, a space before it, and the unit glued to the
    prefix as people write them: si(5.0e6, "FLOPs") == "5.0 MFLOPs",
    si(1.2e9, "MACs") == "1.2 GMACs", si(512, "MACs") == "512 MACs",
    si(3.4e6) == "3.4 M". The one formatter for counts (info, summary, bench)."""
    for prefix in ("", "K", "M", "G", "T", "P"):
        if abs(n) < 999.95 or prefix == "P":
            number = f"{n:.1f}" if prefix else f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"
            return f"{number} {prefix}{unit}".rstrip()
        n /= 1000
    raise AssertionError("unreachable")
