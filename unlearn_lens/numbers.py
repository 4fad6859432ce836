"""Small numeric helpers shared by the reports: a mean that skips missing values, and how numbers print."""

from __future__ import annotations

import math
from collections.abc import Iterable

MISSING = "–"
"""How a missing or undefined number prints."""


def finite_mean(values: Iterable[float | None]) -> float:
    """Mean of the finite values (None, NaN and ±inf left out); NaN when none is left."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def number(value: float | None, digits: int = 3) -> str:
    """`value` with `digits` decimals, or `MISSING` for None and NaN."""
    return MISSING if value is None or math.isnan(value) else f"{value:.{digits}f}"


def percent(fraction: float | None) -> str:
    """A fraction as a whole percentage (`0.237` → `24 %`), or `MISSING` for None and NaN."""
    return MISSING if fraction is None or math.isnan(fraction) else f"{round(100 * fraction)} %"
