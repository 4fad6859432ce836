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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from unlearn_lens.data.loaders import ItemsLike, as_items
from unlearn_lens.errors import ConfigError
from unlearn_lens.evaluation import evaluate
from unlearn_lens.metrics.token import TokenMetrics
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.unlearn.loop import Callback, TrainConfig, TrainResult, train

RECOVERY_MIN_LOSS = 1e-9
"""Below this accuracy lost to unlearning, recovery (a ratio over that loss) is undefined."""

RECOVERY_METRICS = ("accuracy", "exact_match")
"""Token accuracy (the headline) and greedy exact match."""


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
    unlearned: float
    relearned: float
    control_before: float
    control_after: float
    forget_gain: float
    control_gain: float
    recovery: float | None
    recovery_vs_control: float

    @classmethod
    def measure(
        cls, metric: str, original: TokenMetrics | None, unlearned: TokenMetrics, relearned: TokenMetrics,
        control_before: TokenMetrics, control_after: TokenMetrics,
    ) -> Recovery:
        """The comparison from the five measurements."""
        value = {name: getattr(m, metric) if m is not None else None for name, m in (
            ("original", original), ("unlearned", unlearned), ("relearned", relearned),
            ("control_before", control_before), ("control_after", control_after))}
        forget_gain = value["relearned"] - value["unlearned"]
        control_gain = value["control_after"] - value["control_before"]
        lost = None if value["original"] is None else value["original"] - value["unlearned"]
        recovery = forget_gain / lost if lost is not None and lost > RECOVERY_MIN_LOSS else None
        return cls(metric, value["original"], value["unlearned"], value["relearned"], value["control_before"],
                   value["control_after"], forget_gain, control_gain, recovery, forget_gain - control_gain)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recovery:
        """Inverse of `to_dict`."""
        return cls(**data)


@dataclass
class RelearnResult:
    """Forget and control metrics around a relearning attack and its control run.

    `recovery["accuracy"]` and `recovery["exact_match"]` compare them (see
    [`Recovery`][unlearn_lens.unlearn.Recovery]); `source_run` is the relearning run and
    `control_run` the same budget spent on the control set.
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        metrics = ("forget_before", "forget_after", "control_before", "control_after", "original_forget")
        return {
            "budget_steps": self.budget_steps,
            **{name: asdict(getattr(self, name)) if getattr(self, name) is not None else None for name in metrics},
            "recovery": {name: rec.to_dict() for name, rec in self.recovery.items()},
            "source_run": self.source_run.to_dict(),
            "control_run": self.control_run.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RelearnResult:
        """Inverse of `to_dict`."""
        def metrics(name: str) -> TokenMetrics | None:
            return TokenMetrics.from_dict(data[name]) if data[name] is not None else None

        return cls(
            budget_steps=data["budget_steps"],
            forget_before=metrics("forget_before"),
            forget_after=metrics("forget_after"),
            control_before=metrics("control_before"),
            control_after=metrics("control_after"),
            original_forget=metrics("original_forget"),
            recovery={name: Recovery.from_dict(rec) for name, rec in data["recovery"].items()},
            source_run=TrainResult.from_dict(data["source_run"]),
            control_run=TrainResult.from_dict(data["control_run"]),
        )


def budget_steps(steps: int | None, examples: int | None, batch_size: int) -> int:
    """A relearning budget in optimiser steps: `steps`, or `ceil(examples / batch_size)`."""
    if (steps is None) == (examples is None):
        raise ConfigError("give the relearning budget as steps or as examples (exactly one)")
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"relearning steps must be at least 1, got {steps}")
        return steps
    if examples < 1:
        raise ConfigError(f"relearning examples must be at least 1, got {examples}")
    return math.ceil(examples / batch_size)


def relearn(
    subject: Subject,
    source_items: ItemsLike,
    control_items: ItemsLike,
    *,
    steps: int | None = None,
    examples: int | None = None,
    forget_items: ItemsLike | None = None,
    original_forget: TokenMetrics | None = None,
    lr: float = 1e-5,
    optimizer: str = "adamw",
    batch_size: int = 8,
    grad_clip: float | None = 1.0,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
) -> RelearnResult:
    """Fine-tune on `source_items` for a budget, and measure the same budget on `control_items`.

    **Arguments:**

    - `steps` / `examples`: the budget (exactly one); examples become
      `ceil(examples / batch_size)` steps, so `examples=len(source_items)` is one epoch.
    - `forget_items`: the items whose recovery is measured (default: `source_items`, the
      worst-case attack that relearns the forget set itself).
    - `original_forget`: the original model's metrics on `forget_items`, for `recovery`.
    - `callbacks`: receive the steps of the relearning run only (phase `"relearn"`), not
      those of the control run.

    **Final state:** the control run goes first, then the starting weights are restored and
    the relearning run follows, so `subject` ends up *relearned on the source*. Ctrl-C in
    either run restores the starting weights and re-raises `KeyboardInterrupt`.
    """
    source_items, control_items = as_items(source_items, source="source_items"), as_items(control_items, source="control_items")
    if not source_items:
        raise ConfigError("the relearning source set is empty: give at least one item")
    if not control_items:
        raise ConfigError("the control set is empty: relearning needs novel items to compare with")
    forget_items = source_items if forget_items is None else as_items(forget_items, source="forget_items")
    n_steps = budget_steps(steps, examples, batch_size)
    config = TrainConfig(optimizer=optimizer, lr=lr, steps=n_steps, batch_size=batch_size,
                         grad_clip=grad_clip, seed=seed, eval_every=0)

    start = subject.snapshot()
    forget_before = evaluate(subject, forget_items)
    control_before = evaluate(subject, control_items)
    control_run = train(subject, "finetune", control_items, config=config, progress=progress,
                        phase="relearn_control", keep_snapshots=False)
    _stop_if_interrupted(subject, control_run, start)
    control_after = evaluate(subject, control_items)
    subject.restore(start)
    source_run = train(subject, "finetune", source_items, config=config, callbacks=callbacks, progress=progress,
                       phase="relearn", keep_snapshots=False)
    _stop_if_interrupted(subject, source_run, start)
    forget_after = evaluate(subject, forget_items)
    recovery = {metric: Recovery.measure(metric, original_forget, forget_before, forget_after, control_before, control_after)
                for metric in RECOVERY_METRICS}
    return RelearnResult(n_steps, forget_before, forget_after, control_before, control_after, original_forget,
                         recovery, source_run, control_run)


def _stop_if_interrupted(subject: Subject, run: TrainResult, start: Snapshot) -> None:
    """Ctrl-C inside a run: put the starting weights back and let the interrupt through."""
    if run.interrupted:
        subject.restore(start)
        raise KeyboardInterrupt
