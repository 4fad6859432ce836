"""Why the KL variants behave like their plain objectives: the two terms of `ga_kl` and `npo_kl`
measured step by step.

Each step of an instrumented run takes, on the weights and batches the step trains on, the
forget term (the registered `ga` or `npo` loss), the retain KL
(`unlearn_lens.unlearn.objectives.retain_kl`) and the gradient of each over every
trainable weight (`torch.autograd.grad`, one backward pass per term); for `npo_kl` also the
gradient of plain GA, whose direction NPO's is compared with. The step then minimises
`forget term + kl_weight · KL`, the registered objective's own sum of the same two terms (the
tests check the two agree), so an instrumented run trains exactly like a plain one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import computed_field
from torch import Tensor

from unlearn_lens.data.builtin_sets import builtin
from unlearn_lens.data.items import Item
from unlearn_lens.models.subject import Subject
from unlearn_lens.reproduction.grid import GridSettings
from unlearn_lens.schema import Real
from unlearn_lens.unlearn.loop import TrainConfig, train
from unlearn_lens.unlearn.objectives import (
    Objective,
    ObjectiveBatch,
    ObjectiveConfig,
    ObjectiveContext,
    get_objective,
    retain_kl,
)

KL_VARIANTS = {"ga_kl": "ga", "npo_kl": "npo"}
"""Each KL objective and the registered objective that is its forget term."""

KL_FILE = "kl_gradients.json"
"""Where `benchmarks/kl_gradients.py` writes a measurement: beside the validation page's figures."""

SEPARATION = 0.01
"""Accuracies that differ by at least this are told apart (the page compares them to two decimals)."""


@dataclass(frozen=True)
class TermStep:
    """One step's terms on the weights before its update.

    `kl_grad_norm / forget_grad_norm` is how much of the raw gradient the KL term could steer;
    `ga_cosine` is the cosine between the forget term's gradient and plain GA's (None when the
    forget term is GA).
    """

    step: int
    forget_loss: float
    kl: float
    forget_grad_norm: float
    kl_grad_norm: float
    forget_kl_cosine: float
    ga_cosine: float | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ratio(self) -> Real:
        """‖∇KL‖ / ‖∇forget term‖."""
        return self.kl_grad_norm / self.forget_grad_norm if self.forget_grad_norm > 0 else math.nan


@dataclass(frozen=True)
class TermRun:
    """One unlearning run: its objective and `kl_weight` (0 for a plain objective), the final forget
    and retain token accuracy and NLL, and the per-step terms (empty for a plain objective)."""

    method: str
    kl_weight: Real
    forget_accuracy: Real
    retain_accuracy: Real
    forget_nll: Real
    retain_nll: Real
    steps: list[TermStep] = field(default_factory=list)


def _flat_norm(grads: Sequence[Tensor]) -> Tensor:
    zero = torch.zeros((), dtype=torch.float64, device=grads[0].device)
    return torch.sqrt(sum((g.double().square().sum() for g in grads), zero))


def _cosine(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    dot = sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True))
    denominator = float(_flat_norm(a) * _flat_norm(b))
    return float(dot) / denominator if denominator > 0 else math.nan


def _grads(value: Tensor, params: list[torch.nn.Parameter]) -> list[Tensor]:
    """∂value/∂params, zeros for weights the value does not depend on; keeps the graph."""
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def instrumented(method: str, record: list[TermStep]) -> Objective:
    """The registered KL objective `method` (`ga_kl` or `npo_kl`), appending each step's
    [`TermStep`][unlearn_lens.reproduction.kl_terms.TermStep] to `record`."""
    forget_term = get_objective(KL_VARIANTS[method])
    ga = get_objective("ga")

    def loss(
        ctx: ObjectiveContext, forget: ObjectiveBatch, retain: ObjectiveBatch | None
    ) -> Tensor:
        if retain is None:
            raise ValueError(f"{method} needs a retain batch")
        params = [p for p in ctx.subject.parameters() if p.requires_grad]
        forget_loss = forget_term.loss(ctx, forget, None)
        kl = retain_kl(ctx, retain)
        forget_grads, kl_grads = _grads(forget_loss, params), _grads(kl, params)
        ga_cosine = (
            None
            if forget_term is ga
            else _cosine(forget_grads, _grads(ga.loss(ctx, forget, None), params))
        )
        record.append(
            TermStep(
                step=len(record) + 1,
                forget_loss=float(forget_loss.detach()),
                kl=float(kl.detach()),
                forget_grad_norm=float(_flat_norm(forget_grads)),
                kl_grad_norm=float(_flat_norm(kl_grads)),
                forget_kl_cosine=_cosine(forget_grads, kl_grads),
                ga_cosine=ga_cosine,
            )
        )
        return forget_loss + ctx.config.kl_weight * kl

    return dataclasses.replace(get_objective(method), loss=loss)


def term_run(
    subject: Subject,
    forget: Sequence[Item],
    retain: Sequence[Item],
    method: str,
    config: TrainConfig,
) -> TermRun:
    """Unlearn in place with `method` under `config`, instrumented when it is a KL variant."""
    steps: list[TermStep] = []
    objective = instrumented(method, steps) if method in KL_VARIANTS else get_objective(method)
    result = train(subject, objective, forget, retain, config, progress=False, keep_snapshots=False)
    if result.stop_reason != "completed" or result.final_metrics is None:
        raise RuntimeError(
            f"{method} (kl_weight {config.objective.kl_weight:g}) did not complete: {result.stop_reason}"
        )
    final = result.final_metrics
    return TermRun(
        method=method,
        kl_weight=config.objective.kl_weight if method in KL_VARIANTS else 0.0,
        forget_accuracy=final["forget"].accuracy,
        retain_accuracy=final["retain"].accuracy,
        forget_nll=final["forget"].nll,
        retain_nll=final["retain"].nll,
        steps=steps,
    )


@dataclass(frozen=True)
class KLMeasurement:
    """The runs of one grid cell: the plain objectives, and each KL variant at each `kl_weight`.

    `cell` describes the cell (domain, learning rate, items, steps, batch, seed).
    """

    cell: dict[str, Any]
    runs: list[TermRun]

    def run(self, method: str, kl_weight: float = 0.0) -> TermRun:
        """The run of `method` at `kl_weight` (0 for a plain objective)."""
        for run in self.runs:
            if run.method == method and run.kl_weight == kl_weight:
                return run
        raise KeyError(f"no run of {method} at kl_weight {kl_weight:g}")

    def kl_weights(self, method: str) -> list[float]:
        """The swept weights of a KL variant, ascending."""
        return sorted(run.kl_weight for run in self.runs if run.method == method)

    def separation(
        self, method: str, split: Literal["forget", "retain"] = "forget"
    ) -> float | None:
        """The smallest swept `kl_weight` at which the KL variant's final accuracy on `split`
        differs from its plain objective's by at least `SEPARATION`; None if none does."""

        def accuracy(run: TermRun) -> float:
            return run.forget_accuracy if split == "forget" else run.retain_accuracy

        plain = accuracy(self.run(KL_VARIANTS[method]))
        for weight in self.kl_weights(method):
            if abs(accuracy(self.run(method, weight)) - plain) >= SEPARATION:
                return weight
        return None


def kl_cell(settings: GridSettings, domain: str, lr: float) -> dict[str, Any]:
    """The description of the single-request grid cell (`domain`, `lr`) a measurement runs."""
    return {
        "domain": domain,
        "lr": lr,
        "protocol": "single",
        "n_items": settings.n_items,
        "steps": settings.steps,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
    }


def measure_kl_terms(
    subject: Subject,
    settings: GridSettings,
    domain: str,
    lr: float,
    kl_weights: Sequence[float],
    *,
    done: Sequence[TermRun] = (),
    on_run: Callable[[KLMeasurement], None] | None = None,
) -> KLMeasurement:
    """Run the single-request grid cell (`domain`, `lr`) with `ga` and `npo`, then with `ga_kl`
    and `npo_kl` at each of `kl_weights`, every run from the weights `subject` holds.

    Runs already in `done` (of the same cell) are kept, not repeated; `on_run` receives the
    measurement so far after each new run (to save it, so an interrupted sweep resumes).
    """
    sets = builtin(domain)
    forget, retain = sets.forget[: settings.n_items], sets.retain[: settings.n_items]
    measurement = KLMeasurement(cell=kl_cell(settings, domain, lr), runs=list(done))
    plans = [(method, 0.0) for method in KL_VARIANTS.values()]
    plans += [(method, float(weight)) for method in KL_VARIANTS for weight in kl_weights]
    finished = {(run.method, run.kl_weight) for run in done}
    original = subject.snapshot()
    try:
        for method, weight in plans:
            if (method, weight) in finished:
                continue
            config = TrainConfig(
                lr=lr,
                steps=settings.steps,
                batch_size=settings.batch_size,
                seed=settings.seed,
                objective=ObjectiveConfig(kl_weight=weight)
                if method in KL_VARIANTS
                else ObjectiveConfig(),
            )
            measurement.runs.append(term_run(subject, forget, retain, method, config))
            subject.restore(original)
            if on_run is not None:
                on_run(measurement)
    finally:
        subject.restore(original)
    return measurement
