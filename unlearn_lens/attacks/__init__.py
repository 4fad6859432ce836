"""Recovery attacks beyond same-data relearning, each against its own null."""

from unlearn_lens.attacks.split import (
    SPLIT_MIN_ITEMS,
    SplitHalf,
    SplitResult,
    split_halves,
    split_relearn,
)

__all__ = [
    "SPLIT_MIN_ITEMS",
    "SplitHalf",
    "SplitResult",
    "split_halves",
    "split_relearn",
]
