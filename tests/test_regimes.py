"""Regime verdicts on hand-made numbers: all four regimes, edge cases, thresholds, serialisation."""

from __future__ import annotations

import json
import math

import pytest

from unlearn_lens.regimes import (
    INCONCLUSIVE,
    NOT_FORGOTTEN,
    RegimeThresholds,
    RegimeVerdict,
    classify_regime,
    control_taught,
)
from unlearn_lens.schema import dump, read


@pytest.mark.parametrize(
    "relearned,retain_unlearned,reversible,catastrophic,label",
    [
        (0.75, 0.88, True, False, "suppressed"),  # recovery 0.857, retain drop 2 %
        (0.75, 0.45, True, True, "collapsed but recoverable"),  # retain drop 50 %
        (0.125, 0.88, False, False, "targeted forgetting"),  # recovery 0.143
        (0.125, 0.45, False, True, "destroyed"),
    ],
)
def test_four_regimes_from_hand_made_numbers(
    relearned, retain_unlearned, reversible, catastrophic, label
):
    verdict = classify_regime(
        0.875,
        0.0,
        relearned,
        control_before=0.0,
        control_after=0.125,
        retain_original=0.9,
        retain_unlearned=retain_unlearned,
    )
    assert (verdict.reversible, verdict.catastrophic, verdict.label) == (
        reversible,
        catastrophic,
        label,
    )
    assert verdict.evidence["recovery"] == pytest.approx(relearned / 0.875)
    assert verdict.evidence["control_gain"] == pytest.approx(0.125 / 0.875)
    assert verdict.evidence["retain_drop"] == pytest.approx((0.9 - retain_unlearned) / 0.9)
    line = verdict.describe()
    assert line.startswith(f"{label} — {'reversible' if reversible else 'irreversible'}")
    assert (
        f"recovery {relearned / 0.875:.2f}" in line
        and f"retain accuracy 0.90 → {retain_unlearned:.2f}" in line
    )
    assert ("catastrophic:" in line) and (("not catastrophic" in line) != catastrophic)


def test_control_that_learns_as_fast_blocks_reversibility():
    # Forget items come back to 0.75, but novel items reach 0.7 with the same budget: no hidden knowledge.
    verdict = classify_regime(
        0.875,
        0.0,
        0.75,
        control_before=0.0,
        control_after=0.7,
        retain_original=0.9,
        retain_unlearned=0.9,
    )
    assert verdict.evidence["recovery"] >= 0.5 and verdict.evidence["excess_recovery"] < 0.25
    assert verdict.reversible is False and verdict.label == "targeted forgetting"
    assert "excess 0.06 < 0.25" in verdict.describe()
    without_control = classify_regime(0.875, 0.0, 0.75, retain_original=0.9, retain_unlearned=0.9)
    assert without_control.reversible is True and "no control" in without_control.describe()


def test_retain_nll_rise_alone_can_make_it_catastrophic():
    mild = classify_regime(1.0, 0.0, 0.0, retain_nll_original=2.9, retain_nll_unlearned=3.1)
    assert mild.catastrophic is False and mild.evidence["retain_nll_rise"] == pytest.approx(0.2)
    doubled = classify_regime(
        1.0, 0.0, 0.0, retain_nll_original=2.9, retain_nll_unlearned=2.9 + math.log(2) + 0.01
    )
    assert doubled.catastrophic is True and doubled.label == "destroyed"
    assert "rise 0.70 > 0.69 nats" in doubled.describe()


def test_not_forgotten_leaves_reversibility_undecided():
    verdict = classify_regime(0.875, 0.75, 0.875, retain_original=0.9, retain_unlearned=0.5)
    assert (
        verdict.reversible is None
        and verdict.label == NOT_FORGOTTEN
        and verdict.catastrophic is True
    )
    assert verdict.evidence["recovery"] is None
    assert verdict.describe().startswith(
        "not forgotten — forget accuracy 0.88 → 0.75 (drop 14 % < 50 % of the original)"
    )
    nothing_known = classify_regime(0.0, 0.0, 0.0, retain_original=0.9, retain_unlearned=0.9)
    assert nothing_known.label == NOT_FORGOTTEN


def test_thresholds_are_configurable_and_at_the_boundary_inclusive():
    strict = RegimeThresholds(recovery=0.9, retain_drop=0.01)
    verdict = classify_regime(
        1.0, 0.0, 0.8, retain_original=1.0, retain_unlearned=0.98, thresholds=strict
    )
    assert (
        verdict.reversible is False
        and verdict.catastrophic is True
        and verdict.thresholds == strict
    )
    boundary = classify_regime(1.0, 0.0, 0.5, retain_original=1.0, retain_unlearned=0.8)
    assert (
        boundary.reversible is True and boundary.catastrophic is False
    )  # recovery = 0.5, drop = 20 %


def test_verdict_round_trips_and_inputs_are_checked():
    verdict = classify_regime(
        0.875,
        0.0,
        0.75,
        control_before=0.0,
        control_after=0.125,
        retain_original=0.9,
        retain_unlearned=0.88,
        retain_nll_original=2.9,
        retain_nll_unlearned=3.1,
    )
    assert read(RegimeVerdict, json.loads(json.dumps(dump(verdict)))) == verdict
    with pytest.raises(ValueError, match="retain_original \\+ retain_unlearned"):
        classify_regime(1.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="both control_before and control_after"):
        classify_regime(
            1.0, 0.0, 0.5, control_before=0.0, retain_original=1.0, retain_unlearned=1.0
        )
    with pytest.raises(ValueError, match="forget_relearned must be an accuracy in \\[0, 1\\]"):
        classify_regime(1.0, 0.0, 1.5, retain_original=1.0, retain_unlearned=1.0)


def test_a_budget_that_taught_the_control_nothing_cannot_call_irreversible():
    # The grid's text cells: recovery 0.1, control gain 0.04 — the attack could not have worked.
    weak = classify_regime(
        0.9,
        0.0,
        0.09,
        control_before=0.0,
        control_after=0.04,
        retain_original=0.9,
        retain_unlearned=0.5,
    )
    assert weak.reversible is None and weak.label == INCONCLUSIVE and weak.catastrophic is True
    assert weak.evidence["control_gain_absolute"] == pytest.approx(0.04)
    line = weak.describe()
    assert line.startswith(
        "inconclusive — the relearning budget taught the control nothing: control accuracy gain 0.04 < 0.10"
    )
    assert (
        "[thresholds: forgotten ≥ 50 %, recovery ≥ 0.50, excess over control ≥ 0.25, control gain ≥ 0.10"
        in line
    )
    # The same low recovery after a budget that did teach the control is a real irreversible call.
    taught = classify_regime(
        0.9,
        0.0,
        0.09,
        control_before=0.0,
        control_after=0.1,
        retain_original=0.9,
        retain_unlearned=0.5,
    )
    assert taught.reversible is False and taught.label == "destroyed"
    # A high recovery needs no proof that the budget was strong enough.
    recovered = classify_regime(
        0.9,
        0.0,
        0.8,
        control_before=0.0,
        control_after=0.0,
        retain_original=0.9,
        retain_unlearned=0.9,
    )
    assert recovered.reversible is True and recovered.label == "suppressed"
    # The threshold is configurable.
    lenient = classify_regime(
        0.9,
        0.0,
        0.09,
        control_before=0.0,
        control_after=0.04,
        retain_original=0.9,
        retain_unlearned=0.5,
        thresholds=RegimeThresholds(min_control_gain=0.03),
    )
    assert lenient.label == "destroyed"


def test_a_recovery_much_faster_than_the_control_counts_even_when_both_saturate():
    # lr 1e-4 on SmolLM2: forget back to 1.0 by step 3, control +0.66 by the end — end points alone
    # give excess 1.0 − 0.66/0.73 = 0.10 < 0.25, though the forgotten facts came back far faster.
    ends = classify_regime(
        1.0,
        0.27,
        1.0,
        control_before=0.0,
        control_after=0.66,
        retain_original=0.9,
        retain_unlearned=0.9,
    )
    assert ends.reversible is False and ends.evidence["excess_recovery"] == pytest.approx(
        1 - 0.66 / 0.73
    )
    along = classify_regime(
        1.0,
        0.27,
        1.0,
        control_before=0.0,
        control_after=0.66,
        retain_original=0.9,
        retain_unlearned=0.9,
        peak_excess=0.7,
    )
    assert (
        along.reversible is True
        and along.evidence["excess_recovery"] == 0.7
        and along.label == "suppressed"
    )


def test_a_control_that_gained_tokens_but_no_whole_answer_cannot_call_irreversible():
    # The case: the control's token accuracy 0 → 0.12 (continuation tokens learned
    # without the facts), no control item answered whole, recovery 0.10.
    args = {
        "control_before": 0.0,
        "control_after": 0.12,
        "retain_original": 0.9,
        "retain_unlearned": 0.9,
    }
    token_only = classify_regime(0.9, 0.0, 0.09, control_exact_gain=0.0, **args)
    assert token_only.label == INCONCLUSIVE and token_only.reversible is None
    assert "exact-match gain 0.00 (needs > 0)" in token_only.describe()
    assert token_only.evidence["control_exact_gain"] == 0.0
    # One more control item answered whole: the budget could teach a fact, so it is irreversible.
    whole = classify_regime(0.9, 0.0, 0.09, control_exact_gain=0.125, **args)
    assert whole.label == "targeted forgetting" and whole.reversible is False
    # Without the exact-match gain (older callers) the token rule alone decides, as before.
    assert classify_regime(0.9, 0.0, 0.09, **args).label == "targeted forgetting"
    # Both conditions hold together: an exact gain alone does not pass a token gain below 0.1.
    assert control_taught(0.12, 0.125, RegimeThresholds())
    assert not control_taught(0.12, 0.0, RegimeThresholds())
    assert not control_taught(0.05, 0.5, RegimeThresholds())
    assert control_taught(0.12, None, RegimeThresholds()), "older results keep the token rule"


def test_inconclusive_exactly_when_a_low_recovery_meets_a_control_taught_nothing():
    # Brute force over a grid of recoveries, token gains and exact-match gains: the label is
    # inconclusive iff recovery < threshold and (token gain < min or exact gain <= 0).
    t = RegimeThresholds()
    for relearned in (0.0, 0.2, 0.44, 0.45, 0.9):
        for token_gain in (0.0, 0.05, 0.1, 0.5):
            for exact_gain in (-0.1, 0.0, 0.1):
                verdict = classify_regime(
                    0.9, 0.0, relearned, control_before=0.0, control_after=token_gain,
                    retain_original=0.9, retain_unlearned=0.9, control_exact_gain=exact_gain,
                )  # fmt: skip
                low = relearned / 0.9 < t.recovery
                taught_nothing = token_gain < t.min_control_gain or exact_gain <= 0
                assert (verdict.label == INCONCLUSIVE) == (low and taught_nothing), (
                    relearned, token_gain, exact_gain, verdict.label,
                )  # fmt: skip
