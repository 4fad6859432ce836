"""Residual-stream activations of every layer, pooled to one row per sample as they are collected.

One forward pass per batch collects every residual-stream position asked for; each batch is
pooled at once, so memory holds `[n_samples, d_model]` per layer, never `[n, seq, d_model]`.

"Real tokens" are the positions with `attention_mask == 1` (not padding). Of these, `tokens`
selects which ones a sample is made of:

- `"all"`: every real token;
- `"answer"`: the target tokens (`labels != IGNORE_INDEX`), i.e. the answer of a
  prompt/answer item, every token after the first of a text item;
- `"prompt"`: the real tokens that are not targets (the prompt; the first token of a text item).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from unlearn_lens.data.batching import IGNORE_INDEX, Batch
from unlearn_lens.data.items import Item
from unlearn_lens.evaluation import EVAL_BATCH_SIZE
from unlearn_lens.models.subject import Subject

Pooling = Literal["mean", "last", "tokens"]
"""`"mean"`: masked mean over the selected tokens of a sequence; `"last"`: its last selected
token; `"tokens"`: every selected token is a sample of its own."""

TokenSpan = Literal["all", "prompt", "answer"]
"""Which real tokens of a sequence are pooled (see the module description)."""

POOLINGS: tuple[str, ...] = ("mean", "last", "tokens")
"""Every accepted `pooling` value (the choices of the `--pooling` flag)."""

TOKEN_SPANS: tuple[str, ...] = ("all", "prompt", "answer")
"""Every accepted `tokens` value (the choices of the `--tokens` flag)."""


def context_length(subject: Subject) -> int | None:
    """The longest input the model takes (its position-embedding size), if its config says."""
    config = subject.model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def token_mask(batch: Batch, tokens: TokenSpan = "all") -> Bool[Tensor, "batch seq"]:
    """Which positions of `batch` make up its samples (see the module description)."""
    real = batch.attention_mask.bool()
    if tokens == "all":
        return real
    targets = batch.labels != IGNORE_INDEX
    targets[:, 0] = False  # position 0 is never predicted, whatever its label says
    if tokens == "answer":
        return real & targets
    if tokens == "prompt":
        return real & ~targets
    raise ValueError(f"unknown token span {tokens!r}; choose one of {', '.join(TOKEN_SPANS)}")


def pool(
    residual: Float[Tensor, "batch seq d_model"], mask: Bool[Tensor, "batch seq"], pooling: Pooling
) -> Float[Tensor, "n d_model"]:
    """Pool one batch's residual stream over the tokens in `mask` (float64 arithmetic, float32 CPU result)."""
    residual = residual.detach()
    mask = mask.to(residual.device)
    if pooling == "tokens":
        pooled = residual[mask].to(torch.float64)
    elif pooling == "mean":
        weights = mask.to(torch.float64).unsqueeze(-1)
        pooled = (residual.to(torch.float64) * weights).sum(dim=1) / weights.sum(dim=1)
    elif pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = torch.where(mask, positions, -1).max(dim=1).values
        pooled = residual[torch.arange(mask.shape[0], device=mask.device), last].to(torch.float64)
    else:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    return pooled.to("cpu", torch.float32)


class ActivationCollector:
    """Pooled activations of several residual-stream positions, accumulated batch by batch."""

    def __init__(
        self, layers: Iterable[int], pooling: Pooling = "mean", tokens: TokenSpan = "all"
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        if tokens not in TOKEN_SPANS:
            raise ValueError(
                f"unknown token span {tokens!r}; choose one of {', '.join(TOKEN_SPANS)}"
            )
        self.layers = sorted(set(layers))
        self.pooling: Pooling = pooling
        self.tokens: TokenSpan = tokens
        self._rows: dict[int, list[Tensor]] = {layer: [] for layer in self.layers}

    def add(self, batch: Batch, residuals: dict[int, Tensor]) -> None:
        """Pool one batch's residual streams (from `subject.run(batch, residual_layers=self.layers)`)."""
        mask = token_mask(
            batch, self.tokens
        )  # never empty: position 0 is a prompt token, every item has a target
        for layer in self.layers:
            self._rows[layer].append(pool(residuals[layer], mask, self.pooling))

    def result(self) -> dict[int, Float[Tensor, "n d_model"]]:
        """Pooled activations per residual-stream index, rows in item (then token) order."""
        return {layer: torch.cat(rows) for layer, rows in self._rows.items()}


def collect_activations(
    subject: Subject,
    items: Sequence[Item],
    pooling: Pooling = "mean",
    batch_size: int = EVAL_BATCH_SIZE,
    layers: Iterable[int] | None = None,
    tokens: TokenSpan = "all",
) -> dict[int, Float[Tensor, "n d_model"]]:
    """Pooled residual-stream activations of `items`, one forward pass per batch for all layers.

    **Arguments:**

    - `pooling`: `"mean"` (masked mean over the selected tokens), `"last"` (the last selected
      token) or `"tokens"` (every selected token is a sample).
    - `layers`: residual-stream indices (0 = after the embedding, `j` = after block `j - 1`);
      `None` takes all `subject.n_streams`.
    - `tokens`: `"all"`, `"prompt"` or `"answer"` (see the module description).

    Inputs longer than the model's context lose tokens from the left, with a warning.

    **Returns:** `{stream index: float32 CPU tensor [n, d_model]}` with `n = len(items)`, or the
    number of selected tokens for `pooling="tokens"`.
    """
    if not items:
        raise ValueError("no items to collect activations from")
    collector = ActivationCollector(
        range(subject.n_streams) if layers is None else layers, pooling, tokens
    )
    with torch.no_grad():
        for batch in subject.batches(items, batch_size, max_length=context_length(subject)):
            collector.add(batch, subject.run(batch, residual_layers=collector.layers).residuals)
    return collector.result()
