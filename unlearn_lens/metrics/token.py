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

from unlearn_lens.atomic import json_float
from unlearn_lens.data.batching import IGNORE_INDEX


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

    accuracy: float
    nll: float
    perplexity: float
    exact_match: float
    n_tokens: int
    n_sequences: int

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready fields."""
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: dict[str, float | int | None]) -> TokenMetrics:
        """Inverse of `to_dict`; a null (how JSON stores an infinite perplexity) reads back as NaN."""
        floats = {
            name: json_float(data[name])
            for name in ("accuracy", "nll", "perplexity", "exact_match")
        }
        # Left as it is: the pydantic migration replaces from_dict (counts are never null here).
        return cls(**floats, n_tokens=int(data["n_tokens"]), n_sequences=int(data["n_sequences"]))  # type: ignore[arg-type]


class TokenMetricsAccumulator:
    """Token metrics over a dataset processed batch by batch, without keeping the logits.

    Call `update` once per batch, then `result`; the result equals
    [`token_metrics`][unlearn_lens.metrics.token_metrics] on all batches at once (the NLL up
    to float64 rounding: each batch's sum is exact, the running sum is not).
    """

    def __init__(self) -> None:
        self._n_tokens = 0
        self._n_correct = 0
        self._nll_sum = 0.0
        self._n_sequences = 0
        self._n_exact = 0

    def update(
        self, logits: Float[Tensor, "batch seq vocab"], labels: Int[Tensor, "batch seq"]
    ) -> None:
        """Add one batch."""
        nll, mask = token_nll(logits, labels)
        hits, _ = _argmax_hits(logits, labels)
        has_targets = mask.any(dim=1)
        self._n_tokens += int(mask.sum())
        self._n_correct += int((hits & mask).sum())
        self._nll_sum += math.fsum(nll[mask].tolist())
        self._n_sequences += int(has_targets.sum())
        self._n_exact += int(((hits | ~mask).all(dim=1) & has_targets).sum())

    def result(self) -> TokenMetrics:
        """The metrics of every batch added so far."""
        if self._n_tokens == 0:
            raise ValueError(
                f"no target tokens seen (every label was {IGNORE_INDEX}, or no batch was added)"
            )
        nll = self._nll_sum / self._n_tokens
        try:
            perplexity = math.exp(nll)
        except OverflowError:
            perplexity = math.inf
        return TokenMetrics(
            accuracy=self._n_correct / self._n_tokens,
            nll=nll,
            perplexity=perplexity,
            exact_match=self._n_exact / self._n_sequences,
            n_tokens=self._n_tokens,
            n_sequences=self._n_sequences,
        )


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
