"""Token metrics of a subject on a list of items, batch by batch (no logits kept)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unlearn_lens.data.items import Item
from unlearn_lens.metrics.token import TokenMetrics, TokenMetricsAccumulator, per_sequence_correct
from unlearn_lens.models.subject import Subject

EVAL_BATCH_SIZE = 16
"""Items per forward pass when only measuring: large enough to amortise overhead on CPU."""


def evaluate(
    subject: Subject, items: Sequence[Item], batch_size: int = EVAL_BATCH_SIZE
) -> TokenMetrics:
    """Accuracy, NLL, perplexity and exact match of `subject` on the target tokens of `items`."""
    accumulator = TokenMetricsAccumulator()
    with torch.no_grad():
        for batch in subject.batches(items, batch_size):
            accumulator.update(subject.run(batch).logits, batch.labels)
    return accumulator.result()


def items_correct(
    subject: Subject, items: Sequence[Item], batch_size: int = EVAL_BATCH_SIZE
) -> list[bool]:
    """Per item: does greedy decoding reproduce its answer (every target token is the argmax)?"""
    correct: list[bool] = []
    with torch.no_grad():
        for batch in subject.batches(items, batch_size):
            correct.extend(
                bool(c) for c in per_sequence_correct(subject.run(batch).logits, batch.labels)
            )
    return correct
