"""Token metrics of a subject on a list of items, batch by batch (no logits kept)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unlearn_lens.data.items import Item
from unlearn_lens.metrics.token import ItemOutcomes, TokenMetrics, TokenMetricsAccumulator
from unlearn_lens.models.subject import Subject

EVAL_BATCH_SIZE = 16
"""Items per forward pass when only measuring: large enough to amortise overhead on CPU."""


def evaluate_outcomes(
    subject: Subject, items: Sequence[Item], batch_size: int = EVAL_BATCH_SIZE
) -> ItemOutcomes:
    """Per-item outcomes of `subject` on `items` (content answer tokens, correct tokens, exact
    match, summed NLL), in one pass; `.metrics()` gives what [`evaluate`][unlearn_lens.evaluate]
    returns."""
    accumulator = TokenMetricsAccumulator()
    with torch.no_grad():
        for batch in subject.batches(items, batch_size):
            accumulator.update(subject.run(batch).logits, batch.labels)
    return accumulator.outcomes()


def evaluate(
    subject: Subject, items: Sequence[Item], batch_size: int = EVAL_BATCH_SIZE
) -> TokenMetrics:
    """Accuracy, NLL, perplexity and exact match of `subject` on the target tokens of `items`."""
    return evaluate_outcomes(subject, items, batch_size).metrics()


def items_correct(
    subject: Subject, items: Sequence[Item], batch_size: int = EVAL_BATCH_SIZE
) -> list[bool]:
    """Per item: is every content token of its answer the argmax (greedy decoding reproduces the
    answer, given the whitespace-only tokens, which are not targets)?"""
    return [bool(exact) for exact in evaluate_outcomes(subject, items, batch_size).exact]
