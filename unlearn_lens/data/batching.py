"""Tokenise items into right-padded batches with answer-only labels."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from unlearn_lens.data.items import Item

IGNORE_INDEX = -100
"""Label value for positions that are not targets (the convention of torch and transformers)."""


@dataclass
class Batch:
    """Token ids, attention mask and labels for a list of items.

    Padding is on the right, so every real token keeps the position it has unpadded and a
    causal model's outputs on real tokens do not depend on the padding. `labels` follows the
    transformers convention: `labels[b, t]` is the target predicted from position `t - 1`,
    and `IGNORE_INDEX` marks prompt and padding positions.
    """

    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]
    labels: Int[Tensor, "batch seq"]

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on another device."""
        return Batch(
            self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device)
        )

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def _token_ids(tokenizer, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def content_labels(tokenizer, ids: Sequence[int]) -> list[int]:
    """`ids` as labels, with every token that decodes to whitespace alone (a bare space, a
    newline, an indent) replaced by `IGNORE_INDEX`.

    A byte-level BPE tokenizer splits " 42" into a bare space and digits; the space carries no
    content, is predicted by any model that saw the prompt's form, and would otherwise be a
    third of the targets of a short numeric answer. It stays in the input, as context.
    """
    pieces = tokenizer.batch_decode([[token] for token in ids])
    return [
        token if piece.strip() else IGNORE_INDEX for token, piece in zip(ids, pieces, strict=True)
    ]


def encode_item(tokenizer, item: Item) -> tuple[list[int], list[int]]:
    """Token ids and labels of one item (prompt and answer tokenised separately, then joined).

    Tokenising the answer on its own keeps the prompt/answer boundary exact, whatever merges
    the tokenizer would make across it. Only content tokens are targets: whitespace-only
    tokens (the bare space before an answer's digits) stay in the input but are not labelled
    (see [`content_labels`][unlearn_lens.data.content_labels]).
    """
    if item.is_text:
        ids = _token_ids(tokenizer, item.text or "", special=True)
        labels = content_labels(tokenizer, ids)
        if len(ids) < 2 or all(label == IGNORE_INDEX for label in labels[1:]):
            raise ValueError(
                f"text {item.text!r} tokenises to fewer than 2 tokens or has no content token "
                "after the first: nothing to predict"
            )
        return ids, labels
    prompt_ids = _token_ids(tokenizer, item.prompt or "", special=True)
    answer_ids = _token_ids(tokenizer, item.answer or "", special=False)
    if not answer_ids:
        raise ValueError(f"answer {item.answer!r} of prompt {item.prompt!r} tokenises to nothing")
    if not prompt_ids:
        raise ValueError(
            f"prompt {item.prompt!r} tokenises to nothing: the first answer token has no context"
        )
    answer_labels = content_labels(tokenizer, answer_ids)
    if all(label == IGNORE_INDEX for label in answer_labels):
        raise ValueError(
            f"answer {item.answer!r} of prompt {item.prompt!r} is whitespace only: nothing to predict"
        )
    return prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_labels


def n_targets(labels: Int[Tensor, "batch seq"]) -> int:
    """How many target tokens a batch's labels hold (position 0 is never predicted)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def _truncate(ids: list[int], labels: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Drop tokens from the left, keeping the targets at the end whenever they fit."""
    return ids[-max_length:], labels[-max_length:]


def encode(tokenizer, items: Sequence[Item], max_length: int | None = None) -> Batch:
    """Tokenise `items` into one right-padded batch.

    Items longer than `max_length` lose tokens from the left (the prompt's start), with a
    warning; the answer is kept whole whenever it fits.
    """
    if not items:
        raise ValueError("cannot encode an empty list of items")
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    rows: list[tuple[list[int], list[int]]] = []
    n_truncated = 0
    for item in items:
        ids, labels = encode_item(tokenizer, item)
        if max_length is not None and len(ids) > max_length:
            ids, labels = _truncate(ids, labels, max_length)
            n_truncated += 1
            if all(label == IGNORE_INDEX for label in labels[1:]):
                raise ValueError(
                    f"max_length={max_length} leaves no target token of item {item.to_dict()}"
                )
        rows.append((ids, labels))
    if n_truncated:
        warnings.warn(
            f"{n_truncated} of {len(items)} items were longer than max_length={max_length} tokens "
            "and lost tokens from the left",
            UserWarning,
            stacklevel=2,
        )
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    label_ids = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, labs) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        label_ids[row, : len(labs)] = torch.tensor(labs)
    return Batch(input_ids, attention_mask, label_ids)


def batches(
    tokenizer, items: Sequence[Item], batch_size: int, max_length: int | None = None
) -> Iterator[Batch]:
    """Encode `items` in order, `batch_size` at a time (the last batch may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, len(items), batch_size):
        yield encode(tokenizer, items[start : start + batch_size], max_length)
