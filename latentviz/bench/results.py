"""The benchmark's results: :class:`Row`, :class:`Report` (printed tables and the JSON),
number formatting and the target check."""
from __future__ import annotations

import dataclasses
import math
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Row:
    """One printed figure: ours beside the reference, the speed-up and the target."""

    what: str
    ours: float | None = None
    reference: float | None = None
    unit: str = "s"
    ratio: float | None = None      # speed-up of ours over the reference (> 1: ours faster)
    target: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


class Report:
    """Prints rows as they are measured (one table per section) and keeps them for JSON."""

    WIDTHS = (50, 15, 15, 7, 16, 5)

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.sections: dict[str, dict] = {}
        self.current: dict | None = None

    def _print(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def section(self, name: str, title: str) -> None:
        self.current = self.sections.setdefault(name, {"title": title, "rows": [],
                                                       "skipped": [], "notes": []})
        self._print()
        self._print(f"== {name}: {title}")
        w = self.WIDTHS
        self._print(f"{'what':<{w[0]}} {'ours':>{w[1]}} {'reference':>{w[2]}} {'ratio':>{w[3]}} "
                    f"{'target':<{w[4]}} {'met?':<{w[5]}} note")

    def row(self, row: Row) -> Row:
        self.current["rows"].append(row)
        w = self.WIDTHS
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        self._print(f"{_clip(row.what, w[0]):<{w[0]}} {fmt(row.ours, row.unit):>{w[1]}} "
                    f"{fmt(row.reference, row.unit):>{w[2]}} {ratio:>{w[3]}} "
                    f"{row.target:<{w[4]}} {met:<{w[5]}} {row.note}".rstrip())
        return row

    def skip(self, what: str, reason: str) -> None:
        self.current["skipped"].append({"what": what, "reason": reason})
        self._print(f"  skipped: {what}: {reason}")

    def note(self, text: str) -> None:
        self.current["notes"].append(text)
        for i, line in enumerate(textwrap.wrap(text, 100)):
            self._print(("  note: " if i == 0 else "        ") + line)

    def to_dict(self) -> dict:
        return {name: {**s, "rows": [dataclasses.asdict(r) for r in s["rows"]]}
                for name, s in self.sections.items()}


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "~"


def fmt(value: float | None, unit: str) -> str:
    """A figure with its unit, readable at a glance: 41,200 img/s, 3.2 s, 85 ms."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "s":
        if value < 1.0:
            return f"{value * 1000:.0f} ms"
        return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"
    if unit == "img/s":
        return f"{value:,.0f} img/s"
    if unit == "h":
        return f"{value:.1f} h"
    if unit:
        return f"{value:.4g} {unit}"
    return f"{value:.4g}"


def _met(value, target, lower=False) -> bool | None:
    if value is None or not math.isfinite(value):
        return None
    return value <= target if lower else value >= target


def _speedup(reference: float | None, ours: float | None) -> float | None:
    return reference / ours if reference and ours else None


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)
