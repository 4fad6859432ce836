"""The control-matching report: answer tokens and repeated answers of a forget and a control set."""

from __future__ import annotations

import pytest

import unlearn_lens as ul
from unlearn_lens.attacks.matching import (
    ANSWER_TOKEN_TOLERANCE,
    DISTINCT_SHARE_TOLERANCE,
    answer_shape,
    match_report,
)
from unlearn_lens.data import Item

WORDS = ("Orsenne", "Pellow", "Zandra", "Firth", "Ombray", "Glissen", "Yestrel", "Corvane")


@pytest.fixture(scope="module")
def tok():
    """Word-level: an answer's tokens are its words, countable by hand."""
    return ul.tiny_tokenizer(WORDS)


def _items(answers: list[str]) -> list[Item]:
    return [Item(f"The capital of {i} is", f" {answer}") for i, answer in enumerate(answers)]


def test_answer_tokens_and_distinct_answers_are_counted_exactly(tok):
    shape = answer_shape(
        _items(["Orsenne", "Pellow Zandra", "Orsenne", "Firth Ombray Glissen"]), tok
    )
    assert shape.answer_tokens == [1, 2, 1, 3] and shape.total == 7
    assert shape.distinct_answers == 3 and shape.distinct_share == 0.75
    assert shape.tokens_per_answer == 7 / 4


def test_a_control_of_the_same_shape_matches_exactly(tok):
    forget = _items(["Orsenne", "Pellow Zandra", "Orsenne", "Firth Ombray Glissen"])
    control = _items(["Yestrel", "Corvane Firth", "Yestrel", "Zandra Pellow Ombray"])
    report = match_report(forget, control, tok)
    assert report.token_gap == 0.0 and report.distinct_gap == 0.0
    assert report.matched and report.warnings == []


def test_the_tolerances_are_edges_and_each_breach_warns(tok):
    forget = _items(["Orsenne"] * 5 + list(WORDS[1:6]))  # 10 items, 10 tokens, 6 distinct
    assert answer_shape(forget, tok).distinct_share == 0.6
    # One more token over 10 items: +10 %, exactly the tolerance, and the same repeats.
    at_edge = _items(["Pellow"] * 5 + ["Zandra Firth"] + list(WORDS[2:6]))
    report = match_report(forget, at_edge, tok)
    assert report.token_gap == pytest.approx(ANSWER_TOKEN_TOLERANCE) and report.matched
    # Two more: +20 %, one warning naming both sides.
    longer = _items(["Pellow"] * 5 + ["Zandra Firth", "Ombray Glissen"] + list(WORDS[3:6]))
    report = match_report(forget, longer, tok)
    assert report.token_gap == pytest.approx(0.2) and len(report.warnings) == 1
    assert "1.20 tokens per item" in report.warnings[0] and "1.00" in report.warnings[0]
    # Every answer distinct (share 1.0 against 0.6), at equal tokens: the other warning.
    distinct = _items([*WORDS, "Zandra", "Firth"])
    assert answer_shape(distinct, tok).distinct_answers == 8
    report = match_report(forget, distinct, tok)
    assert report.distinct_gap == pytest.approx(0.8 - 0.6) and len(report.warnings) == 1
    assert "distinct answers: forget 6/10, control 8/10" in report.warnings[0]
    assert DISTINCT_SHARE_TOLERANCE < 0.2


def test_the_budget_gives_the_control_at_least_the_sources_epochs(tok):
    forget, control = _items(["Orsenne"] * 32), _items(["Pellow Zandra"] * 8)
    report = match_report(forget, control, tok, steps=10, batch_size=8)
    assert (report.forget_epochs, report.control_epochs) == (2.5, 3.0)
    assert (report.forget_tokens_trained, report.control_tokens_trained) == (2.5, 6.0)
    assert match_report(forget, control, tok).forget_epochs is None
    with pytest.raises(ValueError, match="non-empty"):
        match_report(forget, [], tok)
