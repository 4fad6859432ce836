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


def share(fraction: float | None, significant: int = 2) -> str:
    """A fraction with `significant` significant digits in fixed point (`0.00423` → `0.0042`,
    `0.214` → `0.21`): small shares that differ print differently, where `percent` would round
    them all to `0 %`. Beyond six decimals, scientific notation; `MISSING` for None and NaN."""
    if fraction is None or math.isnan(fraction):
        return MISSING
    if fraction == 0 or not math.isfinite(fraction):
        return f"{fraction:g}"
    decimals = significant - 1 - math.floor(math.log10(abs(fraction)))
    if decimals > 6:
        return f"{fraction:.{significant - 1}e}"
    return f"{fraction:.{max(0, decimals)}f}"


def duration(seconds: float) -> str:
    """A time span for people: `4.2 s`, `12 min 5 s`, `3 h 20 min`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
