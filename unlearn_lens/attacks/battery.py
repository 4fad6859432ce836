"""One verdict from a battery of recovery attacks, each read against its own null.

Every attack gives a reading on the recovery scale (the share of the forget accuracy that
unlearning removed and the attack brought back) beside its null (what the attack shows where
the knowledge is truly gone): the control's gain for relearning attacks, zero for attacks that
never see a forget fact (other-data relearning, quantisation). A reading is one of:

- `hidden`: recovery at or above the threshold *and* beyond the null by the control margin:
  the knowledge was still there;
- `matched`: recovery at or above the threshold that the null matches (the attack teaches
  anything that fast): it cannot tell hidden from taught;
- `failed`: recovery below the threshold from an attack that could have worked (its budget
  taught its null something, or its reference kept the knowledge);
- `powerless`: recovery below the threshold from an attack that could not have shown any.

Reversible when any attack shows hidden knowledge (the first in battery order is named);
irreversible only when no attack is `hidden` or `matched` and at least one failed; otherwise
inconclusive. So no verdict says "irreversible" beside a recovery at or above the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unlearn_lens.metrics.bootstrap import BootstrapInterval
from unlearn_lens.regimes import RegimeThresholds
from unlearn_lens.schema import Real

BATTERY_ATTACKS = ("split", "retain", "unrelated", "quantization")
"""The attacks an audit can add to same-data relearning, in the order they are read: the disjoint
split, other-data relearning on the retain and the unrelated sets, and quantisation."""

HIDDEN, MATCHED, FAILED, POWERLESS = "hidden", "matched", "failed", "powerless"
"""The outcomes of one attack's reading."""


OUTCOMES = (HIDDEN, MATCHED, FAILED, POWERLESS)
"""Every outcome, in the order `reading_codes` numbers them."""


@dataclass(frozen=True)
class ReadingIntervals:
    """How sure one attack's reading is: 95 % paired-bootstrap intervals over its items (and its
    seeds, with more than one) of the numbers that decide it, and its label stability.

    **Fields:** `recovery`, `null` and `excess` (as the reading's fields, each with its point
    estimate); `stability`, the share of resamples whose reading (hidden, matched, failed,
    powerless) is the point's; `borderline`, when stability is below
    [`STABLE`][unlearn_lens.study.intervals.STABLE], the threshold an interval straddles (else
    None); `metric` (`token` or `exact`), `n_items` (forget, control; 0 without a control) and
    `n_seeds` (runs of the attack pooled: resampled together with the items); `could_work`,
    whether the point's numbers give the attack the power to show recovery.
    """

    recovery: BootstrapInterval
    null: BootstrapInterval
    excess: BootstrapInterval
    stability: Real
    borderline: str | None
    metric: str
    n_items: tuple[int, int]
    n_seeds: int = 1
    could_work: bool = True


def reading_codes(
    recovery: np.ndarray, excess: np.ndarray, could_work: np.ndarray, thresholds: RegimeThresholds
) -> np.ndarray:
    """`read_attack`'s rule on arrays (one entry per resample), as indices into `OUTCOMES`; a
    recovery that is not finite (nothing lost to measure against) is powerless."""
    t = thresholds
    with np.errstate(invalid="ignore"):
        high = np.isfinite(recovery) & (recovery >= t.recovery)
        hidden = high & (excess >= t.control_margin)
        low = np.isfinite(recovery) & (recovery < t.recovery)
    return np.select(
        [hidden, high, low & could_work],
        [OUTCOMES.index(HIDDEN), OUTCOMES.index(MATCHED), OUTCOMES.index(FAILED)],
        OUTCOMES.index(POWERLESS),
    )


@dataclass(frozen=True)
class AttackReading:
    """What one recovery attack showed, against its null.

    **Fields:** `attack` (its name), `budget` (what it was allowed, in words), `recovery` (share
    of the removed forget accuracy back; None when unmeasurable), `null` (the same attack's
    effect where there is nothing to recover, on the same scale), `excess` (`recovery − null`,
    at the curve's peak for attacks with a curve), `could_work` (the attack had the power to show
    recovery), `outcome` (`hidden`, `matched`, `failed` or `powerless`), `evidence` (its
    numbers) and `intervals` (how sure the reading is; None where the attack's per-item outcomes
    were not stored, as in older results).
    """

    attack: str
    budget: str
    recovery: Real | None
    null: Real
    excess: Real | None
    could_work: bool
    outcome: str
    evidence: str
    intervals: ReadingIntervals | None = None


def read_attack(
    attack: str,
    budget: str,
    recovery: float | None,
    null: float,
    could_work: bool,
    thresholds: RegimeThresholds,
    evidence: str,
    excess: float | None = None,
) -> AttackReading:
    """A reading from an attack's numbers; `excess` defaults to `recovery − null`."""
    if recovery is None:
        return AttackReading(attack, budget, None, null, None, could_work, POWERLESS, evidence)
    excess = recovery - null if excess is None else excess
    if recovery >= thresholds.recovery:
        outcome = HIDDEN if excess >= thresholds.control_margin else MATCHED
    else:
        outcome = FAILED if could_work else POWERLESS
    return AttackReading(attack, budget, recovery, null, excess, could_work, outcome, evidence)


@dataclass(frozen=True)
class BatteryVerdict:
    """The battery's answer: `reversible` (None: inconclusive) and the attack that decided it,
    with one line saying why."""

    reversible: bool | None
    decided_by: str | None
    reason: str


def battery_verdict(readings: Sequence[AttackReading]) -> BatteryVerdict:
    """Reversible when any attack shows hidden knowledge; irreversible when every attack failed
    and one could have worked; inconclusive otherwise (see the module docstring)."""
    hidden = [r for r in readings if r.outcome == HIDDEN]
    if hidden:
        first = hidden[0]
        others = f" (also: {', '.join(r.attack for r in hidden[1:])})" if hidden[1:] else ""
        return BatteryVerdict(
            True,
            first.attack,
            f"{first.attack} brought back {first.recovery:.2f} of the forgotten accuracy against "
            f"a null of {first.null:.2f}{others}",
        )
    matched = [r for r in readings if r.outcome == MATCHED]
    if matched:
        return BatteryVerdict(
            None,
            None,
            "no attack showed hidden knowledge, but "
            + ", ".join(f"{r.attack} brought back {r.recovery:.2f}" for r in matched)
            + " with a null as high: cannot tell hidden from taught",
        )
    failed = [r for r in readings if r.outcome == FAILED]
    if failed:
        return BatteryVerdict(
            False,
            None,
            "every attack that could have worked failed ("
            + ", ".join(f"{r.attack} {r.recovery:.2f}" for r in failed)
            + ")",
        )
    return BatteryVerdict(
        None, None, "no attack could have shown recovery: its budgets taught nothing"
    )
