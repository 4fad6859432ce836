"""Intervals on the same-data verdict: point estimates equal the regime's evidence, a verdict
far from every threshold is stable, and one on a threshold reads borderline, naming it."""

from __future__ import annotations

import pytest
from data.make_results_v2 import stored_config
from memorised import memorised_subject
from rich.console import Console

from unlearn_lens.metrics.token import ItemOutcomes
from unlearn_lens.regimes import RegimeThresholds
from unlearn_lens.study.audit import audit
from unlearn_lens.study.intervals import STABLE, verdict_intervals
from unlearn_lens.unlearn.relearn import CurvePoint, RecoveryCurve


def _outcomes(correct: list[int]) -> ItemOutcomes:
    """One target token per item; `correct[i]` says whether item i's token is the argmax."""
    n = len(correct)
    return ItemOutcomes([1] * n, list(correct), list(correct), [0.0 if c else 3.0 for c in correct])


def _curve(forget: list[list[int]], control: list[list[int]]) -> RecoveryCurve:
    def points(tables):
        return [
            CurvePoint(k, float(k), sum(t) / len(t), 0.0, _outcomes(t))
            for k, t in enumerate(tables)
        ]

    return RecoveryCurve(forget=points(forget), retain=[], control=points(control))


def test_a_verdict_on_the_recovery_threshold_is_borderline():
    n = 20
    original = _outcomes([1] * n)
    half = [1] * (n // 2) + [0] * (n // 2)  # recovery exactly 0.5, the threshold
    curve = _curve([[0] * n, half], [[0] * n, [0] * n])
    intervals = verdict_intervals(original, curve, RegimeThresholds(), n_resamples=2000)
    assert intervals.recovery.point == pytest.approx(0.5)
    assert intervals.recovery.low < 0.5 < intervals.recovery.high
    assert 0.35 < intervals.stability < 0.75 and intervals.stability < STABLE
    assert intervals.borderline.startswith("recovery [") and "straddles 0.5" in intervals.borderline


def test_a_verdict_far_from_every_threshold_is_stable():
    n = 20
    original = _outcomes([1] * n)
    curve = _curve([[0] * n, [1] * n], [[0] * n, [0] * n])  # everything back, the control nothing
    intervals = verdict_intervals(original, curve, RegimeThresholds(), n_resamples=500)
    assert intervals.stability == 1.0 and intervals.borderline is None
    assert intervals.recovery.low == intervals.recovery.high == 1.0


def test_an_audit_stores_intervals_whose_points_are_the_regimes_numbers(tmp_path):
    results = audit(
        stored_config(tmp_path, "attribution"), subject=memorised_subject(), progress=False,
        console=Console(file=None, quiet=True),
    )  # fmt: skip
    result = results.methods["ga"]
    e, intervals = result.regime.evidence, result.intervals
    assert intervals is not None and intervals.n_items == (4, 4)
    assert intervals.forgotten.point == pytest.approx(e["forgotten"])
    assert intervals.recovery.point == pytest.approx(e["recovery"])
    assert intervals.control_gain.point == pytest.approx(e["control_gain"])
    assert intervals.peak_excess.point == pytest.approx(e["peak_excess"])
    for interval in (intervals.forgotten, intervals.recovery, intervals.peak_excess):
        assert interval.low <= interval.point <= interval.high or interval.n_undefined > 0
    assert 0.0 <= intervals.stability <= 1.0
