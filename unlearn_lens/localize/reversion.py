"""Weight-reversion patching: the causal test of where forgetting lives.

Copy the original weights of one layer, the last k layers, one component or a few heads
back into the unlearned model, measure forget and retain performance, and put the unlearned
weights back. A part whose reversion brings the forget-set performance back holds the
forgetting. The restoration effect of a patch on a metric m is

    (m_patched − m_unlearned) / (m_original − m_unlearned)

(0: no effect, 1: fully restored), for token accuracy and for NLL. The NLL effect is
smoother (accuracy moves in steps of one token), so the forgetting depth uses it by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import computed_field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from unlearn_lens.data.items import Item
from unlearn_lens.evaluation import EVAL_BATCH_SIZE
from unlearn_lens.localize.deltas import DeltaReport, kv_head_of, weight_deltas
from unlearn_lens.metrics.token import TokenMetrics, TokenMetricsAccumulator
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.schema import Real

RESTORE_FRACTION = 0.8
"""Share of the forget effect a reversion must bring back to count as restoring the knowledge:
most of it, with room for the noise of a few dozen items."""

DEPTH_METRIC: Literal["nll", "accuracy"] = "nll"
"""Metric of the forgetting depth: NLL moves smoothly, accuracy in steps of one token."""

MIN_FORGET_CHANGE = 1e-6
"""Smallest |original − unlearned| forget metric that an effect is divided by; below it the
two models score the same and every ratio would be rounding noise (the effect is NaN)."""

Metric = Literal["nll", "accuracy"]


@dataclass(frozen=True)
class Patch:
    """Weights to copy from the original snapshot: whole weights (`keys`), head slices
    (`heads`: `(key, head indices)` pairs, heads as the key's own spec counts them) and,
    with `output_head`, the output head (final norm and unembedding).

    The output head is reverted apart from the input embedding even when the two share one
    tied matrix (see [`Subject.head_from`][unlearn_lens.models.subject.Subject.head_from]); reverting
    `embed.weight` without `output_head` reverts only the matrix's input use.
    """

    label: str
    keys: tuple[str, ...] = ()
    heads: tuple[tuple[str, tuple[int, ...]], ...] = ()
    output_head: bool = False

    @property
    def touched(self) -> list[str]:
        """Every weight key the patch writes into (what must be restored afterwards)."""
        return [*self.keys, *(key for key, _ in self.heads)]


HEAD_LABEL = "head"
"""Label of the output-head patch (final norm and unembedding)."""
INPUT_EMBEDDING_LABEL = "embed (input)"
"""Label of the input-embedding patch (token and position embeddings, input use only)."""


def layer_patch(subject: Subject, layer: int) -> Patch:
    """Revert every weight of block `layer`."""
    return Patch(f"layer {layer}", keys=tuple(subject.keys(layers=[layer])))


def input_embedding_patch(subject: Subject) -> Patch:
    """Revert the input embeddings alone (token and, where there is one, position embedding);
    a tied unembedding keeps its unlearned weights."""
    return Patch(INPUT_EMBEDDING_LABEL, keys=tuple(subject.keys(components=["embed", "pos_embed"])))


def last_layers_patch(subject: Subject, k: int) -> Patch:
    """Revert the top of the network: the output head and the last `k` blocks (`k = 0`: the
    head alone). The forgetting depth is measured on these patches."""
    n_layers = subject.shape.n_layers
    if not 0 <= k <= n_layers:
        raise ValueError(f"k must lie between 0 and the number of blocks ({n_layers}), got {k}")
    label = HEAD_LABEL if k == 0 else f"{HEAD_LABEL} + last {k}"
    return Patch(
        label, keys=tuple(subject.keys(layers=range(n_layers - k, n_layers))), output_head=True
    )


def component_patch(subject: Subject, component: str) -> Patch:
    """Revert one component (e.g. `q`, `mlp_down`, `norm_attn`, `embed`) in every layer."""
    return Patch(component, keys=tuple(subject.keys(components=[component])))


def full_patch(subject: Subject) -> Patch:
    """Revert everything: the original model."""
    return Patch("original", keys=tuple(subject.keys()), output_head=True)


def query_heads_patch(
    subject: Subject, heads: Iterable[tuple[int, int]], label: str | None = None
) -> Patch:
    """Revert whole attention heads, given as `(layer, query head)` pairs.

    A query head's q and o slices are reverted with the key-value head it reads (k and v,
    weights and biases); under grouped-query attention that KV head is shared with the other
    query heads of its group, so they see the original keys and values too.
    """
    shape = subject.shape
    wanted: dict[str, set[int]] = {}
    pairs = sorted(set(heads))
    for layer, head in pairs:
        kv = kv_head_of(head, shape.n_heads, shape.n_kv_heads)
        for component, index in (("q", head), ("o", head), ("k", kv), ("v", kv)):
            for key in subject.keys(layers=[layer], components=[component]):
                if subject.spec(key).head_axis is not None:
                    wanted.setdefault(key, set()).add(index)
    name = label or ", ".join(f"L{layer}H{head}" for layer, head in pairs)
    return Patch(
        name, heads=tuple((key, tuple(sorted(indices))) for key, indices in wanted.items())
    )


@dataclass(frozen=True)
class ReversionResult:
    """Forget and retain metrics of one patched model, and its restoration effects
    (`retain` is None when the reverter was given no retain set)."""

    label: str
    forget: TokenMetrics
    retain: TokenMetrics | None
    effect_accuracy: Real
    effect_nll: Real

    def effect(self, metric: Metric) -> float:
        """The restoration effect on `"nll"` or `"accuracy"`."""
        return self.effect_nll if metric == "nll" else self.effect_accuracy


def restoration_effect(patched: float, unlearned: float, original: float) -> float:
    """`(patched − unlearned) / (original − unlearned)`; NaN when unlearning left the metric unchanged."""
    change = original - unlearned
    return (patched - unlearned) / change if abs(change) >= MIN_FORGET_CHANGE else math.nan


class Reverter:
    """Measures patched copies of an unlearned model on forget and retain items.

    The items are encoded once, forget and retain together; every measurement is one pass
    per batch with the patch applied, after which only the touched weights are put back from
    the unlearned snapshot. Measurements of identical patches are cached.

    **Arguments:**

    - `subject`: holds the unlearned weights.
    - `original`: snapshot of the model before unlearning.
    - `forget_set`, `retain_set`: the items to score (the retain set may be empty when only
      the forget effect matters, as for the forgetting depth).
    - `unlearned`: snapshot of the unlearned weights (taken from `subject` when omitted,
      written into it when given).
    """

    def __init__(
        self,
        subject: Subject,
        original: Snapshot,
        forget_set: Sequence[Item],
        retain_set: Sequence[Item] = (),
        *,
        unlearned: Snapshot | None = None,
        batch_size: int = EVAL_BATCH_SIZE,
    ) -> None:
        if not forget_set:
            raise ValueError("weight reversion needs a non-empty forget set")
        self.subject = subject
        self.original_snapshot = original
        if unlearned is None:
            unlearned = subject.snapshot()
        else:
            subject.restore(unlearned)  # measure exactly the weights every patch is undone to
        self.unlearned_snapshot = unlearned
        self._n_forget = len(forget_set)
        self._batches = list(subject.batches([*forget_set, *retain_set], batch_size))
        self._cache: dict[tuple, tuple[TokenMetrics, TokenMetrics | None]] = {}
        forget, retain = self._evaluate()
        self.unlearned = ReversionResult("unlearned", forget, retain, 0.0, 0.0)
        self._cache[((), (), False)] = (forget, retain)
        forget, retain = self._patched(full_patch(subject))
        self.original = ReversionResult(
            "original",
            forget,
            retain,
            restoration_effect(forget.accuracy, self.unlearned.forget.accuracy, forget.accuracy),
            restoration_effect(forget.nll, self.unlearned.forget.nll, forget.nll),
        )

    def measure(self, patch: Patch) -> ReversionResult:
        """Forget / retain metrics with `patch` applied, and its restoration effects."""
        forget, retain = self._patched(patch)
        return ReversionResult(
            patch.label,
            forget,
            retain,
            restoration_effect(
                forget.accuracy, self.unlearned.forget.accuracy, self.original.forget.accuracy
            ),
            restoration_effect(forget.nll, self.unlearned.forget.nll, self.original.forget.nll),
        )

    def measure_all(
        self, patches: Sequence[Patch], progress: bool = True, description: str = "weight reversion"
    ) -> list[ReversionResult]:
        """Measure each patch in turn, with a progress bar over them."""
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        results = []
        with Progress(*columns, transient=True, disable=not progress) as bar:
            task = bar.add_task(description, total=len(patches))
            for patch in patches:
                bar.update(task, description=f"{description}: {patch.label}")
                results.append(self.measure(patch))
                bar.advance(task)
        return results

    def _patched(self, patch: Patch) -> tuple[TokenMetrics, TokenMetrics | None]:
        signature = (tuple(sorted(patch.keys)), tuple(sorted(patch.heads)), patch.output_head)
        if signature not in self._cache:
            subject = self.subject
            with ExitStack() as stack:
                if patch.output_head:
                    stack.enter_context(subject.head_from(self.original_snapshot))
                elif subject.shape.tied_embeddings and "embed.weight" in patch.keys:
                    # Reverting the tied matrix's input use only: the output keeps the unlearned copy.
                    stack.enter_context(
                        subject.untied_output(self.unlearned_snapshot["embed.weight"])
                    )
                subject.restore(self.original_snapshot, patch.keys)
                for key, heads in patch.heads:
                    subject.restore_heads(self.original_snapshot, key, heads)
                try:
                    self._cache[signature] = self._evaluate()
                finally:
                    subject.restore(self.unlearned_snapshot, patch.touched)
        return self._cache[signature]

    def _evaluate(self) -> tuple[TokenMetrics, TokenMetrics | None]:
        """Forget and retain metrics of the current weights, one pass per stored batch."""
        forget, retain = TokenMetricsAccumulator(), TokenMetricsAccumulator()
        start = 0
        with torch.no_grad():
            for batch in self._batches:
                logits = self.subject.run(batch).logits
                is_forget = (
                    torch.arange(start, start + len(batch), device=logits.device) < self._n_forget
                )
                for accumulator, rows in ((forget, is_forget), (retain, ~is_forget)):
                    if rows.any():
                        accumulator.update(logits[rows], batch.labels[rows])
                start += len(batch)
        return forget.result(), retain.result() if start > self._n_forget else None


def default_head_counts(n_heads_total: int) -> list[int]:
    """1, 2, 4, … below the total number of query heads, then the total."""
    counts = []
    n = 1
    while n < n_heads_total:
        counts.append(n)
        n *= 2
    return [*counts, n_heads_total]


def forgetting_depth(
    last_k_effects: Sequence[float], restore_fraction: float = RESTORE_FRACTION
) -> int | None:
    """Smallest k whose top-of-network reversion (the output head and the last k blocks)
    restores at least `restore_fraction` of the forget effect (`last_k_effects[k]`,
    k = 0 … L), or None if no k does."""
    for k, effect in enumerate(last_k_effects):
        if effect >= restore_fraction:
            return k
    return None


def bisect_depth(
    effect: Callable[[int], float],
    n_layers: int,
    restore_fraction: float = RESTORE_FRACTION,
    guess: int | None = None,
) -> int | None:
    """The smallest k in 0 … `n_layers` with `effect(k) ≥ restore_fraction`, found by bisection
    (about log2(n_layers + 1) + 1 calls), or None when even `effect(n_layers)` falls short.

    With a `guess` (e.g. the depth an attribution predicts), `guess` and its neighbour are tried
    first: a right guess, or one off by one, takes two calls; a wrong one bisects the side it
    rules in. The answer always satisfies effect(k) ≥ `restore_fraction` > effect(k − 1) (for
    k > 0), so it equals [`forgetting_depth`][unlearn_lens.localize.reversion.forgetting_depth]
    of the full curve whenever the curve rises with k.
    """
    below, above = -1, n_layers
    if guess is not None:
        guess = min(max(guess, 0), n_layers)
        if effect(guess) >= restore_fraction:
            if guess == 0 or not effect(guess - 1) >= restore_fraction:
                return guess
            above = guess - 1
        else:
            if guess == n_layers:
                return None
            if effect(guess + 1) >= restore_fraction:
                return guess + 1
            below = guess + 1
            if below == n_layers:
                return None
    if above == n_layers and not effect(n_layers) >= restore_fraction:
        return None
    while above - below > 1:
        middle = (below + above) // 2
        if effect(middle) >= restore_fraction:
            above = middle
        else:
            below = middle
    return above


def search_forgetting_depth(
    reverter: Reverter,
    restore_fraction: float = RESTORE_FRACTION,
    metric: Metric = DEPTH_METRIC,
    guess: int | None = None,
) -> tuple[int | None, dict[int, float]]:
    """The forgetting depth from about log2(L + 1) + 1 top-of-network reversions instead of
    the sweep's L + 1.

    Returns the depth and the effects of the k it measured. Exact when reverting more of the
    last blocks brings back more (the last-k curves of the audits on SmolLM2 all rise with k);
    use [`reversion_sweep`][unlearn_lens.localize.reversion_sweep] for the whole curve.
    """
    measured: dict[int, float] = {}

    def effect(k: int) -> float:
        if k not in measured:
            measured[k] = reverter.measure(last_layers_patch(reverter.subject, k)).effect(metric)
        return measured[k]

    return bisect_depth(effect, reverter.subject.shape.n_layers, restore_fraction, guess), measured


@dataclass(frozen=True)
class DepthEvidence:
    """The forgetting depth and the exact head + last-k reversions it rests on.

    **Fields:** `last_k[k]`, the exact effect (on `depth_metric`) of reverting the output head
    and the last k blocks, for the k measured (a sweep measures every k, a bisection about
    log2(L + 1) + 1 of them); `input_embedding`, the exact effect of reverting the input
    embedding alone (None when not measured); `forgetting_depth`, as in
    [`forgetting_depth`][unlearn_lens.localize.forgetting_depth].
    """

    n_layers: int
    forgetting_depth: int | None
    last_k: dict[int, Real]
    input_embedding: float | None
    restore_fraction: Real = RESTORE_FRACTION
    depth_metric: Metric = DEPTH_METRIC


def measure_depth(
    reverter: Reverter,
    quoted: int,
    restore_fraction: float = RESTORE_FRACTION,
    metric: Metric = DEPTH_METRIC,
    guess: int | None = None,
) -> DepthEvidence:
    """The forgetting depth by bisection ([`search_forgetting_depth`][unlearn_lens.localize.search_forgetting_depth])
    and the other exact reversions a verdict quotes: head + last `quoted` blocks when the depth is
    larger (`quoted` is the shallow limit), the input embedding alone when no depth restores enough.
    `guess` starts the bisection (see [`bisect_depth`][unlearn_lens.localize.bisect_depth])."""
    depth, measured = search_forgetting_depth(reverter, restore_fraction, metric, guess)
    if depth is not None and depth > quoted:
        measured.setdefault(
            quoted, reverter.measure(last_layers_patch(reverter.subject, quoted)).effect(metric)
        )
    input_embedding = (
        reverter.measure(input_embedding_patch(reverter.subject)).effect(metric)
        if depth is None
        else None
    )
    return DepthEvidence(
        reverter.subject.shape.n_layers, depth, measured, input_embedding, restore_fraction, metric
    )


@dataclass(frozen=True)
class ReversionSweep:
    """Every reversion of a sweep, with the forgetting depth it implies.

    **Fields:** `layers[ℓ]` reverts block ℓ alone; `last_k[k]` the output head and the last
    k blocks (k = 0 … L; `last_k[0]` is the head alone); `input_embedding`, the input
    embeddings alone; `components`, one component in every layer (labelled by component);
    `top_heads[i]` the first `head_counts[i]` heads of `head_order` (`(layer, query head)` by
    decreasing delta norm, see [`query_heads_patch`][unlearn_lens.localize.query_heads_patch]);
    `original` and `unlearned`, the two unpatched models.
    """

    original: ReversionResult
    unlearned: ReversionResult
    layers: list[ReversionResult]
    last_k: list[ReversionResult]
    input_embedding: ReversionResult
    components: list[ReversionResult]
    top_heads: list[ReversionResult]
    head_order: list[tuple[int, int]]
    head_counts: list[int]
    restore_fraction: Real = RESTORE_FRACTION
    depth_metric: Metric = DEPTH_METRIC

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def head(self) -> ReversionResult:
        """The output head (final norm and unembedding) reverted alone."""
        return self.last_k[0]

    def place(self, name: str) -> ReversionResult:
        """A place outside the blocks reverted alone: `"head"` or `"input_embedding"`."""
        return self.head if name == "head" else self.input_embedding

    def layer_effects(self, metric: Metric | None = None) -> list[float]:
        """Restoration effect of reverting each block alone (default: the depth metric)."""
        return [result.effect(metric or self.depth_metric) for result in self.layers]

    def last_k_effects(self, metric: Metric | None = None) -> list[float]:
        """Restoration effect of reverting the output head and the last k blocks, k = 0 … L."""
        return [result.effect(metric or self.depth_metric) for result in self.last_k]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def forgetting_depth(self) -> int | None:
        """Smallest k whose head + last-k reversion restores `restore_fraction` of the forget
        effect (on `depth_metric`); 0 means the head alone; None if no k does."""
        return forgetting_depth(self.last_k_effects(), self.restore_fraction)

    def depth_evidence(self) -> DepthEvidence:
        """The sweep's depth with every head + last-k effect and the input embedding's."""
        effects = self.last_k_effects()
        return DepthEvidence(
            self.n_layers,
            self.forgetting_depth,
            dict(enumerate(effects)),
            self.input_embedding.effect(self.depth_metric),
            self.restore_fraction,
            self.depth_metric,
        )


def reversion_sweep(
    reverter: Reverter,
    deltas: DeltaReport | None = None,
    *,
    head_counts: Sequence[int] | None = None,
    restore_fraction: float = RESTORE_FRACTION,
    depth_metric: Metric = DEPTH_METRIC,
    progress: bool = True,
) -> ReversionSweep:
    """Revert each layer, the head with the last k layers (k = 0 … L), the input embedding,
    each component and the top-n heads.

    **Arguments:**

    - `reverter`: the unlearned subject with its original snapshot and items.
    - `deltas`: original → unlearned weight deltas, to rank heads (computed when omitted).
    - `head_counts`: how many top heads to revert together (default 1, 2, 4, … and all).
    """
    if depth_metric not in ("nll", "accuracy"):
        raise ValueError(f"depth_metric must be 'nll' or 'accuracy', got {depth_metric!r}")
    subject = reverter.subject
    if deltas is None:
        deltas = weight_deltas(
            subject.specs, reverter.original_snapshot, reverter.unlearned_snapshot
        )
    n_layers = subject.shape.n_layers
    norms = deltas.query_head_norms()
    head_order = sorted(
        ((layer, head) for layer in range(n_layers) for head in range(norms.shape[1])),
        key=lambda lh: -norms[lh],
    )
    counts = list(head_counts) if head_counts is not None else default_head_counts(len(head_order))
    if any(not 1 <= n <= len(head_order) for n in counts):
        raise ValueError(
            f"head_counts must lie between 1 and the number of query heads ({len(head_order)}), got {counts}"
        )
    components = list(dict.fromkeys(spec.component for spec in subject.specs))
    groups = {
        "layers": [layer_patch(subject, layer) for layer in range(n_layers)],
        "last_k": [last_layers_patch(subject, k) for k in range(n_layers + 1)],
        "input_embedding": [input_embedding_patch(subject)],
        "components": [component_patch(subject, component) for component in components],
        "top_heads": [
            query_heads_patch(subject, head_order[:n], label=f"top {n} heads") for n in counts
        ],
    }
    flat = [patch for patches in groups.values() for patch in patches]
    measured = iter(reverter.measure_all(flat, progress=progress))
    results = {name: [next(measured) for _ in patches] for name, patches in groups.items()}
    (input_embedding,) = results.pop("input_embedding")
    return ReversionSweep(
        original=reverter.original,
        unlearned=reverter.unlearned,
        input_embedding=input_embedding,
        head_order=head_order,
        head_counts=counts,
        restore_fraction=restore_fraction,
        depth_metric=depth_metric,
        **results,
    )
