"""Integrated gradients along the weight path: the forget effect attributed to every weight at once.

On the straight path `θ(α) = θ_u + α (θ_o − θ_u)` from the unlearned to the original weights,
the loss change splits exactly over the parameters (completeness):

    L(θ_o) − L(θ_u) = Σ_i (θ_o − θ_u)_i · ∫₀¹ ∂L/∂θ_i(θ(α)) dα

The integral is a Gauss–Legendre quadrature: one forward/backward pass per node and data set.
The attribution of a set of weights (a block, a component, a head) is the sum of its
parameters' terms, so every block, component and query head comes out of the same passes; the
residual `|Σ attributions − (L(θ_o) − L(θ_u))| / |L(θ_o) − L(θ_u)|` measures whether the
quadrature was fine enough, and the number of nodes is doubled until it is below a tolerance.

`L` is the mean NLL over every answer token of a data set, the NLL of
[`TokenMetrics`][unlearn_lens.metrics.TokenMetrics] that the reversion effect
[`Reverter`][unlearn_lens.localize.Reverter] divides, so attributions over `L(θ_o) − L(θ_u)` are
comparable with reversion effects. A tied unembedding gets its own leaf on the path during the
passes, so the output head (final norm and unembedding) and the input embedding are attributed
apart, as [`last_layers_patch(subject, 0)`][unlearn_lens.localize.last_layers_patch] and
[`input_embedding_patch`][unlearn_lens.localize.input_embedding_patch] revert them apart.

A part's integrated-gradient share includes its interactions with every other part reverting
along the path; what reverting the part *alone* does is, to first order, the gradient at the
unlearned weights contracted with its own `θ_o − θ_u` (attribution patching). One more
forward/backward pass of the forget set at α = 0 gives that estimate for every part too
(`WeightAttribution.first_order`): on SmolLM2 after GA it ranks 24 single-head reversions with
Spearman 1.00 where the integrated-gradient shares reach 0.73.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import computed_field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from unlearn_lens.data.batching import IGNORE_INDEX, Batch
from unlearn_lens.data.items import Item
from unlearn_lens.evaluation import EVAL_BATCH_SIZE, evaluate
from unlearn_lens.localize.deltas import kv_head_of
from unlearn_lens.metrics.token import target_loss
from unlearn_lens.models.architecture import WeightSpec, named_parameters
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.schema import Real

FIRST_POINTS = 2
"""Gauss–Legendre nodes of the first rule: exact when the loss is a polynomial of degree ≤ 4 in α,
which the short, small-step paths of unlearning runs come close to."""
MAX_POINTS = 8
"""Most nodes a rule may have (2, 4, 8: 14 passes per data set if none converges, about 2.5 min on
SmolLM2 with 32 + 32 items); a path too sharp for 8 nodes is reported as not converged, and the
exact checks carry the weight."""
COMPLETENESS_TOLERANCE = 0.05
"""Largest residual |Σ attributions − ΔL| / |ΔL| accepted on the forget set. Attributions rank and
size parts; measured on SmolLM2 after GA at the audit defaults, 2 and 4 nodes left residuals of
1.0 % and 2.6 % while no block's share moved by more than 0.005 of the effect between them."""

OUTPUT_HEAD = "output_head"
INPUT_EMBEDDING = "input_embedding"
NON_BLOCK = {
    "embed": INPUT_EMBEDDING,
    "pos_embed": INPUT_EMBEDDING,
    "final_norm": OUTPUT_HEAD,
    "unembed": OUTPUT_HEAD,
}
"""Where each weight outside the blocks is attributed."""
TIED_OUTPUT = WeightSpec("embed.weight", None, "unembed", "lm_head.weight")
"""The output use of a tied embedding matrix, a leaf of its own during the passes: its path and
θ_o − θ_u are those of `embed.weight`, its attribution goes to the output head."""


def gauss_legendre(n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the `n_points` Gauss–Legendre rule on [0, 1] (weights sum to 1)."""
    nodes, weights = np.polynomial.legendre.leggauss(n_points)
    return (nodes + 1) / 2, weights / 2


@dataclass(frozen=True)
class LossAttribution:
    """One data set's loss change `L(θ_o) − L(θ_u)` (mean answer-token NLL, nats) split over the weights.

    **Fields:** `components[c][ℓ]`, component `c` of block ℓ (weight and bias); `output_head`,
    the final norm and the unembedding (its output use when tied); `input_embedding`, the token
    and position embeddings (input use); `query_heads[ℓ][h]`, the q and o slices query head h
    owns; `kv_heads[ℓ][j]`, the k and v slices of key-value head j. Every value is in nats;
    divide by `change` (or use `fraction=True`) for the share of the effect, comparable with a
    reversion's NLL effect.
    """

    loss_unlearned: Real
    loss_original: Real
    components: dict[str, list[Real]]
    output_head: Real
    input_embedding: Real
    query_heads: list[list[Real]]
    kv_heads: list[list[Real]]

    @property
    def n_layers(self) -> int:
        return len(self.query_heads)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def change(self) -> Real:
        """`L(θ_o) − L(θ_u)`: what the attributions must add up to."""
        return self.loss_original - self.loss_unlearned

    @property
    def total(self) -> float:
        """Σ of every attribution (blocks, output head, input embedding)."""
        return math.fsum(self.blocks()) + self.output_head + self.input_embedding

    @computed_field  # type: ignore[prop-decorator]
    @property
    def residual(self) -> Real:
        """Completeness residual `|total − change| / |change|` (NaN when nothing changed)."""
        return abs(self.total - self.change) / abs(self.change) if self.change != 0 else math.nan

    def _scale(self, fraction: bool) -> float:
        return 1 / self.change if fraction and self.change != 0 else (math.nan if fraction else 1.0)

    def blocks(self, fraction: bool = False) -> list[float]:
        """Attribution of each block (every weight of it)."""
        scale = self._scale(fraction)
        return [
            scale * math.fsum(values[layer] for values in self.components.values())
            for layer in range(self.n_layers)
        ]

    def heads(self, fraction: bool = False) -> np.ndarray:
        """`[n_layers, n_heads]` attribution per query head: its q and o slices plus an equal share
        of its key-value head's k and v (the convention of
        [`DeltaReport.query_head_norms`][unlearn_lens.localize.DeltaReport.query_head_norms]),
        so a row sums to the block's q, k, v and o attribution (less an o bias, which no head owns)."""
        own, kv = np.asarray(self.query_heads), np.asarray(self.kv_heads)
        n_heads, n_kv = own.shape[1], kv.shape[1]
        group = n_heads // n_kv
        shared = kv[:, [kv_head_of(h, n_heads, n_kv) for h in range(n_heads)]] / group
        return (own + shared) * self._scale(fraction)

    def place(self, name: str, fraction: bool = False) -> float:
        """Attribution of a place outside the blocks: `"head"` (final norm and unembedding) or
        `"input_embedding"`."""
        return (self.output_head if name == "head" else self.input_embedding) * self._scale(
            fraction
        )

    def head_patch(self, layer: int, head: int, fraction: bool = False) -> float:
        """Attribution of the weights [`query_heads_patch`][unlearn_lens.localize.query_heads_patch]
        reverts for one query head: its q and o slices and the whole key-value head it reads."""
        n_heads, n_kv = len(self.query_heads[layer]), len(self.kv_heads[layer])
        kv = self.kv_heads[layer][kv_head_of(head, n_heads, n_kv)]
        return (self.query_heads[layer][head] + kv) * self._scale(fraction)

    def component_totals(self, fraction: bool = False) -> dict[str, float]:
        """Each block component summed over the blocks (what reverting it in every layer reverts)."""
        scale = self._scale(fraction)
        return {name: scale * math.fsum(values) for name, values in self.components.items()}

    def last_k(self, fraction: bool = False) -> list[float]:
        """Attribution of the output head with the last k blocks, k = 0 … L (cumulative sums;
        comparable with the exact head + last-k reversion effects when `fraction=True`)."""
        blocks = self.blocks()
        scale = self._scale(fraction)
        return [
            scale * (self.output_head + math.fsum(blocks[self.n_layers - k :]))
            for k in range(self.n_layers + 1)
        ]

    # Derived views written to JSON for its readers (never read back).
    @computed_field(alias="blocks")  # type: ignore[prop-decorator]
    @property
    def _blocks_view(self) -> list[Real]:
        return self.blocks()

    @computed_field(alias="heads")  # type: ignore[prop-decorator]
    @property
    def _heads_view(self) -> list[list[Real]]:
        return self.heads().tolist()

    @computed_field(alias="last_k")  # type: ignore[prop-decorator]
    @property
    def _last_k_view(self) -> list[Real]:
        return self.last_k()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fractions(self) -> dict[str, Any]:
        """The views above as fractions of the effect."""
        return {
            "blocks": self.blocks(True),
            "heads": self.heads(True).tolist(),
            "last_k": self.last_k(True),
            "output_head": self.output_head * self._scale(True),
            "input_embedding": self.input_embedding * self._scale(True),
        }


@dataclass(frozen=True)
class WeightAttribution:
    """Integrated-gradient attribution of the forget (and retain) loss change to the weights.

    **Fields:** `forget`, `retain` (None without a retain set); `points`, the nodes of the rule
    kept; `passes`, the forward/backward passes spent per data set over every rule tried;
    `tolerance`, the residual the forget set had to reach; `first_order`, the forget set's
    first-order estimate of reverting each part alone (the gradient at the unlearned weights
    contracted with `θ_o − θ_u`, one more pass; `None` when not asked for).
    """

    forget: LossAttribution
    retain: LossAttribution | None
    points: int
    passes: int
    tolerance: Real
    first_order: LossAttribution | None = None

    @property
    def single_patches(self) -> LossAttribution:
        """The estimate of what reverting one part alone does: `first_order` when measured (it
        matches exact single-head reversions), otherwise the integrated-gradient shares."""
        return self.forget if self.first_order is None else self.first_order

    @property
    def residual(self) -> float:
        """The forget set's completeness residual."""
        return self.forget.residual

    @property
    def converged(self) -> bool:
        """Whether the forget residual is within the tolerance."""
        return self.residual <= self.tolerance


class _Sums:
    """Running float64 sums of `(θ_o − θ_u) ⊙ gradient` per component, head and non-block part."""

    def __init__(self, subject: Subject) -> None:
        shape = subject.shape
        self.components = {
            spec.component: np.zeros(shape.n_layers)
            for spec in subject.specs
            if spec.layer is not None
        }
        self.parts = {OUTPUT_HEAD: 0.0, INPUT_EMBEDDING: 0.0}
        self.query_heads = np.zeros((shape.n_layers, shape.n_heads))
        self.kv_heads = np.zeros((shape.n_layers, shape.n_kv_heads))

    def result(self, loss_unlearned: float, loss_original: float) -> LossAttribution:
        return LossAttribution(
            loss_unlearned=loss_unlearned,
            loss_original=loss_original,
            components={name: values.tolist() for name, values in self.components.items()},
            output_head=self.parts[OUTPUT_HEAD],
            input_embedding=self.parts[INPUT_EMBEDDING],
            query_heads=self.query_heads.tolist(),
            kv_heads=self.kv_heads.tolist(),
        )


CHUNK_ELEMENTS = 1 << 22
"""Elements per slice when contracting a weight no head splits (16 MB in float32), so the
temporary `(θ_o − θ_u) ⊙ gradient` of an embedding matrix never exists whole."""


class _WeightPath:
    """Puts the subject's weights at θ(α) and contracts each gradient with θ_o − θ_u as soon as
    backward has accumulated it, then frees it: gradients never live all at once.

    Inside `hooked()`, a tied unembedding is its own leaf that follows the same path, so its
    gradient is the output use of the matrix and the embedding's gradient the input use.
    """

    def __init__(self, subject: Subject, original: Snapshot, unlearned: Snapshot) -> None:
        self.subject, self.original, self.unlearned = subject, original, unlearned
        self.sums: _Sums | None = None
        self.weight = 0.0

    @contextmanager
    def hooked(self) -> Iterator[None]:
        """A tied unembedding as its own leaf, and every weight's gradient contracted by a hook."""
        subject = self.subject
        with (
            subject.untied_output(self.unlearned["embed.weight"])
            if subject.shape.tied_embeddings
            else nullcontext()
        ):
            params = named_parameters(subject.model)
            by_param: dict[str, list[WeightSpec]] = {}
            for spec in subject.specs:
                by_param.setdefault(spec.param, []).append(spec)
            hooks = [(params[name], self._hook(specs)) for name, specs in by_param.items()]
            if subject.shape.tied_embeddings:
                leaf = subject.readout_modules()[1].weight
                assert isinstance(leaf, torch.nn.Parameter), (
                    "untied_output made the head's own leaf"
                )
                leaf.requires_grad_(True)
                hooks.append((leaf, self._hook([TIED_OUTPUT])))
            handles = [param.register_post_accumulate_grad_hook(hook) for param, hook in hooks]
            try:
                yield
            finally:
                for handle in handles:
                    handle.remove()
                subject.model.zero_grad(set_to_none=True)

    def move_to(self, alpha: float) -> None:
        """Write θ(α) into every weight (and the untied unembedding leaf)."""
        subject = self.subject
        params = named_parameters(subject.model)
        with torch.no_grad():
            for spec in subject.specs:
                view = spec.view(params)
                view.copy_(
                    torch.lerp(self.unlearned[spec.key], self.original[spec.key], alpha).to(
                        view.device, view.dtype
                    )
                )
            if subject.shape.tied_embeddings:
                leaf = subject.readout_modules()[1].weight
                assert isinstance(leaf, torch.Tensor), (
                    "the unembedding is a Linear: its weight a tensor"
                )
                leaf.copy_(
                    torch.lerp(
                        self.unlearned["embed.weight"], self.original["embed.weight"], alpha
                    ).to(leaf.device, leaf.dtype)
                )

    def _hook(self, specs: list[WeightSpec]):
        def contract(param: torch.Tensor) -> None:
            assert param.grad is not None, "a post-accumulate-grad hook runs once grad is set"
            for spec in specs:
                self._contract(spec, spec.view({spec.param: param.grad}))
            param.grad = None

        return contract

    def _contract(self, spec: WeightSpec, grad: torch.Tensor) -> None:
        """Add `weight · Σ (θ_o − θ_u) ⊙ grad` of one weight to its part (and per head)."""
        sums, weight = self.sums, self.weight
        assert sums is not None, "_backward sets the sums before any gradient reaches a hook"
        original, unlearned = self.original[spec.key], self.unlearned[spec.key]

        def delta_of(rows: slice) -> torch.Tensor:
            return (original[rows] - unlearned[rows]).to(grad.device, grad.dtype)

        if spec.head_axis is None:
            size = max(1, CHUNK_ELEMENTS // grad[0].numel())
            value = math.fsum(
                float(
                    (delta_of(slice(start, start + size)) * grad[start : start + size]).sum(
                        dtype=torch.float64
                    )
                )
                for start in range(0, grad.shape[0], size)
            )
            if spec.layer is None:
                sums.parts[NON_BLOCK[spec.component]] += weight * value
            else:
                sums.components[spec.component][spec.layer] += weight * value
            return
        per_head = (delta_of(slice(None)) * grad).unflatten(spec.head_axis, (spec.n_heads, -1))
        values = (
            per_head.sum(
                dim=[d for d in range(per_head.ndim) if d != spec.head_axis], dtype=torch.float64
            )
            .cpu()
            .numpy()
        )
        sums.components[spec.component][spec.layer] += weight * float(math.fsum(values))
        target = sums.query_heads if spec.component in ("q", "o") else sums.kv_heads
        target[spec.layer] += weight * values


def _backward(
    path: _WeightPath, batches: Sequence[Batch], n_tokens: int, sums: _Sums, weight: float
) -> None:
    """Add `weight · (θ_o − θ_u) ⊙ ∂L/∂θ` of the mean answer-token NLL over all `batches` to `sums`."""
    path.sums, path.weight = sums, weight
    for batch in batches:
        loss = target_loss(
            path.subject.run(batch, grad=True).logits, batch.labels, reduction="sum_per_sequence"
        ).sum()
        (loss / n_tokens).backward()


def _n_tokens(batches: Sequence[Batch]) -> int:
    return sum(int((batch.labels[:, 1:] != IGNORE_INDEX).sum()) for batch in batches)


def attribute_weights(
    subject: Subject,
    original: Snapshot,
    unlearned: Snapshot,
    forget_set: Sequence[Item],
    retain_set: Sequence[Item] = (),
    *,
    tolerance: float = COMPLETENESS_TOLERANCE,
    first_points: int = FIRST_POINTS,
    max_points: int = MAX_POINTS,
    batch_size: int = EVAL_BATCH_SIZE,
    known_losses: Mapping[str, tuple[float, float]] | None = None,
    first_order: bool = True,
    progress: bool = True,
) -> WeightAttribution:
    """Attribute the forget (and retain) loss change between `unlearned` and `original` to every
    weight by integrated gradients along the straight weight path.

    Starts with `first_points` Gauss–Legendre nodes and doubles them until the forget set's
    completeness residual is at most `tolerance` or the next rule would exceed `max_points`
    (check [`WeightAttribution.converged`][unlearn_lens.localize.WeightAttribution.converged]).
    `known_losses` maps `"forget"` / `"retain"` to `(L(θ_u), L(θ_o))` already measured on the same
    items (e.g. a [`Reverter`][unlearn_lens.localize.Reverter]'s `unlearned` and `original`
    NLL); the sets not in it are evaluated here. With `first_order`, one more pass of the forget
    set at the unlearned weights gives `WeightAttribution.first_order`.
    Each weight's gradient is contracted with `θ_o − θ_u` as soon as backward has accumulated
    it and then freed, so memory grows by one pass's activations and, for a tied unembedding, its
    untied copy. The subject holds `unlearned` afterwards.
    """
    if not forget_set:
        raise ValueError("attribution needs a non-empty forget set")
    if not 1 <= first_points <= max_points:
        raise ValueError(
            f"first_points must lie between 1 and max_points ({max_points}), got {first_points}"
        )
    sets = {"forget": forget_set, **({"retain": retain_set} if retain_set else {})}
    encoded = {name: list(subject.batches(items, batch_size)) for name, items in sets.items()}
    n_tokens = {name: _n_tokens(batches) for name, batches in encoded.items()}
    endpoints = dict(known_losses or {})
    for name, items in sets.items():
        if name in endpoints:
            continue
        subject.restore(original)
        loss_original = evaluate(subject, items, batch_size).nll
        subject.restore(unlearned)
        endpoints[name] = (evaluate(subject, items, batch_size).nll, loss_original)
    path = _WeightPath(subject, original, unlearned)
    rules = []
    n = first_points
    while n <= max_points:
        rules.append(n)
        n *= 2
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    passes = 0
    try:
        with path.hooked(), Progress(*columns, transient=True, disable=not progress) as bar:
            for points in rules:
                task = bar.add_task(
                    f"weight attribution ({points} points)", total=points * len(sets)
                )
                sums = {name: _Sums(subject) for name in sets}
                for alpha, weight in zip(*gauss_legendre(points), strict=True):
                    path.move_to(float(alpha))
                    for name, batches in encoded.items():
                        _backward(path, batches, n_tokens[name], sums[name], float(weight))
                        bar.advance(task)
                passes += points
                results = {name: sums[name].result(*endpoints[name]) for name in sets}
                if (
                    not results["forget"].residual > tolerance
                ):  # converged, or nothing to attribute (NaN)
                    break
            single = None
            if first_order:
                first_order_sums = _Sums(subject)
                path.move_to(0.0)
                _backward(path, encoded["forget"], n_tokens["forget"], first_order_sums, 1.0)
                single = first_order_sums.result(*endpoints["forget"])
    finally:
        subject.restore(unlearned)
    return WeightAttribution(
        forget=results["forget"],
        retain=results.get("retain"),
        points=points,
        passes=passes,
        tolerance=tolerance,
        first_order=single,
    )
