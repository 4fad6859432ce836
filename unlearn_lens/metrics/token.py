"""Token-level losses and metrics of a causal language model's logits against labels.

Labels follow the transformers convention: `labels[b, t]` is the target of the logits at
position `t - 1` (the shift happens here), and `IGNORE_INDEX` (-100) marks positions that
are not targets (prompt, padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from unlearn_lens.data.batching import IGNORE_INDEX
from unlearn_lens.schema import Real


def _shifted(
    logits: Tensor, labels: Tensor
) -> tuple[
    Float[Tensor, "batch seq_1 vocab"], Int[Tensor, "batch seq_1"], Bool[Tensor, "batch seq_1"]
]:
    """Logits at positions `0..s-2`, their targets `labels[:, 1:]` and the target mask."""
    if logits.ndim != 3 or labels.ndim != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            "logits must be [batch, seq, vocab] and labels [batch, seq], got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    vocab = logits.shape[-1]
    if ((targets[mask] < 0) | (targets[mask] >= vocab)).any():
        raise ValueError(
            f"labels must be token ids in [0, {vocab}) or {IGNORE_INDEX} (not a target)"
        )
    return logits[:, :-1], targets, mask


def token_nll(
    logits: Float[Tensor, "batch seq vocab"], labels: Int[Tensor, "batch seq"]
) -> tuple[Float[Tensor, "batch seq_1"], Bool[Tensor, "batch seq_1"]]:
    """Per-token negative log-likelihood of the targets, in float64, for metrics.

    **Returns:** `(nll, mask)`, both `[batch, seq - 1]` and aligned with `labels[:, 1:]`;
    `mask` marks target tokens and `nll` is 0 elsewhere. Not differentiable; use
    [`target_loss`][unlearn_lens.metrics.target_loss] for training.
    """
    logits, targets, mask = _shifted(logits.detach(), labels)
    log_probs = torch.log_softmax(logits.to(torch.float64), dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, -picked, torch.zeros_like(picked)), mask


def target_loss(
    logits: Float[Tensor, "batch seq vocab"],
    labels: Int[Tensor, "batch seq"],
    reduction: Literal["mean_tokens", "mean_sequences", "sum_per_sequence"] = "mean_tokens",
) -> Float[Tensor, "*reduced"]:
    """Differentiable NLL of the target tokens, in the logits' dtype, for training.

    **Arguments:**

    - `reduction`: `"mean_tokens"`, the mean over all target tokens of the batch (a scalar);
      `"mean_sequences"`, the mean over sequences of each one's mean token NLL (a scalar;
      sequences without targets are left out); `"sum_per_sequence"`, each sequence's summed
      NLL (`[batch]`, 0 for a sequence without targets).
    """
    logits, targets, mask = _shifted(logits, labels)
    nll = F.cross_entropy(
        logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    per_sequence = nll.sum(dim=1)
    if reduction == "sum_per_sequence":
        return per_sequence
    tokens_per_sequence = mask.sum(dim=1)
    if not tokens_per_sequence.any():
        raise ValueError(f"no target tokens in the batch (every label is {IGNORE_INDEX})")
    if reduction == "mean_tokens":
        return per_sequence.sum() / tokens_per_sequence.sum()
    if reduction == "mean_sequences":
        has_targets = tokens_per_sequence > 0
        return (per_sequence[has_targets] / tokens_per_sequence[has_targets]).mean()
    raise ValueError(
        f"unknown reduction {reduction!r}; use 'mean_tokens', 'mean_sequences' or 'sum_per_sequence'"
    )


def sequence_logprob(
    logits: Float[Tensor, "batch seq vocab"], labels: Int[Tensor, "batch seq"]
) -> Float[Tensor, " batch"]:
    """Differentiable log-likelihood of each sequence's targets, `Σ_t log p(y_t | y_<t)`,
    in the logits' dtype (the sequence log-probability NPO compares with a reference)."""
    return -target_loss(logits, labels, reduction="sum_per_sequence")


def _argmax_hits(
    logits: Tensor, labels: Tensor
) -> tuple[Bool[Tensor, "batch seq_1"], Bool[Tensor, "batch seq_1"]]:
    """Whether each position's argmax is its target, and the target mask."""
    logits, targets, mask = _shifted(logits.detach(), labels)
    return logits.argmax(dim=-1) == targets, mask


def per_sequence_correct(
    logits: Float[Tensor, "batch seq vocab"], labels: Int[Tensor, "batch seq"]
) -> Bool[Tensor, " batch"]:
    """Whether every target token of each sequence is the argmax prediction.

    With teacher forcing, this is exactly whether greedy decoding from the prompt
    reproduces the targets (when they form one contiguous span): if every target is the
    argmax given the true prefix, each greedy step sees that same prefix. True for a
    sequence without targets.
    """
    hits, mask = _argmax_hits(logits, labels)
    return (hits | ~mask).all(dim=1)


@dataclass(frozen=True)
class TokenMetrics:
    """Teacher-forced metrics over the target tokens of a dataset.

    **Fields:**

    - `accuracy`: fraction of target tokens whose argmax prediction is the target.
    - `nll`: mean negative log-likelihood per target token (nats); `perplexity = exp(nll)`
      (inf if that overflows).
    - `exact_match`: fraction of sequences whose every target token is the argmax, i.e.
      greedy decoding reproduces the answer (see
      [`per_sequence_correct`][unlearn_lens.metrics.per_sequence_correct]).
    - `n_tokens`: number of target tokens; `n_sequences`: sequences with at least one target
      (those without any are left out of `exact_match`).
    """

    accuracy: Real
    nll: Real
    perplexity: Real
    exact_match: Real
    n_tokens: int
    n_sequences: int


@dataclass
class ItemOutcomes:
    """Per-item outcomes of one evaluation, in item order: every token metric can be recomputed
    from them, and resampled over items (see [`Bootstrap`][unlearn_lens.metrics.bootstrap.Bootstrap]).

    **Fields** (one entry per item):

    - `n_tokens`: the item's target (content answer) tokens.
    - `n_correct`: of those, how many are the argmax prediction.
    - `exact`: 1 when every target token is the argmax, else 0 (1 for an item without targets,
      which [`metrics`][unlearn_lens.metrics.ItemOutcomes.metrics] leaves out of exact match).
    - `nll_sum`: the item's summed target-token NLL (nats, float64, `math.fsum`).
    """

    n_tokens: list[int]
    n_correct: list[int]
    exact: list[int]
    nll_sum: list[float]

    def __len__(self) -> int:
        return len(self.n_tokens)

    def metrics(self) -> TokenMetrics:
        """The token metrics of all items together: accuracy and exact match are exact ratios
        of the counts; the NLL is the exactly rounded sum of the items' sums per token."""
        n_tokens = sum(self.n_tokens)
        if n_tokens == 0:
            raise ValueError(
                f"no target tokens seen (every label was {IGNORE_INDEX}, or no batch was added)"
            )
        nll = math.fsum(self.nll_sum) / n_tokens
        try:
            perplexity = math.exp(nll)
        except OverflowError:
            perplexity = math.inf
        with_targets = [exact for exact, n in zip(self.exact, self.n_tokens, strict=True) if n > 0]
        return TokenMetrics(
            accuracy=sum(self.n_correct) / n_tokens,
            nll=nll,
            perplexity=perplexity,
            exact_match=sum(with_targets) / len(with_targets),
            n_tokens=n_tokens,
            n_sequences=len(with_targets),
        )


class TokenMetricsAccumulator:
    """Token metrics over a dataset processed batch by batch, without keeping the logits.

    Call `update` once per batch, then `result` (or `outcomes`, per item); the result equals
    [`token_metrics`][unlearn_lens.metrics.token_metrics] on all batches at once (the NLL up
    to float64 rounding: each item's sum and the sum of those are exactly rounded).
    """

    def __init__(self) -> None:
        self._outcomes = ItemOutcomes([], [], [], [])

    def update(
        self, logits: Float[Tensor, "batch seq vocab"], labels: Int[Tensor, "batch seq"]
    ) -> None:
        """Add one batch (one item per row)."""
        nll, mask = token_nll(logits, labels)
        hits, _ = _argmax_hits(logits, labels)
        outcomes = self._outcomes
        outcomes.n_tokens.extend(mask.sum(dim=1).tolist())
        outcomes.n_correct.extend((hits & mask).sum(dim=1).tolist())
        outcomes.exact.extend((hits | ~mask).all(dim=1).int().tolist())
        outcomes.nll_sum.extend(math.fsum(row) for row in nll.tolist())

    def outcomes(self) -> ItemOutcomes:
        """Per-item outcomes of every batch added so far (a copy)."""
        o = self._outcomes
        return ItemOutcomes(list(o.n_tokens), list(o.n_correct), list(o.exact), list(o.nll_sum))

    def result(self) -> TokenMetrics:
        """The metrics of every batch added so far."""
        return self._outcomes.metrics()


def token_metrics(
    logits: Float[Tensor, "batch seq vocab"], labels: Int[Tensor, "batch seq"]
) -> TokenMetrics:
    """Accuracy, NLL, perplexity and greedy exact match over the target tokens of one batch.

    For a dataset too large for one batch, use
    [`TokenMetricsAccumulator`][unlearn_lens.metrics.TokenMetricsAccumulator].
    """
    accumulator = TokenMetricsAccumulator()
    accumulator.update(logits, labels)
    return accumulator.result()
