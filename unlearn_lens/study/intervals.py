"""How sure the same-data verdict is: paired-bootstrap intervals on every number that decides it,
and the share of resamples that give the same label.

The original's, the unlearned model's and every relearning point's forget outcomes are the same
items, resampled together; the control's own items are resampled with their own draw. The peak
excess is the maximum over the curve taken inside each resample (so its upward bias is in the
interval), the control read at the forget point's epoch by linear interpolation, as
[`RecoveryCurve.peak_excess`][unlearn_lens.unlearn.RecoveryCurve.peak_excess] reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from unlearn_lens.metrics.bootstrap import (
    N_RESAMPLES,
    Bootstrap,
    BootstrapInterval,
    Totals,
    Values,
    control_gain,
    forgotten,
    peak_excess,
    recovery,
)
from unlearn_lens.metrics.token import ItemOutcomes
from unlearn_lens.regimes import RegimeThresholds, taught_where
from unlearn_lens.schema import Real
from unlearn_lens.unlearn.relearn import EPOCH_TOLERANCE, CurvePoint, RecoveryCurve

STABLE = 0.9
"""Label stability below which a verdict reads "borderline": one resample in ten or more would
call it otherwise."""

NOT_FORGOTTEN_CODE, INCONCLUSIVE_CODE, REVERSIBLE_CODE, IRREVERSIBLE_CODE = 0, 1, 2, 3


@dataclass(frozen=True)
class VerdictIntervals:
    """95 % intervals of the numbers that decide the same-data verdict, and its stability.

    **Fields:** `forgotten`, `recovery`, `control_gain` (on recovery's scale), `excess` (at the
    end), `peak_excess` (the maximum along the curve, taken inside each resample); `stability`,
    the share of resamples giving the same reversibility label (not forgotten, inconclusive,
    reversible, irreversible) as the items do; `borderline`, when stability is below `STABLE`,
    the threshold whose interval straddles it (else None); `metric` (token accuracy or exact
    match) and `n_items` (forget, control).
    """

    forgotten: BootstrapInterval
    recovery: BootstrapInterval
    control_gain: BootstrapInterval
    excess: BootstrapInterval
    peak_excess: BootstrapInterval
    stability: Real
    borderline: str | None
    metric: str
    n_items: tuple[int, int]


def control_weights(curve: RecoveryCurve) -> list[tuple[int, int, float]]:
    """For every forget point the control reaches: the control points around its epoch and the
    interpolation weight of the later one."""
    epochs = [point.epoch for point in curve.control]
    weights = []
    for point in curve.forget:
        if point.epoch > epochs[-1] + EPOCH_TOLERANCE:
            break
        upper = next(i for i, e in enumerate(epochs) if e >= point.epoch - EPOCH_TOLERANCE)
        lower = max(upper - 1, 0)
        span = epochs[upper] - epochs[lower]
        weight = 1.0 if span <= 0 else (point.epoch - epochs[lower]) / span
        weights.append((lower, upper, weight))
    return weights


def _runs(
    runs: Sequence[Mapping[str, ItemOutcomes]],
) -> tuple[dict[str, ItemOutcomes], dict[str, list[str]]]:
    """Every run's tables under `name@run`, and for each name the tables to draw a run from."""
    tables = {f"{name}@{k}": table for k, run in enumerate(runs) for name, table in run.items()}
    return tables, {name: [f"{name}@{k}" for k in range(len(runs))] for name in runs[0]}


def seeded_bootstrap(
    fixed: Mapping[str, ItemOutcomes],
    forget_runs: Sequence[Mapping[str, ItemOutcomes]],
    control_runs: Sequence[Mapping[str, ItemOutcomes]],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> tuple[Bootstrap, int]:
    """Resamples of an attack run with one or more seeds: `fixed` forget tables (the same in
    every run: the original, the unlearned model), and each run's forget and control tables
    (one mapping per run, the same names in each; `control_runs` may be empty). Every forget
    table shares one draw of items, every control table another, and each resample reads one
    run drawn uniformly ([`Bootstrap.draw_seeds`][unlearn_lens.metrics.bootstrap.Bootstrap.draw_seeds]);
    the point reads the first run. Returns the resamples and the number of runs."""
    forget, names = _runs(forget_runs)
    groups: list[Mapping[str, ItemOutcomes]] = [dict(fixed) | forget]
    if control_runs and control_runs[0]:
        control, control_names = _runs(control_runs)
        groups.append(control)
        names |= control_names
    bootstrap = Bootstrap(groups, n_resamples=n_resamples, seed=seed)
    return bootstrap, bootstrap.draw_seeds(names)


def verdict_intervals(
    original: ItemOutcomes,
    curve: RecoveryCurve,
    thresholds: RegimeThresholds,
    metric: str = "token",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    seeds: Sequence[RecoveryCurve] = (),
) -> VerdictIntervals | None:
    """Intervals and stability of the same-data verdict, from the original's forget outcomes and
    the relearning curve's (None when a curve point lacks its outcomes, as in older files).
    `seeds`: the same attack's curves under further seeds (`--seeds`), resampled with the items;
    the point estimates stay `curve`'s."""
    curves = [curve, *seeds]
    n_forget, n_control = min(len(c.forget) for c in curves), min(len(c.control) for c in curves)
    runs = [(c.forget[:n_forget], c.control[:n_control]) for c in curves]
    if any(p.outcomes is None for forget, control in runs for p in (*forget, *control)):
        return None
    bootstrap, _ = seeded_bootstrap(
        {"original": original},
        [{f"forget{i}": p.outcomes for i, p in enumerate(forget)} for forget, _ in runs],  # type: ignore[misc]
        [{f"control{i}": p.outcomes for i, p in enumerate(control)} for _, control in runs],  # type: ignore[misc]
        n_resamples,
        seed,
    )
    curve = RecoveryCurve(forget=runs[0][0], retain=[], control=runs[0][1])
    weights = control_weights(curve)
    last = len(curve.forget) - 1

    def score(totals: Mapping[str, Totals], name: str) -> np.ndarray:
        return totals[name].score(metric)

    def control_at(totals: Mapping[str, Totals], k: int) -> np.ndarray:
        lower, upper, weight = weights[k]
        return (1 - weight) * score(totals, f"control{lower}") + weight * score(
            totals, f"control{upper}"
        )

    def numbers(totals: Mapping[str, Totals]) -> dict[str, Values]:
        o, u = score(totals, "original"), score(totals, "forget0")
        relearned = [score(totals, f"forget{k}") for k in range(len(weights))]
        controls = [control_at(totals, k) for k in range(len(weights))]
        end_control = score(totals, f"control{len(curve.control) - 1}")
        gain = control_gain(o, u, score(totals, "control0"), end_control)
        return {
            "forgotten": forgotten(o, u),
            "recovery": recovery(o, u, score(totals, f"forget{last}")),
            "control_gain": gain,
            "control_gain_absolute": end_control - score(totals, "control0"),
            "control_exact_gain": totals[f"control{len(curve.control) - 1}"].exact_match
            - totals["control0"].exact_match,
            "excess": recovery(o, u, score(totals, f"forget{last}")) - gain,
            "peak_excess": peak_excess(o, u, relearned, controls),
        }

    def label(totals: Mapping[str, Totals]) -> np.ndarray:
        n = numbers(totals)
        t = thresholds
        excess = np.fmax(n["peak_excess"], n["excess"])
        with np.errstate(invalid="ignore"):
            reversible = (n["recovery"] >= t.recovery) & (excess >= t.control_margin)
            taught = taught_where(n["control_gain_absolute"], n["control_exact_gain"], t)
            weak = (n["recovery"] < t.recovery) & ~taught
            return np.where(
                n["forgotten"] < t.min_forgotten,
                NOT_FORGOTTEN_CODE,
                np.where(
                    reversible,
                    REVERSIBLE_CODE,
                    np.where(weak, INCONCLUSIVE_CODE, IRREVERSIBLE_CODE),
                ),
            )

    intervals = bootstrap.intervals(
        numbers, ("forgotten", "recovery", "control_gain", "excess", "peak_excess")
    )
    stability = bootstrap.stability(label)
    straddled = [
        f"{name} [{intervals[name].low:.2f}, {intervals[name].high:.2f}] straddles {threshold:g}"
        for name, threshold in (
            ("forgotten", thresholds.min_forgotten),
            ("recovery", thresholds.recovery),
            ("peak_excess", thresholds.control_margin),
        )
        if intervals[name].low < threshold <= intervals[name].high
    ]
    borderline = None
    if stability < STABLE:
        borderline = straddled[0] if straddled else "the label changes under resampling"
    return VerdictIntervals(
        forgotten=intervals["forgotten"],
        recovery=intervals["recovery"],
        control_gain=intervals["control_gain"],
        excess=intervals["excess"],
        peak_excess=intervals["peak_excess"],
        stability=stability,
        borderline=borderline,
        metric=metric,
        n_items=(len(original), len(curve.control[0].outcomes)),  # type: ignore[arg-type]
    )


def forgotten_interval(
    original: ItemOutcomes,
    unlearned: ItemOutcomes,
    metric: str = "token",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> BootstrapInterval:
    """The forgotten share (original − unlearned) / original with its 95 % paired-bootstrap
    interval, from two models' outcomes on the same items."""
    bootstrap = Bootstrap(
        [{"original": original, "unlearned": unlearned}], n_resamples=n_resamples, seed=seed
    )
    return bootstrap.interval(
        lambda totals: forgotten(
            totals["original"].score(metric), totals["unlearned"].score(metric)
        )
    )


def accuracy_band(
    runs: Sequence[Sequence[CurvePoint]],
    metric: str = "token",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> tuple[list[float], list[float]] | None:
    """The 95 % paired-bootstrap band of one set's accuracy along a relearning curve: at every
    point, the interval over items (and over the runs given, one per seed: each resample draws
    one run); points where the runs differ in length are cut to the shortest. None when a point
    lacks its outcomes."""
    length = min(len(points) for points in runs)
    tables = [
        {f"p{k}": point.outcomes for k, point in enumerate(points[:length])} for points in runs
    ]
    if not length or any(table is None for run in tables for table in run.values()):
        return None
    bootstrap, _ = seeded_bootstrap({}, tables, [], n_resamples, seed)  # type: ignore[arg-type]
    bands = [bootstrap.interval(partial(_score_at, f"p{k}", metric)) for k in range(length)]
    return [band.low for band in bands], [band.high for band in bands]


def _score_at(name: str, metric: str, totals: Mapping[str, Totals]) -> np.ndarray:
    """One set's score in `metric` from resampled totals."""
    return totals[name].score(metric)
