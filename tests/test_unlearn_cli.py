"""`unlearn-lens unlearn` end to end on a tiny memorised checkpoint: outputs, overwrite guard, errors, Ctrl-C."""

from __future__ import annotations

import json

import pytest
from memorised import CONTROL, FORGET, RETAIN, memorised_subject

import unlearn_lens as ul
from unlearn_lens.cli import main
from unlearn_lens.evaluation import evaluate
from unlearn_lens.unlearn import TrainingStep, api


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved checkpoint of the memorised tiny model."""
    return ul.save_checkpoint(memorised_subject(), tmp_path_factory.mktemp("tiny") / "memorised")


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for name, items in (("forget", FORGET), ("retain", RETAIN)):
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps(item.to_dict()) + "\n" for item in items)
        )
    return root / "forget.jsonl", root / "retain.jsonl"


def _args(model_dir, forget, out, *extra):
    return [
        "unlearn",
        "--model",
        str(model_dir),
        "--backend",
        "nnsight",
        "--forget",
        str(forget),
        "--lr",
        "3e-3",
        "--steps",
        "4",
        "--out",
        str(out),
        *extra,
    ]


def test_writes_the_unlearned_model_and_run_record(model_dir, data_files, tmp_path):
    forget, retain = data_files
    out = tmp_path / "run"
    assert main(_args(model_dir, forget, out, "--retain", str(retain), "--method", "ga_gd")) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["result"]["method"] == "ga_gd" and record["model_state"] == "unlearned"
    assert record["data"] == {
        "forget": str(forget),
        "retain": str(retain),
        "n_forget": 4,
        "n_retain": 4,
        "known_filter": None,
        "fields": {"prompt": None, "answer": None, "text": None},
        "chat_template": False,
    }
    history = record["result"]["run"]["history"]
    assert [step["step"] for step in history] == [1, 2, 3, 4] and history[-1]["metrics"]["retain"][
        "n_sequences"
    ] == 4
    unlearned = ul.load(out / "model", backend="nnsight")
    after = evaluate(unlearned, FORGET)
    assert after.exact_match == pytest.approx(
        record["result"]["run"]["final_metrics"]["forget"]["exact_match"]
    )
    assert after.exact_match < 1.0


def test_refuses_to_overwrite_without_force(model_dir, data_files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(model_dir, data_files[0], out, "--steps", "1")) == 0
    capsys.readouterr()
    assert main(_args(model_dir, data_files[0], out, "--steps", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--force" in err
    assert main(_args(model_dir, data_files[0], out, "--steps", "2", "--force")) == 0
    assert len(json.loads((out / "run.json").read_text())["result"]["run"]["history"]) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--method", "forget_it"), "unknown objective 'forget_it'"),
        (("--method", "npo_kl"), "'npo_kl' needs a retain set"),
        (("--lr", "0"), "lr must be positive"),
        (("--requests", "9"), "requests=9 is more than the 4 forget items"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(model_dir, data_files, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main(_args(model_dir, data_files[0], out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (out / "run.json").exists()


def test_missing_forget_file_is_exit_2(model_dir, tmp_path, capsys):
    assert main(_args(model_dir, tmp_path / "nope.jsonl", tmp_path / "run")) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_ctrl_c_saves_the_finished_request_and_says_where(
    model_dir, data_files, tmp_path, monkeypatch, capsys
):
    """Ctrl-C during the second request: the model after the first is saved, with the history so far."""
    train = api.train

    def interrupt_at_step_3(step: TrainingStep) -> None:
        if step.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(
        api,
        "train",
        lambda *a, callbacks=(), **k: train(*a, callbacks=[*callbacks, interrupt_at_step_3], **k),
    )
    out = tmp_path / "run"
    assert main(_args(model_dir, data_files[0], out, "--steps", "2", "--requests", "2")) == 130
    record = json.loads((out / "run.json").read_text())
    run = record["result"]["run"]
    assert run["stop_reason"] == "interrupted" and run["stopped_at"] == {"request": 1, "step": 3}
    assert len(run["history"]) == 3 and record["model_state"].startswith("after request 0")
    assert (out / "model" / "model.safetensors").exists()
    printed = capsys.readouterr().out
    assert "interrupted after step 3 (request 1)" in printed and str(out / "model") in printed


def test_builtin_domain_and_known_only(model_dir, tmp_path):
    """`--domain` brings its forget and retain sets; `--known-only` drops what the model cannot answer."""
    out = tmp_path / "domain"
    assert (
        main(
            [
                "unlearn",
                "--model",
                str(model_dir),
                "--backend",
                "nnsight",
                "--domain",
                "math",
                "--steps",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads((out / "run.json").read_text())["data"]
    assert (data["forget"], data["retain"], data["n_forget"], data["n_retain"]) == (
        "builtin:math",
        "builtin:math",
        32,
        32,
    )
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in CONTROL + FORGET))
    out = tmp_path / "known"
    assert main(_args(model_dir, mixed, out, "--steps", "1", "--known-only")) == 0
    data = json.loads((out / "run.json").read_text())["data"]
    assert data["n_forget"] == 4 and data["known_filter"] == {
        "n_items": 8,
        "n_known": 4,
        "n_dropped": 4,
    }
