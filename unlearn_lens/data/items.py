"""The unit of data: a prompt with the answer to score, or a plain text scored on every token."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import model_serializer


@dataclass(frozen=True)
class Item:
    """One forget / retain / control example.

    Either `prompt` + `answer` (loss and accuracy on the answer tokens only) or `text`
    alone (every token after the first is a target).
    """

    prompt: str | None = None
    answer: str | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        has_pair = self.prompt is not None or self.answer is not None
        if has_pair and self.text is not None:
            raise ValueError("an item has either 'prompt' + 'answer' or 'text', not both")
        if has_pair and (self.prompt is None or self.answer is None):
            raise ValueError("an item with a 'prompt' needs an 'answer' too (and vice versa)")
        if not has_pair and not self.text:
            raise ValueError("an item needs 'prompt' + 'answer' or a non-empty 'text'")

    @property
    def is_text(self) -> bool:
        """True for a plain-text item (every token after the first is a target)."""
        return self.text is not None

    @model_serializer
    def to_dict(self) -> dict[str, str]:
        """The item as the JSON object it would be read from (also its form in results files)."""
        if self.text is not None:
            return {"text": self.text}
        return {"prompt": self.prompt or "", "answer": self.answer or ""}
