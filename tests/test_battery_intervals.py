"""Intervals on the battery's readings: they cover the true recovery at their nominal rate on
simulated items, their points are the readings' own numbers, a reading far from every threshold
is stable, seeds widen them (resampled with the items), and an audit stores them, with seeds
that change the batch order and nothing else, through a reload and a re-render."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from data.make_results_v2 import stored_config
from memorised import memorised_subject
from rich.console import Console

from unlearn_lens.attacks.other_data import OtherDataAttack
from unlearn_lens.attacks.quantize import LayerRounding, RoundedMetrics, SchemeResult
from unlearn_lens.attacks.split import SplitHalf, SplitResult, _pooled_accuracy, _pooled_curve
from unlearn_lens.metrics.token import ItemOutcomes
from unlearn_lens.regimes import RegimeThresholds
from unlearn_lens.report.render import REPORT_FILE, render_run
from unlearn_lens.study.audit import audit
from unlearn_lens.study.battery_intervals import (
    held_back_outcomes,
    other_data_intervals,
    quantization_intervals,
    split_intervals,
)
from unlearn_lens.study.intervals import STABLE, accuracy_band
from unlearn_lens.study.results import AuditResults
from unlearn_lens.unlearn.loop import TrainConfig, _Plan
from unlearn_lens.unlearn.relearn import CurvePoint, RelearnWork

T = RegimeThresholds()
WORK = RelearnWork(4, 1, 4, 1e-2, 4, 4)


def _outcomes(correct, tokens=None) -> ItemOutcomes:
    """Per item: `tokens[i]` targets (1 by default), `correct[i]` of them the argmax."""
    tokens = [1] * len(correct) if tokens is None else list(tokens)
    correct = [int(c) for c in correct]
    return ItemOutcomes(
        tokens,
        correct,
        [int(c == n) for c, n in zip(correct, tokens, strict=True)],
        [float(n - c) for c, n in zip(correct, tokens, strict=True)],
    )


def _other(before: ItemOutcomes, after: ItemOutcomes, original: ItemOutcomes) -> OtherDataAttack:
    control = _outcomes([0] * 4)
    o, b, a = original.metrics(), before.metrics(), after.metrics()
    return OtherDataAttack(
        "retain", WORK, b, a, control.metrics(), control.metrics(),
        (a.accuracy - b.accuracy) / (o.accuracy - b.accuracy),
        outcomes={"forget_before": before, "forget_after": after, "control_before": control,
                  "control_after": control},
    )  # fmt: skip


def test_other_data_intervals_cover_the_true_recovery_at_their_nominal_rate():
    """300 simulated forget sets of 30 items: the original knew every item, the unlearned model
    none, the attack brings each back with probability 0.6, so the true recovery is 0.6."""
    rng = np.random.default_rng(0)
    n, p, sets = 30, 0.6, 300
    original, before = _outcomes([1] * n), _outcomes([0] * n)
    covered = 0
    for index in range(sets):
        after = _outcomes(rng.random(n) < p)
        attack = _other(before, after, original)
        intervals = other_data_intervals(original, [attack], T, n_resamples=1000, seed=index)
        assert intervals.recovery.point == pytest.approx(attack.recovery)
        assert intervals.null.point == 0.0 and intervals.excess.point == intervals.recovery.point
        covered += intervals.recovery.low <= p <= intervals.recovery.high
    # Percentile intervals of a 30-item Bernoulli mean cover at about 0.93; 300 sets: sd 0.015.
    assert 0.89 <= covered / sets <= 0.98


def test_seeds_are_resampled_with_the_items_and_the_point_stays_the_first_seeds():
    n = 20
    original, before = _outcomes([1] * n), _outcomes([0] * n)
    everything, nothing = _outcomes([1] * n), _outcomes([0] * n)
    one = other_data_intervals(
        original, [_other(before, everything, original)], T, n_resamples=2000
    )
    assert one.stability == 1.0 and one.borderline is None and one.n_seeds == 1
    assert one.recovery.low == one.recovery.high == 1.0
    # A second seed that brought nothing back: the point is still the first seed's run, but half
    # the resamples draw the other run, so the interval spans both and the reading is borderline.
    attacks = [_other(before, everything, original), _other(before, nothing, original)]
    two = other_data_intervals(original, attacks, T, n_resamples=2000)
    assert two.n_seeds == 2 and two.recovery.point == 1.0
    assert two.recovery.low == 0.0 and two.recovery.high == 1.0
    assert 0.45 < two.stability < 0.55 < STABLE
    assert two.borderline == "recovery [0.00, 1.00] straddles 0.5"


def _split(rng: np.random.Generator, n: int, n_control: int, steps: int) -> SplitResult:
    """Two halves with random multi-token outcomes at every step (original: all correct)."""
    tokens = rng.integers(1, 4, size=n).tolist()
    halves = []
    order = rng.permutation(n).tolist()
    for trained, held_back in (
        (order[: n // 2], order[n // 2 :]),
        (order[n // 2 :], order[: n // 2]),
    ):
        kept = sorted(held_back)
        own = [tokens[i] for i in kept]
        control_tokens = [2] * n_control

        def point(k, sizes):
            correct = [int(rng.integers(0, size + 1)) if k else 0 for size in sizes]
            table = _outcomes(correct, sizes)
            return CurvePoint(k, float(k), table.metrics().accuracy, table.metrics().nll, table)

        halves.append(
            SplitHalf(
                sorted(trained), kept, _outcomes(own, own).metrics(),
                [point(k, own) for k in range(steps + 1)],
                [point(k, control_tokens) for k in range(steps + 1)],
                sum(own), WORK,
            )
        )  # fmt: skip
    return SplitResult(0, steps, halves, _pooled_curve(halves), _pooled_accuracy(halves))


def test_split_intervals_read_the_pooled_split_item_by_item():
    rng = np.random.default_rng(3)
    split = _split(rng, n=10, n_control=6, steps=3)
    tokens = [0] * 10
    for half in split.halves:
        for j, item in enumerate(half.held_back):
            tokens[item] = half.held_back_curve[0].outcomes.n_tokens[j]
    original = _outcomes(tokens, tokens)
    # Reassembled in forget order, every item measured while held back: the pooled accuracy.
    for k, pooled in enumerate(split.curve.forget):
        assert held_back_outcomes(split, k).metrics().accuracy == pytest.approx(pooled.accuracy)
    intervals = split_intervals(original, [split], T, n_resamples=500)
    lost = split.original_accuracy - split.curve.forget[0].accuracy
    assert intervals.recovery.point == pytest.approx(split.recovery())
    assert intervals.null.point == pytest.approx(split.control_gain() / lost)
    assert intervals.excess.point == pytest.approx(split.peak_excess())
    assert intervals.n_items == (10, 6) and intervals.n_seeds == 1


def test_a_split_far_from_every_threshold_is_stable():
    n, rng = 8, np.random.default_rng(0)
    split = _split(rng, n=n, n_control=4, steps=1)
    for half in split.halves:  # everything back, the control learned nothing
        last = half.held_back_curve[-1].outcomes
        full = _outcomes(last.n_tokens, last.n_tokens)
        half.held_back_curve[-1] = replace(half.held_back_curve[-1], accuracy=1.0, outcomes=full)
        zero = _outcomes([0] * 4, [2] * 4)
        half.control_curve[-1] = replace(half.control_curve[-1], accuracy=0.0, outcomes=zero)
    split = SplitResult(0, 1, split.halves, _pooled_curve(split.halves), 1.0)
    tokens = held_back_outcomes(split, 0).n_tokens
    intervals = split_intervals(_outcomes(tokens, tokens), [split], T, n_resamples=500)
    assert intervals.recovery.low == intervals.recovery.high == 1.0
    assert intervals.stability == 1.0 and intervals.borderline is None
    assert not intervals.could_work, "the control gained nothing: powerless had it failed"


def test_quantization_intervals_are_stable_far_from_the_threshold_and_read_the_reference():
    n = 12
    tables = {
        "original": _outcomes([1] * n),
        "unlearned": _outcomes([0] * n),
        "original_rounded": _outcomes([1] * (n - 2) + [0] * 2),
        "unlearned_rounded": _outcomes([1] * 9 + [0] * 3),
    }
    metrics = RoundedMetrics(**{name: table.metrics() for name, table in tables.items()})
    result = SchemeResult(
        "int8", metrics, None, {}, [], {}, LayerRounding(0, 0, 0, 0, 0), outcomes=tables
    )
    intervals = quantization_intervals(result, T, n_resamples=1000)
    assert intervals.recovery.point == pytest.approx(9 / 10)  # against the rounded original
    assert intervals.could_work and intervals.null.low == intervals.null.high == 0.0
    assert intervals.stability == 1.0 and intervals.borderline is None
    assert quantization_intervals(replace(result, outcomes={}), T) is None, "older results"


def test_seeds_change_the_batch_order_and_nothing_else():
    """The batches a seed draws: every epoch is a permutation of the same items; another seed
    draws another order, the same seed the same one."""
    config = TrainConfig(steps=12, batch_size=2, seed=0)
    plans = [_Plan.draw(replace(config, seed=seed), 8, 0).forget[0] for seed in (0, 1, 0)]
    assert plans[0] == plans[2] and plans[0] != plans[1]
    for plan in plans:
        for epoch in range(3):
            assert sorted(i for batch in plan[4 * epoch : 4 * epoch + 4] for i in batch) == list(
                range(8)
            )


def test_an_audit_with_two_seeds_stores_every_readings_intervals(tmp_path):
    """Same-data and retain relearning run with seeds 0 and 1 from the same unlearned model on the
    same items (batches of 2 of 4 forget items: the order matters); exact match decides; the
    intervals pool both seeds, survive a reload and show in the re-rendered report."""
    config = replace(
        stored_config(tmp_path, "attribution"),
        batch_size=2,
        seeds=2,
        verdict_metric="exact",
        attacks=("retain", "quantization"),
        quantization_schemes=("int8",),
    )
    results = audit(config, out=tmp_path / "run", subject=memorised_subject(), progress=False,
                    console=Console(file=io.StringIO()))  # fmt: skip
    result = results.methods["ga"]
    (seed_curve,) = result.relearn_seeds
    curve = result.relearn.curve
    assert seed_curve.forget[0] == curve.forget[0], "the same unlearned model on the same items"
    assert [p.epoch for p in seed_curve.forget] == [p.epoch for p in curve.forget]
    assert [p.nll for p in seed_curve.forget] != [p.nll for p in curve.forget], "another order"
    (seed_retain,) = result.battery.other_data_seeds["retain"]
    retain = result.battery.other_data["retain"]
    assert seed_retain.outcomes["forget_before"] == retain.outcomes["forget_before"]
    assert seed_retain.work == retain.work
    readings = {r.attack: r for r in result.battery.readings}
    assert set(readings) == {"same-data relearning", "retain relearning", "quantisation int8"}
    for reading in readings.values():
        assert reading.intervals is not None and reading.intervals.metric == "exact"
        assert 0.0 <= reading.intervals.stability <= 1.0
    assert readings["same-data relearning"].intervals.n_seeds == 2
    assert readings["retain relearning"].intervals.n_seeds == 2
    assert readings["quantisation int8"].intervals.n_seeds == 1
    assert result.intervals.metric == "exact"
    # Exact match read from the attacks' own numbers: (after − before) / (original − before).
    before, after = retain.forget_before.exact_match, retain.forget_after.exact_match
    original = results.original["forget"].exact_match
    expected = (after - before) / (original - before) if original > before else None
    got = readings["retain relearning"].recovery
    assert (got is None and expected is None) or got == pytest.approx(expected)
    assert AuditResults.load(tmp_path / "run").methods["ga"].battery == result.battery
    console = Console(record=True, width=300, file=io.StringIO())
    render_run(AuditResults.load(tmp_path / "run"), tmp_path / "run", console)
    stability = f"{readings['retain relearning'].intervals.stability:.2f}"
    assert stability in console.export_text()
    assert "stability" in (tmp_path / "run" / REPORT_FILE).read_text()


def test_the_accuracy_band_of_a_curve_pools_items_and_seeds():
    n = 20

    def run(tables):
        return [CurvePoint(k, float(k), t.metrics().accuracy, 0.0, t) for k, t in enumerate(tables)]

    half = _outcomes([1] * (n // 2) + [0] * (n // 2))
    low, high = accuracy_band([run([_outcomes([0] * n), half, _outcomes([1] * n)])])
    assert low[0] == high[0] == 0.0 and low[2] == high[2] == 1.0, "no spread without variation"
    # A 20-item share of 0.5: the 95 % interval is about ±2.2 binomial sd (0.11 each).
    assert 0.25 <= low[1] < 0.5 < high[1] <= 0.75
    # A second seed that learned everything at step 1: its resamples are half the band's.
    low, high = accuracy_band(
        [run([_outcomes([0] * n), half]), run([_outcomes([0] * n), _outcomes([1] * n)])]
    )
    assert high[1] == 1.0 and low[1] < 0.5
    assert accuracy_band([[CurvePoint(0, 0.0, 0.5, 0.0, None)]]) is None, "older results"
