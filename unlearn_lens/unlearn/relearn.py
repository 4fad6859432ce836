"""Relearning attacks, with a control: does forgotten knowledge come back faster than new knowledge is learned?

A relearning attack fine-tunes the unlearned model with plain NLL (`finetune`) on a small
budget of data (the forget set itself, retain data, unrelated text). The control, the same
budget, optimiser, learning rate and seed spent from the same starting weights on *novel*
items the original model never knew, says how much that budget teaches anyway: if forgotten
items come back much faster than novel items are learned, the information was still there.

Both token accuracy and greedy exact match are reported. Token accuracy is the headline (it
is smoother on a handful of items: one of five answer tokens coming back moves it, where exact
match needs all five); for single-token answers the two coincide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import computed_field

from unlearn_lens.data.items import Item
from unlearn_lens.data.loaders import ItemsLike, as_items
from unlearn_lens.errors import ConfigError
from unlearn_lens.evaluation import evaluate_outcomes
from unlearn_lens.metrics.token import ItemOutcomes, TokenMetrics
from unlearn_lens.models.sources import load
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.schema import Real
from unlearn_lens.unlearn.loop import Callback, TrainConfig, TrainingStep, TrainResult, train

RECOVERY_MIN_LOSS = 1e-9
"""Below this accuracy lost to unlearning, recovery (a ratio over that loss) is undefined."""

RECOVERY_METRICS = ("accuracy", "exact_match")
"""Token accuracy (the headline) and greedy exact match."""

HALF_RECOVERY = 0.5
"""The recovery whose first step the terminal report quotes: half of what unlearning removed."""

EPOCH_TOLERANCE = 1e-9
"""Slack when comparing epochs (ratios of item counts), so equal work compares as equal."""


def recovery_ratio(after: float, unlearned: float, reference: float) -> float | None:
    """`(after − unlearned) / (reference − unlearned)`: the share of what unlearning removed that
    came back; None where the loss is below `RECOVERY_MIN_LOSS`."""
    lost = reference - unlearned
    return (after - unlearned) / lost if lost > RECOVERY_MIN_LOSS else None


@dataclass(frozen=True)
class Recovery:
    """Relearning versus the control, in one metric (`accuracy` or `exact_match`).

    **Fields:**

    - `original`, `unlearned`, `relearned`: the metric on the forget set before unlearning
      (when known), before relearning and after it.
    - `control_before`, `control_after`: the metric on the control set before and after the
      same budget was spent on it.
    - `forget_gain = relearned − unlearned`; `control_gain = control_after − control_before`.
    - `recovery = (relearned − unlearned) / (original − unlearned)`: the fraction of what
      unlearning removed that came back; `None` without `original`, or when unlearning removed
      less than `RECOVERY_MIN_LOSS`.
    - `recovery_vs_control = forget_gain − control_gain`: how many more points of the metric
      the budget bought on the forgotten items than on novel ones (a difference, not a ratio:
      the control gain is often 0). Positive means the forgotten knowledge was still there.
    """

    metric: str
    original: float | None
    unlearned: Real
    relearned: Real
    control_before: Real
    control_after: Real
    forget_gain: Real
    control_gain: Real
    recovery: float | None
    recovery_vs_control: Real

    @classmethod
    def measure(
        cls,
        metric: str,
        original: TokenMetrics | None,
        unlearned: TokenMetrics,
        relearned: TokenMetrics,
        control_before: TokenMetrics,
        control_after: TokenMetrics,
    ) -> Recovery:
        """The comparison from the five measurements."""
        before, after = getattr(unlearned, metric), getattr(relearned, metric)
        control_gain = getattr(control_after, metric) - getattr(control_before, metric)
        forget_gain = after - before
        first = None if original is None else getattr(original, metric)
        return cls(
            metric,
            first,
            before,
            after,
            getattr(control_before, metric),
            getattr(control_after, metric),
            forget_gain,
            control_gain,
            None if first is None else recovery_ratio(after, before, first),
            forget_gain - control_gain,
        )


@dataclass(frozen=True)
class CurvePoint:
    """One set's metrics after `step` steps of a run (`epoch`: items trained on so far / set size),
    with the per-item outcomes they come from (None where only the metrics were given)."""

    step: int
    epoch: Real
    accuracy: Real
    nll: Real
    outcomes: ItemOutcomes | None = None


@dataclass(frozen=True)
class RecoveryCurve:
    """Metrics after every relearning step; point 0 is before the first step.

    `forget` (the items whose recovery is measured) and `retain` follow the relearning run,
    `control` the same budget spent on the novel control items (`retain` is empty when no
    retain items were given).
    """

    forget: list[CurvePoint]
    retain: list[CurvePoint]
    control: list[CurvePoint]

    def recovery(self, original: float) -> list[float | None]:
        """Recovery of forget accuracy at each point, given the original model's accuracy
        (None where unlearning removed less than `RECOVERY_MIN_LOSS`)."""
        lost = original - self.forget[0].accuracy
        if lost <= RECOVERY_MIN_LOSS:
            return [None for _ in self.forget]
        return [(point.accuracy - self.forget[0].accuracy) / lost for point in self.forget]

    def control_gain_at(self, epoch: float) -> float:
        """The control's accuracy gain after `epoch` epochs of its own set, interpolated
        linearly between its measured steps.

        **Raises** `ValueError` past the control's last measured epoch: holding the curve flat
        there would credit the forget curve with work the control never did.
        """
        epochs = [point.epoch for point in self.control]
        if epoch > epochs[-1] + EPOCH_TOLERANCE:
            raise ValueError(
                f"the control was measured up to epoch {epochs[-1]:g}, not at {epoch:g}"
            )
        gains = [point.accuracy - self.control[0].accuracy for point in self.control]
        return float(np.interp(epoch, epochs, gains))

    def peak_excess(self, original: float) -> tuple[float, float] | None:
        """The largest excess of forget recovery over the control's gain at the same epoch (on
        the recovery scale: divided by what unlearning removed), and the epoch where it peaks.

        End points alone hide a fast recovery once a large budget has taught the control
        everything too; comparing at equal work along the way does not. Only forget points at
        epochs the control's curve reaches are compared (where both curves were measured): the
        control is never held flat past its last step. `relearn` gives the control at least the
        source's epochs ([`equal_work_steps`][unlearn_lens.unlearn.relearn.equal_work_steps]
        rounds up), so there every forget point is compared. None when recovery is undefined.
        """
        lost = original - self.forget[0].accuracy
        if lost <= RECOVERY_MIN_LOSS:
            return None
        end = self.control[-1].epoch + EPOCH_TOLERANCE
        compared = [point for point in self.forget if point.epoch <= end]
        excess = [
            ((point.accuracy - self.forget[0].accuracy) - self.control_gain_at(point.epoch)) / lost
            for point in compared
        ]
        best = int(np.argmax(excess))
        return excess[best], compared[best].epoch

    def steps_to_recover(self, original: float, fraction: float = HALF_RECOVERY) -> int | None:
        """First relearning step at which recovery reaches `fraction`; None when not within the budget."""
        for point, value in zip(self.forget, self.recovery(original), strict=True):
            if value is not None and value >= fraction:
                return point.step
        return None


@dataclass(frozen=True)
class RelearnWork:
    """The work one run of the budget did: the relearning attack and the control each get one.

    Both runs get the same number of epochs over their own set and the same items per step
    (see [`equal_work_steps`][unlearn_lens.unlearn.relearn.equal_work_steps]), so a set that is
    smaller is not seen more often; `tokens_seen` counts the target tokens trained on.
    """

    n_items: int
    steps: int
    batch_size: int
    lr: Real
    items_seen: int
    tokens_seen: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def epochs(self) -> Real:
        """Passes over the set: items trained on / set size."""
        return self.items_seen / self.n_items

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens_per_step(self) -> Real:
        return self.tokens_seen / self.steps if self.steps else 0.0

    @classmethod
    def of(cls, run: TrainResult, n_items: int) -> RelearnWork:
        """The work a finished training run did on a set of `n_items`."""
        return cls(
            n_items,
            run.steps_run,
            run.config.batch_size,
            run.config.lr,
            run.items_seen,
            run.tokens_seen,
        )


@dataclass
class RelearnResult:
    """Forget and control metrics around a relearning attack and its control run.

    `recovery["accuracy"]` and `recovery["exact_match"]` compare them (see
    [`Recovery`][unlearn_lens.unlearn.Recovery]); `source_run` is the relearning run and
    `control_run` the same budget spent on the control set; `work` says what each did
    (`"source"`, `"control"`: equal epochs and items per step) and `curve` how the metrics
    moved step by step.
    """

    budget_steps: int
    forget_before: TokenMetrics
    forget_after: TokenMetrics
    control_before: TokenMetrics
    control_after: TokenMetrics
    original_forget: TokenMetrics | None
    recovery: dict[str, Recovery]
    source_run: TrainResult
    control_run: TrainResult
    work: dict[str, RelearnWork]
    curve: RecoveryCurve

    def steps_to_recover(self, fraction: float = HALF_RECOVERY) -> int | None:
        """First step at which forget-accuracy recovery reaches `fraction` (None: not within the
        budget, or no original accuracy to recover towards)."""
        if self.original_forget is None:
            return None
        return self.curve.steps_to_recover(self.original_forget.accuracy, fraction)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def steps_to_half_recovery(self) -> int | None:
        """`steps_to_recover()` at half recovery, written to JSON for its readers."""
        return self.steps_to_recover()

    def peak_excess(self) -> float | None:
        """The largest excess of forget-accuracy recovery over the control's gain at equal work
        along the curve ([`RecoveryCurve.peak_excess`][unlearn_lens.unlearn.RecoveryCurve.peak_excess]),
        what the regime compares with its margin; None without an original accuracy to recover towards."""
        if self.original_forget is None:
            return None
        peak = self.curve.peak_excess(self.original_forget.accuracy)
        return None if peak is None else peak[0]


def budget_steps(steps: int | None, examples: int | None, batch_size: int) -> int:
    """A relearning budget in optimiser steps: `steps`, or `ceil(examples / batch_size)`."""
    if (steps is None) == (examples is None):
        raise ConfigError("give the relearning budget as steps or as examples (exactly one)")
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"relearning steps must be at least 1, got {steps}")
        return steps
    assert examples is not None
    if examples < 1:
        raise ConfigError(f"relearning examples must be at least 1, got {examples}")
    return math.ceil(examples / batch_size)


def items_after(steps: int, n_items: int, batch_size: int) -> int:
    """Items trained on after `steps` steps over `n_items` items at `batch_size` a step, as the
    training loop schedules them: epochs of ⌈n / B⌉ batches, the last one of each epoch smaller."""
    per_epoch = math.ceil(n_items / batch_size)
    full, rest = divmod(steps, per_epoch)
    return full * n_items + rest * batch_size


def equal_work_steps(steps: int, n_source: int, n_other: int, batch_size: int) -> int:
    """The fewest steps (at least 1) that give a set of `n_other` items at least as many epochs
    (items trained on / set size) as `steps` give `n_source` items, at the same items per step.

    Equal steps would not be equal work: 10 steps of 8 are 10 epochs of an 8-item control
    but 3.6 of a 22-item forget set, and the control would learn more for that reason alone.
    Rounding is always up: a control given fewer epochs than the source (2.0 against 2.5 for
    10 steps of a 32-item source and an 8-item control, under round-to-nearest) would learn
    less for that reason alone, and its curve would end before the source's.
    """
    epochs = items_after(steps, n_source, batch_size) / n_source
    per_epoch = math.ceil(n_other / batch_size)
    n = max(1, math.floor((epochs - 1) * per_epoch))  # fewer steps end an epoch short
    while items_after(n, n_other, batch_size) / n_other < epochs - EPOCH_TOLERANCE:
        n += 1
    return n


class _CurveRecorder:
    """A training callback that measures some item sets after every step; `latest` holds the
    last measurement, which is the model as training left it (so the run's end needs no other)."""

    def __init__(
        self, subject: Subject, sets: Mapping[str, Sequence[Item]], trained_items: int
    ) -> None:
        self.subject, self.sets, self.size = subject, sets, trained_items
        self.points: dict[str, list[CurvePoint]] = {name: [] for name in sets}
        self.latest: dict[str, TokenMetrics] = {}
        self.seen = 0

    def record(
        self, step: int, measured: dict[str, TokenMetrics | ItemOutcomes] | None = None
    ) -> None:
        for name, items in self.sets.items():
            given = measured.get(name) if measured else None
            outcomes = (
                evaluate_outcomes(self.subject, items)
                if given is None
                else given
                if isinstance(given, ItemOutcomes)
                else None
            )
            metrics = outcomes.metrics() if outcomes is not None else given
            assert isinstance(metrics, TokenMetrics)
            self.points[name].append(
                CurvePoint(step, self.seen / self.size, metrics.accuracy, metrics.nll, outcomes)
            )
            self.latest[name] = metrics

    def __call__(self, step: TrainingStep) -> None:
        self.seen += step.n_items
        self.record(step.step)


def finetune_config(
    optimizer: str, lr: float, batch_size: int, grad_clip: float | None, seed: int
) -> Callable[[int], TrainConfig]:
    """The plain fine-tune every relearning run uses, as a function of its step count."""

    def config(steps: int) -> TrainConfig:
        return TrainConfig(
            optimizer=optimizer,
            lr=lr,
            steps=steps,
            batch_size=batch_size,
            grad_clip=grad_clip,
            seed=seed,
            eval_every=0,
        )

    return config


def measured_finetune(
    subject: Subject,
    items: Sequence[Item],
    measured: Mapping[str, Sequence[Item]],
    config: TrainConfig,
    start: Snapshot,
    *,
    before: dict[str, TokenMetrics | ItemOutcomes] | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    phase: str = "relearn",
) -> tuple[TrainResult, _CurveRecorder]:
    """Fine-tune `subject` on `items` and measure each of the `measured` sets before the first
    step and after every step (epochs counted over `items`).

    `before` holds measurements already taken at step 0. Ctrl-C restores `start` (the weights
    the caller began from) and re-raises `KeyboardInterrupt`.
    """
    curve = _CurveRecorder(subject, measured, len(items))
    curve.record(0, before)
    run = train(
        subject,
        "finetune",
        items,
        config=config,
        callbacks=[curve, *callbacks],
        progress=progress,
        phase=phase,
        keep_snapshots=False,
    )
    _stop_if_interrupted(subject, run, start)
    return run, curve


def relearn(
    subject: Subject | str | Path,
    source_items: ItemsLike,
    control_items: ItemsLike,
    *,
    steps: int | None = None,
    examples: int | None = None,
    forget_items: ItemsLike | None = None,
    retain_items: ItemsLike = (),
    original_forget: TokenMetrics | None = None,
    lr: float = 1e-5,
    optimizer: str = "adamw",
    batch_size: int = 8,
    grad_clip: float | None = 1.0,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    start: Snapshot | None = None,
) -> RelearnResult:
    """Fine-tune on `source_items` for a budget, and spend equal work on `control_items`.

    **Arguments:**

    - `subject`: a loaded model, or a checkpoint to load with
      [`load`][unlearn_lens.models.sources.load] (a directory, the `--out` of `unlearn-lens
      unlearn`, a built-in name or a hub id; its defaults: float32, TransformerLens backend). A
      model loaded here is not returned: to keep the relearned weights, load it yourself.

    - `steps` / `examples`: the budget on the source set (exactly one); examples become
      `ceil(examples / batch_size)` steps, so `examples=len(source_items)` is one epoch. The
      control gets as many epochs of its own set at the same items per step
      ([`equal_work_steps`][unlearn_lens.unlearn.relearn.equal_work_steps]).
    - `forget_items`: the items whose recovery is measured (default: `source_items`, the
      worst-case attack that relearns the forget set itself).
    - `retain_items`: measured after every step too, for the recovery curve.
    - `original_forget`: the original model's metrics on `forget_items`, for `recovery`.
    - `callbacks`: receive the steps of the relearning run only (phase `"relearn"`), not
      those of the control run.
    - `start`: the subject's current weights when the caller already holds them (a snapshot or a
      [`StoredSnapshot`][unlearn_lens.models.stored.StoredSnapshot]), restored between the two runs
      instead of a copy taken here.

    **Final state:** the control run goes first, then the starting weights are restored and
    the relearning run follows, so `subject` ends up *relearned on the source*. Ctrl-C in
    either run restores the starting weights and re-raises `KeyboardInterrupt`.
    """
    if not isinstance(subject, Subject):
        subject = load(subject)
    source_items, control_items = (
        as_items(source_items, source="source_items"),
        as_items(control_items, source="control_items"),
    )
    retain_items = as_items(retain_items, source="retain_items")
    if not source_items:
        raise ConfigError("the relearning source set is empty: give at least one item")
    if not control_items:
        raise ConfigError("the control set is empty: relearning needs novel items to compare with")
    forget_items = (
        source_items if forget_items is None else as_items(forget_items, source="forget_items")
    )
    n_steps = budget_steps(steps, examples, batch_size)
    n_control = equal_work_steps(n_steps, len(source_items), len(control_items), batch_size)

    config = finetune_config(optimizer, lr, batch_size, grad_clip, seed)
    start = subject.snapshot() if start is None else start
    forget_outcomes = evaluate_outcomes(subject, forget_items)
    control_outcomes = evaluate_outcomes(subject, control_items)
    forget_before, control_before = forget_outcomes.metrics(), control_outcomes.metrics()
    control_run, control_curve = measured_finetune(
        subject,
        control_items,
        {"control": control_items},
        config(n_control),
        start,
        before={"control": control_outcomes},
        progress=progress,
        phase="relearn_control",
    )
    control_after = control_curve.latest["control"]
    subject.restore(start)
    measured = {"forget": forget_items, **({"retain": retain_items} if retain_items else {})}
    source_run, source_curve = measured_finetune(
        subject,
        source_items,
        measured,
        config(n_steps),
        start,
        before={"forget": forget_outcomes},
        callbacks=callbacks,
        progress=progress,
        phase="relearn",
    )
    forget_after = source_curve.latest["forget"]
    recovery = {
        metric: Recovery.measure(
            metric, original_forget, forget_before, forget_after, control_before, control_after
        )
        for metric in RECOVERY_METRICS
    }
    work = {
        "source": RelearnWork.of(source_run, len(source_items)),
        "control": RelearnWork.of(control_run, len(control_items)),
    }
    curve = RecoveryCurve(
        forget=source_curve.points["forget"],
        retain=source_curve.points.get("retain", []),
        control=control_curve.points["control"],
    )
    return RelearnResult(
        n_steps,
        forget_before,
        forget_after,
        control_before,
        control_after,
        original_forget,
        recovery,
        source_run,
        control_run,
        work,
        curve,
    )


def _stop_if_interrupted(subject: Subject, run: TrainResult, start: Snapshot) -> None:
    """Ctrl-C inside a run: put the starting weights back and let the interrupt through."""
    if run.interrupted:
        subject.restore(start)
        raise KeyboardInterrupt
