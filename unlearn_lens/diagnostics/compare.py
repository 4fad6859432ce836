"""Diagnostics between two checkpoints of one model: per-layer CKA and PCA, Fisher, token metrics.

Each model (or snapshot) is passed over the items once ([`model_pass`][unlearn_lens.diagnostics.compare.model_pass]):
one forward pass per batch collects every residual-stream position and the logits, and, when
the Fisher information is asked for, one backward pass of the same forward gives the
per-example gradients. [`compare_passes`][unlearn_lens.diagnostics.compare.compare_passes]
turns two passes into a [`Comparison`][unlearn_lens.diagnostics.compare.Comparison]; an audit
holding several snapshots passes each once and compares the passes pairwise.

Inputs longer than the model's context lose tokens from the left (the prompt's start), with a
warning; answers are kept whole whenever they fit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import model_serializer, model_validator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor

from unlearn_lens.data.batching import encode_item
from unlearn_lens.data.items import Item
from unlearn_lens.data.loaders import ItemsLike, as_items
from unlearn_lens.diagnostics.activations import (
    POOLINGS,
    TOKEN_SPANS,
    ActivationCollector,
    Pooling,
    TokenSpan,
    context_length,
)
from unlearn_lens.diagnostics.model_fisher import FisherHooks, ModelFisher
from unlearn_lens.errors import ConfigError
from unlearn_lens.evaluation import EVAL_BATCH_SIZE
from unlearn_lens.metrics.cka import MIN_DEBIASED_SAMPLES, cka_both
from unlearn_lens.metrics.fisher import (
    FisherComparison,
    compare_fisher,
    shared_value_range,
)
from unlearn_lens.metrics.pca import pc1_similarity, pca_distance, pca_shift, subspace_similarity
from unlearn_lens.metrics.token import ItemOutcomes, TokenMetrics, TokenMetricsAccumulator
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.schema import Real

SUBSPACE_K = 5
"""Top principal components compared by the subspace similarity: enough to see more than PC1,
few enough to be determined by the 32-odd samples a probe set usually has."""

FISHER_BINS = 30
"""Histogram bins of each layer's Fisher values: three per decade over the ten decades a
layer's values typically span."""

TOKENIZER_PROBES = 3
"""How many items both tokenizers must encode identically (beyond an identical vocabulary)."""


# ----- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerComparison:
    """Reference vs updated activations at one residual-stream position.

    **Fields:**

    - `stream`: 0 = after the embedding, `j` = after block `j - 1`.
    - `cka_debiased`, `cka_biased`: linear CKA, unbiased-HSIC and plain estimators.
    - `pc1_similarity`: |cos| of the two sets' first principal components.
    - `subspace_similarity`: mean squared principal-angle cosine of the top-`k` PC subspaces.
    - `delta_pc1`, `pc2`, `reference_pc2`, `reference_pc1_std`: the PCA shift (see
      [`PCAShift`][unlearn_lens.metrics.PCAShift]).
    - `pca_distance`: mean-to-mean distance in the reference PC1–PC2 plane, in reference PC1
      standard deviations.
    """

    stream: int
    cka_debiased: Real
    cka_biased: Real
    pc1_similarity: Real
    subspace_similarity: Real
    delta_pc1: Real
    pc2: Real
    reference_pc2: Real
    reference_pc1_std: Real
    pca_distance: Real


@dataclass(frozen=True)
class FisherGroup:
    """How the Fisher distribution of a group of weights changed (reference → updated).

    `layer` is the block index (`None`: weights outside the blocks, the untied unembedding);
    `component` is `None` for all linear weights of the layer together, else one component
    (`q`, `k`, `v`, `o`, `mlp_*`; weight and bias together). Compared from summaries on shared
    bins, so `comparison.ks_statistic` is `None` (see
    [`compare_model_fisher`][unlearn_lens.diagnostics.compare.compare_model_fisher]).
    """

    layer: int | None
    component: str | None
    comparison: FisherComparison

    # Custom layout, kept from the first results version: the comparison's numbers sit beside
    # `layer` and `component`, and its summaries are named `reference` and `updated`.
    @model_serializer(mode="wrap")
    def _flat(self, handler: Callable[[Any], Any]) -> dict[str, Any]:
        data = handler(self)
        comparison = data.pop("comparison")
        comparison["reference"] = comparison.pop("original")
        return {**data, **comparison}

    @model_validator(mode="before")
    @classmethod
    def _nested(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "comparison" in data:
            return data
        comparison = {k: v for k, v in data.items() if k not in ("layer", "component")}
        comparison["original"] = comparison.pop("reference", None)
        return {
            "layer": data.get("layer"),
            "component": data.get("component"),
            "comparison": comparison,
        }


@dataclass
class Comparison:
    """Every diagnostic between a reference and an updated model on the same items.

    **Fields:**

    - `reference`, `updated`: labels of the two models (their sources).
    - `pooling`, `tokens`: how sequences became samples (see
      [`collect_activations`][unlearn_lens.diagnostics.activations.collect_activations]);
      `n_items`, `n_samples`: items given and activation rows per layer.
    - `subspace_k`: principal components in `subspace_similarity`.
    - `layers`: one [`LayerComparison`][unlearn_lens.diagnostics.compare.LayerComparison] per
      residual-stream position, in order.
    - `mean_pca_distance`: `pca_distance` averaged over the layers (the study's summary of
      representational drift, [`mean_pca_distance`][unlearn_lens.metrics.mean_pca_distance]).
    - `reference_metrics`, `updated_metrics`: token metrics of each model on the items.
    - `fisher`: [`FisherGroup`][unlearn_lens.diagnostics.compare.FisherGroup] per layer (and per
      component when asked; empty without Fisher); `fisher_skipped`: weight keys without Fisher
      values (norms, embeddings).

    Non-finite floats (an infinite Fisher ratio when one model's values are all 0, say) are
    written to JSON as null and read back as NaN.
    """

    reference: str
    updated: str
    pooling: str
    tokens: str
    n_items: int
    n_samples: int
    subspace_k: int
    layers: list[LayerComparison]
    mean_pca_distance: Real
    reference_metrics: TokenMetrics
    updated_metrics: TokenMetrics
    fisher: list[FisherGroup] = field(default_factory=list)
    fisher_skipped: list[str] = field(default_factory=list)

    def fisher_by_layer(self) -> dict[int, FisherComparison]:
        """Block index → comparison of all its linear weights together."""
        return {
            g.layer: g.comparison
            for g in self.fisher
            if g.layer is not None and g.component is None
        }


# ----- one pass per model --------------------------------------------------------------------


@dataclass
class ModelPass:
    """What one model gives on the items: pooled activations of every stream, token metrics
    (and the per-item outcomes they sum, for intervals) and (optionally) its Fisher
    information."""

    label: str
    pooling: str
    tokens: str
    n_items: int
    activations: dict[int, Tensor]
    token_metrics: TokenMetrics
    fisher: ModelFisher | None
    outcomes: ItemOutcomes | None = None


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def model_pass(
    subject: Subject,
    items: Sequence[Item],
    pooling: Pooling = "mean",
    tokens: TokenSpan = "all",
    batch_size: int = EVAL_BATCH_SIZE,
    fisher: bool = True,
    progress: bool = False,
    label: str | None = None,
) -> ModelPass:
    """Pass `subject` over `items` once: one forward per batch for activations and token metrics,
    plus one backward of that same forward for the Fisher information when `fisher` is true.

    `label` names the model in results and the progress bar (default: its source).
    """
    _check_settings(items, pooling, tokens, batch_size)
    label = subject.source if label is None else label
    collector = ActivationCollector(range(subject.n_streams), pooling, tokens)
    metrics = TokenMetricsAccumulator()
    with contextlib.ExitStack() as stack:
        hooks = stack.enter_context(FisherHooks(subject)) if fisher else None
        bar = stack.enter_context(_progress_bar()) if progress else None
        task = (
            bar.add_task(label, total=math.ceil(len(items) / batch_size))
            if bar is not None
            else None
        )
        for batch in subject.batches(items, batch_size, max_length=context_length(subject)):
            out = subject.run(batch, residual_layers=collector.layers, grad=fisher)
            collector.add(batch, out.residuals)
            metrics.update(out.logits.detach(), batch.labels)
            if hooks is not None:
                hooks.backward(batch, out.logits, out.residuals[0])
            del out  # frees the logits before the next batch's forward pass
            if bar is not None and task is not None:
                bar.advance(task)
    return ModelPass(
        label=label,
        pooling=pooling,
        tokens=tokens,
        n_items=len(items),
        activations=collector.result(),
        token_metrics=metrics.result(),
        fisher=hooks.result() if hooks is not None else None,
        outcomes=metrics.outcomes(),
    )


# ----- comparing two passes ------------------------------------------------------------------


def _layer_comparison(stream: int, reference: Tensor, updated: Tensor, k: int) -> LayerComparison:
    cka = cka_both(reference, updated)
    shift = pca_shift(reference, updated)
    return LayerComparison(
        stream=stream,
        cka_debiased=cka.debiased,
        cka_biased=cka.biased,
        pc1_similarity=pc1_similarity(reference, updated),
        subspace_similarity=subspace_similarity(reference, updated, k),
        delta_pc1=shift.delta_pc1,
        pc2=shift.pc2,
        reference_pc2=shift.reference_pc2,
        reference_pc1_std=shift.reference_pc1_std,
        pca_distance=pca_distance(reference, updated),
    )


def compare_model_fisher(
    reference: ModelFisher, updated: ModelFisher, bins: int = FISHER_BINS, components: bool = False
) -> list[FisherGroup]:
    """Per layer (and, with `components`, per layer and component): both models' Fisher values
    summarised on shared log-scale bins, and compared.

    Comparisons are made from the summaries, so `ks_statistic` is `None`: the exact KS statistic
    would sort every value a second time, and partitioning (for the quantiles) is already what
    the summaries of a 100M-weight model cost most. Each model's quantiles are computed once
    ([`ModelFisher.profiles`][unlearn_lens.diagnostics.model_fisher.ModelFisher.profiles]); a comparison
    then costs one histogram pass over each model's values.
    """
    updated_groups = updated.groups(components)
    result = []
    for address, keys in reference.groups(components).items():
        if address not in updated_groups:
            continue
        # One group of each model in memory at a time: values stored on disk are streamed.
        profile = reference.profile(address, keys)
        other = updated.profile(address, updated_groups[address])
        value_range = shared_value_range(profile, other)
        comparison = compare_fisher(
            profile.summary(bins, value_range), other.summary(bins, value_range)
        )
        result.append(FisherGroup(layer=address[0], component=address[1], comparison=comparison))
    return result


def compare_passes(
    reference: ModelPass,
    updated: ModelPass,
    subspace_k: int = SUBSPACE_K,
    fisher_bins: int = FISHER_BINS,
    fisher_components: bool = False,
) -> Comparison:
    """The [`Comparison`][unlearn_lens.diagnostics.compare.Comparison] of two passes over the same
    items; `fisher_components` adds a Fisher comparison per layer *and component* (q, k, ...) to
    the per-layer ones (about doubling the cost of the Fisher summaries)."""
    if (reference.pooling, reference.tokens, reference.n_items) != (
        updated.pooling,
        updated.tokens,
        updated.n_items,
    ):
        raise ConfigError(
            "the two passes differ in pooling, token span or number of items; pass both models over "
            "the same items with the same settings"
        )
    if sorted(reference.activations) != sorted(updated.activations):
        raise ConfigError(
            f"the two models have {len(reference.activations)} and {len(updated.activations)} "
            "residual-stream positions; compare checkpoints of the same architecture"
        )
    streams = sorted(reference.activations)
    n_samples = reference.activations[streams[0]].shape[0]
    if n_samples != updated.activations[streams[0]].shape[0]:
        raise ConfigError(
            "the two models pooled different numbers of tokens from the same items: their tokenizers differ"
        )
    if n_samples < MIN_DEBIASED_SAMPLES:
        raise ConfigError(
            f"{n_samples} samples are too few for debiased CKA (needs at least {MIN_DEBIASED_SAMPLES}); "
            "give more items"
        )
    subspace_k = min(subspace_k, n_samples - 1)  # n centred samples span at most n − 1 directions
    layers = [
        _layer_comparison(
            stream, reference.activations[stream], updated.activations[stream], subspace_k
        )
        for stream in streams
    ]
    fisher: list[FisherGroup] = []
    skipped: list[str] = []
    if reference.fisher is not None and updated.fisher is not None:
        fisher = compare_model_fisher(
            reference.fisher, updated.fisher, fisher_bins, fisher_components
        )
        skipped = sorted(set(reference.fisher.skipped) | set(updated.fisher.skipped))
    return Comparison(
        reference=reference.label,
        updated=updated.label,
        pooling=reference.pooling,
        tokens=reference.tokens,
        n_items=reference.n_items,
        n_samples=n_samples,
        subspace_k=subspace_k,
        layers=layers,
        # The study's summary: the per-layer distances above, averaged (= metrics.mean_pca_distance).
        mean_pca_distance=sum(layer.pca_distance for layer in layers) / len(layers),
        reference_metrics=reference.token_metrics,
        updated_metrics=updated.token_metrics,
        fisher=fisher,
        fisher_skipped=skipped,
    )


# ----- the two entry points ------------------------------------------------------------------


def _check_settings(items: Sequence[Item], pooling: str, tokens: str, batch_size: int) -> None:
    if not items:
        raise ConfigError("no items to compare the models on: give at least one item")
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if tokens not in TOKEN_SPANS:
        raise ConfigError(f"unknown token span {tokens!r}; choose one of {', '.join(TOKEN_SPANS)}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be positive, got {batch_size}")


def _check_enough_items(items: Sequence[Item], pooling: str) -> None:
    """Fail before any pass when mean/last pooling gives too few samples for debiased CKA."""
    if pooling != "tokens" and len(items) < MIN_DEBIASED_SAMPLES:
        raise ConfigError(
            f"{len(items)} items are too few for debiased CKA (needs at least {MIN_DEBIASED_SAMPLES}); give more items"
        )


def check_compatible(reference: Subject, updated: Subject, items: Sequence[Item]) -> None:
    """Raise `ConfigError` unless the two models share architecture widths and tokenizer."""
    a, b = reference.shape, updated.shape
    differences = [
        f"{name} {getattr(a, name)} vs {getattr(b, name)}"
        for name in ("family", "n_layers", "d_model", "vocab_size")
        if getattr(a, name) != getattr(b, name)
    ]
    if differences:
        raise ConfigError(
            f"the two checkpoints differ in architecture ({'; '.join(differences)}): compare a model "
            "with an updated copy of itself"
        )
    if reference.tokenizer.get_vocab() != updated.tokenizer.get_vocab() or any(
        encode_item(reference.tokenizer, item) != encode_item(updated.tokenizer, item)
        for item in items[:TOKENIZER_PROBES]
    ):
        raise ConfigError(
            "the two checkpoints have different tokenizers, so the same items would be different "
            "inputs: compare a model with an updated copy of itself"
        )


def compare(
    reference: Subject,
    updated: Subject,
    items: ItemsLike,
    pooling: Pooling = "mean",
    tokens: TokenSpan = "all",
    batch_size: int = EVAL_BATCH_SIZE,
    fisher: bool = True,
    progress: bool = True,
    subspace_k: int = SUBSPACE_K,
    fisher_components: bool = False,
) -> Comparison:
    """Every diagnostic between two loaded checkpoints of the same model on `items` (items or
    records, a `datasets.Dataset` too: see [`as_items`][unlearn_lens.data.as_items]).

    **Arguments:**

    - `pooling`, `tokens`: how sequences become samples (see
      [`collect_activations`][unlearn_lens.diagnostics.activations.collect_activations]).
    - `fisher`: also compute and compare the Fisher information (one backward per batch);
      `fisher_components`: compare it per component of each layer too, not only per layer.
    - `progress`: show a progress bar per model on stderr.
    - `subspace_k`: principal components compared by `subspace_similarity`.

    Raises `ConfigError` for an empty item list, too few samples, or models whose architecture
    or tokenizer differ.
    """
    return compare_models(
        reference,
        updated,
        items,
        pooling,
        tokens,
        batch_size,
        fisher,
        progress,
        subspace_k,
        fisher_components,
    )[0]


def compare_models(
    reference: Subject,
    updated: Subject,
    items: ItemsLike,
    pooling: Pooling = "mean",
    tokens: TokenSpan = "all",
    batch_size: int = EVAL_BATCH_SIZE,
    fisher: bool = True,
    progress: bool = True,
    subspace_k: int = SUBSPACE_K,
    fisher_components: bool = False,
) -> tuple[Comparison, ModelPass, ModelPass]:
    """[`compare`][unlearn_lens.diagnostics.compare.compare], also returning the two models'
    passes for callers that measure more from them (the reversibility features) without a
    second pass over the items."""
    items = as_items(items, source="items")
    _check_settings(items, pooling, tokens, batch_size)
    _check_enough_items(items, pooling)
    check_compatible(reference, updated, items)
    take_pass = partial(
        model_pass,
        pooling=pooling,
        tokens=tokens,
        batch_size=batch_size,
        fisher=fisher,
        progress=progress,
    )
    reference_pass = take_pass(reference, items, label=reference.source)
    updated_pass = take_pass(updated, items, label=updated.source)
    comparison = compare_passes(
        reference_pass, updated_pass, subspace_k, fisher_components=fisher_components
    )
    return comparison, reference_pass, updated_pass


def _check_snapshot(subject: Subject, snapshot: Snapshot, name: str) -> None:
    expected = set(subject.keys())
    if set(snapshot) != expected:
        missing, extra = sorted(expected - set(snapshot)), sorted(set(snapshot) - expected)
        raise ConfigError(
            f"{name} snapshot does not match the model (missing {missing[:3]}, unknown {extra[:3]}); "
            "take snapshots with subject.snapshot() of this model"
        )
    for key in sorted(expected):
        if tuple(snapshot[key].shape) != tuple(subject.weight(key).shape):
            raise ConfigError(
                f"{name} snapshot holds {key} with shape {tuple(snapshot[key].shape)}, the model "
                f"{tuple(subject.weight(key).shape)}: take snapshots of this model"
            )


def compare_snapshots(
    subject: Subject,
    reference_snapshot: Snapshot,
    updated_snapshot: Snapshot,
    items: Sequence[Item],
    pooling: Pooling = "mean",
    tokens: TokenSpan = "all",
    batch_size: int = EVAL_BATCH_SIZE,
    fisher: bool = True,
    progress: bool = True,
    subspace_k: int = SUBSPACE_K,
    fisher_components: bool = False,
    labels: tuple[str, str] = ("reference", "updated"),
) -> Comparison:
    """[`compare`][unlearn_lens.diagnostics.compare.compare] for two weight snapshots of one model
    held in memory once: each snapshot is restored into `subject` in turn.

    The subject is left holding `updated_snapshot`'s weights; `labels` name the two snapshots.
    """
    _check_settings(items, pooling, tokens, batch_size)
    _check_enough_items(items, pooling)
    _check_snapshot(subject, reference_snapshot, "the reference")
    _check_snapshot(subject, updated_snapshot, "the updated")
    take_pass = partial(
        model_pass,
        pooling=pooling,
        tokens=tokens,
        batch_size=batch_size,
        fisher=fisher,
        progress=progress,
    )
    subject.restore(reference_snapshot)
    reference_pass = take_pass(subject, items, label=labels[0])
    subject.restore(updated_snapshot)
    updated_pass = take_pass(subject, items, label=labels[1])
    return compare_passes(
        reference_pass, updated_pass, subspace_k, fisher_components=fisher_components
    )
