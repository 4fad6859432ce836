"""Checks on items once the model's tokenizer is known, run before anything is computed or written:
every item fits the model's context (and `--max-tokens`), or is truncated to fit with `--truncate`,
and repeated items are named.

A single over-long item would otherwise make one forward pass allocate for millions of tokens,
and a split of one item repeated looks like many samples to CKA while being one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unlearn_lens.data.batching import encode_item
from unlearn_lens.data.items import Item
from unlearn_lens.data.loaders import DataError
from unlearn_lens.errors import ConfigError
from unlearn_lens.models.subject import Subject

LINE_SUFFIXES = (".jsonl", ".txt")
"""Files holding one item per non-blank line, so that an item's place is a line number; other
records (csv, parquet, json arrays, datasets) are named by their row."""


def item_locations(source: str | Path | None, count: int, label: str) -> list[str]:
    """Where each of `count` items was read: `file:line` for a JSONL or text file (the loaders
    skip blank lines), `label[index]` for anything else (built-in sets, records: `label` is the
    file for those)."""
    path = Path(source) if source is not None else None
    if path is not None and path.suffix.lower() in LINE_SUFFIXES and path.is_file():
        lines = path.read_text(encoding="utf-8-sig").split("\n")
        numbers = [
            number for number, line in enumerate(lines, start=1) if line.removesuffix("\r").strip()
        ]
        if len(numbers) == count:
            return [f"{path}:{number}" for number in numbers]
    return [f"{label}[{index}]" for index in range(count)]


def context_length(subject: Subject) -> int | None:
    """The most positions the model takes (its config's `max_position_embeddings` or `n_positions`)."""
    config = subject.model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def token_limit(subject: Subject, max_tokens: int | None) -> tuple[int | None, str]:
    """The longest item allowed, in tokens, and how to name that limit in an error."""
    context = context_length(subject)
    if max_tokens is not None and (context is None or max_tokens < context):
        return max_tokens, f"--max-tokens {max_tokens}"
    return context, f"the model's context of {context} tokens"


def _truncated(tokenizer, item: Item, limit: int) -> Item | None:
    """The item with tokens dropped from the left of its prompt (of its text, for a plain text,
    keeping 2 tokens) until it encodes to at most `limit` tokens, the answer whole; None if it
    cannot fit."""
    source = item.text if item.is_text else item.prompt
    tokens = tokenizer(source or "", add_special_tokens=False)["input_ids"]
    kept = min(
        len(tokens), limit - (len(encode_item(tokenizer, item)[0]) - len(tokens))
    )  # what fits beside the rest
    while kept >= (2 if item.is_text else 1):
        suffix = tokenizer.decode(tokens[-kept:])
        shorter = Item(text=suffix) if item.is_text else Item(suffix, item.answer)
        try:
            if len(encode_item(tokenizer, shorter)[0]) <= limit:
                return shorter
        except ValueError:  # the suffix tokenises to nothing (or to one token of a text): drop more, as for too long
            pass
        kept -= 1
    return None


def check_token_lengths(
    subject: Subject,
    items: Sequence[Item],
    locations: Sequence[str],
    max_tokens: int | None = None,
    truncate: bool = False,
    split: str = "items",
) -> tuple[list[Item], str | None]:
    """The items, each fitting the model's context (and `max_tokens`): an over-long one is refused
    with `DataError` naming where it was read, or with `truncate` shortened from the left of its
    prompt; also a one-line note saying how many of `split` were truncated (None if none was)."""
    from transformers.utils import logging as hf_logging

    limit, limit_name = token_limit(subject, max_tokens)
    fitted, n_truncated = [], 0
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the tokenizer's own "longer than the maximum" warning would be a second line
    try:
        for item, where in zip(items, locations, strict=True):
            try:
                ids, _ = encode_item(subject.tokenizer, item)
            except ValueError as error:
                raise DataError(f"{where}: {error}") from None
            if limit is not None and len(ids) > limit:
                shorter = _truncated(subject.tokenizer, item, limit) if truncate else None
                if shorter is None and truncate and not item.is_text:
                    answer = len(
                        subject.tokenizer(item.answer, add_special_tokens=False)["input_ids"]
                    )
                    raise DataError(
                        f"{where}: answer: {answer:,} tokens leave no room for a prompt within {limit_name}; "
                        "shorten it"
                    )
                if shorter is None:
                    raise DataError(
                        f"{where}: the item is {len(ids):,} tokens, more than {limit_name}; shorten or split it"
                    )
                fitted.append(shorter)
                n_truncated += 1
            else:
                fitted.append(item)
    finally:
        hf_logging.set_verbosity(verbosity)
    note = (
        (
            f"{split}: {n_truncated} of {len(fitted)} items were longer than {limit_name}; truncated from the left "
            f"to at most {limit} tokens, answers kept whole"
        )
        if n_truncated
        else None
    )
    return fitted, note


def duplicates(items: Sequence[Item], locations: Sequence[str]) -> list[tuple[str, str]]:
    """Each repeated item as (where it repeats, where it first appeared)."""
    first: dict[Item, str] = {}
    repeats = []
    for item, where in zip(items, locations, strict=True):
        if item in first:
            repeats.append((where, first[item]))
        else:
            first[item] = where
    return repeats


def describe_duplicates(split: str, items: Sequence[Item], locations: Sequence[str]) -> str | None:
    """One line saying how many of a split's items are repeats, with the first example; None if none is."""
    repeats = duplicates(items, locations)
    if not repeats:
        return None
    where, original = repeats[0]
    return (
        f"{split}: {len(items)} items but {len(items) - len(repeats)} distinct "
        f"({where} repeats {original}{f' and {len(repeats) - 1} more' if len(repeats) > 1 else ''})"
    )


def check_distinct(split: str, items: Sequence[Item], needed: int, why: str) -> None:
    """Raise `ConfigError` when a split has fewer distinct items than a diagnostic needs."""
    distinct = len(set(items))
    if distinct < needed:
        repeats = (
            f" ({len(items)} items, {len(items) - distinct} of them repeats)"
            if distinct < len(items)
            else ""
        )
        raise ConfigError(
            f"{split}: only {distinct} distinct items{repeats}; {why} needs at least {needed}"
        )
