"""Which of the four regimes an unlearning run fell into, from plain numbers and explicit thresholds.

Two questions: is the forgetting *reversible* (does a small relearning budget bring the
forget set back, faster than the same budget teaches novel items of the same form?) and is it
*catastrophic* (did the retain set suffer?). See the concepts page on the four regimes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from unlearn_lens.numbers import percent

LABELS = {
    (True, False): "suppressed",
    (True, True): "collapsed but recoverable",
    (False, False): "targeted forgetting",
    (False, True): "destroyed",
}
"""Regime names by (reversible, catastrophic)."""

NOT_FORGOTTEN = "not forgotten"
"""Label when unlearning did not remove enough of the forget set to classify reversibility."""

VERDICT_METRICS = {"token": "accuracy", "exact": "exact_match"}
"""The accuracy a verdict may be decided on, by setting (`verdict_metric`), as the name of the
[`TokenMetrics`][unlearn_lens.metrics.TokenMetrics] field and `Recovery` metric it reads:
token accuracy over content answer tokens (default) or greedy exact match per item."""

INCONCLUSIVE = "inconclusive"
"""Label when recovery was low but the relearning budget taught the novel control items
nothing either: a budget too weak to teach anything cannot show that knowledge is gone."""


@dataclass(frozen=True)
class RegimeThresholds:
    """The thresholds a regime verdict uses; every default has its reason.

    **Fields:**

    - `min_forgotten = 0.5`: unlearning counts as having forgotten when forget accuracy fell
      by at least half of its original value; a smaller drop is not an unlearning success
      whose reversibility is worth classifying.
    - `recovery = 0.5`: reversible needs relearning to win back at least half of the forget
      accuracy unlearning removed (recovery = (relearned − unlearned) / (original − unlearned)).
    - `control_margin = 0.25`: and that recovery must beat what the same relearning budget
      teaches novel control items, expressed on the same scale (the control's accuracy gain
      divided by original − unlearned), by a quarter of the loss: relearning from scratch
      explains what the control learns, only the excess shows hidden knowledge.
    - `min_control_gain = 0.1`: a low recovery counts as irreversible only when the same
      budget *taught the control*: raised its accuracy (in the verdict's metric) by at least
      0.1 (about one answer token in ten) **and** made at least one more control item an exact
      match than before ([`control_taught`][unlearn_lens.regimes.control_taught]). An attack
      that teaches novel items nothing could not have shown recovery either, and the verdict is
      `"inconclusive"`; teacher-forced continuation tokens (" Or|sen|ne": "sen", "ne" after
      the first piece) are learned without the fact, so token gain alone is not teaching.
    - `retain_drop = 0.2`: catastrophic when retain accuracy fell by more than 20 % of its
      original value, a loss no user would call collateral.
    - `retain_nll_rise = ln 2 ≈ 0.693`: or when retain NLL rose by more than ln 2 nats per
      token, i.e. retain perplexity more than doubled (mild GA moves it by about 0.2).
    """

    min_forgotten: float = 0.5
    recovery: float = 0.5
    control_margin: float = 0.25
    min_control_gain: float = 0.1
    retain_drop: float = 0.2
    retain_nll_rise: float = math.log(2)

    def describe(self) -> str:
        """Every threshold in one bracket, printed with each verdict."""
        return (
            f"[thresholds: forgotten ≥ {percent(self.min_forgotten)}, recovery ≥ "
            f"{self.recovery:.2f}, excess over control "
            f"≥ {self.control_margin:.2f}, control gain ≥ {self.min_control_gain:.2f}, retain drop "
            f"≤ {percent(self.retain_drop)}, "
            f"retain NLL rise ≤ {self.retain_nll_rise:.2f} nats]"
        )


def control_taught(gain: float, exact_gain: float | None, thresholds: RegimeThresholds) -> bool:
    """Did the relearning budget teach the novel control items? Its accuracy gain in the
    verdict's metric (`gain`) reaches `min_control_gain` and its exact-match share rose
    (`exact_gain > 0`: at least one more control item reproduced whole). `exact_gain` None
    (not measured, as in older results) leaves the accuracy rule alone."""
    return bool(taught_where(gain, math.inf if exact_gain is None else exact_gain, thresholds))


def taught_where(
    gain: np.ndarray | float, exact_gain: np.ndarray | float, thresholds: RegimeThresholds
) -> np.ndarray:
    """[`control_taught`][unlearn_lens.regimes.control_taught] element by element (one entry
    per bootstrap resample); a NaN gain is not taught."""
    with np.errstate(invalid="ignore"):
        taught = (np.asarray(gain) >= thresholds.min_control_gain) & (np.asarray(exact_gain) > 0)
    return np.asarray(taught)


@dataclass(frozen=True)
class RegimeVerdict:
    """The regime, the numbers that decided it and the thresholds it was decided by.

    `reversible` is None when nothing was forgotten (label `"not forgotten"`) or when the
    relearning budget taught the control nothing while recovery was low (label
    `"inconclusive"`); `catastrophic` is decided from the retain numbers either way. `evidence`
    holds the same-data relearning attack's numbers. When a battery of recovery attacks was
    read, `battery` is its one line and `decided_by` the attack that showed hidden knowledge
    (None when none did), and `reversible` is the battery's answer.
    """

    reversible: bool | None
    catastrophic: bool
    label: str
    evidence: dict[str, float | None]
    thresholds: RegimeThresholds
    battery: str | None = None
    decided_by: str | None = None

    def describe(self) -> str:
        """One line: the label, then each axis with its numbers, then every threshold."""
        e, t = self.evidence, self.thresholds
        if self.battery is not None:
            word = {True: "reversible", False: "irreversible", None: "inconclusive"}
            forget = (
                f"{word[self.reversible]}: {self.battery} (forget accuracy "
                f"{e['forget_original']:.2f} → {e['forget_unlearned']:.2f})"
            )
        elif self.label == INCONCLUSIVE:
            exact = e.get("control_exact_gain")
            taught = e["control_gain_absolute"] >= t.min_control_gain  # type: ignore[operator]
            forget = (
                "the relearning budget taught the control nothing: control accuracy gain "
                f"{e['control_gain_absolute']:.2f} "
                f"{'≥' if taught else '<'} {t.min_control_gain:.2f}"
                + ("" if exact is None else f", exact-match gain {exact:.2f} (needs > 0)")
                + f" while recovery {e['recovery']:.2f} < {t.recovery:.2f} (forget accuracy "
                f"{e['forget_original']:.2f} → {e['forget_unlearned']:.2f} → "
                f"{e['forget_relearned']:.2f}); give relearning "
                "more steps or a higher learning rate"
            )
        elif self.reversible is None:
            forget = (
                f"forget accuracy {e['forget_original']:.2f} → {e['forget_unlearned']:.2f} "
                f"(drop {percent(e['forgotten'])} < {percent(t.min_forgotten)} of the original)"
            )
        else:
            # A verdict that says reversible or not measured the recovery, and with a control
            # (control_gain set) the excess recovery too: classify_regime sets them together.
            recovery, excess = e["recovery"], e["excess_recovery"]
            assert recovery is not None
            if e["control_gain"] is not None:
                assert excess is not None
                control = (
                    f", control gain {e['control_gain']:.2f}, excess {excess:.2f} "
                    f"{'≥' if excess >= t.control_margin else '<'} {t.control_margin:.2f}"
                )
            else:
                control = ", no control"
            forget = (
                f"{'reversible' if self.reversible else 'irreversible'}: forget accuracy "
                f"{e['forget_original']:.2f} → {e['forget_unlearned']:.2f} → {e['forget_relearned']:.2f}, recovery "
                f"{recovery:.2f} {'≥' if recovery >= t.recovery else '<'} {t.recovery:.2f}{control}"
            )
        return f"{self.label} — {forget}; {_retain_clause(self.catastrophic, e, t)} {t.describe()}"


def _retain_clause(catastrophic: bool, e: dict[str, float | None], t: RegimeThresholds) -> str:
    parts = []
    if e["retain_drop"] is not None:
        parts.append(
            f"retain accuracy {e['retain_original']:.2f} → {e['retain_unlearned']:.2f} (drop "
            f"{percent(e['retain_drop'])} "
            f"{'>' if e['retain_drop'] > t.retain_drop else '≤'} {percent(t.retain_drop)})"
        )
    if e["retain_nll_rise"] is not None:
        parts.append(
            f"retain NLL {e['retain_nll_original']:.2f} → {e['retain_nll_unlearned']:.2f} (rise "
            f"{e['retain_nll_rise']:.2f} "
            f"{'>' if e['retain_nll_rise'] > t.retain_nll_rise else '≤'} {t.retain_nll_rise:.2f} nats)"
        )
    numbers = ", ".join(parts) or "retain accuracy was 0 before unlearning, no drop to measure"
    return f"{'catastrophic' if catastrophic else 'not catastrophic'}: {numbers}"


def _check_accuracy(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be an accuracy in [0, 1], got {value}")


def classify_regime(
    forget_original: float,
    forget_unlearned: float,
    forget_relearned: float,
    *,
    control_before: float | None = None,
    control_after: float | None = None,
    retain_original: float | None = None,
    retain_unlearned: float | None = None,
    retain_nll_original: float | None = None,
    retain_nll_unlearned: float | None = None,
    peak_excess: float | None = None,
    control_exact_gain: float | None = None,
    thresholds: RegimeThresholds | None = None,
) -> RegimeVerdict:
    """Reversible or not × catastrophic or not, from accuracies (and retain NLL).

    **Arguments:**

    - `forget_*`: forget-set accuracy of the original, unlearned and relearned models.
    - `control_before`, `control_after`: accuracy on novel control items before and after
      the same relearning budget (both or neither; without them reversibility rests on
      recovery alone).
    - `retain_*`: retain accuracy and/or retain NLL (nats per token) of the original and
      unlearned models; at least one pair is needed.
    - `peak_excess`: the largest excess of recovery over the control's gain at equal work
      along the relearning curve ([`RecoveryCurve.peak_excess`][unlearn_lens.unlearn.RecoveryCurve.peak_excess]);
      when given, the larger of it and the end-point excess is compared with
      `control_margin`, so a budget large enough to teach the control everything by the end
      cannot hide a recovery that came much faster.
    - `control_exact_gain`: the control's gain in exact match (share of control items answered
      whole) under the same budget. When given, a low recovery counts as irreversible only if
      the control also gained at least one whole answer
      ([`control_taught`][unlearn_lens.regimes.control_taught]): teacher-forced continuation
      tokens ("sen", "ne" after " Or") are learned without any fact, so a token gain alone does
      not show that the budget could teach a fact.
    """
    t = thresholds or RegimeThresholds()
    for name, value in (
        ("forget_original", forget_original),
        ("forget_unlearned", forget_unlearned),
        ("forget_relearned", forget_relearned),
        ("control_before", control_before),
        ("control_after", control_after),
        ("retain_original", retain_original),
        ("retain_unlearned", retain_unlearned),
    ):
        _check_accuracy(name, value)
    if (control_before is None) != (control_after is None):
        raise ValueError("give both control_before and control_after, or neither")
    has_accuracy = retain_original is not None and retain_unlearned is not None
    has_nll = retain_nll_original is not None and retain_nll_unlearned is not None
    if not (has_accuracy or has_nll):
        raise ValueError(
            "catastrophe needs retain_original + retain_unlearned accuracy, or retain_nll_original "
            "+ retain_nll_unlearned"
        )

    retain_drop = (
        (retain_original - retain_unlearned) / retain_original
        if retain_original is not None and retain_unlearned is not None and retain_original > 0
        else None
    )
    retain_nll_rise = (
        retain_nll_unlearned - retain_nll_original
        if retain_nll_original is not None and retain_nll_unlearned is not None
        else None
    )
    # bool(): numpy scalars in give numpy booleans, which are not the verdict's bool.
    catastrophic = bool(
        (retain_drop is not None and retain_drop > t.retain_drop)
        or (retain_nll_rise is not None and retain_nll_rise > t.retain_nll_rise)
    )

    lost = forget_original - forget_unlearned
    forgotten = lost / forget_original if forget_original > 0 else 0.0
    evidence: dict[str, float | None] = {
        "forget_original": forget_original,
        "forget_unlearned": forget_unlearned,
        "forget_relearned": forget_relearned,
        "forgotten": forgotten,
        "recovery": None,
        "control_gain": None,
        "control_gain_absolute": None,
        "control_exact_gain": control_exact_gain,
        "excess_recovery": None,
        "peak_excess": peak_excess,
        "retain_original": retain_original,
        "retain_unlearned": retain_unlearned,
        "retain_drop": retain_drop,
        "retain_nll_original": retain_nll_original,
        "retain_nll_unlearned": retain_nll_unlearned,
        "retain_nll_rise": retain_nll_rise,
    }
    if forgotten < t.min_forgotten:
        return RegimeVerdict(None, catastrophic, NOT_FORGOTTEN, evidence, t)
    recovery = (forget_relearned - forget_unlearned) / lost
    evidence["recovery"] = recovery
    reversible = bool(recovery >= t.recovery)
    if control_before is not None and control_after is not None:
        control_gain = (control_after - control_before) / lost
        evidence["control_gain"] = control_gain
        evidence["control_gain_absolute"] = control_after - control_before
        excess = (
            recovery - control_gain
            if peak_excess is None
            else max(peak_excess, recovery - control_gain)
        )
        evidence["excess_recovery"] = excess
        if not reversible and not control_taught(
            control_after - control_before, control_exact_gain, t
        ):
            return RegimeVerdict(None, catastrophic, INCONCLUSIVE, evidence, t)
        reversible = reversible and bool(excess >= t.control_margin)
    return RegimeVerdict(reversible, catastrophic, LABELS[(reversible, catastrophic)], evidence, t)
