"""`unlearn-lens relearn` and `ul.relearn` on a checkpoint path: the relearned model and its
recovery curve saved, the overwrite guard, and Ctrl-C writing nothing."""

from __future__ import annotations

import importlib
import json

import pytest
from memorised import CONTROL, FORGET, unlearned_workspace

import unlearn_lens as ul
from unlearn_lens.cli import main
from unlearn_lens.evaluation import evaluate
from unlearn_lens.schema import dump
from unlearn_lens.unlearn import TrainingStep

relearn_module = importlib.import_module("unlearn_lens.unlearn.relearn")
"""The module (the package's `relearn` attribute is the function)."""


@pytest.fixture(scope="module")
def unlearned(tmp_path_factory):
    """Data files and `u`: the --out of `unlearn-lens unlearn` on the memorised tiny model."""
    return unlearned_workspace(tmp_path_factory.mktemp("relearn"), "u")


def _args(root, out, *extra):
    return [
        "relearn",
        str(root / "u" / "model"),
        "--backend",
        "nnsight",
        "--data",
        str(root / "forget.jsonl"),
        "--control",
        str(root / "control.jsonl"),
        "--steps",
        "3",
        "--lr",
        "1e-2",
        "--batch-size",
        "4",
        "--out",
        str(out),
        *extra,
    ]


def test_saves_the_relearned_model_and_its_recovery_curve(unlearned, tmp_path, capsys):
    out = tmp_path / "attack"
    assert main(_args(unlearned, out, "--retain", str(unlearned / "retain.jsonl"))) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["command"] == "relearn" and record["model"] == str(unlearned / "u" / "model")
    assert (
        record["data"]["n_data"] == 4
        and record["data"]["n_control"] == 4
        and record["data"]["n_retain"] == 4
    )
    curve = record["result"]["curve"]
    assert [point["step"] for point in curve["forget"]] == [0, 1, 2, 3], (
        "steps + 1 points: before the first step and after each"
    )
    assert len(curve["retain"]) == 4 and curve["control"][0]["step"] == 0
    work = record["result"]["work"]
    assert (
        work["source"]["steps"] == 3
        and work["source"]["lr"] == 1e-2
        and work["control"]["epochs"] == work["source"]["epochs"]
    )
    relearned = ul.load(out / "model", backend="nnsight")
    assert evaluate(relearned, FORGET).accuracy == pytest.approx(curve["forget"][-1]["accuracy"])
    assert str(out / "model") in capsys.readouterr().out


def test_the_control_keeps_only_items_the_checkpoint_does_not_answer(unlearned, tmp_path, capsys):
    """As in the audit: control items the model already answers could not gain, and would make any
    recovery look faster than learning; a control it knows entirely is refused in one line."""
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        (unlearned / "control.jsonl").read_text() + (unlearned / "retain.jsonl").read_text()
    )
    original = [
        "--backend",
        "nnsight",
        "--data",
        str(unlearned / "forget.jsonl"),
        "--steps",
        "1",
        "--lr",
        "1e-2",
        "--batch-size",
        "4",
    ]
    assert (
        main(
            [
                "relearn",
                str(unlearned / "ck"),
                *original,
                "--control",
                str(mixed),
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    record = json.loads((tmp_path / "a" / "run.json").read_text())
    assert (record["data"]["n_control_given"], record["data"]["n_control"]) == (
        8,
        4,
    )  # the memorised model knows RETAIN
    assert record["result"]["control_before"]["accuracy"] < 1.0
    capsys.readouterr()
    assert (
        main(
            [
                "relearn",
                str(unlearned / "ck"),
                *original,
                "--control",
                str(unlearned / "retain.jsonl"),
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1
        and "already answers all 4 control items" in err
        and not (tmp_path / "b").exists()
    )


def test_refuses_an_earlier_run_without_force(unlearned, tmp_path, capsys):
    out = tmp_path / "attack"
    assert main(_args(unlearned, out, "--steps", "1")) == 0
    capsys.readouterr()
    assert main(_args(unlearned, out, "--steps", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds run.json" in err and "--force" in err
    assert main(_args(unlearned, out, "--steps", "2", "--force")) == 0
    assert len(json.loads((out / "run.json").read_text())["result"]["curve"]["forget"]) == 3


def test_ctrl_c_writes_nothing(unlearned, tmp_path, monkeypatch):
    train = relearn_module.train

    def interrupt_at_step_2(step: TrainingStep) -> None:
        if step.step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(
        relearn_module,
        "train",
        lambda *a, callbacks=(), **k: train(*a, callbacks=[*callbacks, interrupt_at_step_2], **k),
    )
    assert main(_args(unlearned, tmp_path / "attack")) == 130
    assert not (tmp_path / "attack").exists()


def test_relearn_takes_a_checkpoint_path(unlearned):
    """`ul.relearn` loads a path (here unlearn's --out, whose model/ it finds) and gives the numbers
    the same call on the loaded model gives."""
    kwargs = {"steps": 2, "lr": 1e-2, "batch_size": 4}
    from_path = ul.relearn(str(unlearned / "u"), FORGET, CONTROL, progress=False, **kwargs)
    loaded = ul.relearn(
        ul.load(unlearned / "u" / "model"), FORGET, CONTROL, progress=False, **kwargs
    )
    assert len(from_path.curve.forget) == 3
    assert dump(from_path.curve) == dump(loaded.curve)


def test_split_runs_both_halves_and_keeps_the_checkpoint(unlearned, tmp_path, capsys):
    """`--split`: each half trained on one half and measured on the other (indices recorded,
    disjoint, covering the data), the control measured under the same runs; no model written."""
    out = tmp_path / "split"
    assert main(_args(unlearned, out, "--split")) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["command"] == "relearn --split" and not (out / "model").exists()
    halves = record["result"]["halves"]
    assert len(halves) == 2
    for half, other in (halves, halves[::-1]):
        assert set(half["trained"]).isdisjoint(half["held_back"])
        assert sorted(half["trained"] + half["held_back"]) == list(range(len(FORGET)))
        assert half["trained"] == other["held_back"], "the halves are swapped"
        assert len(half["held_back_curve"]) == 4 and len(half["control_curve"]) == 4
    assert "held back before → after" in capsys.readouterr().out
