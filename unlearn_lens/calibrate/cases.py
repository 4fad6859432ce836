"""The known cases of a calibration: weights whose kind of forgetting is known by construction.

Each builder starts from the original weights, changes the subject in place, and returns the
changed weights as a snapshot and one line saying what was built; the caller puts the original
back. The audit then reads each snapshot exactly as it reads a checkpoint given as unlearned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from unlearn_lens.data.batching import IGNORE_INDEX
from unlearn_lens.data.items import Item
from unlearn_lens.evaluation import EVAL_BATCH_SIZE, evaluate
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.unlearn.api import unlearn

CASES = ("shallow", "deep", "suppressed", "sham", "never_known")
"""Every case, in the order they are built and reported."""
BUILT_CASES = ("shallow", "deep", "suppressed", "sham")
"""The cases whose weights are built; `never_known` audits the original on novel items."""
MAX_PUSH_DOUBLINGS = 24
"""How often the suppression's push may double before the case gives up (2^24 times the first)."""


@dataclass(frozen=True)
class CaseBudget:
    """How the cases are built.

    - `lr`, `steps`, `batch_size`, `seed`: the gradient ascent of the shallow and deep cases
      (AdamW; a higher rate than an audit's default, since only a few blocks may move).
    - `blocks`: how many blocks the shallow case (the last ones) and the deep case (the first
      ones) may change.
    - `suppress_to`: the suppressed case pushes the answers' unembedding until forget token
      accuracy is at most this share of the original's.
    - `sham_relative`: the sham's noise on each weight as a share of that weight's norm; None
      takes the median relative change of the constructed unlearning updates.
    """

    lr: float = 1e-4
    steps: int = 10
    batch_size: int = 8
    seed: int = 0
    blocks: int = 2
    suppress_to: float = 0.25
    sham_relative: float | None = None


@dataclass
class BuiltCase:
    """A case's weights and one line saying how they were made."""

    weights: Snapshot
    built: str


def _ascent_case(
    subject: Subject,
    forget: Sequence[Item],
    retain: Sequence[Item],
    keys: list[str],
    where: str,
    budget: CaseBudget,
) -> BuiltCase:
    """Gradient ascent on the forget set with only `keys` trainable (the training loop freezes
    the rest); `where` names them in the case's description."""
    unlearn(
        subject, forget, retain, "ga", lr=budget.lr, steps=budget.steps,
        batch_size=budget.batch_size, seed=budget.seed, trainable_keys=keys, eval_every=0,
        progress=False, keep_snapshots=False,
    )  # fmt: skip
    return BuiltCase(
        subject.snapshot(),
        f"gradient ascent ({budget.steps} steps at lr {budget.lr:g}) on {where} of "
        f"{subject.shape.n_layers} blocks only",
    )


def shallow_keys(subject: Subject, blocks: int) -> list[str]:
    """The last `blocks` blocks and the output head, without a tied embedding (whose input use
    would make the change reach the first layer too)."""
    n_layers = subject.shape.n_layers
    return subject.keys(layers=range(n_layers - blocks, n_layers)) + subject.head_keys()


def deep_keys(subject: Subject, blocks: int) -> list[str]:
    """The first `blocks` blocks (no embedding, no head)."""
    return subject.keys(layers=range(blocks))


def build_shallow(
    subject: Subject, forget: Sequence[Item], retain: Sequence[Item], budget: CaseBudget
) -> BuiltCase:
    """Gradient ascent that may change only the output head and the last `budget.blocks` blocks."""
    keys = shallow_keys(subject, budget.blocks)
    where = f"the output head and the last {budget.blocks}"
    return _ascent_case(subject, forget, retain, keys, where, budget)


def build_deep(
    subject: Subject, forget: Sequence[Item], retain: Sequence[Item], budget: CaseBudget
) -> BuiltCase:
    """Gradient ascent that may change only the first `budget.blocks` blocks."""
    keys = deep_keys(subject, budget.blocks)
    return _ascent_case(subject, forget, retain, keys, f"the first {budget.blocks}", budget)


def _answer_direction(subject: Subject, forget: Sequence[Item]) -> tuple[torch.Tensor, list[int]]:
    """The unit mean of the final-normed residual at every position that predicts a forget answer
    token, and those answer tokens: pushing their unembedding rows against it lowers exactly the
    logits the forget set is scored on."""
    norm, _ = subject.readout_modules()
    last = subject.shape.n_layers
    total: torch.Tensor | None = None
    tokens: set[int] = set()
    with torch.no_grad():
        for batch in subject.batches(forget, EVAL_BATCH_SIZE):
            stream = subject.run(batch, residual_layers=[last]).residuals[last]
            targets = batch.labels[:, 1:]
            where = targets != IGNORE_INDEX
            hidden = norm(stream[:, :-1][where]).double()
            total = hidden.sum(0) if total is None else total + hidden.sum(0)
            tokens.update(targets[where].tolist())
    assert total is not None and tokens, "the forget set has answer tokens"
    return (total / total.norm()).float(), sorted(tokens)


def build_suppressed(subject: Subject, forget: Sequence[Item], budget: CaseBudget) -> BuiltCase:
    """Every block left as it is; the unembedding rows of the forget answers' tokens pushed
    against the direction the model reads those answers from, doubling the push until forget
    token accuracy falls to `budget.suppress_to` of the original's.

    With a tied embedding the same rows are also those tokens' input embeddings (a checkpoint
    keeps the tie), so the push reaches the input where an answer token is read as input."""
    direction, tokens = _answer_direction(subject, forget)
    _, head = subject.readout_modules()
    weight = head.weight
    assert isinstance(weight, torch.Tensor), "an unembedding holds one weight matrix"
    rows = torch.tensor(tokens, device=weight.device)
    original_rows = weight.detach()[rows].clone()
    before = evaluate(subject, forget).accuracy
    target = budget.suppress_to * before
    scale = float(original_rows.norm(dim=1).mean()) / 64
    for _ in range(MAX_PUSH_DOUBLINGS):
        with torch.no_grad():
            weight[rows] = original_rows - scale * direction.to(original_rows)
        after = evaluate(subject, forget).accuracy
        if after <= target:
            break
        scale *= 2
    else:
        raise RuntimeError(
            f"the suppression did not lower forget accuracy to {target:.2f} (it stays {after:.2f})"
        )
    return BuiltCase(
        subject.snapshot(),
        f"unembedding rows of the {len(tokens)} forget answer tokens pushed by {scale:.3g} against "
        f"their mean read-out direction (forget accuracy {before:.2f} → {after:.2f}); every block "
        "the original's",
    )


def relative_changes(
    subject: Subject, original: Snapshot, updates: Sequence[Snapshot]
) -> list[float]:
    """||ΔW||_F / ||W||_F of every weight that one of the updates changed."""
    changes = []
    for update in updates:
        for key, weight in original.items():
            delta = (update[key].double() - weight.double()).norm()
            if delta > 0 and weight.double().norm() > 0:
                changes.append(float(delta / weight.double().norm()))
    return changes


def build_sham(subject: Subject, original: Snapshot, relative: float, seed: int) -> BuiltCase:
    """Gaussian noise on every weight, each scaled to `relative` of that weight's norm: an update
    the size of an unlearning update, with no objective behind it."""
    generator = torch.Generator().manual_seed(seed)
    noisy = {}
    for key, weight in original.items():
        noise = torch.randn(weight.shape, generator=generator, dtype=torch.float64)
        size = relative * weight.double().norm() / noise.norm()
        noisy[key] = (weight.double() + size * noise).to(weight.dtype)
    subject.restore(noisy)
    return BuiltCase(
        subject.snapshot(),
        f"Gaussian noise on every weight, {relative:.2g} of its norm; no objective",
    )


def sham_size(changes: Sequence[float]) -> float:
    """The median relative change of the constructed updates' changed weights."""
    ordered = sorted(changes)
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
