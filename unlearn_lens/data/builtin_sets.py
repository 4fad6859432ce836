"""Built-in forget / retain / control sets in three domains, plus unrelated text for relearning.

Each domain has three splits of 32 prompt + answer items:

- `forget`: facts the built-in model (SmolLM2-135M-Instruct, Q4_1 GGUF) knows by greedy exact
  match: every answer token is the argmax of its next-token distribution under teacher forcing.
- `retain`: known facts of the same kinds as `forget` (no item in both, and facts that share an
  answer, like the capitals of England and of the United Kingdom, kept in one split), so the
  retain set measures the collateral damage nearby.
- `control`: items of the same form that the model cannot know (fictional countries, books and
  elements; made-up libraries and functions; 3-digit × 2-digit products and an operator
  `a ⊕ b = 3a + 2b + 1` defined nowhere). Relearning them from scratch is the baseline a
  relearning attack on the forget set is compared with.

The `unrelated` split (32 everyday sentences, plain text) is shared by all domains.

Measured on the built-in model when the sets were made: 32/32 known in every forget and retain
split, 0/32 in every control split (through transformers and through both backends of
`unlearn_lens.load`); every forget and retain answer token beat the runner-up logit by at least 0.3.

| domain | forget and retain | control |
|--------|-------------------|---------|
| `text` | capitals, authors of books, element symbols, a few landmarks, currencies, inventors | fictional ones |
| `code` | one-line function bodies, imports, module attributes, idioms | made-up libraries and bodies |
| `math` | "What is 3 + 4? The answer is" sums, products, a few other small facts | big products, `⊕` |
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import as_file, files

from unlearn_lens.data.items import Item
from unlearn_lens.data.loaders import load_items

BUILTIN_DOMAINS = ("text", "code", "math")
"""Domains with built-in sets."""


@dataclass(frozen=True)
class BuiltinSets:
    """The built-in splits of one domain: `forget`, `retain` and `control` (prompt + answer items of
    `domain`) and `unrelated` (plain-text sentences, the same for every domain)."""

    domain: str
    forget: list[Item]
    retain: list[Item]
    control: list[Item]
    unrelated: list[Item]


def _load_builtin_file(name: str) -> list[Item]:
    with as_file(files("unlearn_lens.data") / "builtin" / name) as path:
        return load_items(path)


def builtin(domain: str) -> BuiltinSets:
    """The built-in forget, retain, control and unrelated sets of `domain`, freshly read.

    **Raises** `ValueError` for a domain not in `BUILTIN_DOMAINS`.
    """
    if domain not in BUILTIN_DOMAINS:
        raise ValueError(
            f"unknown built-in domain {domain!r}; choose one of {', '.join(BUILTIN_DOMAINS)}"
        )
    return BuiltinSets(
        domain=domain,
        forget=_load_builtin_file(f"{domain}_forget.jsonl"),
        retain=_load_builtin_file(f"{domain}_retain.jsonl"),
        control=_load_builtin_file(f"{domain}_control.jsonl"),
        unrelated=_load_builtin_file("unrelated.jsonl"),
    )
