"""Latent-answer readout (the logit lens): where in depth does the model still hold the answer?

For each item, the residual stream at the last prompt position is read at every stream
index (0 = after the embedding, j = after block j − 1) through the model's own final norm
and unembedding, giving the rank and probability of the first answer token there. Our
streams are taken before the final norm, so the last stream read this way reproduces the
model's logits. Comparing the original, unlearned and relearned weights shows whether the
answer is gone from the depths or only suppressed near the output.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from rich.progress import Progress
from torch import Tensor, nn

from unlearn_lens.atomic import json_float
from unlearn_lens.data.batching import IGNORE_INDEX, Batch
from unlearn_lens.data.items import Item
from unlearn_lens.evaluation import EVAL_BATCH_SIZE
from unlearn_lens.models.architecture import BRIDGE_WRAPPER
from unlearn_lens.models.subject import Snapshot, Subject

DIVERGENCE_RANK_FACTOR = 10.0
"""Two models diverge at a stream when their median answer ranks differ by more than this
factor: an order of magnitude, far above the rank jitter of nearly identical weights, far
below the thousands-deep ranks of a suppressed answer."""

@dataclass
class LensLogits:
    """Logit-lens logits of one batch at each item's last prompt position.

    `lens[b, j]` reads stream j through final norm and unembedding; `model[b]` is the
    model's own logits there; `answer[b]` the first answer token (the target predicted from
    that position).
    """

    lens: Float[Tensor, "batch stream vocab"]
    model: Float[Tensor, "batch vocab"]
    answer: Int[Tensor, " batch"]


def lens_logits(subject: Subject, batch: Batch) -> LensLogits:
    """Read every residual stream at the last prompt position, in one forward pass.

    The last prompt position is the one before the first target token (for a plain-text
    item: position 0, predicting its second token).
    """
    targets = batch.labels != IGNORE_INDEX
    targets[:, 0] = False  # labels[:, 0] is never predicted
    if not targets.any(dim=1).all():
        raise ValueError("every item needs at least one target token for the logit lens")
    first_target = targets.int().argmax(dim=1)
    rows = torch.arange(len(batch), device=first_target.device)
    position = first_target - 1
    norm, unembed = subject.readout_modules()
    with torch.no_grad():
        out = subject.run(batch, residual_layers=range(subject.n_streams))
        streams = torch.stack([out.residuals[j][rows, position] for j in range(subject.n_streams)], dim=1)
        lens = unembed(norm(streams))
    return LensLogits(lens=lens, model=out.logits[rows, position], answer=batch.labels[rows, first_target])


@dataclass(frozen=True)
class LensReadout:
    """Rank (1 = top) and probability of the first answer token, per item and stream index."""

    label: str
    ranks: list[list[int]]
    probabilities: list[list[float]]

    def median_rank(self) -> list[float]:
        """Median answer rank over items, per stream index."""
        return [float(statistics.median(column)) for column in zip(*self.ranks)]

    def mean_probability(self) -> list[float]:
        """Mean answer probability over items, per stream index."""
        return np.asarray(self.probabilities).mean(axis=0).tolist()

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "ranks": self.ranks, "probabilities": self.probabilities}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LensReadout:
        return cls(
            label=str(data["label"]),
            ranks=[[int(r) for r in row] for row in data["ranks"]],
            probabilities=[[json_float(p) for p in row] for row in data["probabilities"]],
        )


def read_answers(subject: Subject, items: Sequence[Item], label: str, batch_size: int = EVAL_BATCH_SIZE) -> LensReadout:
    """The logit-lens readout of the subject's current weights on `items`."""
    ranks: list[list[int]] = []
    probabilities: list[list[float]] = []
    for batch in subject.batches(items, batch_size):
        logits = lens_logits(subject, batch)
        lens = logits.lens.double()
        answer = logits.answer[:, None, None].expand(-1, lens.shape[1], 1)
        answer_logit = lens.gather(-1, answer)
        ranks.extend((1 + (lens > answer_logit).sum(dim=-1)).tolist())
        probabilities.extend(torch.softmax(lens, dim=-1).gather(-1, answer).squeeze(-1).tolist())
    return LensReadout(label=label, ranks=ranks, probabilities=probabilities)


def first_divergence(reference: Sequence[float], other: Sequence[float], factor: float = DIVERGENCE_RANK_FACTOR) -> int | None:
    """First stream index where two median-rank curves differ by more than `factor`, or None."""
    for index, (a, b) in enumerate(zip(reference, other)):
        if max(a, b) > factor * min(a, b):
            return index
    return None


@dataclass(frozen=True)
class LogitLens:
    """Logit-lens readouts of several weight sets on the same items.

    `first_divergence[label]` is the first stream index where `label`'s median answer rank
    differs from the `reference` readout's by more than `divergence_factor` (None: never).
    """

    readouts: dict[str, LensReadout]
    reference: str
    first_divergence: dict[str, int | None]
    divergence_factor: float = DIVERGENCE_RANK_FACTOR

    def to_dict(self) -> dict[str, Any]:
        return {
            "readouts": {label: readout.to_dict() for label, readout in self.readouts.items()},
            "reference": self.reference,
            "first_divergence": dict(self.first_divergence),
            "divergence_factor": self.divergence_factor,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogitLens:
        return cls(
            readouts={label: LensReadout.from_dict(d) for label, d in data["readouts"].items()},
            reference=str(data["reference"]),
            first_divergence={label: None if i is None else int(i) for label, i in data["first_divergence"].items()},
            divergence_factor=json_float(data["divergence_factor"]),
        )


def logit_lens(
    subject: Subject,
    items: Sequence[Item],
    snapshots: Mapping[str, Snapshot],
    *,
    reference: str = "original",
    divergence_factor: float = DIVERGENCE_RANK_FACTOR,
    batch_size: int = EVAL_BATCH_SIZE,
    progress: bool = True,
) -> LogitLens:
    """Logit-lens readout of each snapshot (e.g. original, unlearned, relearned) on `items`.

    Each snapshot's weights are swapped into `subject` in turn; the subject's own weights are
    put back afterwards.
    """
    if reference not in snapshots:
        raise ValueError(f"reference {reference!r} is not one of the snapshots ({', '.join(snapshots)})")
    current = subject.snapshot()
    readouts: dict[str, LensReadout] = {}
    try:
        with Progress(transient=True, disable=not progress) as bar:
            for label in bar.track(list(snapshots), description="logit lens"):
                subject.restore(snapshots[label])
                readouts[label] = read_answers(subject, items, label, batch_size)
    finally:
        subject.restore(current)
    medians = {label: readout.median_rank() for label, readout in readouts.items()}
    return LogitLens(
        readouts=readouts,
        reference=reference,
        first_divergence={
            label: first_divergence(medians[reference], curve, divergence_factor)
            for label, curve in medians.items()
            if label != reference
        },
        divergence_factor=divergence_factor,
    )
