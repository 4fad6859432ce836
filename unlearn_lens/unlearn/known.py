"""Keep only the facts the original model knows: unlearning what was never learned measures nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from unlearn_lens.data.items import Item
from unlearn_lens.evaluation import items_correct
from unlearn_lens.models.subject import Subject


@dataclass(frozen=True)
class KnownFilterReport:
    """How many items were checked, kept (known: greedy decoding reproduces the answer) and dropped."""

    n_items: int
    n_known: int
    n_dropped: int


def split_known(subject: Subject, items: Sequence[Item]) -> tuple[list[Item], list[Item]]:
    """The items `subject` gets right by greedy exact match and the ones it does not, each in their
    order: forget and retain sets keep the first (what was learned), a control the second (learning
    from scratch)."""
    correct = items_correct(subject, items) if items else []
    known = [item for item, ok in zip(items, correct, strict=True) if ok]
    unknown = [item for item, ok in zip(items, correct, strict=True) if not ok]
    return known, unknown


def filter_known(subject: Subject, items: Sequence[Item]) -> tuple[list[Item], KnownFilterReport]:
    """The items `subject` gets right by greedy exact match (in their order), and the counts."""
    kept = split_known(subject, items)[0]
    return kept, KnownFilterReport(
        n_items=len(items), n_known=len(kept), n_dropped=len(items) - len(kept)
    )
