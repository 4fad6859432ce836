"""Item checks that need the tokenizer: where an item was read, its length against the context, repeats."""

from __future__ import annotations

import pytest
from memorised import FORGET, tokenizer

import unlearn_lens as ul
from unlearn_lens.data import DataError, Item
from unlearn_lens.data.checks import (
    check_distinct,
    check_token_lengths,
    describe_duplicates,
    item_locations,
)
from unlearn_lens.errors import ConfigError


@pytest.fixture(scope="module")
def subject():
    tok = tokenizer()
    return ul.load(
        ul.tiny_llama(vocab_size=len(tok)), tokenizer=tok, backend="nnsight"
    )  # context 128


def test_locations_are_the_lines_the_loader_read(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('\n{"text": "a b"}\n  \n{"text": "c d"}\r\n{"text": "e f"}')
    assert len(ul.load_items(path)) == 3
    assert item_locations(path, 3, "items") == [f"{path}:2", f"{path}:4", f"{path}:5"]
    assert item_locations(None, 2, "built-in text forget") == [
        "built-in text forget[0]",
        "built-in text forget[1]",
    ]


def test_length_is_counted_as_batching_encodes_it(subject):
    # The tiny tokenizer makes each word one token and adds no special tokens: prompt + answer words.
    item = Item("The capital of Veltravia is", "Orsenne")
    check_token_lengths(subject, [item], ["x:1"], max_tokens=6)
    with pytest.raises(
        DataError,
        match=r"^x:1: the item is 6 tokens, more than --max-tokens 5; shorten or split it$",
    ):
        check_token_lengths(subject, [item], ["x:1"], max_tokens=5)
    long = Item(text=" ".join(["Veltravia"] * 129))
    with pytest.raises(
        DataError,
        match=r"^y:7: the item is 129 tokens, more than the model's context of 128 tokens",
    ):
        check_token_lengths(
            subject, [item, long], ["y:6", "y:7"], max_tokens=500
        )  # never past the context
    with pytest.raises(DataError, match=r"^z:1: text 'Veltravia' tokenises to fewer than 2 tokens"):
        check_token_lengths(subject, [Item(text="Veltravia")], ["z:1"])


def test_repeats_are_named_and_too_few_distinct_refused():
    items = [FORGET[0], FORGET[1], FORGET[0], FORGET[2], FORGET[0]]
    where = [f"f:{n}" for n in range(1, 6)]
    assert (
        describe_duplicates("forget", items, where)
        == "forget: 5 items but 3 distinct (f:3 repeats f:1 and 1 more)"
    )
    assert describe_duplicates("forget", FORGET, where[: len(FORGET)]) is None
    check_distinct("forget", items, 3, "this diagnostic")
    with pytest.raises(
        ConfigError,
        match=r"^forget: only 3 distinct items \(5 items, 2 of them repeats\); CKA needs at least 4$",
    ):
        check_distinct("forget", items, 4, "CKA")


@pytest.mark.parametrize("bos", [False, True], ids=["plain", "with a BOS token"])
def test_truncation_keeps_the_answer_and_the_longest_prompt_suffix_that_fits(
    subject, bos, monkeypatch
):
    tok = subject.tokenizer
    if bos:
        from tokenizers import processors

        tok = tokenizer()
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<eos> $A", special_tokens=[("<eos>", tok.eos_token_id)]
        )
        monkeypatch.setattr(subject, "tokenizer", tok)
    special = len(tok("", add_special_tokens=True)["input_ids"])
    pair = Item(
        "The capital of Veltravia is not the capital of Orsenne but", "Orsenne and Veltravia"
    )
    text = Item(text="The capital of Veltravia is not the capital of Orsenne")
    prompt = tok(pair.prompt, add_special_tokens=False)["input_ids"]
    answer = tok(pair.answer, add_special_tokens=False)["input_ids"]
    words = tok(text.text, add_special_tokens=False)["input_ids"]
    for limit in range(len(answer) + special + 1, len(prompt) + len(answer) + special):
        (short,), note = check_token_lengths(
            subject, [pair], ["x:1"], max_tokens=limit, truncate=True, split="forget"
        )
        assert note == (
            f"forget: 1 of 1 items were longer than --max-tokens {limit}; truncated from the left "
            f"to at most {limit} tokens, answers kept whole"
        )
        assert (
            short.answer == pair.answer
            and tok(short.answer, add_special_tokens=False)["input_ids"] == answer
        )
        kept = tok(short.prompt, add_special_tokens=False)["input_ids"]
        assert (
            kept == prompt[-len(kept) :] and len(kept) == limit - len(answer) - special
        )  # the longest suffix that fits
    for limit in range(special + 2, len(words) + special):
        (short,), _ = check_token_lengths(subject, [text], ["x:1"], max_tokens=limit, truncate=True)
        assert tok(short.text, add_special_tokens=False)["input_ids"] == words[-(limit - special) :]
    fits = Item("The capital of Veltravia is", "Orsenne")
    assert check_token_lengths(subject, [fits], ["x:1"], max_tokens=128, truncate=True) == (
        [fits],
        None,
    )


def test_truncation_refuses_an_answer_that_alone_does_not_fit(subject):
    item = Item("The capital of Veltravia is", "Orsenne and Veltravia")  # a 3-token answer
    with pytest.raises(
        DataError,
        match=r"^x:4: answer: 3 tokens leave no room for a prompt within --max-tokens 3; shorten it$",
    ):
        check_token_lengths(subject, [item], ["x:4"], max_tokens=3, truncate=True)
    with pytest.raises(
        DataError,
        match=r"^x:4: the item is 8 tokens, more than --max-tokens 4; shorten or split it$",
    ):
        check_token_lengths(
            subject, [item], ["x:4"], max_tokens=4
        )  # without truncate: refused as before
