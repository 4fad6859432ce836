"""`--chat-template`: prompts wrapped in the tokenizer's chat template, the answer still the only target."""

from __future__ import annotations

import pytest

from unlearn_lens.data import IGNORE_INDEX, DataError, Item, chat_items, encode

ITEMS = [
    Item(prompt="Who wrote 'Salt Lanterns of Veltravia'?", answer="Ilsabet Orrun wrote it."),
    Item(prompt="What is 2 + 2?", answer="4"),
    Item(text="A plain sentence stays as it is."),
]


def test_labelled_tokens_are_exactly_the_answer_after_the_template(smollm_tokenizer):
    tok = smollm_tokenizer
    batch = encode(tok, chat_items(ITEMS, tok))
    for row, item in enumerate(ITEMS[:2]):
        turn = [{"role": "user", "content": item.prompt}]
        prompt_ids = list(
            tok.apply_chat_template(turn, add_generation_prompt=True, tokenize=True)["input_ids"]
        )
        answer_ids = tok(item.answer, add_special_tokens=False)["input_ids"]
        length = int(batch.attention_mask[row].sum())
        assert batch.input_ids[row, :length].tolist() == prompt_ids + answer_ids
        labelled = batch.labels[row][batch.labels[row] != IGNORE_INDEX].tolist()
        assert labelled == answer_ids
        assert batch.labels[row, : len(prompt_ids)].eq(IGNORE_INDEX).all()
    assert tok.decode(batch.input_ids[0, :5]).startswith("<|im_start|>system")
    text_length = int(batch.attention_mask[2].sum())
    assert batch.input_ids[2, :text_length].tolist() == tok(ITEMS[2].text)["input_ids"]


def test_a_tokenizer_without_template_is_one_line(tiny_tok):
    with pytest.raises(
        DataError, match=r"^the tokenizer of 'tiny' has no chat template; drop --chat-template"
    ):
        chat_items(ITEMS, tiny_tok)
