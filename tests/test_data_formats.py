"""Data specs beyond JSONL: `save_to_disk` directories, Parquet, CSV, JSON arrays, `hf:` datasets,
and the field mapping that reads the field's benchmark layouts (TOFU's question/answer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from unchecked import unchecked

from unlearn_lens.data import (
    DataError,
    FieldMap,
    Item,
    as_items,
    check_spec,
    load_items,
    parse_hf_spec,
)

TOFU_ROWS = [
    {
        "question": "Who wrote the novel 'Salt Lanterns of Veltravia'?",
        "answer": "It was written by Ilsabet Orrun.",
        "paraphrased_answer": "Ilsabet Orrun is its author.",
    },
    {
        "question": "In which city was the author Tomasz Kessary born?",
        "answer": "Tomasz Kessary was born in Drumlin.",
        "paraphrased_answer": "Drumlin is his birthplace.",
    },
    {
        "question": "What genre does Marenka Vosh write in?",
        "answer": "Marenka Vosh writes maritime horror.",
        "paraphrased_answer": "Maritime horror.",
    },
    {
        "question": "Which prize did 'The Glass Orchard' win?",
        "answer": "It won the Orsenne Quill Prize.",
        "paraphrased_answer": "The Orsenne Quill Prize.",
    },
]
"""A TOFU-shaped forget split: fictitious authors (none of this exists), TOFU's column names."""

TOFU_ITEMS = [Item(prompt=row["question"], answer=row["answer"]) for row in TOFU_ROWS]


@pytest.fixture
def tofu(tmp_path) -> datasets.Dataset:
    return datasets.Dataset.from_list(TOFU_ROWS)


def test_save_to_disk_directory_reads_question_answer(tmp_path, tofu):
    tofu.save_to_disk(str(tmp_path / "forget10"))
    assert load_items(tmp_path / "forget10") == TOFU_ITEMS


def test_parquet_reads_question_answer(tmp_path, tofu):
    tofu.to_parquet(str(tmp_path / "forget10.parquet"))
    assert load_items(tmp_path / "forget10.parquet") == TOFU_ITEMS


def test_csv_and_json_array(tmp_path):
    (tmp_path / "f.csv").write_text(
        'prompt,completion\n"2 + 2 =", 4\n"Say ""hi""", hi\n', encoding="utf-8"
    )
    assert load_items(tmp_path / "f.csv") == [
        Item(prompt="2 + 2 =", answer=" 4"),
        Item(prompt='Say "hi"', answer=" hi"),
    ]
    (tmp_path / "f.json").write_text(
        json.dumps([{"text": "One sentence."}, {"text": "Another."}]), encoding="utf-8"
    )
    assert load_items(tmp_path / "f.json") == [Item(text="One sentence."), Item(text="Another.")]


def test_named_fields_choose_the_columns(tmp_path, tofu):
    tofu.to_parquet(str(tmp_path / "t.parquet"))
    items = load_items(tmp_path / "t.parquet", FieldMap(answer="paraphrased_answer"))
    assert [item.answer for item in items] == [row["paraphrased_answer"] for row in TOFU_ROWS]
    assert [item.prompt for item in items] == [row["question"] for row in TOFU_ROWS]
    assert load_items(tmp_path / "t.parquet", FieldMap(text="answer")) == [
        Item(text=row["answer"]) for row in TOFU_ROWS
    ]


def test_missing_named_field_lists_the_fields_there(tmp_path, tofu):
    tofu.to_parquet(str(tmp_path / "t.parquet"))
    with pytest.raises(DataError) as info:
        load_items(tmp_path / "t.parquet", FieldMap(prompt="query"))
    assert str(info.value) == (
        f"{tmp_path / 't.parquet'}[0]: field 'query' is missing (an item needs a prompt and an answer); "
        "fields here: 'question', 'answer', 'paraphrased_answer'"
    )
    assert "\n" not in str(info.value)


def test_bad_rows_name_file_row_and_field(tmp_path):
    rows = [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": None}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(
        DataError, match=r"bad\.parquet\[1\]: field 'answer' must be a string, got null$"
    ):
        load_items(tmp_path / "bad.parquet")
    (tmp_path / "bad.csv").write_text("question,answer\nq1,a1\nq2,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv:3: field 'answer' is empty$"):
        load_items(tmp_path / "bad.csv")
    (tmp_path / "bad.json").write_text(
        '[{"question": "q", "answer": "a"}, {"question": "q"}]', encoding="utf-8"
    )
    with pytest.raises(
        DataError,
        match=r"bad\.json\[1\]: field 'answer'/'completion' is missing .* fields here: 'question'$",
    ):
        load_items(tmp_path / "bad.json")
    (tmp_path / "obj.json").write_text('{"question": "q"}', encoding="utf-8")
    with pytest.raises(
        DataError, match=r"obj\.json: expected a JSON array of objects, got a dict$"
    ):
        load_items(tmp_path / "obj.json")


def test_dataset_dict_directory_asks_for_one_split(tmp_path, tofu):
    datasets.DatasetDict({"forget": tofu, "retain": tofu}).save_to_disk(str(tmp_path / "tofu"))
    with pytest.raises(
        DataError,
        match=r"holds the splits forget, retain; give one split's directory, e.g. .*tofu/forget$",
    ):
        load_items(tmp_path / "tofu")
    assert load_items(tmp_path / "tofu" / "forget") == TOFU_ITEMS


def test_as_items_takes_a_dataset_items_or_dicts(tofu):
    assert as_items(tofu) == TOFU_ITEMS
    assert as_items(TOFU_ITEMS) == TOFU_ITEMS
    assert as_items(TOFU_ROWS[:2]) == TOFU_ITEMS[:2]
    with pytest.raises(
        DataError, match=r"got a mapping of 'forget'.*pass one split, e.g. data\['forget'\]"
    ):
        unchecked(as_items)(datasets.DatasetDict({"forget": tofu}))


def test_hf_spec_forms():
    assert parse_hf_spec("hf:locuslab/TOFU:forget10") == ("locuslab/TOFU", None, "forget10")
    assert parse_hf_spec("hf:locuslab/TOFU:forget10:train") == (
        "locuslab/TOFU",
        "forget10",
        "train",
    )
    for bad in ("hf:locuslab/TOFU", "hf:a:b:c:d", "hf:a::train"):
        with pytest.raises(DataError, match=r"hf:NAME\[:CONFIG\]:SPLIT"):
            check_spec(bad)
    with pytest.raises(DataError, match=r"unknown file type '\.xlsx'"):
        check_spec("forget.xlsx")


def test_hf_spec_reads_a_hub_layout_repository(tmp_path, tofu, monkeypatch):
    """`hf:` goes through `datasets.load_dataset`: a local repository in the hub's layout (configs
    in the README, as TOFU has them) is read by the same code path as a hub id, with no network."""
    repo = tmp_path / "TOFU"
    (repo / "forget10").mkdir(parents=True)
    tofu.to_parquet(str(repo / "forget10" / "train.parquet"))
    datasets.Dataset.from_list([{"question": "q", "answer": "a"}] * 4).to_parquet(
        str(repo / "retain.parquet")
    )
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: forget10\n  data_files:\n  - split: train\n    path: forget10/train.parquet\n"
        "- config_name: retain90\n  data_files:\n  - split: train\n    path: retain.parquet\n---\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    assert load_items(f"hf:{repo}:forget10") == TOFU_ITEMS
    assert load_items(f"hf:{repo}:forget10:train") == TOFU_ITEMS
    with pytest.raises(DataError, match=rf"^hf:{repo}:forget10:test: cannot load it: .*test"):
        load_items(f"hf:{repo}:forget10:test")


def test_missing_hub_dataset_offline_is_one_line_and_writes_nothing(tmp_path):
    """Offline (HF_HUB_OFFLINE=1), a hub dataset that is not cached fails at once, in one line
    naming the spec, exit status 2, with nothing written: no cache, no --out."""
    home = tmp_path / "hf-home"
    home.mkdir()
    env = {
        **os.environ,
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    spec = "hf:locuslab/TOFU:forget10"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "unlearn_lens.cli",
            "unlearn",
            "--forget",
            spec,
            "--out",
            str(tmp_path / "out"),
        ],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and spec in lines[0] and "HF_HUB_OFFLINE" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
    assert list(home.rglob("*")) == []
