"""Which fields of a record hold an item's prompt, answer or text, and turning one record into an item."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unlearn_lens.data.items import Item
from unlearn_lens.errors import UnlearnLensError

PROMPT_FIELDS = ("prompt", "question")
"""Field names recognised as the prompt when none is given (ours, then the TOFU / QA benchmarks')."""
ANSWER_FIELDS = ("answer", "completion")
"""Field names recognised as the answer when none is given (QA benchmarks, then prompt/completion sets)."""
TEXT_FIELDS = ("text",)
"""Field names recognised as a plain text when none is given."""


class DataError(UnlearnLensError, ValueError):
    """Items that cannot be read; the message says where (file and line, or record) and what is wrong."""


@dataclass(frozen=True)
class FieldMap:
    """The record fields an item is read from; `None` recognises the usual names.

    A record becomes a prompt + answer item when it has a prompt field and an answer field
    (by default the first present of `prompt`/`question` and of `answer`/`completion`), and a
    plain-text item when it has a text field (by default `text`). Naming only prompt/answer
    fields reads every record as a pair; naming only a text field reads every record as text.
    """

    prompt: str | None = None
    answer: str | None = None
    text: str | None = None

    @property
    def prompts(self) -> tuple[str, ...]:
        """Candidate prompt fields, in order of preference."""
        return (self.prompt,) if self.prompt else PROMPT_FIELDS

    @property
    def answers(self) -> tuple[str, ...]:
        """Candidate answer fields, in order of preference."""
        return (self.answer,) if self.answer else ANSWER_FIELDS

    @property
    def texts(self) -> tuple[str, ...]:
        """Candidate text fields, in order of preference."""
        return (self.text,) if self.text else TEXT_FIELDS

    @property
    def pairs_only(self) -> bool:
        """True when a prompt or answer field, and no text field, was named: every record must be a pair."""
        return bool(self.prompt or self.answer) and not self.text

    @property
    def texts_only(self) -> bool:
        """True when only a text field was named: every record is read as text."""
        return bool(self.text) and not (self.prompt or self.answer)

    def describe(self) -> str:
        """What this map looks for, e.g. `'question' and 'answer', or 'text'`."""
        pair = f"{_alternatives(self.prompts)} and {_alternatives(self.answers)}"
        if self.pairs_only:
            return pair
        if self.texts_only:
            return _alternatives(self.texts)
        return f"{pair}, or {_alternatives(self.texts)}"


def _alternatives(names: tuple[str, ...]) -> str:
    return "/".join(f"'{name}'" for name in names)


def _first_present(record: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in record), None)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _string_field(record: Mapping[str, Any], field: str, where: str) -> str:
    value = record[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{field}' must be a string, got {_type_name(value)}")
    if not value:
        raise DataError(f"{where}: field '{field}' is empty")
    return value


def record_item(record: Any, where: str, fields: FieldMap = FieldMap()) -> Item:
    """One item from a mapping, read through `fields` (other keys ignored).

    **Raises** `DataError` starting with `where` and naming the field at fault; a missing
    field's message lists the fields the record has.
    """
    if not isinstance(record, Mapping):
        raise DataError(
            f"{where}: expected an object with fields {fields.describe()}; got {_type_name(record)}"
        )
    found = ", ".join(f"'{key}'" for key in record) or "none"
    prompt = None if fields.texts_only else _first_present(record, fields.prompts)
    answer = None if fields.texts_only else _first_present(record, fields.answers)
    text = None if fields.pairs_only else _first_present(record, fields.texts)
    if (prompt or answer) and text and not (fields.pairs_only or fields.texts_only):
        raise DataError(
            f"{where}: field '{text}' next to '{prompt or answer}'; an item is either a prompt with its "
            "answer or a plain text (name the fields to read: --prompt-field/--answer-field or --text-field)"
        )
    if prompt and answer:
        return Item(
            prompt=_string_field(record, prompt, where), answer=_string_field(record, answer, where)
        )
    if text:
        return Item(text=_string_field(record, text, where))
    if prompt or answer or fields.pairs_only:
        missing = _alternatives(fields.answers) if prompt else _alternatives(fields.prompts)
        raise DataError(
            f"{where}: field {missing} is missing (an item needs a prompt and an answer); fields here: {found}"
        )
    raise DataError(f"{where}: expected fields {fields.describe()}; fields here: {found}")
