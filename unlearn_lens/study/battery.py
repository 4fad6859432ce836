"""The audit's battery of recovery attacks on one unlearned model, and their readings.

Same-data relearning (with its equal-work control) has run already; this stage adds the
disjoint split (when the forget set is large enough), other-data relearning on the retain and
unrelated sets, and quantisation, each against its own null, then reads them all on one scale
(see [`unlearn_lens.attacks.battery`][unlearn_lens.attacks.battery]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from unlearn_lens.attacks.battery import (
    AttackReading,
    BatteryVerdict,
    ReadingIntervals,
    battery_verdict,
    read_attack,
)
from unlearn_lens.attacks.other_data import OtherDataAttack, other_data_attack
from unlearn_lens.attacks.quantize import QuantizationResult, quantization_attack
from unlearn_lens.attacks.split import SPLIT_MIN_ITEMS, SplitResult, split_relearn
from unlearn_lens.data.items import Item
from unlearn_lens.metrics.token import ItemOutcomes, TokenMetrics
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.regimes import (
    INCONCLUSIVE,
    LABELS,
    NOT_FORGOTTEN,
    RegimeThresholds,
    RegimeVerdict,
    control_taught,
)
from unlearn_lens.study.battery_intervals import (
    other_data_intervals,
    point,
    quantization_intervals,
    same_data_intervals,
    split_intervals,
)
from unlearn_lens.unlearn.relearn import RecoveryCurve, RelearnResult

SAME_DATA = "same-data relearning"
SPLIT = "disjoint split"


@dataclass
class Battery:
    """Every attack of the battery on one unlearned model, its readings and its verdict.

    `split` is None when the forget set has fewer than `SPLIT_MIN_ITEMS` items or the attack
    was not asked for; `other_data` is keyed by source (`retain`, `unrelated`). With `--seeds N`
    (N > 1), `split_seeds` and `other_data_seeds` hold the same attacks under the further seeds
    (batch order and split draw; `split` and `other_data` are the first seed's).
    """

    split: SplitResult | None = None
    other_data: dict[str, OtherDataAttack] = field(default_factory=dict)
    quantization: QuantizationResult | None = None
    readings: list[AttackReading] = field(default_factory=list)
    verdict: BatteryVerdict | None = None
    split_seeds: list[SplitResult] = field(default_factory=list)
    other_data_seeds: dict[str, list[OtherDataAttack]] = field(default_factory=dict)


@dataclass(frozen=True)
class BatteryBudget:
    """What every relearning attack of the battery may spend: the same-data attack's budget."""

    steps: int
    lr: float
    batch_size: int
    seed: int


def run_battery(
    subject: Subject,
    original: Snapshot,
    unlearned: Snapshot,
    sets: Mapping[str, Sequence[Item]],
    original_forget: TokenMetrics,
    unlearned_forget: ItemOutcomes | None,
    attacks: Sequence[str],
    budget: BatteryBudget,
    schemes: Sequence[str],
    rounded_original: dict[str, tuple[ItemOutcomes, TokenMetrics | None]] | None = None,
    progress: bool = False,
    seeds: int = 1,
) -> Battery:
    """Run the asked attacks from the unlearned weights (restored before each); `sets` holds
    `forget`, `retain`, `control` and `unrelated` items; `unlearned_forget` the unlearned
    model's forget outcomes when known; `rounded_original` caches the original's forget
    outcomes and retain metrics (plain and rounded) across the methods of one audit. Each
    relearning attack runs `seeds` times, with seeds `budget.seed`, `budget.seed + 1`, …
    (batch order and split draw; quantisation has no randomness and runs once)."""
    battery = Battery()
    forget, control = sets["forget"], sets["control"]
    for k in range(seeds):
        seed = budget.seed + k
        if "split" in attacks and len(forget) >= SPLIT_MIN_ITEMS:
            subject.restore(unlearned)
            split = split_relearn(
                subject,
                forget,
                control,
                steps=budget.steps,
                original=original,
                lr=budget.lr,
                batch_size=budget.batch_size,
                seed=seed,
                progress=progress,
            )
            if k == 0:
                battery.split = split
            else:
                battery.split_seeds.append(split)
        for source in ("retain", "unrelated"):
            if source in attacks and sets.get(source):
                subject.restore(unlearned)
                attack = other_data_attack(
                    subject,
                    source,
                    sets[source],
                    forget,
                    control,
                    forget_original=original_forget.accuracy,
                    steps=budget.steps,
                    lr=budget.lr,
                    batch_size=budget.batch_size,
                    seed=seed,
                    forget_before=unlearned_forget,
                    progress=progress,
                )
                if k == 0:
                    battery.other_data[source] = attack
                else:
                    battery.other_data_seeds.setdefault(source, []).append(attack)
    if "quantization" in attacks and schemes:
        battery.quantization = quantization_attack(
            subject,
            original,
            unlearned,
            forget,
            sets["retain"],
            schemes=schemes,
            original_measured=rounded_original,
        )
    subject.restore(unlearned)
    return battery


def read_battery(
    battery: Battery,
    same_data: RelearnResult,
    regime: RegimeVerdict,
    budget: BatteryBudget,
    thresholds: RegimeThresholds,
    original: ItemOutcomes | None = None,
    metric: str = "token",
    same_data_seeds: Sequence[RecoveryCurve] = (),
) -> Battery:
    """`battery` with every attack read on the recovery scale and the one verdict; `regime` is
    the same-data attack's verdict (its evidence holds the numbers read, in `metric`).

    With `original` (the original model's forget outcomes) each reading carries its intervals
    and stability (over items, and seeds: `same_data_seeds` are the same-data curves of the
    further seeds, the battery's own are in `battery`), and the other attacks are read on
    `metric` (`token` or `exact`) from their per-item outcomes: the point estimates are the
    first seed's, read by the same rule as ever. Without outcomes (older results) they are read
    on token accuracy, as before.
    """
    t, e = thresholds, regime.evidence
    lost = (e["forget_original"] or 0.0) - (e["forget_unlearned"] or 0.0)
    steps = f"{budget.steps} steps of {budget.batch_size} at lr {budget.lr:g}"
    control_gain = same_data.control_after.accuracy - same_data.control_before.accuracy
    exact_gain = same_data.control_after.exact_match - same_data.control_before.exact_match
    gain_read = control_gain if metric == "token" else exact_gain

    def intervals(compute, *args) -> ReadingIntervals | None:
        return None if original is None else compute(*args, t, metric, seed=budget.seed)

    readings = [
        _with(
            read_attack(
                SAME_DATA,
                f"{steps} on the forget set",
                e["recovery"],
                e["control_gain"] or 0.0,
                could_work=control_taught(gain_read, exact_gain, t),
                thresholds=t,
                excess=e["excess_recovery"],
                evidence=f"control gain {control_gain:.2f} under equal work",
            ),
            intervals(same_data_intervals, original, [same_data.curve, *same_data_seeds]),
            t,
            keep_point=True,
        )
    ]
    if battery.split is not None:
        split = battery.split
        gain = split.control_gain()
        readings.append(
            _with(
                read_attack(
                    SPLIT,
                    f"{steps} on each half, measured on the other",
                    split.recovery(),
                    gain / lost if lost > 0 else 0.0,
                    could_work=gain >= t.min_control_gain,
                    thresholds=t,
                    excess=split.peak_excess(),
                    evidence=f"held-back recovery, control gain {gain:.2f} under the same runs",
                ),
                intervals(split_intervals, original, [split, *battery.split_seeds]),
                t,
            )
        )
    for source, attack in battery.other_data.items():
        readings.append(
            _with(
                read_attack(
                    f"{source} relearning",
                    f"{steps} on the {source} set",
                    attack.recovery,
                    0.0,
                    could_work=True,
                    thresholds=t,
                    evidence=(
                        f"never sees a forget fact; control gain {attack.control_gain:.2f} beside"
                    ),
                ),
                intervals(
                    other_data_intervals,
                    original,
                    [attack, *battery.other_data_seeds.get(source, [])],
                ),
                t,
            )
        )
    if battery.quantization is not None:
        for scheme, result in battery.quantization.schemes.items():
            forget = result.forget
            reference_keeps = forget.original_rounded.accuracy - forget.unlearned.accuracy
            readings.append(
                _with(
                    read_attack(
                        f"quantisation {scheme}",
                        f"round-to-nearest {scheme}",
                        result.recovery["accuracy"].recovery_rounded_reference,
                        0.0,
                        could_work=reference_keeps >= t.min_forgotten * forget.original.accuracy,
                        thresholds=t,
                        evidence=(
                            f"forget accuracy {forget.unlearned.accuracy:.2f} → "
                            f"{forget.unlearned_rounded.accuracy:.2f} rounded; the rounded "
                            f"original keeps {forget.original_rounded.accuracy:.2f}"
                        ),
                    ),
                    intervals(quantization_intervals, result),
                    t,
                )
            )
    battery.readings = readings
    battery.verdict = battery_verdict(readings)
    return battery


def _with(
    reading: AttackReading,
    intervals: ReadingIntervals | None,
    thresholds: RegimeThresholds,
    keep_point: bool = False,
) -> AttackReading:
    """The reading with its intervals beside; unless `keep_point` (the same-data reading, whose
    numbers are the regime's own), read again from the intervals' point estimates: the same
    rule on the same run's numbers, in the verdict's metric, and the control rule counting exact
    matches (`control_taught`)."""
    if intervals is None:
        return reading
    if keep_point:
        return replace(reading, intervals=intervals)
    recovery = point(intervals.recovery.point)
    again = read_attack(
        reading.attack,
        reading.budget,
        recovery,
        intervals.null.point if recovery is not None else reading.null,
        could_work=intervals.could_work,
        thresholds=thresholds,
        evidence=reading.evidence,
        excess=point(intervals.excess.point),
    )
    return replace(again, intervals=intervals)


def battery_regime(regime: RegimeVerdict, verdict: BatteryVerdict) -> RegimeVerdict:
    """The same-data regime with the battery's answer on reversibility (catastrophe unchanged);
    a run that forgot nothing keeps its "not forgotten"."""
    if regime.label == NOT_FORGOTTEN:
        return regime
    label = (
        INCONCLUSIVE
        if verdict.reversible is None
        else LABELS[(verdict.reversible, regime.catastrophic)]
    )
    return replace(
        regime,
        reversible=verdict.reversible,
        label=label,
        battery=verdict.reason,
        decided_by=verdict.decided_by,
    )
