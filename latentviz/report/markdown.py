"""Markdown helpers shared by the sections: tables and number cells."""
from __future__ import annotations

import math

import numpy as np

from .papers import MISSING


def md_table(header: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)


def _num(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    return f"{v:.{digits}f}"


def _pct(v, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    return f"{100 * v:.{digits}f}"


def _paper(v) -> str:
    """A paper's number as the paper prints it (its mean ± std where it gives one)."""
    if v is None:
        return MISSING
    if isinstance(v, tuple):
        return f"{v[0]:.1f} ± {v[1]:.1f}"
    return f"{v:g}"


def _diff(ours, paper, digits: int = 2) -> str:
    if ours is None or paper is None or (isinstance(ours, float) and math.isnan(ours)):
        return MISSING
    return f"{ours - paper:+.{digits}f}"


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
