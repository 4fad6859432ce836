"""What the original (frozen) model computes on the training items, cached before training starts.

NPO and the KL term compare the model being trained with the original one; RMU compares
activations. Instead of keeping a second model (a deep copy doubles memory) or swapping weights
in and out every step (two full weight copies per step), the original model's outputs are
computed once, with `torch.no_grad()`, for exactly the items the batch schedule will use, and
kept on CPU per item, cropped to the item's real tokens:

- `forget_logprob`: one float per forget item;
- `retain_log_probs`: `[tokens, vocab]` float32 per retain item, the dominant cost:
  `4 · vocab` bytes per retain token (SmolLM2: 197 KB per token, 3 MB for a 15-token item);
- `retain_residual`: `[tokens, d_model]` per retain item.

Batches are right-padded, so an item's real tokens sit at positions `0 .. n − 1` in every
batch it joins; re-assembling a batch pads the cached rows with zeros.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from unlearn_lens.data.items import Item
from unlearn_lens.evaluation import EVAL_BATCH_SIZE
from unlearn_lens.metrics.token import sequence_logprob
from unlearn_lens.unlearn.objectives import Objective, ObjectiveBatch, ObjectiveContext


@dataclass
class ReferenceCache:
    """Original-model outputs per item index (into the forget or retain list)."""

    forget_logprob: dict[int, Tensor] = field(default_factory=dict)
    retain_log_probs: dict[int, Tensor] = field(default_factory=dict)
    retain_residual: dict[int, Tensor] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        ctx: ObjectiveContext,
        spec: Objective,
        forget_items: Sequence[Item],
        forget_used: Iterable[int],
        retain_items: Sequence[Item],
        retain_used: Iterable[int],
    ) -> ReferenceCache:
        """Run the current (original) model once over the items the schedule uses."""
        cache = cls()
        wanted = spec.references
        if "forget_logprob" in wanted:
            for index, logits, batch, _ in _passes(ctx, forget_items, forget_used, residual=False):
                cache.forget_logprob.update(
                    zip(index, sequence_logprob(logits, batch.labels).cpu(), strict=True)
                )
        if wanted & {"retain_log_probs", "retain_residual"}:
            residual = "retain_residual" in wanted
            for index, logits, batch, residuals in _passes(
                ctx, retain_items, retain_used, residual=residual
            ):
                lengths = batch.attention_mask.sum(dim=1).tolist()
                if "retain_log_probs" in wanted:
                    log_probs = torch.log_softmax(logits, dim=-1).cpu()
                    cache.retain_log_probs.update(
                        (i, log_probs[row, :n].clone())
                        for row, (i, n) in enumerate(zip(index, lengths, strict=True))
                    )
                if residual:
                    stream = residuals[ctx.rmu_stream].cpu()
                    cache.retain_residual.update(
                        (i, stream[row, :n].clone())
                        for row, (i, n) in enumerate(zip(index, lengths, strict=True))
                    )
        return cache

    def attach(
        self, batch_items: ObjectiveBatch, indices: Sequence[int], kind: str
    ) -> ObjectiveBatch:
        """Fill the batch's reference fields for its items (`kind` is `"forget"` or `"retain"`)."""
        batch = batch_items.batch
        device = batch.input_ids.device
        if kind == "forget" and self.forget_logprob:
            batch_items.reference_logprob = torch.stack(
                [self.forget_logprob[i] for i in indices]
            ).to(device)
        if kind == "retain" and self.retain_log_probs:
            batch_items.reference_log_probs = _padded(
                [self.retain_log_probs[i] for i in indices], batch.input_ids.shape[1]
            ).to(device)
        if kind == "retain" and self.retain_residual:
            batch_items.reference_residual = _padded(
                [self.retain_residual[i] for i in indices], batch.input_ids.shape[1]
            ).to(device)
        return batch_items


def _passes(ctx: ObjectiveContext, items: Sequence[Item], used: Iterable[int], residual: bool):
    """No-grad forward passes over the used items: `(indices, logits, batch, residuals)` per batch."""
    order = sorted(set(used))
    layers = [ctx.rmu_stream] if residual else None
    with torch.no_grad():
        for start in range(0, len(order), EVAL_BATCH_SIZE):
            index = order[start : start + EVAL_BATCH_SIZE]
            batch = ctx.subject.encode([items[i] for i in index])
            output = ctx.subject.run(batch, residual_layers=layers)
            yield index, output.logits, batch, output.residuals


def _padded(rows: list[Tensor], width: int) -> Tensor:
    """Stack `[n_i, ...]` rows into `[len(rows), width, ...]`, zeros after each row's end."""
    out = rows[0].new_zeros((len(rows), width, *rows[0].shape[1:]))
    for row, tensor in enumerate(rows):
        out[row, : tensor.shape[0]] = tensor
    return out
