"""`unlearn`: one call from a subject and a forget set to an unlearned model and its record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from unlearn_lens.data.loaders import ItemsLike, as_items
from unlearn_lens.metrics.token import TokenMetrics
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.unlearn.loop import (
    DEFAULT_STEPS,
    Callback,
    TrainConfig,
    TrainingStep,
    TrainResult,
    train,
)
from unlearn_lens.unlearn.objectives import ObjectiveConfig, get_objective


@dataclass
class UnlearnResult:
    """An unlearning run: its method, settings, history and weight snapshots.

    `original` holds the subject's weights before the run (a CPU snapshot, left out of JSON):
    `subject.restore(result.original)` undoes the run.
    """

    method: str
    run: TrainResult
    original: Snapshot = field(default_factory=dict, repr=False)

    @property
    def config(self) -> TrainConfig:
        """The training settings."""
        return self.run.config

    @property
    def history(self) -> list[TrainingStep]:
        """One record per optimiser step (loss, and metrics where evaluated)."""
        return self.run.history

    @property
    def unlearned(self) -> list[Snapshot]:
        """Weights after each finished request (the last one is the unlearned model)."""
        return self.run.snapshots

    def metrics(self, when: str, part: str) -> TokenMetrics | None:
        """`when` = `"before"` / `"after"` the run, `part` = `"forget"` (every forget item) /
        `"retain"`; `None` if not measured (no retain set, interrupted run)."""
        measured = self.run.initial_metrics if when == "before" else self.run.final_metrics
        if measured is None or part not in measured:
            return None
        # from_dict takes an invariant dict[str, float | int | None]; it goes with the pydantic
        # migration, so it is not retyped here.
        return TokenMetrics.from_dict(measured[part])  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (snapshots excluded)."""
        return {"method": self.method, "run": self.run.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnlearnResult:
        """Inverse of `to_dict` (without snapshots)."""
        return cls(method=data["method"], run=TrainResult.from_dict(data["run"]))


def unlearn(
    subject: Subject,
    forget: ItemsLike,
    retain: ItemsLike | None = None,
    method: str = "ga",
    *,
    lr: float = 1e-5,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 8,
    requests: int = 1,
    seed: int = 0,
    optimizer: str = "adamw",
    grad_clip: float | None = 1.0,
    early_stop_forget_accuracy: float | None = None,
    eval_every: int | None = None,
    trainable_keys: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    keep_snapshots: bool = True,
    **objective_options: Any,
) -> UnlearnResult:
    """Unlearn `forget` from `subject` **in place** with `method`, keeping `retain` where the method uses it.

    `forget` and `retain` are items or records (a `datasets.Dataset` too: see
    [`as_items`][unlearn_lens.data.as_items]).

    `objective_options` are fields of
    [`ObjectiveConfig`][unlearn_lens.unlearn.ObjectiveConfig] (`beta=0.2`, `rmu_layer=5`, ...);
    the other arguments are those of [`TrainConfig`][unlearn_lens.unlearn.TrainConfig].
    Forget and retain metrics are measured before and after (`result.metrics(...)`) unless
    `eval_every=0`. `keep_snapshots=False` keeps neither the original nor the per-request
    weights in the result (each is a full CPU copy of the model) for callers that hold their
    own. Ctrl-C ends the run early with `result.run.stop_reason == "interrupted"`
    (see [`train`][unlearn_lens.unlearn.train]).
    """
    spec = get_objective(method)
    forget = as_items(forget, source="forget")
    retain = as_items(retain, source="retain") if retain is not None else None
    config = TrainConfig(
        optimizer=optimizer,
        lr=lr,
        steps=steps,
        batch_size=batch_size,
        grad_clip=grad_clip,
        seed=seed,
        requests=requests,
        early_stop_forget_accuracy=early_stop_forget_accuracy,
        eval_every=eval_every,
        trainable_keys=tuple(trainable_keys) if trainable_keys is not None else None,
        objective=ObjectiveConfig.from_options(**objective_options),
    )
    original = subject.snapshot() if keep_snapshots else {}
    run = train(
        subject,
        spec,
        forget,
        retain,
        config,
        callbacks=callbacks,
        progress=progress,
        keep_snapshots=keep_snapshots,
    )
    return UnlearnResult(method=method, run=run, original=original)
