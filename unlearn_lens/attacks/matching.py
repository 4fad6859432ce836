"""Is the control set matched to the forget set? Answer tokens and repeated answers, side by side.

The same-data relearning attack compares forget recovery with an equal-work fine-tune on novel
control items. That null only moves with the unlearning when the two sets ask for the same
amount of learning: a control whose answers are three times as long learns slower, one whose
answers repeat (or follow a rule learnable across items) learns faster, for reasons that have
nothing to do with the forget set. This report measures both sets by the same tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from unlearn_lens.data.batching import IGNORE_INDEX, encode_item
from unlearn_lens.data.items import Item
from unlearn_lens.unlearn.relearn import equal_work_steps, items_after

ANSWER_TOKEN_TOLERANCE = 0.10
"""Control answer tokens per item may differ from the forget set's by at most a tenth of the
forget set's: the two runs then fit nearly the same number of target tokens per epoch."""

DISTINCT_SHARE_TOLERANCE = 0.10
"""The share of distinct answers (distinct / items) may differ by at most 0.1 (3 items of 32): a
repeated answer is learned once and scored again, so it makes a set easier to relearn."""


@dataclass
class AnswerShape:
    """What a set asks a model to learn: `answer_tokens` per item (target tokens under the
    tokenizer, as training scores them), their `total`, `distinct_answers` (different answer
    strings), `tokens_per_answer` (total / items) and `distinct_share` (distinct / items)."""

    n_items: int
    answer_tokens: list[int]
    total: int
    distinct_answers: int
    tokens_per_answer: float
    distinct_share: float


@dataclass
class MatchReport:
    """The forget and control sets' shapes, and what the equal-work control would do with them.

    `token_gap`: control tokens per answer relative to the forget set's, minus 1 (0.25: a
    quarter more); `distinct_gap`: control distinct share minus the forget set's. With a
    budget (`steps`, `batch_size`), `forget_epochs` and `control_epochs` are the epochs each run
    gets ([`equal_work_steps`][unlearn_lens.unlearn.relearn.equal_work_steps]: never fewer for the
    control) and `forget_tokens_trained`, `control_tokens_trained` the answer tokens per item
    each run fits in that budget (epochs × tokens per answer). `warnings` holds one line per
    measure outside its tolerance; `matched` is True when there is none.
    """

    forget: AnswerShape
    control: AnswerShape
    token_gap: float
    distinct_gap: float
    token_tolerance: float
    distinct_tolerance: float
    forget_epochs: float | None
    control_epochs: float | None
    forget_tokens_trained: float | None
    control_tokens_trained: float | None
    warnings: list[str]

    @property
    def matched(self) -> bool:
        return not self.warnings


def answer_shape(items: Sequence[Item], tokenizer) -> AnswerShape:
    """Answer tokens per item and repeated answers of `items` (a plain-text item's "answer" is
    its text, every token after the first a target)."""
    tokens = [
        sum(1 for label in encode_item(tokenizer, item)[1][1:] if label != IGNORE_INDEX)
        for item in items
    ]
    distinct = len({item.answer if item.answer is not None else item.text for item in items})
    n = len(items)
    return AnswerShape(
        n, tokens, sum(tokens), distinct, sum(tokens) / n if n else 0.0, distinct / n if n else 0.0
    )


def match_report(
    forget: Sequence[Item],
    control: Sequence[Item],
    tokenizer,
    *,
    steps: int | None = None,
    batch_size: int = 8,
    token_tolerance: float = ANSWER_TOKEN_TOLERANCE,
    distinct_tolerance: float = DISTINCT_SHARE_TOLERANCE,
) -> MatchReport:
    """Compare the control set with the forget set by answer tokens and distinct answers, and
    with a budget of `steps` on the forget set, the epochs and answer tokens each run gets.

    **Raises** `ValueError` when either set is empty.
    """
    if not forget or not control:
        raise ValueError("match_report needs a non-empty forget set and a non-empty control set")
    f, c = answer_shape(forget, tokenizer), answer_shape(control, tokenizer)
    token_gap = c.tokens_per_answer / f.tokens_per_answer - 1
    distinct_gap = c.distinct_share - f.distinct_share
    warnings = []
    if abs(token_gap) > token_tolerance + 1e-12:
        warnings.append(
            f"control answers have {c.tokens_per_answer:.2f} tokens per item against the forget "
            f"set's {f.tokens_per_answer:.2f} ({token_gap:+.0%}, tolerance ±{token_tolerance:.0%}): "
            "the equal-work control learns a different amount per epoch"
        )
    if abs(distinct_gap) > distinct_tolerance + 1e-12:
        warnings.append(
            f"distinct answers: forget {f.distinct_answers}/{f.n_items}, control "
            f"{c.distinct_answers}/{c.n_items} (shares differ by {distinct_gap:+.2f}, tolerance "
            f"±{distinct_tolerance:.2f}): repeated answers make a set easier to relearn"
        )
    epochs: tuple[float | None, float | None] = (None, None)
    if steps is not None:
        n_control = equal_work_steps(steps, f.n_items, c.n_items, batch_size)
        epochs = (
            items_after(steps, f.n_items, batch_size) / f.n_items,
            items_after(n_control, c.n_items, batch_size) / c.n_items,
        )
    return MatchReport(
        f,
        c,
        token_gap,
        distinct_gap,
        token_tolerance,
        distinct_tolerance,
        epochs[0],
        epochs[1],
        None if epochs[0] is None else epochs[0] * f.tokens_per_answer,
        None if epochs[1] is None else epochs[1] * c.tokens_per_answer,
        warnings,
    )
