"""Wrap prompts in a chat model's template, so an instruct model sees them as it was trained to."""

from __future__ import annotations

from collections.abc import Sequence

from unlearn_lens.data.fields import DataError
from unlearn_lens.data.items import Item


def _adds_bos(tokenizer) -> bool:
    """True when tokenising with special tokens puts the BOS token in front by itself."""
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def chat_prompt(tokenizer, prompt: str) -> str:
    """`prompt` as one user turn of the tokenizer's chat template, ending where the assistant's
    reply begins; a BOS the tokenizer adds anyway is not written twice."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    if _adds_bos(tokenizer) and tokenizer.bos_token and rendered.startswith(tokenizer.bos_token):
        rendered = rendered[len(tokenizer.bos_token) :]
    return rendered


def chat_items(items: Sequence[Item], tokenizer) -> list[Item]:
    """Prompt + answer items with the prompt wrapped by [`chat_prompt`][unlearn_lens.data.chat_prompt];
    text items unchanged. The answer stays the only labelled part: batching tokenises it on its own.

    **Raises** `DataError` when the tokenizer has no chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise DataError(
            f"the tokenizer of {name!r} has no chat template; drop --chat-template (chat_template = false)"
        )
    return [
        item
        if item.is_text
        else Item(prompt=chat_prompt(tokenizer, item.prompt or ""), answer=item.answer)
        for item in items
    ]
