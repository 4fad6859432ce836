"""Read items from JSONL or text files, or from any iterable of records (a Hugging Face dataset too)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from unlearn_lens.data.items import Item
from unlearn_lens.errors import UnlearnLensError

ITEM_SUFFIXES = (".jsonl", ".txt")
"""File types `load_items` reads: JSONL (one JSON object a line) and plain text (one item a line)."""


class DataError(UnlearnLensError, ValueError):
    """Items that cannot be read; the message says where (file and line, or record) and what is wrong."""


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _string_field(record: Mapping[str, Any], field: str, where: str) -> str:
    value = record[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{field}' must be a string, got {_type_name(value)}")
    if not value:
        raise DataError(f"{where}: field '{field}' is empty")
    return value


def _record_to_item(record: Any, where: str, prompt_field: str, answer_field: str, text_field: str) -> Item:
    """One item from a mapping with `prompt_field` + `answer_field` or `text_field` (other keys ignored)."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: expected an object with fields '{prompt_field}' and '{answer_field}', "
                        f"or '{text_field}'; got {_type_name(record)}")
    has_pair = prompt_field in record or answer_field in record
    if has_pair and text_field in record:
        raise DataError(f"{where}: field '{text_field}' next to '{prompt_field}'/'{answer_field}'; "
                        "an item is either a prompt with its answer or a plain text")
    if has_pair:
        for field in (prompt_field, answer_field):
            if field not in record:
                raise DataError(f"{where}: field '{field}' is missing "
                                f"(an item needs both '{prompt_field}' and '{answer_field}')")
        return Item(prompt=_string_field(record, prompt_field, where),
                    answer=_string_field(record, answer_field, where))
    if text_field in record:
        return Item(text=_string_field(record, text_field, where))
    found = ", ".join(f"'{key}'" for key in record) or "none"
    raise DataError(f"{where}: expected fields '{prompt_field}' and '{answer_field}', or '{text_field}'; "
                    f"found {found}")


def items_from_records(
    records: Iterable[Mapping[str, Any]],
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    text_field: str = "text",
    source: str = "<records>",
) -> list[Item]:
    """Items from mappings, e.g. a list of dicts or a Hugging Face `datasets.Dataset`.

    Each record holds `prompt_field` + `answer_field` (scored on the answer) or `text_field`
    (scored on every token); other keys are ignored.

    **Raises** `DataError` naming `source[index]` and the field at fault, or `source` when
    there are no records.
    """
    items = [
        _record_to_item(record, f"{source}[{index}]", prompt_field, answer_field, text_field)
        for index, record in enumerate(records)
    ]
    if not items:
        raise DataError(f"{source}: no items")
    return items


def _jsonl_items(path: Path, lines: list[str]) -> list[Item]:
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: invalid JSON ({error.msg} at column {error.colno})") from None
        items.append(_record_to_item(record, f"{path}:{number}", "prompt", "answer", "text"))
    return items


def load_items(path: str | Path) -> list[Item]:
    """Items from a file, by suffix.

    - `.jsonl`: one JSON object a line, `{"prompt": ..., "answer": ...}` or `{"text": ...}`;
      blank lines are skipped and other keys ignored.
    - `.txt`: one text item a non-blank line (the line as written, without its line ending).

    **Raises** `DataError` naming the file (and line and field, where there is one): a missing
    file, an unknown suffix, invalid JSON, a missing or non-string field, or no items at all.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ITEM_SUFFIXES:
        kind = f"type {path.suffix!r}" if path.suffix else "name without a suffix"
        raise DataError(f"{path}: unknown file {kind}; accepted: {', '.join(ITEM_SUFFIXES)}")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte {error.start})") from None
    # Split on newlines only: str.splitlines would also split inside JSON strings holding U+2028.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if suffix == ".jsonl":
        items = _jsonl_items(path, lines)
    else:
        items = [Item(text=line) for line in lines if line.strip()]
    if not items:
        raise DataError(f"{path}: no items")
    return items


def check_overlap(forget: Iterable[Item], retain: Iterable[Item]) -> int:
    """How many distinct items are in both sets (equal prompt, answer and text).

    An item in both is unlearned and protected at once; the caller decides how to warn.
    """
    return len(set(forget) & set(retain))
