"""How sure each reading of the battery is: paired-bootstrap intervals over items (and seeds) on
every attack's recovery, null and excess, and the share of resamples giving the same reading.

Each attack's tables are resampled as the same-data verdict's are
([`verdict_intervals`][unlearn_lens.study.intervals.verdict_intervals]): every table measured on
the forget items (the original, the unlearned model, each point of the attack) shares one draw
of item indices, the control's tables another. With several seeds, each resample also draws one
run of the attack (one seed) uniformly, the same run for all its tables
([`Bootstrap.draw_seeds`][unlearn_lens.metrics.bootstrap.Bootstrap.draw_seeds]): an interval is
then "this attack run again, with another seed, on other items"; its point is the first seed's
run, the one the verdict reads. A reading's stability is the share of resamples that read it the
same way (hidden, matched, failed, powerless) by `read_attack`'s rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from unlearn_lens.attacks.battery import ReadingIntervals, reading_codes
from unlearn_lens.attacks.other_data import OtherDataAttack
from unlearn_lens.attacks.quantize import SchemeResult
from unlearn_lens.attacks.split import SplitResult
from unlearn_lens.metrics.bootstrap import (
    N_RESAMPLES,
    Bootstrap,
    Totals,
    Values,
    control_gain,
    peak_excess,
    recovery,
)
from unlearn_lens.metrics.token import ItemOutcomes
from unlearn_lens.regimes import RegimeThresholds, taught_where
from unlearn_lens.study.intervals import STABLE, control_weights, seeded_bootstrap
from unlearn_lens.unlearn.relearn import RecoveryCurve

Numbers = Callable[[Mapping[str, Totals]], dict[str, Values]]
"""A reading's numbers from the resampled tables: `recovery`, `null`, `excess`, `could_work`."""


def _reading_intervals(
    bootstrap: Bootstrap,
    numbers: Numbers,
    thresholds: RegimeThresholds,
    metric: str,
    n_items: tuple[int, int],
    n_seeds: int,
) -> ReadingIntervals:
    intervals = bootstrap.intervals(numbers, ("recovery", "null", "excess"))

    def label(totals: Mapping[str, Totals]) -> np.ndarray:
        n = numbers(totals)
        recovery, excess, could_work = (
            np.asarray(n[k]) for k in ("recovery", "excess", "could_work")
        )
        return reading_codes(recovery, excess, could_work, thresholds)

    stability = bootstrap.stability(label)
    borderline = None
    if stability < STABLE:
        straddled = [
            f"{name} [{intervals[name].low:.2f}, {intervals[name].high:.2f}] straddles "
            f"{threshold:g}"
            for name, threshold in (
                ("recovery", thresholds.recovery),
                ("excess", thresholds.control_margin),
            )
            if intervals[name].low < threshold <= intervals[name].high
        ]
        borderline = straddled[0] if straddled else "the reading changes under resampling"
    could_work = bool(np.asarray(numbers(bootstrap.point)["could_work"]).reshape(-1)[0])
    return ReadingIntervals(
        could_work=could_work,
        recovery=intervals["recovery"],
        null=intervals["null"],
        excess=intervals["excess"],
        stability=stability,
        borderline=borderline,
        metric=metric,
        n_items=n_items,
        n_seeds=n_seeds,
    )


def _taught(totals: Mapping[str, Totals], before: str, after: str, metric: str, t) -> np.ndarray:
    """`control_taught` on arrays: the control's gain in the metric and its exact-match gain."""
    gain = totals[after].score(metric) - totals[before].score(metric)
    return taught_where(gain, totals[after].exact_match - totals[before].exact_match, t)


def same_data_intervals(
    original: ItemOutcomes,
    curves: Sequence[RecoveryCurve],
    thresholds: RegimeThresholds,
    metric: str = "token",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> ReadingIntervals | None:
    """Same-data relearning read as the battery reads it: recovery at the end, the control's
    gain as the null, and the excess (under token accuracy the larger of the peak along the
    curve and the end's, as the regime compares it; under exact match the end's). `curves`:
    one per seed, the verdict's first. None when a point lacks its outcomes."""
    length = min(len(c.forget) for c in curves), min(len(c.control) for c in curves)
    runs = [(c.forget[: length[0]], c.control[: length[1]]) for c in curves]
    if any(p.outcomes is None for forget, control in runs for p in (*forget, *control)):
        return None
    bootstrap, n_seeds = seeded_bootstrap(
        {"original": original},
        [{f"forget{k}": p.outcomes for k, p in enumerate(forget)} for forget, _ in runs],  # type: ignore[misc]
        [{f"control{k}": p.outcomes for k, p in enumerate(control)} for _, control in runs],  # type: ignore[misc]
        n_resamples,
        seed,
    )
    weights = control_weights(curves[0])
    last, end = length[0] - 1, length[1] - 1

    def numbers(totals: Mapping[str, Totals]) -> dict[str, Values]:
        def score(name: str) -> np.ndarray:
            return totals[name].score(metric)

        o, u = score("original"), score("forget0")
        back = recovery(o, u, score(f"forget{last}"))
        null = control_gain(o, u, score("control0"), score(f"control{end}"))
        excess = back - null
        if metric == "token":
            controls = [
                (1 - w) * score(f"control{lo}") + w * score(f"control{hi}") for lo, hi, w in weights
            ]
            relearned = [score(f"forget{k}") for k in range(len(weights))]
            excess = np.fmax(peak_excess(o, u, relearned, controls), excess)
        return {
            "recovery": back,
            "null": null,
            "excess": excess,
            "could_work": _taught(totals, "control0", f"control{end}", metric, thresholds),
        }

    n_items = (len(original), len(curves[0].control[0].outcomes))  # type: ignore[arg-type]
    return _reading_intervals(bootstrap, numbers, thresholds, metric, n_items, n_seeds)


def held_back_outcomes(split: SplitResult, k: int) -> ItemOutcomes | None:
    """The forget items' outcomes at step `k` of the split, each item measured while held back
    (from whichever half held it back), in forget-set order; None without stored outcomes."""
    n = sum(len(half.held_back) for half in split.halves)
    columns: list[list] = [[0] * n, [0] * n, [0] * n, [0.0] * n]
    for half in split.halves:
        outcomes = half.held_back_curve[k].outcomes
        if outcomes is None:
            return None
        fields: tuple[Sequence[float], ...] = (
            outcomes.n_tokens,
            outcomes.n_correct,
            outcomes.exact,
            outcomes.nll_sum,
        )
        for j, item in enumerate(half.held_back):
            for column, values in zip(columns, fields, strict=True):
                column[item] = values[j]
    return ItemOutcomes(*columns)


def split_intervals(
    original: ItemOutcomes,
    splits: Sequence[SplitResult],
    thresholds: RegimeThresholds,
    metric: str = "token",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> ReadingIntervals | None:
    """The disjoint split: held-back recovery at the end, the control's gain under the same runs
    (both halves pooled) as the null, the peak excess along the curve (the steps are the same for
    both); `splits`: one per seed (each its own split draw and batch order)."""
    length = min(len(h.held_back_curve) for s in splits for h in s.halves)
    forget_runs, control_runs = [], []
    for split in splits:
        forget = [held_back_outcomes(split, k) for k in range(length)]
        control = {
            f"control{k}:{h}": half.control_curve[k].outcomes
            for h, half in enumerate(split.halves)
            for k in range(length)
        }
        if any(table is None for table in (*forget, *control.values())):
            return None
        forget_runs.append({f"forget{k}": table for k, table in enumerate(forget)})
        control_runs.append(control)
    bootstrap, n_seeds = seeded_bootstrap(
        {"original": original},
        forget_runs,  # type: ignore[arg-type]
        control_runs,  # type: ignore[arg-type]
        n_resamples,
        seed,
    )
    n_halves, last = len(splits[0].halves), length - 1

    def pooled(totals: Mapping[str, Totals], k: int) -> Totals:
        parts = [totals[f"control{k}:{h}"] for h in range(n_halves)]
        return sum(parts[1:], start=parts[0])

    def numbers(totals: Mapping[str, Totals]) -> dict[str, Values]:
        o, u = totals["original"].score(metric), totals["forget0"].score(metric)
        controls = [pooled(totals, k).score(metric) for k in range(length)]
        relearned = [totals[f"forget{k}"].score(metric) for k in range(length)]
        merged = {"before": pooled(totals, 0), "after": pooled(totals, last)}
        return {
            "recovery": recovery(o, u, relearned[-1]),
            "null": control_gain(o, u, controls[0], controls[-1]),
            "excess": peak_excess(o, u, relearned, controls),
            "could_work": _taught(merged, "before", "after", metric, thresholds),
        }

    n_control = len(splits[0].halves[0].control_curve[0].outcomes)  # type: ignore[arg-type]
    return _reading_intervals(
        bootstrap, numbers, thresholds, metric, (len(original), n_control), n_seeds
    )


def other_data_intervals(
    original: ItemOutcomes,
    attacks: Sequence[OtherDataAttack],
    thresholds: RegimeThresholds,
    metric: str = "token",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> ReadingIntervals | None:
    """Other-data relearning: recovery of the forget set, against a null of 0 (the attack never
    sees a forget fact); `attacks`: one per seed, on the same source."""
    if any(not attack.outcomes for attack in attacks):
        return None
    bootstrap, n_seeds = seeded_bootstrap(
        {"original": original, "before": attacks[0].outcomes["forget_before"]},
        [{"after": attack.outcomes["forget_after"]} for attack in attacks],
        [],
        n_resamples,
        seed,
    )

    def numbers(totals: Mapping[str, Totals]) -> dict[str, Values]:
        back = recovery(*(totals[name].score(metric) for name in ("original", "before", "after")))
        return {
            "recovery": back,
            "null": np.zeros_like(back),
            "excess": back,
            "could_work": np.ones_like(back, dtype=bool),
        }

    return _reading_intervals(bootstrap, numbers, thresholds, metric, (len(original), 0), n_seeds)


def quantization_intervals(
    result: SchemeResult,
    thresholds: RegimeThresholds,
    metric: str = "token",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> ReadingIntervals | None:
    """Quantisation in one scheme: recovery against the rounded original (what a rounded model
    that never unlearned knows), null 0; it could work where the rounded original keeps at least
    `min_forgotten` of the original's accuracy above the unlearned model's. Deterministic: one
    run, resampled over items."""
    if not result.outcomes:
        return None
    bootstrap = Bootstrap([result.outcomes], n_resamples=n_resamples, seed=seed)

    def numbers(totals: Mapping[str, Totals]) -> dict[str, Values]:
        o, u, o_r, u_r = (
            totals[name].score(metric)
            for name in ("original", "unlearned", "original_rounded", "unlearned_rounded")
        )
        back = recovery(o_r, u, u_r)
        return {
            "recovery": back,
            "null": np.zeros_like(back),
            "excess": back,
            "could_work": o_r - u >= thresholds.min_forgotten * o,
        }

    n_items = (len(result.outcomes["original"]), 0)
    return _reading_intervals(bootstrap, numbers, thresholds, metric, n_items, 1)


def point(interval_value: float) -> float | None:
    """An interval's point estimate as a reading takes it: None where it is undefined."""
    return None if not np.isfinite(interval_value) else float(interval_value)
