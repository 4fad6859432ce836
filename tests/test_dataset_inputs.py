"""A `datasets.Dataset` goes straight into `ul.unlearn`, `ul.relearn`, `ul.compare`, and data specs
into every command's data flags, with the field mapping and chat-template flags."""

from __future__ import annotations

import json

import datasets
import pytest
from memorised import CONTROL, FORGET, RETAIN, memorised_subject
from unchecked import unchecked

import unlearn_lens as ul
from unlearn_lens.cli import main
from unlearn_lens.schema import dump

datasets.disable_progress_bars()  # their bars on stderr would hide the one-line errors checked here


def _dataset(items, prompt="question", answer="answer") -> datasets.Dataset:
    """Items as a dataset in TOFU's layout, with an extra column the reader must ignore."""
    return datasets.Dataset.from_list(
        [{prompt: i.prompt, answer: i.answer, "id": n} for n, i in enumerate(items)]
    )


@pytest.fixture(scope="module")
def memorised():
    return memorised_subject()


@pytest.fixture(scope="module")
def model_dir(memorised, tmp_path_factory):
    return ul.save_checkpoint(memorised, tmp_path_factory.mktemp("tiny") / "memorised")


def test_unlearn_takes_a_dataset_and_matches_the_items_run(memorised):
    """Same data as a Dataset and as items: the same history, the same weights."""
    options = {"method": "ga_gd", "lr": 1e-2, "steps": 3, "batch_size": 4, "progress": False}
    start = memorised.snapshot()
    expected = ul.unlearn(memorised, FORGET, RETAIN, **options)
    expected_weights = memorised.snapshot()
    memorised.restore(start)
    result = ul.unlearn(memorised, _dataset(FORGET), _dataset(RETAIN), **options)
    assert [step.loss for step in result.history] == [step.loss for step in expected.history]
    assert all((memorised.weight(k).cpu() == expected_weights[k]).all() for k in memorised.keys())
    memorised.restore(start)


def test_relearn_and_compare_take_datasets(memorised, model_dir):
    start = memorised.snapshot()
    options = {"steps": 2, "lr": 1e-2, "batch_size": 4, "progress": False}
    expected = ul.relearn(memorised, FORGET, CONTROL, **options)
    memorised.restore(start)
    result = ul.relearn(
        memorised, _dataset(FORGET), _dataset(CONTROL), forget_items=_dataset(FORGET), **options
    )
    memorised.restore(start)
    assert (
        result.forget_after == expected.forget_after
        and result.control_after == expected.control_after
    )
    saved = ul.load(model_dir, backend="nnsight")
    items = FORGET + RETAIN + CONTROL
    comparison = ul.compare(memorised, saved, _dataset(items), fisher=False, progress=False)
    assert comparison.n_items == len(items)
    assert dump(comparison) == dump(
        ul.compare(memorised, saved, items, fisher=False, progress=False)
    )


def test_a_dataset_dict_is_refused_in_one_line(memorised):
    with pytest.raises(ul.DataError, match=r"^forget: got a mapping of 'train'.*data\['train'\]$"):
        unchecked(ul.unlearn)(
            memorised, datasets.DatasetDict({"train": _dataset(FORGET)}), progress=False
        )


def test_unlearn_cli_reads_parquet_through_named_fields(model_dir, tmp_path):
    _dataset(FORGET, prompt="q", answer="a").to_parquet(str(tmp_path / "forget.parquet"))
    _dataset(RETAIN, prompt="q", answer="a").save_to_disk(str(tmp_path / "retain"))
    out = tmp_path / "out"
    assert (
        main(
            [
                "unlearn",
                "--model",
                str(model_dir),
                "--forget",
                str(tmp_path / "forget.parquet"),
                "--retain",
                str(tmp_path / "retain"),
                "--prompt-field",
                "q",
                "--answer-field",
                "a",
                "--lr",
                "1e-2",
                "--steps",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["n_forget"] == len(FORGET) and record["data"]["n_retain"] == len(RETAIN)
    assert record["data"]["forget"] == str(tmp_path / "forget.parquet")


@pytest.mark.parametrize("case", ["missing field", "chat template", "hf spec"])
def test_data_flag_errors_are_one_line_and_write_nothing(model_dir, tmp_path, capsys, case):
    _dataset(FORGET).to_parquet(str(tmp_path / "forget.parquet"))
    forget = str(tmp_path / "forget.parquet")
    out = tmp_path / "out"
    args, message = {
        "missing field": (
            ["unlearn", "--forget", forget, "--prompt-field", "query"],
            "forget.parquet[0]: field 'query' is missing (an item needs a prompt and an answer); "
            "fields here: 'question', 'answer', 'id'",
        ),
        "chat template": (
            ["audit", "--forget", forget, "--chat-template", "--keep-unknown"],
            "memorised' has no chat template; drop --chat-template",
        ),
        "hf spec": (
            ["compare", str(model_dir), str(model_dir), "--data", "hf:locuslab/TOFU"],
            "hf:NAME[:CONFIG]:SPLIT",
        ),
    }[case]
    assert (
        main(
            [*args, "--model", str(model_dir), "--out", str(out)]
            if args[0] != "compare"
            else [*args, "--out", str(out)]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
