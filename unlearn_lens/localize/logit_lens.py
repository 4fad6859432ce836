"""Latent-answer readout (the logit lens): where in depth does the model still hold the answer?

For each item, the residual stream at the last prompt position is read at every stream
index (0 = after the embedding, j = after block j − 1) through a final norm and unembedding,
giving the rank and probability of the first answer token there. Our streams are taken
before the final norm, so the last stream read through a model's own head reproduces its
logits. Comparing the original, unlearned and relearned weights shows whether the answer is
gone from the depths or only suppressed near the output.

Which head reads the streams matters: read through its *own* head, a model whose readout
changed (with a tied matrix, any change of the embedding) shifts every layer's curve, which
looks like a change of the representations. By default every snapshot is therefore read
through one *fixed* decoder, the reference (original) model's head; the own-head readout is
kept beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from rich.progress import Progress
from torch import Tensor

from unlearn_lens.data.batching import IGNORE_INDEX, Batch
from unlearn_lens.data.items import Item
from unlearn_lens.evaluation import EVAL_BATCH_SIZE
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.schema import Real

DIVERGENCE_RANK_FACTOR = 10.0
"""Two models diverge at a stream when their median answer ranks differ by more than this
factor: an order of magnitude, far above the rank jitter of nearly identical weights, far
below the thousands-deep ranks of a suppressed answer."""


@dataclass
class LensLogits:
    """Logit-lens logits of one batch at each item's last prompt position.

    `lens[b, j]` reads stream j through the model's own final norm and unembedding;
    `fixed[b, j]` through those of the `decoder` snapshot (None without one); `model[b]` is
    the model's own logits there; `answer[b]` the first answer token (the target predicted
    from that position).
    """

    lens: Float[Tensor, "batch stream vocab"]
    model: Float[Tensor, "batch vocab"]
    answer: Int[Tensor, " batch"]
    fixed: Float[Tensor, "batch stream vocab"] | None = None


def lens_logits(subject: Subject, batch: Batch, decoder: Snapshot | None = None) -> LensLogits:
    """Read every residual stream at the last prompt position, in one forward pass, through
    the model's own head and (given `decoder`) through the head of the `decoder` snapshot.

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
        streams = torch.stack(
            [out.residuals[j][rows, position] for j in range(subject.n_streams)], dim=1
        )
        lens = unembed(norm(streams))
        fixed = None
        if decoder is not None:
            with subject.head_from(decoder):
                fixed = unembed(norm(streams))
    return LensLogits(
        lens=lens,
        model=out.logits[rows, position],
        answer=batch.labels[rows, first_target],
        fixed=fixed,
    )


@dataclass(frozen=True)
class LensReadout:
    """Rank (1 = top) and probability of the first answer token, per item and stream index."""

    label: str
    ranks: list[list[int]]
    probabilities: list[list[Real]]

    def median_rank(self) -> list[float]:
        """Median answer rank over items, per stream index."""
        return [float(statistics.median(column)) for column in zip(*self.ranks, strict=True)]

    def mean_probability(self) -> list[float]:
        """Mean answer probability over items, per stream index."""
        return np.asarray(self.probabilities).mean(axis=0).tolist()


def _ranks_and_probabilities(
    lens: Tensor, answer: Tensor
) -> tuple[list[list[int]], list[list[float]]]:
    """Rank (1 = top) and probability of each item's answer token at every stream, in float64."""
    lens = lens.double()
    index = answer[:, None, None].expand(-1, lens.shape[1], 1)
    answer_logit = lens.gather(-1, index)
    ranks = (1 + (lens > answer_logit).sum(dim=-1)).tolist()
    return ranks, torch.softmax(lens, dim=-1).gather(-1, index).squeeze(-1).tolist()


def read_answers(
    subject: Subject,
    items: Sequence[Item],
    label: str,
    batch_size: int = EVAL_BATCH_SIZE,
    decoder: Snapshot | None = None,
) -> LensReadout:
    """The logit-lens readout of the subject's current weights on `items`, through its own head,
    or through the head of the `decoder` snapshot when one is given."""
    own, fixed = read_both(subject, items, label, batch_size, decoder)
    if decoder is None:
        return own
    assert fixed is not None, "read_both reads through the decoder whenever one is given"
    return fixed


def read_both(
    subject: Subject,
    items: Sequence[Item],
    label: str,
    batch_size: int = EVAL_BATCH_SIZE,
    decoder: Snapshot | None = None,
) -> tuple[LensReadout, LensReadout | None]:
    """Own-head and (given `decoder`) fixed-decoder readouts from the same forward passes."""
    own: tuple[list, list] = ([], [])
    fixed: tuple[list, list] = ([], [])
    for batch in subject.batches(items, batch_size):
        logits = lens_logits(subject, batch, decoder)
        for store, lens in ((own, logits.lens), (fixed, logits.fixed)):
            if lens is not None:
                ranks, probabilities = _ranks_and_probabilities(lens, logits.answer)
                store[0].extend(ranks)
                store[1].extend(probabilities)
    fixed_readout = LensReadout(label, *fixed) if decoder is not None else None
    return LensReadout(label, *own), fixed_readout


def first_divergence(
    reference: Sequence[float], other: Sequence[float], factor: float = DIVERGENCE_RANK_FACTOR
) -> int | None:
    """First stream index where two median-rank curves differ by more than `factor`, or None."""
    for index, (a, b) in enumerate(zip(reference, other, strict=True)):
        if max(a, b) > factor * min(a, b):
            return index
    return None


DECODERS = ("fixed", "own")
"""`"fixed"`: every snapshot read through the reference model's head (the default);
`"own"`: each snapshot through its own head."""


@dataclass(frozen=True)
class LogitLens:
    """Logit-lens readouts of several weight sets on the same items, through both decoders.

    `fixed_head[label]` reads `label`'s streams through the `reference` snapshot's head,
    `own_head[label]` through its own; `decoder` says which of the two `readouts` (and so
    `first_divergence`: the first stream index where `label`'s median answer rank differs
    from the reference's by more than `divergence_factor`; None: never) is taken from.
    """

    fixed_head: dict[str, LensReadout]
    own_head: dict[str, LensReadout]
    reference: str
    decoder: str
    first_divergence: dict[str, int | None]
    divergence_factor: Real = DIVERGENCE_RANK_FACTOR

    @property
    def readouts(self) -> dict[str, LensReadout]:
        """The readouts of the chosen decoder."""
        return self.fixed_head if self.decoder == "fixed" else self.own_head


def logit_lens(
    subject: Subject,
    items: Sequence[Item],
    snapshots: Mapping[str, Snapshot],
    *,
    reference: str = "original",
    decoder: str = "fixed",
    divergence_factor: float = DIVERGENCE_RANK_FACTOR,
    batch_size: int = EVAL_BATCH_SIZE,
    progress: bool = True,
) -> LogitLens:
    """Logit-lens readout of each snapshot (e.g. original, unlearned, relearned) on `items`,
    through the reference snapshot's head and through each snapshot's own head.

    `decoder` (`"fixed"` or `"own"`) chooses the readouts that `first_divergence` compares.
    Each snapshot's weights are swapped into `subject` in turn; the subject's own weights are
    put back afterwards.
    """
    if reference not in snapshots:
        raise ValueError(
            f"reference {reference!r} is not one of the snapshots ({', '.join(snapshots)})"
        )
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    current = subject.snapshot()
    own: dict[str, LensReadout] = {}
    fixed: dict[str, LensReadout] = {}
    try:
        with Progress(transient=True, disable=not progress) as bar:
            for label in bar.track(list(snapshots), description="logit lens"):
                subject.restore(snapshots[label])
                own[label], through_reference = read_both(
                    subject, items, label, batch_size, snapshots[reference]
                )
                assert through_reference is not None, "a decoder was given"
                fixed[label] = through_reference
    finally:
        subject.restore(current)
    chosen = fixed if decoder == "fixed" else own
    medians = {label: readout.median_rank() for label, readout in chosen.items()}
    return LogitLens(
        fixed_head=fixed,
        own_head=own,
        reference=reference,
        decoder=decoder,
        first_divergence={
            label: first_divergence(medians[reference], curve, divergence_factor)
            for label, curve in medians.items()
            if label != reference
        },
        divergence_factor=divergence_factor,
    )
