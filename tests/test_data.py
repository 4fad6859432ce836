"""Loading items from files and records, and the built-in sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearn_lens.data import (
    BUILTIN_DOMAINS,
    IGNORE_INDEX,
    DataError,
    FieldMap,
    Item,
    builtin,
    check_overlap,
    encode,
    items_from_records,
    load_items,
)

MIN_FORGET_KNOWN = 24
"""The built-in forget sets must keep at least this many facts the built-in model knows (of 32)."""

MAX_CONTROL_KNOWN = 0
"""A control item the model already knows is no novel-item baseline, and the audit's novelty
filter would drop it, breaking the item-by-item match with the forget set."""

MAX_PROMPT_TOKENS = 24
"""Built-in prompts stay short so that CPU runs stay fast."""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _message(path: Path) -> str:
    with pytest.raises(DataError) as info:
        load_items(path)
    return str(info.value)


def test_jsonl_pairs_and_texts(tmp_path):
    lines = [
        json.dumps({"prompt": "The capital of France is", "answer": " Paris", "source": "ignored"}),
        "",
        json.dumps({"text": "A plain sentence."}),
        "   ",
    ]
    items = load_items(_write(tmp_path, "forget.jsonl", "\n".join(lines) + "\n"))
    assert items == [
        Item(prompt="The capital of France is", answer=" Paris"),
        Item(text="A plain sentence."),
    ]


def test_jsonl_keeps_line_numbers_across_crlf_and_u2028(tmp_path):
    lines = [
        json.dumps({"text": "one\u2028two"}, ensure_ascii=False),
        "",
        '{"prompt": "x", "answer": 7}',
    ]
    message = _message(_write(tmp_path, "forget.jsonl", "\r\n".join(lines)))
    assert message.endswith("forget.jsonl:3: field 'answer' must be a string, got int")


def test_txt_one_item_per_non_blank_line(tmp_path):
    items = load_items(_write(tmp_path, "unrelated.txt", "First line.\n\n  \nSecond line.  \n"))
    assert items == [Item(text="First line."), Item(text="Second line.  ")]


def test_malformed_json_names_line_and_column(tmp_path):
    path = _write(tmp_path, "forget.jsonl", '{"text": "ok"}\n\n{"prompt": "a" "answer": "b"}\n')
    assert _message(path) == f"{path}:3: invalid JSON (Expecting ',' delimiter at column 16)"


def test_wrong_type_names_field(tmp_path):
    path = _write(
        tmp_path, "forget.jsonl", '{"prompt": "a", "answer": " b"}\n{"prompt": "a", "answer": 3}\n'
    )
    assert _message(path) == f"{path}:2: field 'answer' must be a string, got int"


def test_missing_answer_names_field(tmp_path):
    path = _write(tmp_path, "forget.jsonl", '{"prompt": "The capital of France is"}\n')
    message = _message(path)
    assert message.startswith(f"{path}:1: field 'answer'/'completion' is missing")


def test_empty_answer_and_null_text_are_named(tmp_path):
    assert _message(_write(tmp_path, "a.jsonl", '{"prompt": "p", "answer": ""}')).endswith(
        "a.jsonl:1: field 'answer' is empty"
    )
    assert _message(_write(tmp_path, "b.jsonl", '{"text": null}')).endswith(
        "b.jsonl:1: field 'text' must be a string, got null"
    )


def test_object_of_neither_form_lists_its_fields(tmp_path):
    message = _message(_write(tmp_path, "forget.jsonl", '{"query": "q", "reply": "r"}\n'))
    assert message.endswith(
        "forget.jsonl:1: expected fields 'prompt'/'question' and 'answer'/'completion', or 'text'; "
        "fields here: 'query', 'reply'"
    )


def test_both_forms_at_once_is_an_error(tmp_path):
    message = _message(
        _write(tmp_path, "forget.jsonl", '{"prompt": "p", "answer": "a", "text": "t"}\n')
    )
    assert "forget.jsonl:1: field 'text'" in message


def test_non_object_line(tmp_path):
    assert "forget.jsonl:1: expected an object" in _message(
        _write(tmp_path, "forget.jsonl", "[1, 2]\n")
    )


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = _write(tmp_path, "forget.jsonl", content)
    assert _message(path) == f"{path}: no items"


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nowhere" / "forget.jsonl"
    assert _message(path) == f"{path}: no such file"


def test_unknown_suffix_lists_accepted(tmp_path):
    path = _write(tmp_path, "forget.xlsx", "prompt,answer\n")
    assert _message(path).startswith(
        f"{path}: unknown file type '.xlsx'; accepted: .jsonl, .txt, .json, .csv, .parquet, "
    )


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_records_from_list_of_dicts():
    records = [{"question": "2 + 2 =", "reply": " 4", "id": 1}, {"body": "Some text."}]
    items = items_from_records(records, FieldMap(prompt="question", answer="reply", text="body"))
    assert items == [Item(prompt="2 + 2 =", answer=" 4"), Item(text="Some text.")]


def test_records_errors_name_index_and_field():
    with pytest.raises(
        DataError, match=r"^<records>\[1\]: field 'answer' must be a string, got float$"
    ):
        items_from_records([{"prompt": "a", "answer": " b"}, {"prompt": "c", "answer": 1.5}])
    with pytest.raises(DataError, match=r"^my-dataset\[0\]: field 'reply' is missing"):
        items_from_records(
            [{"question": "q"}], FieldMap(prompt="question", answer="reply"), source="my-dataset"
        )
    with pytest.raises(DataError, match=r"^<records>: no items$"):
        items_from_records(iter([]))


def test_check_overlap_counts_distinct_shared_items():
    a, b, c = Item(prompt="p", answer=" a"), Item(prompt="p", answer=" b"), Item(text="t")
    assert check_overlap([a, b, a], [a, c]) == 1
    assert check_overlap([a], [b, c]) == 0


@pytest.mark.parametrize("domain", BUILTIN_DOMAINS)
def test_builtin_sets(domain):
    sets = builtin(domain)
    assert sets.domain == domain
    assert len(sets.forget) >= 32
    for split in (sets.retain, sets.control, sets.unrelated):
        assert 28 <= len(split) <= 40
    assert check_overlap(sets.forget, sets.retain) == 0
    assert {item.prompt for item in sets.forget}.isdisjoint(item.prompt for item in sets.retain)
    for item in sets.forget + sets.retain + sets.control:
        assert not item.is_text and item.prompt and item.answer and item.answer.strip()
    assert all(item.is_text and item.text for item in sets.unrelated)


def test_unknown_builtin_domain_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'bio'.*text, code, math"):
        builtin("bio")


def _known_count(model, tokenizer, items: list[Item]) -> int:
    """How many items greedy exact match gets right (every answer token is the argmax, teacher-forced)."""
    import torch

    batch = encode(tokenizer, items)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    predicted, targets = logits[:, :-1].argmax(-1), batch.labels[:, 1:]
    is_target = targets != IGNORE_INDEX
    return int(((predicted == targets) | ~is_target).all(dim=1).sum())


def test_builtin_forget_sets_are_known_by_the_builtin_model(smollm_tl):
    model, tokenizer = smollm_tl.model, smollm_tl.tokenizer
    for domain in BUILTIN_DOMAINS:
        sets = builtin(domain)
        for item in sets.forget + sets.retain + sets.control:
            assert len(tokenizer(item.prompt)["input_ids"]) <= MAX_PROMPT_TOKENS, item
        assert _known_count(model, tokenizer, sets.forget) >= MIN_FORGET_KNOWN, domain
        assert _known_count(model, tokenizer, sets.control) <= MAX_CONTROL_KNOWN, domain


def _spaced_digit_tokenizer():
    """A tiny tokenizer that, like SmolLM2's, splits " 42" into a bare space and single digits."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "The", " answer", " is", " ", "\n", "4", "2", " x", " +"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[A-Za-z+]+|\d|\s"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")


def test_whitespace_only_tokens_stay_in_the_input_but_are_never_targets():
    tok = _spaced_digit_tokenizer()
    ids = tok.convert_tokens_to_ids
    batch = encode(
        tok,
        [
            Item(prompt="The answer is", answer=" 42"),
            Item(prompt="The answer is", answer=" x + 2\n"),
            Item(text="The answer is 4"),
        ],
    )
    assert batch.input_ids[0, :6].tolist() == ids(["The", " answer", " is", " ", "4", "2"])
    assert batch.labels[0, :6].tolist() == [IGNORE_INDEX] * 4 + ids(["4", "2"])
    labelled = batch.labels[1][batch.labels[1] != IGNORE_INDEX].tolist()
    assert labelled == ids([" x", " +", "2"])
    text_labels = [*ids(["The", " answer", " is"]), IGNORE_INDEX, *ids(["4"])]
    assert batch.labels[2, :5].tolist() == text_labels
    with pytest.raises(ValueError, match="whitespace only"):
        encode(tok, [Item(prompt="The answer is", answer=" \n")])


def test_the_builtin_tokenizer_scores_digits_not_the_space_before_them():
    from transformers import AutoTokenizer

    from unlearn_lens.models.builtin import DEFAULT_MODEL, ensure_builtin_cache

    tok = AutoTokenizer.from_pretrained(str(ensure_builtin_cache(DEFAULT_MODEL)))
    item = Item(prompt="What is 40 + 2? The answer is", answer=" 42")
    batch = encode(tok, [item])
    answer_ids = tok(" 42", add_special_tokens=False)["input_ids"]
    assert tok.decode(answer_ids[:1]) == " " and len(answer_ids) == 3  # the split being fixed
    labelled = batch.labels[0][batch.labels[0] != IGNORE_INDEX].tolist()
    assert labelled == answer_ids[1:] and tok.decode(labelled) == "42"
    assert batch.input_ids[0, -3:].tolist() == answer_ids
