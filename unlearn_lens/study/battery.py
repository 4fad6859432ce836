"""The audit's battery of recovery attacks on one unlearned model, and their readings.

Same-data relearning (with its equal-work control) has run already; this stage adds the
disjoint split (when the forget set is large enough), other-data relearning on the retain and
unrelated sets, and quantisation, each against its own null, then reads them all on one scale
(see [`unlearn_lens.attacks.battery`][unlearn_lens.attacks.battery]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from unlearn_lens.attacks.battery import AttackReading, BatteryVerdict, battery_verdict, read_attack
from unlearn_lens.attacks.other_data import OtherDataAttack, other_data_attack
from unlearn_lens.attacks.quantize import QuantizationResult, quantization_attack
from unlearn_lens.attacks.split import SPLIT_MIN_ITEMS, SplitResult, split_relearn
from unlearn_lens.data.items import Item
from unlearn_lens.metrics.token import TokenMetrics
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.regimes import (
    INCONCLUSIVE,
    LABELS,
    NOT_FORGOTTEN,
    RegimeThresholds,
    RegimeVerdict,
)
from unlearn_lens.unlearn.relearn import RelearnResult

SAME_DATA = "same-data relearning"
SPLIT = "disjoint split"


@dataclass
class Battery:
    """Every attack of the battery on one unlearned model, its readings and its verdict.

    `split` is None when the forget set has fewer than `SPLIT_MIN_ITEMS` items or the attack
    was not asked for; `other_data` is keyed by source (`retain`, `unrelated`).
    """

    split: SplitResult | None = None
    other_data: dict[str, OtherDataAttack] = field(default_factory=dict)
    quantization: QuantizationResult | None = None
    readings: list[AttackReading] = field(default_factory=list)
    verdict: BatteryVerdict | None = None


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
    unlearned_forget: TokenMetrics,
    attacks: Sequence[str],
    budget: BatteryBudget,
    schemes: Sequence[str],
    rounded_original: dict[str, tuple[TokenMetrics, TokenMetrics | None]] | None = None,
    progress: bool = False,
) -> Battery:
    """Run the asked attacks from the unlearned weights (restored before each); `sets` holds
    `forget`, `retain`, `control` and `unrelated` items; `rounded_original` caches the original's
    metrics (plain and rounded) across the methods of one audit."""
    battery = Battery()
    forget, control = sets["forget"], sets["control"]
    if "split" in attacks and len(forget) >= SPLIT_MIN_ITEMS:
        subject.restore(unlearned)
        battery.split = split_relearn(
            subject,
            forget,
            control,
            steps=budget.steps,
            original=original,
            lr=budget.lr,
            batch_size=budget.batch_size,
            seed=budget.seed,
            progress=progress,
        )
    for source in ("retain", "unrelated"):
        if source in attacks and sets.get(source):
            subject.restore(unlearned)
            battery.other_data[source] = other_data_attack(
                subject,
                source,
                sets[source],
                forget,
                control,
                forget_original=original_forget.accuracy,
                steps=budget.steps,
                lr=budget.lr,
                batch_size=budget.batch_size,
                seed=budget.seed,
                forget_before=unlearned_forget,
                progress=progress,
            )
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
) -> Battery:
    """`battery` with every attack read on the recovery scale and the one verdict; `regime` is
    the same-data attack's verdict (its evidence holds the numbers read)."""
    t, e = thresholds, regime.evidence
    lost = (e["forget_original"] or 0.0) - (e["forget_unlearned"] or 0.0)
    steps = f"{budget.steps} steps of {budget.batch_size} at lr {budget.lr:g}"
    control_gain = same_data.control_after.accuracy - same_data.control_before.accuracy
    readings = [
        read_attack(
            SAME_DATA,
            f"{steps} on the forget set",
            e["recovery"],
            e["control_gain"] or 0.0,
            could_work=control_gain >= t.min_control_gain,
            thresholds=t,
            excess=e["excess_recovery"],
            evidence=f"control gain {control_gain:.2f} under equal work",
        )
    ]
    if battery.split is not None:
        split = battery.split
        gain = split.control_gain()
        readings.append(
            read_attack(
                SPLIT,
                f"{steps} on each half, measured on the other",
                split.recovery(),
                gain / lost if lost > 0 else 0.0,
                could_work=gain >= t.min_control_gain,
                thresholds=t,
                excess=split.peak_excess(),
                evidence=f"held-back recovery, control gain {gain:.2f} under the same runs",
            )
        )
    for source, attack in battery.other_data.items():
        readings.append(
            read_attack(
                f"{source} relearning",
                f"{steps} on the {source} set",
                attack.recovery,
                0.0,
                could_work=True,
                thresholds=t,
                evidence=f"never sees a forget fact; control gain {attack.control_gain:.2f} beside",
            )
        )
    if battery.quantization is not None:
        for scheme, result in battery.quantization.schemes.items():
            forget = result.forget
            reference_keeps = forget.original_rounded.accuracy - forget.unlearned.accuracy
            readings.append(
                read_attack(
                    f"quantisation {scheme}",
                    f"round-to-nearest {scheme}",
                    result.recovery["accuracy"].recovery_rounded_reference,
                    0.0,
                    could_work=reference_keeps >= t.min_forgotten * forget.original.accuracy,
                    thresholds=t,
                    evidence=(
                        f"forget accuracy {forget.unlearned.accuracy:.2f} → "
                        f"{forget.unlearned_rounded.accuracy:.2f} rounded; the rounded original "
                        f"keeps {forget.original_rounded.accuracy:.2f}"
                    ),
                )
            )
    battery.readings = readings
    battery.verdict = battery_verdict(readings)
    return battery


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
