"""Relearning attacks with their control, end to end on a tiny model that memorised its facts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from memorised import CONTROL, FORGET, RETAIN, memorised_subject

from unlearn_lens.errors import ConfigError
from unlearn_lens.evaluation import evaluate
from unlearn_lens.metrics.token import TokenMetrics
from unlearn_lens.schema import dump, read
from unlearn_lens.unlearn import (
    Recovery,
    RelearnResult,
    TrainConfig,
    budget_steps,
    equal_work_steps,
    relearn,
    train,
    unlearn,
)

RELEARN = {"steps": 8, "lr": 1e-2}
"""The same Adam rate that memorised the facts, for a third of the memorising steps."""


@pytest.fixture(scope="module")
def unlearned():
    """(subject, original forget metrics, unlearned weights): GA until nothing is answered."""
    subject = memorised_subject()
    result = unlearn(
        subject,
        FORGET,
        RETAIN,
        "ga",
        lr=3e-3,
        steps=30,
        early_stop_forget_accuracy=0.0,
        progress=False,
    )
    assert result.metrics("after", "forget").exact_match == 0.0
    return subject, result.metrics("before", "forget"), subject.snapshot()


@pytest.fixture
def subject(unlearned):
    subject, _, snapshot = unlearned
    subject.restore(snapshot)
    return subject


def test_forgotten_facts_come_back_faster_than_novel_facts_are_learned(subject, unlearned):
    result = relearn(
        subject, FORGET, CONTROL, original_forget=unlearned[1], progress=False, **RELEARN
    )
    for metric in ("accuracy", "exact_match"):
        rec = result.recovery[metric]
        assert rec.original == 1.0 and rec.unlearned == 0.0
        assert rec.recovery >= 0.75
        assert rec.control_gain <= 0.25
        assert (
            rec.recovery_vs_control == pytest.approx(rec.forget_gain - rec.control_gain)
            and rec.recovery_vs_control >= 0.5
        )
    assert result.forget_after.nll < result.forget_before.nll - 1.0
    assert (
        result.budget_steps == 8
        and result.source_run.steps_run == result.control_run.steps_run == 8
    )
    assert result.source_run.phase == "relearn" and result.control_run.phase == "relearn_control"


def test_the_subject_ends_relearned_on_the_source_alone(subject, unlearned):
    """The control run leaves no trace: the final weights equal a plain fine-tune from the start;
    the end metrics (taken from the curves' last points) are those of the final weights."""
    result = relearn(
        subject,
        RETAIN,
        CONTROL,
        examples=8,
        forget_items=FORGET,
        lr=1e-2,
        batch_size=4,
        progress=False,
    )
    relearned = subject.snapshot()
    assert result.forget_after == evaluate(subject, FORGET)
    subject.restore(unlearned[2])
    train(
        subject,
        "finetune",
        CONTROL,
        config=TrainConfig(lr=1e-2, steps=result.work["control"].steps, batch_size=4, eval_every=0),
        progress=False,
    )
    assert result.control_after == evaluate(subject, CONTROL)
    subject.restore(unlearned[2])
    train(
        subject,
        "finetune",
        RETAIN,
        config=TrainConfig(lr=1e-2, steps=2, batch_size=4, eval_every=0),
        progress=False,
    )
    assert all(torch.equal(relearned[k], v) for k, v in subject.snapshot().items())


def test_recovery_is_computed_from_the_measurements(subject):
    result = relearn(subject, FORGET, CONTROL, steps=2, lr=1e-2, progress=False)
    for metric, rec in result.recovery.items():
        assert rec.unlearned == getattr(result.forget_before, metric)
        assert rec.relearned == getattr(result.forget_after, metric)
        assert rec.control_gain == getattr(result.control_after, metric) - getattr(
            result.control_before, metric
        )
        assert rec.recovery is None and rec.original is None  # no original metrics given


def test_recovery_guards_a_zero_denominator():
    metrics = TokenMetrics(
        accuracy=0.5, nll=1.0, perplexity=2.7, exact_match=0.5, n_tokens=4, n_sequences=4
    )
    rec = Recovery.measure("accuracy", metrics, metrics, metrics, metrics, metrics)
    assert (
        rec.recovery is None
        and rec.forget_gain == rec.control_gain == rec.recovery_vs_control == 0.0
    )
    gained = TokenMetrics(
        accuracy=0.75, nll=1.0, perplexity=2.7, exact_match=0.75, n_tokens=4, n_sequences=4
    )
    original = TokenMetrics(
        accuracy=1.0, nll=0.1, perplexity=1.1, exact_match=1.0, n_tokens=4, n_sequences=4
    )
    assert Recovery.measure(
        "accuracy", original, metrics, gained, metrics, metrics
    ).recovery == pytest.approx(0.5)


def test_budget_in_steps_or_examples():
    assert budget_steps(3, None, 8) == 3
    assert budget_steps(None, 9, 8) == 2
    with pytest.raises(ConfigError, match="exactly one"):
        budget_steps(3, 9, 8)
    with pytest.raises(ConfigError, match="exactly one"):
        budget_steps(None, None, 8)
    with pytest.raises(ConfigError, match="at least 1"):
        budget_steps(0, None, 8)


def test_empty_sets_and_json_round_trip(subject, unlearned):
    with pytest.raises(ConfigError, match="control set is empty"):
        relearn(subject, FORGET, [], steps=1, progress=False)
    with pytest.raises(ConfigError, match="source set is empty"):
        relearn(subject, [], CONTROL, steps=1, progress=False)
    result = relearn(
        subject, FORGET, CONTROL, steps=1, lr=1e-3, original_forget=unlearned[1], progress=False
    )
    data = json.loads(json.dumps(dump(result)))
    assert dump(read(RelearnResult, data)) == dump(result)


def test_ctrl_c_restores_the_starting_weights_and_propagates(subject, unlearned):
    def interrupt(step) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        relearn(subject, FORGET, CONTROL, steps=3, callbacks=[interrupt], progress=False)
    assert all(torch.equal(subject.snapshot()[k], v) for k, v in unlearned[2].items())


def _epochs_by_hand(steps: int, n_items: int, batch_size: int) -> float:
    """Epochs after `steps` steps, by walking the loop's schedule batch by batch: each epoch is
    the set cut into chunks of `batch_size`, the last one smaller."""
    sizes = []
    while len(sizes) < steps:
        sizes.extend(min(batch_size, n_items - i) for i in range(0, n_items, batch_size))
    return sum(sizes[:steps]) / n_items


def test_equal_work_never_gives_the_control_fewer_epochs_than_the_source():
    # The held-out case that once produced a wrong verdict: 22 forget facts, 8 control facts.
    assert (
        equal_work_steps(10, 22, 8, 8) == 4
    )  # 4 epochs of the control (3.36 of the source), not 10
    assert equal_work_steps(10, 32, 8, 8) == 3  # 3.0 epochs against 2.5; round-to-nearest gave 2
    assert equal_work_steps(10, 32, 32, 8) == 10
    assert equal_work_steps(1, 64, 4, 8) == 1  # never zero steps
    for batch_size in (1, 3, 4, 8):
        for steps in (1, 5, 12):
            for n_source in range(1, 30):
                for n_other in range(1, 30):
                    n = equal_work_steps(steps, n_source, n_other, batch_size)
                    source = _epochs_by_hand(steps, n_source, batch_size)
                    # Brute force: the fewest steps whose epochs reach the source's.
                    assert _epochs_by_hand(n, n_other, batch_size) >= source - 1e-12
                    assert n == 1 or _epochs_by_hand(n - 1, n_other, batch_size) < source


def test_unequal_sets_get_equal_epochs_and_the_curve_follows_every_step(subject, unlearned):
    control = CONTROL[:2]  # half the forget set's size
    result = relearn(
        subject,
        FORGET,
        control,
        steps=4,
        lr=1e-2,
        batch_size=2,
        retain_items=RETAIN,
        original_forget=unlearned[1],
        progress=False,
    )
    source, ctrl = result.work["source"], result.work["control"]
    assert (source.steps, ctrl.steps) == (4, 2) and source.epochs == ctrl.epochs == 2.0
    assert source.items_seen / source.steps == ctrl.items_seen / ctrl.steps == 2
    assert source.tokens_seen > 0 and ctrl.tokens_seen > 0
    curve = result.curve
    assert [p.step for p in curve.forget] == [0, 1, 2, 3, 4] and [
        p.step for p in curve.control
    ] == [0, 1, 2]
    assert [p.epoch for p in curve.forget] == [0.0, 0.5, 1.0, 1.5, 2.0] and curve.control[
        -1
    ].epoch == 2.0
    assert [p.step for p in curve.retain] == [0, 1, 2, 3, 4]
    for point, metrics in (
        (curve.forget[0], result.forget_before),
        (curve.forget[-1], result.forget_after),
        (curve.control[0], result.control_before),
        (curve.control[-1], result.control_after),
    ):
        assert (point.accuracy, point.nll) == (metrics.accuracy, metrics.nll)
    recovery = curve.recovery(unlearned[1].accuracy)
    assert recovery[-1] == pytest.approx(result.recovery["accuracy"].recovery)
    # The peak excess the regimes use: forget gain minus the control's gain at the same epoch
    # (linear between the control's steps), over what unlearning removed, largest over the curve.
    lost = unlearned[1].accuracy - curve.forget[0].accuracy
    control = (
        [p.epoch for p in curve.control],
        [p.accuracy - curve.control[0].accuracy for p in curve.control],
    )
    by_hand = max(
        (p.accuracy - curve.forget[0].accuracy - np.interp(p.epoch, *control)) / lost
        for p in curve.forget
    )
    assert result.peak_excess() == pytest.approx(by_hand)
    first = next((p.step for p, r in zip(curve.forget, recovery, strict=True) if r >= 0.5), None)
    assert result.steps_to_recover() == first
    data = json.loads(json.dumps(dump(result)))
    assert (
        dump(read(RelearnResult, data)) == dump(result) and data["steps_to_half_recovery"] == first
    )


def test_peak_excess_compares_recovery_and_control_at_equal_epochs():
    from unlearn_lens.unlearn import CurvePoint, RecoveryCurve

    def points(values, epochs):
        return [
            CurvePoint(step, epoch, value, 0.0)
            for step, (value, epoch) in enumerate(zip(values, epochs, strict=True))
        ]

    # Forget: back from 0.2 to 1.0 within one epoch; control: 0 → 0.8, linearly over two epochs
    # (measured at half the forget set's step count, as for a control half its size).
    curve = RecoveryCurve(
        forget=points([0.2, 0.6, 1.0, 1.0, 1.0], [0, 0.5, 1.0, 1.5, 2.0]),
        retain=[],
        control=points([0.0, 0.4, 0.8], [0, 1.0, 2.0]),
    )
    assert curve.control_gain_at(0.5) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="up to epoch 2"):
        curve.control_gain_at(3.0)  # never held flat past the control's last step
    excess, epoch = curve.peak_excess(1.0)
    # Brute force over the forget points: ((acc − 0.2) − 0.4 · epoch) / 0.8.
    expected = max(
        ((a - 0.2) - 0.4 * e) / 0.8
        for a, e in ((0.2, 0), (0.6, 0.5), (1.0, 1.0), (1.0, 1.5), (1.0, 2.0))
    )
    assert excess == pytest.approx(expected) and epoch == 1.0
    assert (
        RecoveryCurve(
            forget=points([1.0, 1.0], [0, 1]), retain=[], control=curve.control
        ).peak_excess(1.0)
        is None
    )
    # A control measured only to epoch 1: forget points past it are not compared. Held flat at
    # 0.4, the point at epoch 2 would give (1.0 − 0.2 − 0.4) / 0.8 = 0.5; compared where both were
    # measured (epochs 0, 0.5, 1: excess 0, −0.25, 0), the peak is 0.
    late = RecoveryCurve(
        forget=points([0.2, 0.2, 0.6, 0.8, 1.0], [0, 0.5, 1.0, 1.5, 2.0]),
        retain=[],
        control=points([0.0, 0.4], [0, 1.0]),
    )
    assert late.peak_excess(1.0) == (pytest.approx(0.0), 0)
