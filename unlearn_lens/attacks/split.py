"""Disjoint-split relearning: fine-tune on some forget facts, measure the others.

Relearning the very facts being measured cannot tell "the knowledge was still there" from "the
attack taught it again". The split attack (Deeb & Roger 2024, "Do unlearning methods remove
information from language model weights?", arXiv 2410.08827) fine-tunes on half of the forget
set (A, the attacker's) and measures the other half (B, held back), which the attack never
shows. Facts about different entities cannot teach each other, so accuracy that comes back in B
was hidden, not relearned. What training on A *can* teach B anyway (the answer format, a shared
style) is measured by the null: the same run's effect on the novel control items, which share
the answer format but no fact. Both halves run, swapped (train on A measure B, train on B
measure A), so every forget item is measured once as held back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from unlearn_lens.data.loaders import ItemsLike, as_items
from unlearn_lens.errors import ConfigError
from unlearn_lens.evaluation import evaluate
from unlearn_lens.metrics.token import TokenMetrics
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.unlearn.loop import Callback
from unlearn_lens.unlearn.relearn import (
    HALF_RECOVERY,
    CurvePoint,
    RecoveryCurve,
    RelearnWork,
    budget_steps,
    finetune_config,
    measured_finetune,
)

SPLIT_MIN_ITEMS = 8
"""The split attack runs by default from this forget-set size on: each held-back half then has
at least 4 facts, so one fact moves a half's exact match by at most a quarter."""


@dataclass
class SplitHalf:
    """One direction of the split: fine-tuned on `trained`, measured on `held_back`.

    `trained` and `held_back` are indices into the forget set (disjoint, together all of it).
    `original` is the original model on the held-back items (None when not given);
    `held_back_curve` and `control_curve` are the held-back items' and the control items'
    metrics before the first step and after every step of this run (epochs over `trained`);
    `held_back_tokens` counts the held-back target tokens (the half's weight in the pooled
    curve); `work` is what the run did.
    """

    trained: list[int]
    held_back: list[int]
    original: TokenMetrics | None
    held_back_curve: list[CurvePoint]
    control_curve: list[CurvePoint]
    held_back_tokens: int
    work: RelearnWork


@dataclass
class SplitResult:
    """Both halves of a disjoint-split relearning attack, and their pooled curve.

    `curve.forget` pools the two held-back curves step by step (accuracy and NLL weighted by
    each half's target tokens, so it is the accuracy over all forget items, each measured while
    held back; epoch: the two runs' mean); `curve.control` is the control items' curve under the
    same runs (their mean), at the same epochs, so `curve.peak_excess` compares the two at the
    same step. `original_accuracy` is the original model's token accuracy on the forget set.
    """

    seed: int
    budget_steps: int
    halves: list[SplitHalf]
    curve: RecoveryCurve
    original_accuracy: float | None

    def recovery(self) -> float | None:
        """Pooled held-back recovery at the end of the budget (None without an original
        accuracy, or when unlearning removed nothing)."""
        if self.original_accuracy is None:
            return None
        return self.curve.recovery(self.original_accuracy)[-1]

    def control_gain(self) -> float:
        """The control items' accuracy gain under the same runs at the end: the null."""
        return self.curve.control[-1].accuracy - self.curve.control[0].accuracy

    def peak_excess(self) -> float | None:
        """The largest excess of held-back recovery over the control's gain at the same step, on
        the recovery scale; None when recovery is undefined."""
        if self.original_accuracy is None:
            return None
        peak = self.curve.peak_excess(self.original_accuracy)
        return None if peak is None else peak[0]

    def steps_to_recover(self, fraction: float = HALF_RECOVERY) -> int | None:
        """First step at which pooled held-back recovery reaches `fraction` (None: not within
        the budget, or no original accuracy)."""
        if self.original_accuracy is None:
            return None
        return self.curve.steps_to_recover(self.original_accuracy, fraction)


def split_halves(n_items: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of `range(n_items)` into A (the larger half when `n_items` is odd) and B,
    each sorted."""
    if n_items < 2:
        raise ConfigError(f"a disjoint split needs at least 2 forget items, got {n_items}")
    order = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = (n_items + 1) // 2
    return sorted(order[:cut]), sorted(order[cut:])


def split_relearn(
    subject: Subject,
    forget_items: ItemsLike,
    control_items: ItemsLike,
    *,
    steps: int | None = None,
    examples: int | None = None,
    original: Snapshot | None = None,
    lr: float = 1e-5,
    optimizer: str = "adamw",
    batch_size: int = 8,
    grad_clip: float | None = 1.0,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
) -> SplitResult:
    """Disjoint-split relearning of `forget_items`, with the control items as its null.

    **Arguments:**

    - `steps` / `examples`: the budget of each half's run on its trained half (exactly one);
      examples become `ceil(examples / batch_size)` steps.
    - `original`: the weights before unlearning (a snapshot of `subject`'s keys), for recovery;
      evaluated on each held-back half.
    - `seed`: draws the split ([`split_halves`][unlearn_lens.attacks.split.split_halves]) and
      seeds both runs.
    - `callbacks`: receive the steps of both runs (phase `"relearn_split"`).

    Each run starts from `subject`'s weights as given (the unlearned model) and fine-tunes with
    the relearning attack's loop ([`measured_finetune`][unlearn_lens.unlearn.relearn.measured_finetune]);
    `subject` ends with those starting weights again. Ctrl-C restores them and re-raises
    `KeyboardInterrupt`.
    """
    forget = as_items(forget_items, source="forget_items")
    control = as_items(control_items, source="control_items")
    if not control:
        raise ConfigError(
            "the control set is empty: the split attack needs novel items as its null"
        )
    first, second = split_halves(len(forget), seed)
    n_steps = budget_steps(steps, examples, batch_size)
    config = finetune_config(optimizer, lr, batch_size, grad_clip, seed)(n_steps)
    start = subject.snapshot()
    control_before = evaluate(subject, control)
    halves = []
    for trained, held_back in ((first, second), (second, first)):
        measured = [forget[i] for i in held_back]
        original_metrics = None
        if original is not None:
            subject.restore(original)
            original_metrics = evaluate(subject, measured)
            subject.restore(start)
        run, curve = measured_finetune(
            subject,
            [forget[i] for i in trained],
            {"held_back": measured, "control": control},
            config,
            start,
            before={"control": control_before},
            callbacks=callbacks,
            progress=progress,
            phase="relearn_split",
        )
        subject.restore(start)
        halves.append(
            SplitHalf(
                trained,
                held_back,
                original_metrics,
                curve.points["held_back"],
                curve.points["control"],
                curve.latest["held_back"].n_tokens,
                RelearnWork.of(run, len(trained)),
            )
        )
    return SplitResult(
        seed,
        n_steps,
        halves,
        _pooled_curve(halves),
        None if original is None else _pooled_accuracy(halves),
    )


def _pooled_accuracy(halves: list[SplitHalf]) -> float:
    """The original model's token accuracy over the whole forget set, from its two halves."""
    total, weighted = 0, 0.0
    for half in halves:
        assert half.original is not None, "pooled only where the original was measured"
        total += half.held_back_tokens
        weighted += half.original.accuracy * half.held_back_tokens
    return weighted / total


def _pooled_curve(halves: list[SplitHalf]) -> RecoveryCurve:
    """Held-back curves pooled by target tokens, control curves averaged, step by step (up to
    the shorter run's last step, should one have stopped early)."""
    tokens = [h.held_back_tokens for h in halves]
    total = sum(tokens)
    forget, control = [], []
    for points, controls in zip(
        zip(*(h.held_back_curve for h in halves), strict=False),
        zip(*(h.control_curve for h in halves), strict=False),
        strict=True,
    ):
        epoch = sum(p.epoch for p in points) / len(points)
        forget.append(
            CurvePoint(
                points[0].step,
                epoch,
                sum(p.accuracy * n for p, n in zip(points, tokens, strict=True)) / total,
                sum(p.nll * n for p, n in zip(points, tokens, strict=True)) / total,
            )
        )
        control.append(
            CurvePoint(
                points[0].step,
                epoch,
                sum(p.accuracy for p in controls) / len(controls),
                sum(p.nll for p in controls) / len(controls),
            )
        )
    return RecoveryCurve(forget=forget, retain=[], control=control)
