"""Unlearning objectives: one small loss function each, registered by name.

Every objective is a function `(ctx, forget, retain) -> scalar loss` that the training loop
*minimises*. Adding one is one function and one `@objective(...)` line. What the frozen
original model contributes (NPO's reference log-likelihoods, the KL's reference
distributions, RMU's reference activations) is computed once, before training starts, by
[`ReferenceCache`][unlearn_lens.unlearn.ReferenceCache] and arrives attached to the
batches (`ObjectiveBatch.reference_*`); no objective ever runs or copies a second model.
The reference is the model as `train` receives it: with continual requests, the weights before
the first request.

Conventions: `NLL` is the mean negative log-likelihood per answer (target) token of a batch;
a sequence log-likelihood `log π(y|x)` is the sum over its answer tokens.

Sources: NPO, Zhang et al. 2024 (arXiv 2404.05868); SimNPO, Fan et al. 2024 (arXiv
2410.07163); RMU, Li et al. 2024, the WMDP benchmark (arXiv 2403.03218) and its reference code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from unlearn_lens.data.batching import IGNORE_INDEX, Batch
from unlearn_lens.errors import ConfigError
from unlearn_lens.metrics.token import sequence_logprob, target_loss
from unlearn_lens.models.subject import Subject
from unlearn_lens.schema import Real

Reference = Literal["forget_logprob", "retain_log_probs", "retain_residual"]
"""What an objective needs from the original model: `forget_logprob`, each forget item's
sequence log-likelihood `log π_ref(y|x)`; `retain_log_probs`, the next-token log-distribution at
every real position of each retain item; `retain_residual`, the residual stream at RMU's layer
at every real position of each retain item."""


@dataclass(frozen=True)
class ObjectiveConfig:
    """Hyperparameters of the objectives (each objective reads the fields it uses).

    **Fields:**

    - `beta`: NPO's inverse temperature β (Zhang et al. 2024 use 0.1).
    - `retain_weight`: λ of the retain NLL in `ga_gd` and `npo_gd`.
    - `kl_weight`: λ of the retain KL in `ga_kl` and `npo_kl`.
    - `simnpo_beta`, `simnpo_gamma`: SimNPO's β and reward margin γ (Fan et al. 2024,
      arXiv 2410.07163; 2.5 and 0 are their TOFU settings).
    - `rmu_layer`: the block whose output RMU steers (0-based); `None` means
      `n_layers // 3` (WMDP steers layer 7 of 32 in Zephyr-7B: early-middle depth).
    - `rmu_coefficient`: the steering coefficient `c`, the norm of RMU's target vector
      (6.5, WMDP's Zephyr-7B setting; their larger Mixtral needed 300).
    - `rmu_alpha`: weight of RMU's retain activation MSE (1200, WMDP's Zephyr-7B setting).
    """

    beta: Real = 0.1
    retain_weight: Real = 1.0
    kl_weight: Real = 1.0
    simnpo_beta: Real = 2.5
    simnpo_gamma: Real = 0.0
    rmu_layer: int | None = None
    rmu_coefficient: Real = 6.5
    rmu_alpha: Real = 1200.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "rmu_layer":
                if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                    raise ConfigError(
                        f"objective option rmu_layer must be a whole number, got {value!r}"
                    )
            elif (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
            ):
                raise ConfigError(
                    f"objective option {item.name} must be a finite number, got {value!r}"
                )
        for name in ("beta", "simnpo_beta"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"objective option {name} must be positive, got {getattr(self, name)}"
                )
        for name in ("retain_weight", "kl_weight", "rmu_alpha", "rmu_coefficient"):
            if not getattr(self, name) >= 0:
                raise ConfigError(
                    f"objective option {name} must be non-negative, got {getattr(self, name)}"
                )

    @classmethod
    def from_options(cls, **options: Any) -> ObjectiveConfig:
        """The config from keyword options, naming any unknown option and the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown objective option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**options)


@dataclass
class ObjectiveBatch:
    """A batch of forget or retain items with what the original model computed on them.

    The `reference_*` fields are present exactly when the objective declared it needs them;
    positions beyond an item's real tokens are zero.
    """

    batch: Batch
    reference_logprob: Float[Tensor, " batch"] | None = None
    reference_log_probs: Float[Tensor, "batch seq vocab"] | None = None
    reference_residual: Float[Tensor, "batch seq d_model"] | None = None


@dataclass
class ObjectiveContext:
    """What an objective may use besides its batches.

    `generator` is the seeded source of per-step randomness (RLabel's labels); `seed` also
    fixes RMU's random direction.
    """

    subject: Subject
    config: ObjectiveConfig
    generator: torch.Generator
    seed: int

    @cached_property
    def rmu_layer(self) -> int:
        """The block RMU steers, resolved and checked against the model's depth."""
        n_layers = self.subject.shape.n_layers
        layer = n_layers // 3 if self.config.rmu_layer is None else self.config.rmu_layer
        if not 0 <= layer < n_layers:
            raise ConfigError(
                f"objective option rmu_layer={layer} is outside the model's blocks 0..{n_layers - 1}"
            )
        return layer

    @property
    def rmu_stream(self) -> int:
        """Residual-stream index of the output of block `rmu_layer`."""
        return self.rmu_layer + 1

    @cached_property
    def rmu_target(self) -> Float[Tensor, " d_model"]:
        """RMU's target `c·u`: `u` a random unit vector (uniform entries in [0, 1), normalised,
        as in the WMDP reference code), fixed by the seed."""
        generator = torch.Generator().manual_seed(self.seed)
        direction = torch.rand(self.subject.shape.d_model, generator=generator, dtype=torch.float64)
        target = direction / direction.norm() * self.config.rmu_coefficient
        return target.to(self.subject.device, self.subject.weight("embed.weight").dtype)


ObjectiveFn = Callable[
    [ObjectiveContext, ObjectiveBatch, "ObjectiveBatch | None"], Float[Tensor, ""]
]


@dataclass(frozen=True)
class Objective:
    """A registered objective: its loss, what it needs, and whether it is an unlearning method.

    `default_trainable`, when set, names the weight keys trained when the caller does not
    choose (RMU trains a few MLP matrices only).
    """

    name: str
    loss: ObjectiveFn
    needs_retain: bool
    references: frozenset[str]
    unlearning: bool
    default_trainable: Callable[[ObjectiveContext], list[str]] | None = None

    @property
    def summary(self) -> str:
        """First line of the loss function's docstring."""
        return (self.loss.__doc__ or "").strip().splitlines()[0]


OBJECTIVES: dict[str, Objective] = {}
"""Every registered objective by name (unlearning methods and the plain `finetune`)."""


def objective(
    name: str,
    *,
    needs_retain: bool = False,
    references: Iterable[Reference] = (),
    unlearning: bool = True,
    default_trainable: Callable[[ObjectiveContext], list[str]] | None = None,
) -> Callable[[ObjectiveFn], ObjectiveFn]:
    """Register the decorated loss function under `name`."""

    def register(loss: ObjectiveFn) -> ObjectiveFn:
        if name in OBJECTIVES:
            raise ValueError(f"objective {name!r} is already registered")
        OBJECTIVES[name] = Objective(
            name, loss, needs_retain, frozenset(references), unlearning, default_trainable
        )
        return loss

    return register


def get_objective(name: str) -> Objective:
    """The objective registered as `name`, or a `ConfigError` listing the known names."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ConfigError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}") from None


def needs_retain(name: str) -> bool:
    """Whether objective `name` needs a retain set."""
    return get_objective(name).needs_retain


def unlearning_methods() -> list[str]:
    """Names of the registered unlearning objectives (everything but plain fine-tuning)."""
    return [name for name, spec in OBJECTIVES.items() if spec.unlearning]


# ----- shared terms ----------------------------------------------------------------------


def _logits(ctx: ObjectiveContext, example: ObjectiveBatch) -> Float[Tensor, "batch seq vocab"]:
    return ctx.subject.run(example.batch, grad=True).logits


def _nll(ctx: ObjectiveContext, example: ObjectiveBatch) -> Float[Tensor, ""]:
    """Mean NLL per answer token."""
    return target_loss(_logits(ctx, example), example.batch.labels)


def _require(value: Tensor | None, what: str) -> Tensor:
    if value is None:
        raise ValueError(f"the batch carries no {what}; declare it in the objective's references")
    return value


def retain_kl(ctx: ObjectiveContext, retain: ObjectiveBatch) -> Float[Tensor, ""]:
    """`KL(p_ref ‖ p_θ)` of the next-token distributions, averaged over every real (non-pad)
    position of the retain inputs."""
    reference = _require(retain.reference_log_probs, "reference log-probabilities")
    log_q = torch.log_softmax(_logits(ctx, retain), dim=-1)
    real = retain.batch.attention_mask.bool()
    ref = reference[real]
    return (ref.exp() * (ref - log_q[real])).sum(dim=-1).mean()


def npo_loss(
    logprob: Float[Tensor, " batch"], reference_logprob: Float[Tensor, " batch"], beta: float
) -> Float[Tensor, ""]:
    """`−(2/β)·mean log σ(−β (log π_θ − log π_ref))`: non-negative, `(2/β) log 2` at the start,
    and its gradient `2σ(β (log π_θ − log π_ref))` per sequence vanishes as `π_θ → 0`."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logprob - reference_logprob)).mean()


def _npo(ctx: ObjectiveContext, forget: ObjectiveBatch) -> Float[Tensor, ""]:
    reference = _require(forget.reference_logprob, "reference log-likelihoods")
    return npo_loss(
        sequence_logprob(_logits(ctx, forget), forget.batch.labels), reference, ctx.config.beta
    )


def random_labels(labels: Tensor, vocab_size: int, generator: torch.Generator) -> Tensor:
    """`labels` with every target position replaced by a token drawn uniformly from the
    vocabulary (`torch.randint` on `generator`, in row-major order of the targets)."""
    targets = labels != IGNORE_INDEX
    drawn = torch.randint(0, vocab_size, (int(targets.sum()),), generator=generator)
    randomised = labels.clone()
    randomised[targets] = drawn.to(labels.device)
    return randomised


# ----- objectives ------------------------------------------------------------------------


@objective("finetune", unlearning=False)
def finetune(
    ctx: ObjectiveContext, forget: ObjectiveBatch, retain: ObjectiveBatch | None
) -> Tensor:
    """Plain NLL on the items: learning, used by relearning attacks (not an unlearning method)."""
    return _nll(ctx, forget)


@objective("ga")
def ga(ctx: ObjectiveContext, forget: ObjectiveBatch, retain: ObjectiveBatch | None) -> Tensor:
    """Gradient ascent: `−NLL(forget)`."""
    return -_nll(ctx, forget)


@objective("ga_gd", needs_retain=True)
def ga_gd(ctx: ObjectiveContext, forget: ObjectiveBatch, retain: ObjectiveBatch | None) -> Tensor:
    """Gradient difference: `−NLL(forget) + λ·NLL(retain)`, λ = `retain_weight`."""
    return -_nll(ctx, forget) + ctx.config.retain_weight * _nll(ctx, _present(retain))


@objective("ga_kl", needs_retain=True, references=("retain_log_probs",))
def ga_kl(ctx: ObjectiveContext, forget: ObjectiveBatch, retain: ObjectiveBatch | None) -> Tensor:
    """`−NLL(forget) + λ·KL(p_ref ‖ p_θ)` on retain inputs, λ = `kl_weight`."""
    return -_nll(ctx, forget) + ctx.config.kl_weight * retain_kl(ctx, _present(retain))


@objective("npo", references=("forget_logprob",))
def npo(ctx: ObjectiveContext, forget: ObjectiveBatch, retain: ObjectiveBatch | None) -> Tensor:
    """Negative preference optimisation (Zhang et al. 2024) on answer log-likelihoods."""
    return _npo(ctx, forget)


@objective("npo_gd", needs_retain=True, references=("forget_logprob",))
def npo_gd(ctx: ObjectiveContext, forget: ObjectiveBatch, retain: ObjectiveBatch | None) -> Tensor:
    """NPO plus `λ·NLL(retain)`, λ = `retain_weight`."""
    return _npo(ctx, forget) + ctx.config.retain_weight * _nll(ctx, _present(retain))


@objective("npo_kl", needs_retain=True, references=("forget_logprob", "retain_log_probs"))
def npo_kl(ctx: ObjectiveContext, forget: ObjectiveBatch, retain: ObjectiveBatch | None) -> Tensor:
    """NPO plus `λ·KL(p_ref ‖ p_θ)` on retain inputs, λ = `kl_weight`."""
    return _npo(ctx, forget) + ctx.config.kl_weight * retain_kl(ctx, _present(retain))


@objective("rlabel")
def rlabel(ctx: ObjectiveContext, forget: ObjectiveBatch, retain: ObjectiveBatch | None) -> Tensor:
    """Random labels: NLL of uniformly random tokens at the forget answer positions, redrawn each step."""
    logits = _logits(ctx, forget)
    return target_loss(logits, random_labels(forget.batch.labels, logits.shape[-1], ctx.generator))


@objective("simnpo")
def simnpo(ctx: ObjectiveContext, forget: ObjectiveBatch, retain: ObjectiveBatch | None) -> Tensor:
    """SimNPO (Fan et al. 2024): `−(2/β)·mean log σ(−β·log π_θ(y|x)/|y| − γ)`, reference-free."""
    labels = forget.batch.labels
    n_targets = (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)
    mean_logprob = sequence_logprob(_logits(ctx, forget), labels) / n_targets
    beta, gamma = ctx.config.simnpo_beta, ctx.config.simnpo_gamma
    return -(2.0 / beta) * F.logsigmoid(-beta * mean_logprob - gamma).mean()


def rmu_trainable(ctx: ObjectiveContext) -> list[str]:
    """The MLP output projections of blocks `ℓ−2 .. ℓ` (WMDP trains `down_proj` of layers 5–7
    when steering layer 7)."""
    layers = range(max(0, ctx.rmu_layer - 2), ctx.rmu_layer + 1)
    return ctx.subject.keys(layers=layers, components=("mlp_down", "mlp_out"))


@objective(
    "rmu", needs_retain=True, references=("retain_residual",), default_trainable=rmu_trainable
)
def rmu(ctx: ObjectiveContext, forget: ObjectiveBatch, retain: ObjectiveBatch | None) -> Tensor:
    """RMU (Li et al. 2024, WMDP): steer forget activations at layer ℓ toward `c·u`, keep retain ones.

    `MSE(h_θ(forget), c·u) + α·MSE(h_θ(retain), h_ref(retain))`, both element-wise means over
    the real tokens (padding excluded) and the model width, at the output of block ℓ.
    """
    stream = ctx.rmu_stream
    retain = _present(retain)
    reference = _require(retain.reference_residual, "reference residuals")
    forget_h = ctx.subject.run(forget.batch, residual_layers=[stream], grad=True).residuals[stream]
    retain_h = ctx.subject.run(retain.batch, residual_layers=[stream], grad=True).residuals[stream]
    forget_real = forget.batch.attention_mask.bool()
    retain_real = retain.batch.attention_mask.bool()
    forget_term = (forget_h[forget_real] - ctx.rmu_target).pow(2).mean()
    retain_term = (retain_h[retain_real] - reference[retain_real]).pow(2).mean()
    return forget_term + ctx.config.rmu_alpha * retain_term


def _present(retain: ObjectiveBatch | None) -> ObjectiveBatch:
    if retain is None:
        raise ValueError("this objective needs a retain batch")
    return retain
