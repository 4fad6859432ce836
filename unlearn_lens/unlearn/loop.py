"""The one training loop, used for unlearning and for relearning.

`train` minimises a registered objective over seeded batches of forget (and retain) items,
request after request, and stops cleanly on early success, divergence or Ctrl-C. It knows
nothing of what its callbacks do: each gets a [`TrainingStep`][unlearn_lens.unlearn.TrainingStep]
after every optimiser step (weight-delta tracking, logging, a test that interrupts).

The model stays in eval mode while training (no dropout), so a run is a deterministic
function of the seed on a given machine.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from unlearn_lens.data.batching import encode_item, n_targets
from unlearn_lens.data.items import Item
from unlearn_lens.data.loaders import check_overlap
from unlearn_lens.errors import ConfigError
from unlearn_lens.evaluation import evaluate
from unlearn_lens.metrics.token import TokenMetrics
from unlearn_lens.models.architecture import named_parameters
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.schema import InMemory, Real
from unlearn_lens.unlearn.objectives import (
    Objective,
    ObjectiveBatch,
    ObjectiveConfig,
    ObjectiveContext,
    get_objective,
)
from unlearn_lens.unlearn.reference import ReferenceCache

DEFAULT_STEPS = 10
"""Optimiser steps per request: the study's GA run on SmolLM2 forgets 8 facts in 2 steps at lr 1e-5."""

MAX_LOSS_GROWTH = 1e4
"""Divergence bound: a loss 10⁴ times the first step's (or 10⁴ nats for an NLL near 0) means
logits of that size, not learning. Relative, because RMU's activation MSE starts large."""

OPTIMIZERS = ("adamw", "sgd")

FUSED_ADAMW_DEVICES = ("cpu", "cuda")
"""Devices with a fused AdamW kernel: one pass per tensor instead of several temporaries
(measured with SmolLM2-135M-sized weights on a 2-core CPU: 0.7 s per update against 10-13 s)."""

Callback = Callable[["TrainingStep"], None]


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimiser, budget, batching, requests, stopping rules, trainable weights.

    **Fields:**

    - `optimizer`: `"adamw"` (torch defaults, `weight_decay` below; the fused kernel where the
      device has one) or `"sgd"` (plain).
    - `steps`: optimiser steps per request; `epochs`, when set, replaces it with
      `ceil(epochs · items_in_request / batch_size)`.
    - `grad_clip`: max global gradient norm (`None`: no clipping).
    - `requests`: 1 = one request; `k` = continual unlearning, the forget set split into `k`
      contiguous requests applied in sequence, each with a fresh optimiser.
    - `early_stop_forget_accuracy`: stop a request once the greedy exact match on its forget
      items is at most this (checked whenever metrics are evaluated; setting it without
      `eval_every` evaluates every step).
    - `eval_every`: evaluate forget (the current request's items) and retain metrics every `n`
      steps and at the end of each request; `None` only at the end of each request; `0` never.
    - `max_loss_growth`: stop (`"diverged: …"`) on a non-finite loss, or one whose magnitude
      exceeds `max_loss_growth · max(1, |first loss of the run|)`.
    - `trainable_keys`: weight keys to train (others frozen); `None` trains everything, or the
      objective's own default (RMU).
    - `objective`: the objective's hyperparameters.
    """

    optimizer: str = "adamw"
    lr: Real = 1e-5
    steps: int = DEFAULT_STEPS
    epochs: int | None = None
    batch_size: int = 8
    grad_clip: float | None = 1.0
    weight_decay: Real = 0.0
    seed: int = 0
    requests: int = 1
    early_stop_forget_accuracy: float | None = None
    eval_every: int | None = None
    max_loss_growth: Real = MAX_LOSS_GROWTH
    trainable_keys: tuple[str, ...] | None = None
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        if not math.isfinite(self.lr):
            raise ConfigError(f"lr must be a finite number, got {self.lr}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.requests < 1:
            raise ConfigError(f"requests must be at least 1, got {self.requests}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(
                f"grad_clip must be positive (or None for no clipping), got {self.grad_clip}"
            )
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be non-negative, got {self.weight_decay}")
        if self.eval_every is not None and self.eval_every < 0:
            raise ConfigError(f"eval_every must be non-negative (0 = never), got {self.eval_every}")
        target = self.early_stop_forget_accuracy
        if target is not None and not 0 <= target <= 1:
            raise ConfigError(f"early_stop_forget_accuracy must be in [0, 1], got {target}")
        if not self.max_loss_growth > 0:
            raise ConfigError(f"max_loss_growth must be positive, got {self.max_loss_growth}")

    def steps_for(self, n_items: int) -> int:
        """Optimiser steps for a request of `n_items` items."""
        if self.epochs is None:
            return self.steps
        return self.epochs * math.ceil(n_items / self.batch_size)

    def evaluates_at(self, request_step: int, last: bool) -> bool:
        """Whether metrics are evaluated after this step of a request."""
        every = self.eval_every
        if every is None and self.early_stop_forget_accuracy is not None:
            every = 1
        if every == 0:
            return False
        return last or (every is not None and request_step % every == 0)


@dataclass(frozen=True)
class TrainingStep:
    """What a callback receives after each optimiser step.

    `step` is 1-based and counts every step of this `train` call; `request_step` restarts at 1
    with each request. `n_items` and `n_tokens` are the forget (trained) items of the step's
    batch and their target tokens, the work the step did. `metrics` is set on steps where
    metrics were evaluated:
    `{"forget": {...}, "retain": {...}}` with the fields of
    [`TokenMetrics`][unlearn_lens.metrics.TokenMetrics] (`forget` = the current request's items).
    """

    phase: str
    request: int
    step: int
    loss: Real
    request_step: int
    metrics: dict[str, TokenMetrics] | None = None
    n_items: int = 0
    n_tokens: int = 0


@dataclass
class TrainResult:
    """History and outcome of one `train` call.

    **Fields:**

    - `stop_reason`: `"completed"`; `"early_stop"` (some request reached its forget target);
      `"diverged: …"`; `"interrupted"` (Ctrl-C).
    - `request_stops`: how each finished request ended (`"completed"` / `"early_stop"`).
    - `stopped_at`: `{"request", "step"}` of the last completed step when the run was
      interrupted or diverged, else `None`.
    - `seconds`: wall time of the steps (with their evaluations and callbacks; the initial
      and final evaluations excluded).
    - `initial_metrics`, `final_metrics`: forget (all forget items) and retain metrics before
      the first step and after the run, like `TrainingStep.metrics`; `None` when `eval_every`
      is 0, and `final_metrics` also after Ctrl-C.
    - `snapshots`: the weights after each finished request (CPU; left out of JSON).
    """

    objective: str
    phase: str
    config: TrainConfig
    history: list[TrainingStep] = field(default_factory=list)
    request_stops: list[str] = field(default_factory=list)
    stop_reason: str = "completed"
    stopped_at: dict[str, int] | None = None
    seconds: Real = 0.0
    initial_metrics: dict[str, TokenMetrics] | None = None
    final_metrics: dict[str, TokenMetrics] | None = None
    snapshots: InMemory[list[Snapshot]] = field(default_factory=list, repr=False)

    @property
    def interrupted(self) -> bool:
        """True when Ctrl-C ended the run."""
        return self.stop_reason == "interrupted"

    @property
    def steps_run(self) -> int:
        """Optimiser steps applied."""
        return len(self.history)

    @property
    def items_seen(self) -> int:
        """Trained (forget) items summed over the steps applied."""
        return sum(step.n_items for step in self.history)

    @property
    def tokens_seen(self) -> int:
        """Target tokens of the trained items summed over the steps applied."""
        return sum(step.n_tokens for step in self.history)


class _Diverged(Exception):
    """Raised inside the loop to end the run on a divergent loss."""


def train(
    subject: Subject,
    objective: str | Objective,
    forget_items: Sequence[Item],
    retain_items: Sequence[Item] | None = None,
    config: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    phase: str | None = None,
    keep_snapshots: bool = True,
) -> TrainResult:
    """Train `subject` in place with `objective` on `forget_items` (and `retain_items`).

    Every check (objective, empty or untokenisable sets, retain set where needed,
    trainable keys) happens before anything is computed. Ctrl-C during the steps does not
    propagate: the run returns with `stop_reason="interrupted"`, the steps done so far in
    `history`, and the snapshots of the requests that finished; the model keeps the weights of
    the last completed step. `phase` (`"unlearn"` for unlearning objectives, `"relearn"` otherwise,
    by default) labels the steps. `keep_snapshots=False` skips the per-request snapshots
    (a full CPU copy of the weights each).
    """
    config = config or TrainConfig()
    spec = get_objective(objective) if isinstance(objective, str) else objective
    forget_items, retain_items = list(forget_items), list(retain_items or [])
    _check_data(subject, spec, forget_items, retain_items, config)
    phase = phase or ("unlearn" if spec.unlearning else "relearn")

    ctx = ObjectiveContext(
        subject, config.objective, torch.Generator().manual_seed(config.seed), config.seed
    )
    keys = config.trainable_keys
    if keys is None and spec.default_trainable is not None:
        keys = tuple(spec.default_trainable(ctx))
    known = set(subject.keys())
    unknown = [key for key in keys or () if key not in known]
    if unknown:
        raise ConfigError(
            f"unknown trainable key(s) {', '.join(unknown[:3])}; see subject.keys(), e.g. {subject.keys()[1]!r}"
        )

    torch.manual_seed(config.seed)
    plan = _Plan.draw(config, len(forget_items), len(retain_items) if spec.needs_retain else 0)
    reference = ReferenceCache.build(
        ctx, spec, forget_items, plan.forget_used(), retain_items, plan.retain_used()
    )

    def batch(items: list[Item], index: list[int], kind: str) -> ObjectiveBatch:
        return reference.attach(
            ObjectiveBatch(subject.encode([items[i] for i in index])), index, kind
        )

    result = TrainResult(objective=spec.name, phase=phase, config=config)
    if config.eval_every != 0:
        result.initial_metrics = _metrics(subject, forget_items, retain_items)
    started = time.perf_counter()
    step = 0
    bound = math.inf
    with (
        _trainable(subject, keys) as (params, refreeze),
        _progress_bar(progress, plan.total_steps, spec.name) as bar,
    ):
        try:
            for request, ((start, stop), batches) in enumerate(
                zip(plan.bounds, plan.forget, strict=True)
            ):
                optimizer = _optimizer(config, params)
                stop_reason = "completed"
                for request_step, forget_index in enumerate(batches, start=1):
                    retain = (
                        batch(retain_items, plan.retain[step], "retain") if plan.retain else None
                    )
                    forget = batch(forget_items, forget_index, "forget")
                    loss = spec.loss(ctx, forget, retain)
                    value = float(loss.detach())
                    if step == 0:
                        bound = config.max_loss_growth * max(1.0, abs(value))
                    if not math.isfinite(value) or abs(value) > bound:
                        raise _Diverged(
                            f"diverged: loss {value:.4g} at request {request} step {request_step} (bound {bound:.4g})"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.grad_clip is not None:
                        nn.utils.clip_grad_norm_(params, config.grad_clip)
                    optimizer.step()
                    refreeze()
                    step += 1
                    metrics = None
                    if config.evaluates_at(request_step, last=request_step == len(batches)):
                        metrics = _metrics(subject, forget_items[start:stop], retain_items)
                    record = TrainingStep(
                        phase,
                        request,
                        step,
                        value,
                        request_step,
                        metrics,
                        n_items=len(forget_index),
                        n_tokens=n_targets(forget.batch.labels),
                    )
                    result.history.append(record)
                    for callback in callbacks:
                        callback(record)
                    bar(record)
                    if _reached(config.early_stop_forget_accuracy, metrics):
                        stop_reason = "early_stop"
                        break
                if keep_snapshots:
                    result.snapshots.append(subject.snapshot())
                result.request_stops.append(stop_reason)
            result.stop_reason = (
                "early_stop" if "early_stop" in result.request_stops else "completed"
            )
        except _Diverged as diverged:
            result.stop_reason = str(diverged)
            result.stopped_at = _last_step(result)
        except KeyboardInterrupt:
            result.stop_reason = "interrupted"
            result.stopped_at = _last_step(result)
    result.seconds = time.perf_counter() - started
    if config.eval_every != 0 and not result.interrupted:
        last = result.history[-1].metrics if result.history else None
        # With one request, the last step's metrics (if taken) are already of every forget item.
        result.final_metrics = (
            last
            if last is not None and len(plan.bounds) == 1
            else _metrics(subject, forget_items, retain_items)
        )
    return result


def _last_step(result: TrainResult) -> dict[str, int]:
    last = result.history[-1] if result.history else None
    return {"request": last.request if last else 0, "step": last.step if last else 0}


def _check_data(
    subject: Subject, spec: Objective, forget: list[Item], retain: list[Item], config: TrainConfig
) -> None:
    """Every data error before any training: empty sets, missing retain set, untokenisable items, overlap.

    The items trained on are called the forget set for unlearning objectives and the training
    set otherwise (relearning)."""
    trained = "forget" if spec.unlearning else "training"
    if not forget:
        raise ConfigError(f"the {trained} set is empty: give at least one item")
    if spec.needs_retain and not retain:
        raise ConfigError(
            f"objective {spec.name!r} needs a retain set; pass retain items (--retain)"
        )
    if config.requests > len(forget):
        raise ConfigError(
            f"requests={config.requests} is more than the {len(forget)} {trained} items"
        )
    for name, items in ((trained, forget), ("retain", retain)):
        for index, item in enumerate(items):
            try:
                encode_item(subject.tokenizer, item)
            except ValueError as error:
                raise ConfigError(f"{name} item {index}: {error}") from None
    overlap = check_overlap(forget, retain)
    if overlap:
        warnings.warn(
            f"{overlap} item(s) are in both the {trained} and the retain set",
            UserWarning,
            stacklevel=2,
        )


@dataclass(frozen=True)
class _Plan:
    """Every batch of a run, drawn before the first step from the seed.

    `bounds[r]` is request `r`'s slice of the forget items and `forget[r]` its batches (item
    indices); `retain` holds one retain batch per step of the whole run (empty when unused).
    Drawing everything up front lets the reference cache cover exactly the items used.
    """

    bounds: list[tuple[int, int]]
    forget: list[list[list[int]]]
    retain: list[list[int]]

    @classmethod
    def draw(cls, config: TrainConfig, n_forget: int, n_retain: int) -> _Plan:
        order = torch.Generator().manual_seed(config.seed)
        bounds = _request_bounds(n_forget, config.requests)
        forget = [
            [
                [start + i for i in batch]
                for batch in _schedule(
                    stop - start, config.steps_for(stop - start), config.batch_size, order
                )
            ]
            for start, stop in bounds
        ]
        total = sum(len(batches) for batches in forget)
        retain = _schedule(n_retain, total, config.batch_size, order) if n_retain else []
        return cls(bounds, forget, retain)

    @property
    def total_steps(self) -> int:
        return sum(len(batches) for batches in self.forget)

    def forget_used(self) -> set[int]:
        return {i for batches in self.forget for batch in batches for i in batch}

    def retain_used(self) -> set[int]:
        return {i for batch in self.retain for i in batch}


def _request_bounds(n_items: int, requests: int) -> list[tuple[int, int]]:
    """`requests` contiguous, near-equal slices of `range(n_items)` (earlier ones one larger)."""
    size, extra = divmod(n_items, requests)
    bounds, start = [], 0
    for request in range(requests):
        stop = start + size + (1 if request < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _schedule(
    n_items: int, steps: int, batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """Index batches for `steps` steps: epochs of seeded permutations cut into `batch_size`
    chunks (an epoch's last chunk may be smaller)."""
    plan: list[list[int]] = []
    while len(plan) < steps:
        permutation = torch.randperm(n_items, generator=generator).tolist()
        plan.extend(permutation[i : i + batch_size] for i in range(0, n_items, batch_size))
    return plan[:steps]


def _reached(target: float | None, metrics: dict[str, TokenMetrics] | None) -> bool:
    """Whether this step's forget exact match is at or below the early-stopping target."""
    return target is not None and metrics is not None and metrics["forget"].exact_match <= target


def _metrics(
    subject: Subject, forget: Sequence[Item], retain: Sequence[Item]
) -> dict[str, TokenMetrics]:
    metrics = {"forget": evaluate(subject, forget)}
    if retain:
        metrics["retain"] = evaluate(subject, retain)
    return metrics


def _optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    fused = all(p.device.type in FUSED_ADAMW_DEVICES for p in params) or None
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


@contextmanager
def _trainable(
    subject: Subject, keys: Sequence[str] | None
) -> Iterator[tuple[list[nn.Parameter], Callable[[], None]]]:
    """The parameters to optimise, and a hook that re-freezes slices after each step.

    Parameters none of whose keys is trainable get `requires_grad=False` (restored on exit).
    A fused parameter holding trainable and frozen keys (GPT-2's QKV) is optimised whole and
    its frozen slices are written back after each step, so they stay exactly as they were.
    """
    params_by_name = named_parameters(subject.model)
    unique = {id(p): p for p in params_by_name.values()}
    if keys is None:
        yield [p for p in unique.values() if p.requires_grad], lambda: None
        return
    wanted = set(keys)
    train_ids = {id(params_by_name[spec.param]) for spec in subject.specs if spec.key in wanted}
    partial = [
        spec.key
        for spec in subject.specs
        if spec.key not in wanted and id(params_by_name[spec.param]) in train_ids
    ]
    frozen_slices = {key: subject.weight(key).detach().clone() for key in partial}
    was = {id(p): p.requires_grad for p in unique.values()}
    for p in unique.values():
        p.requires_grad_(id(p) in train_ids)

    def refreeze() -> None:
        with torch.no_grad():
            for key, value in frozen_slices.items():
                subject.weight(key).copy_(value)

    try:
        yield [p for p in unique.values() if id(p) in train_ids], refreeze
    finally:
        for p in unique.values():
            p.requires_grad_(was[id(p)])


@contextmanager
def _progress_bar(show: bool, total: int, name: str) -> Iterator[Callable[[TrainingStep], None]]:
    """A rich bar showing loss and the latest forget/retain exact match; a no-op when hidden."""
    if not show:
        yield lambda record: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns) as bar:
        task = bar.add_task(name, total=total, status="")
        seen = {"forget": "–", "retain": "–"}

        def update(record: TrainingStep) -> None:
            for part in seen:
                if record.metrics and part in record.metrics:
                    seen[part] = f"{record.metrics[part].exact_match:.2f}"
            status = (
                f"loss {record.loss:.4g}  forget EM {seen['forget']}  retain EM {seen['retain']}"
            )
            bar.update(task, completed=record.step, status=status)

        yield update
