"""The built-in control sets are matched to their forget sets and hold no rule learnable across items.

The same-data relearning null is the control's gain under the forget set's fine-tune: it only
means something when the control asks for the same learning (answer tokens, repeated answers,
measured with the built-in model's tokenizer, no forward pass) and each control fact must be
learned on its own. Whether SmolLM2 already answers a control item is checked in
tests/test_data.py (`test_builtin_forget_sets_are_known_by_the_builtin_model`, needs the model).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from unlearn_lens.attacks.matching import answer_shape, match_report
from unlearn_lens.data import BUILTIN_DOMAINS, Item, builtin

SMOKE_ITEMS = 16
"""The item cap of a quick audit (`max_items=16`): the audit keeps each set's first items."""

RULE_FIT = 0.5
"""An integer rule `round(fit)` reproduces every answer when the least-squares fit is within
half a unit of each: the control must miss that somewhere."""

OPERATION = re.compile(r"What is (\d+) (\S+) (\d+)\? The answer is")


@pytest.mark.parametrize("domain", BUILTIN_DOMAINS)
@pytest.mark.parametrize("n_items", [SMOKE_ITEMS, None])
def test_control_matches_forget_set(domain, n_items, smollm_tokenizer):
    sets = builtin(domain)
    report = match_report(sets.forget[:n_items], sets.control[:n_items], smollm_tokenizer)
    assert report.warnings == []
    assert len(sets.control) >= len(sets.forget[:n_items])


@pytest.mark.parametrize("domain", BUILTIN_DOMAINS)
def test_control_item_parallels_forget_item(domain, smollm_tokenizer):
    """Item by item: the same answer tokens, and control answers repeat exactly where the forget
    set's do, so every prefix the audit's item cap keeps is matched too."""
    sets = builtin(domain)
    forget, control = sets.forget, sets.control[: len(sets.forget)]
    assert len(control) == len(forget)
    tokens = answer_shape(forget, smollm_tokenizer).answer_tokens
    assert answer_shape(control, smollm_tokenizer).answer_tokens == tokens
    for i in range(len(forget)):
        for j in range(i):
            same_forget = forget[i].answer == forget[j].answer
            assert (control[i].answer == control[j].answer) == same_forget, (i, j)


def _abbreviates(module: str, alias: str) -> bool:
    """Does `alias` spell its module's start or pick its letters in order (pd of pandas)?"""
    letters = iter(module)
    return alias[0] == module[0] or all(char in letters for char in alias)


def _import_aliases(items: list[Item]) -> list[tuple[str, str]]:
    pattern = re.compile(r"import (\S+) as")
    return [
        (match.group(1).lower(), item.answer.strip().lower())
        for item in items
        if (match := pattern.fullmatch(item.prompt))
    ]


def test_code_control_aliases_are_no_abbreviations():
    assert _abbreviates("pandas", "pd") and _abbreviates("matplotlib.pyplot", "plt")
    assert _abbreviates("quorblax", "qbx"), "the old control's rule the model learned"
    aliases = _import_aliases(builtin("code").control)
    assert len(aliases) >= 3
    assert not [pair for pair in aliases if _abbreviates(*pair)]


def _worst_fit(rows: list[tuple[int, int, int]]) -> float:
    """Largest residual of the least-squares fit answer ≈ a·x + b·y + c·x·y + d (float64)."""
    x, y, answer = np.array(rows, dtype=np.float64).T
    design = np.stack([x, y, x * y, np.ones_like(x)], axis=1)
    coefficients = np.linalg.lstsq(design, answer, rcond=None)[0]
    return float(np.abs(design @ coefficients - answer).max())


def _operations(items: list[Item]) -> dict[str, list[tuple[int, int, int]]]:
    by_operator: dict[str, list[tuple[int, int, int]]] = {}
    for item in items:
        if match := OPERATION.fullmatch(item.prompt):
            x, operator, y = match.groups()
            by_operator.setdefault(operator, []).append((int(x), int(y), int(item.answer)))
    return by_operator


def test_math_control_answers_follow_no_formula_of_their_operands():
    old_rule = [(a, b, 3 * a + 2 * b + 1) for a, b in [(2, 3), (4, 1), (5, 5), (1, 7), (6, 2)]]
    assert _worst_fit(old_rule) < 1e-9, "the check finds the old control's 3a+2b+1"
    forget = _operations(builtin("math").forget)
    assert _worst_fit(forget["+"]) < 1e-9 and _worst_fit(forget["*"]) < 1e-9
    operations = _operations(builtin("math").control)
    fitted = {op: rows for op, rows in operations.items() if len(rows) > 4}
    assert sum(len(rows) for rows in fitted.values()) >= 20
    for operator, rows in fitted.items():
        assert _worst_fit(rows) > RULE_FIT, operator
    for item in builtin("math").control:
        assert len(item.answer.strip()) in (1, 2)


def _pairs(items: list[Item], pattern: str) -> list[tuple[str, str]]:
    return [
        (match.group(1), item.answer.strip())
        for item in items
        if (match := re.fullmatch(pattern, item.prompt))
    ]


def test_text_control_answers_share_no_initial_with_their_subject():
    control = builtin("text").control
    symbols = _pairs(control, r"The chemical symbol for (\w+) is")
    capitals = _pairs(control, r"The capital of (?:the )?(.+) is")
    assert len(symbols) >= 8 and len(capitals) >= 16
    forget = _pairs(builtin("text").forget, r"The chemical symbol for (\w+) is")
    assert ("aluminium", "Al") in forget, "the check finds a symbol that spells its name"
    for subject, answer in symbols + capitals:
        assert answer[0].lower() != subject[0].lower(), (subject, answer)
