"""The training loop on a tiny model that memorised its facts: forgetting, requests, stops, freezing, seeding."""

from __future__ import annotations

import json

import pytest
import torch
from memorised import CONTROL, FORGET, RETAIN, memorised_subject

import unlearn_lens as ul
from unlearn_lens.data import builtin
from unlearn_lens.data.items import Item
from unlearn_lens.errors import ConfigError
from unlearn_lens.evaluation import evaluate
from unlearn_lens.schema import dump, read
from unlearn_lens.unlearn import (
    TrainConfig,
    TrainingStep,
    TrainResult,
    filter_known,
    split_known,
    train,
    unlearn,
)

FAST = TrainConfig(lr=3e-3, steps=4, eval_every=0)
"""A few GA steps at a rate the memorised tiny model forgets under."""


@pytest.fixture(scope="module")
def memorised():
    subject = memorised_subject()
    return subject, subject.snapshot()


@pytest.fixture
def subject(memorised):
    """The memorised subject, reset to its memorised weights for every test."""
    subject, snapshot = memorised
    subject.restore(snapshot)
    return subject


def _equal(a: dict, b: dict, keys=None) -> bool:
    return all(torch.equal(a[key], b[key]) for key in (keys or a))


def test_ga_raises_forget_nll_and_drops_exact_match(subject):
    before = evaluate(subject, FORGET)
    result = unlearn(subject, FORGET, method="ga", lr=3e-3, steps=6, progress=False)
    after = evaluate(subject, FORGET)
    assert before.exact_match == 1.0 and after.exact_match <= 0.5
    assert after.nll > before.nll + 1.0
    assert (
        result.metrics("before", "forget") == before and result.metrics("after", "forget") == after
    )
    assert result.metrics("before", "retain") is None
    subject.restore(result.original)
    assert evaluate(subject, FORGET) == before


def test_unlearn_can_leave_the_snapshots_to_the_caller(subject):
    result = unlearn(
        subject,
        FORGET,
        method="ga",
        lr=3e-3,
        steps=2,
        requests=2,
        keep_snapshots=False,
        progress=False,
    )
    assert (
        result.original == {}
        and result.unlearned == []
        and result.run.request_stops == ["completed"] * 2
    )


def test_same_seed_gives_identical_numbers_and_weights(subject, memorised):
    runs = []
    for _ in range(2):
        subject.restore(memorised[1])
        result = train(
            subject,
            "ga_gd",
            FORGET,
            RETAIN,
            TrainConfig(lr=3e-3, steps=5, batch_size=3, eval_every=2),
            progress=False,
        )
        runs.append((dump(result), subject.snapshot()))
    (first, weights_1), (second, weights_2) = runs
    first.pop("seconds"), second.pop("seconds")
    assert first == second and _equal(weights_1, weights_2)
    subject.restore(memorised[1])
    other_seed = train(
        subject,
        "ga_gd",
        FORGET,
        RETAIN,
        TrainConfig(lr=3e-3, steps=5, batch_size=3, seed=1, eval_every=0),
        progress=False,
    )
    assert [s.loss for s in other_seed.history] != [s["loss"] for s in first["history"]]


def test_continual_requests_give_one_snapshot_each_in_sequence(subject):
    seen: list[TrainingStep] = []
    result = train(
        subject,
        "ga",
        FORGET,
        config=TrainConfig(lr=3e-3, steps=3, requests=2),
        callbacks=[seen.append],
        progress=False,
    )
    assert len(result.snapshots) == 2 and result.request_stops == ["completed", "completed"]
    assert [(s.request, s.step, s.request_step) for s in seen] == [
        (0, 1, 1),
        (0, 2, 2),
        (0, 3, 3),
        (1, 4, 1),
        (1, 5, 2),
        (1, 6, 3),
    ]
    assert seen == result.history and all(s.phase == "unlearn" for s in seen)
    # Metrics at the end of each request, on that request's items (2 facts each).
    assert [s.metrics is not None for s in seen] == [False, False, True, False, False, True]
    assert seen[2].metrics["forget"].n_sequences == 2
    assert _equal(result.snapshots[1], subject.snapshot()) and not _equal(
        result.snapshots[0], result.snapshots[1]
    )
    assert (
        result.initial_metrics["forget"].n_sequences == 4
        and result.final_metrics["forget"].n_sequences == 4
    )


def test_early_stop_ends_a_request_once_forgotten(subject):
    result = train(
        subject,
        "ga",
        FORGET,
        config=TrainConfig(lr=3e-3, steps=30, early_stop_forget_accuracy=0.0),
        progress=False,
    )
    assert result.stop_reason == "early_stop" and result.steps_run < 30
    assert result.history[-1].metrics["forget"].exact_match == 0.0
    assert all(s.metrics["forget"].exact_match > 0.0 for s in result.history[:-1])


def test_divergence_guard_stops_on_a_huge_learning_rate(subject):
    result = train(
        subject,
        "ga",
        FORGET,
        config=TrainConfig(optimizer="sgd", lr=1e6, steps=10, grad_clip=None),
        progress=False,
    )
    assert result.stop_reason.startswith("diverged: loss") and result.steps_run < 10
    assert result.stopped_at == {"request": 0, "step": result.steps_run}
    assert result.snapshots == [] and result.request_stops == []


def test_trainable_keys_freeze_everything_else(subject, memorised):
    key = "layers.1.mlp_down.weight"
    train(
        subject,
        "ga",
        FORGET,
        config=TrainConfig(lr=3e-3, steps=2, trainable_keys=(key,), eval_every=0),
        progress=False,
    )
    after = subject.snapshot()
    assert not torch.equal(after[key], memorised[1][key])
    assert _equal(after, memorised[1], [k for k in after if k != key])
    assert all(p.requires_grad for p in subject.parameters())


def test_trainable_keys_freeze_slices_of_a_fused_weight():
    """GPT-2 keeps Q, K and V in one parameter: training Q alone must leave K and V exact."""
    subject = memorised_subject(family="gpt2")
    before = subject.snapshot()
    train(
        subject,
        "ga",
        FORGET,
        config=TrainConfig(lr=3e-3, steps=2, trainable_keys=("layers.0.q.weight",), eval_every=0),
        progress=False,
    )
    after = subject.snapshot()
    assert not torch.equal(after["layers.0.q.weight"], before["layers.0.q.weight"])
    assert _equal(after, before, [k for k in after if k != "layers.0.q.weight"])


def test_rmu_trains_only_its_default_keys(subject, memorised):
    result = train(
        subject, "rmu", FORGET, RETAIN, TrainConfig(lr=3e-3, steps=2, eval_every=0), progress=False
    )
    after = subject.snapshot()
    changed = sorted(k for k in after if not torch.equal(after[k], memorised[1][k]))
    assert changed == ["layers.0.mlp_down.weight"]  # 2 layers: rmu_layer 0, so blocks 0..0
    assert result.stop_reason == "completed"


def test_ctrl_c_in_a_callback_keeps_the_history_so_far(subject):
    def interrupt(step: TrainingStep) -> None:
        if step.step == 3:
            raise KeyboardInterrupt

    result = train(
        subject,
        "ga",
        FORGET,
        config=TrainConfig(lr=3e-3, steps=2, requests=2),
        callbacks=[interrupt],
        progress=False,
    )
    assert result.interrupted and result.stop_reason == "interrupted"
    assert [s.step for s in result.history] == [1, 2, 3]
    assert result.stopped_at == {"request": 1, "step": 3}
    assert len(result.snapshots) == 1 and result.final_metrics is None


def test_result_round_trips_through_json(subject):
    result = train(
        subject,
        "npo_kl",
        FORGET,
        RETAIN,
        TrainConfig(lr=3e-3, steps=2, eval_every=1, trainable_keys=("layers.0.o.weight",)),
        progress=False,
    )
    data = json.loads(json.dumps(dump(result)))
    assert dump(read(TrainResult, data)) == dump(result)
    assert data["history"][0]["metrics"]["retain"]["n_sequences"] == 4


def test_progress_bar_runs(subject, capsys):
    train(subject, "ga", FORGET, config=TrainConfig(lr=3e-3, steps=2), progress=True)
    assert "ga" in capsys.readouterr().out


def test_training_through_the_transformer_lens_bridge(memorised):
    """Gradients flow through the bridge's hooks as through the nnsight trace (SGD: Adam would
    blow rounding-level gradient differences on untouched embedding rows up to full steps)."""
    nnsight_subject, snapshot = memorised
    bridge_subject = ul.load(
        ul.tiny_llama(vocab_size=len(nnsight_subject.tokenizer)),
        tokenizer=nnsight_subject.tokenizer,
    )
    bridge_subject.restore(snapshot)
    nnsight_subject.restore(snapshot)
    config = TrainConfig(optimizer="sgd", lr=0.1, steps=2, eval_every=0)
    losses = [
        [s.loss for s in train(s, "npo", FORGET, config=config, progress=False).history]
        for s in (bridge_subject, nnsight_subject)
    ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    after = bridge_subject.snapshot(), nnsight_subject.snapshot()
    assert all(torch.allclose(after[0][k], after[1][k], atol=1e-5) for k in after[0])


def test_filter_known_keeps_what_the_model_answers(subject):
    kept, report = filter_known(subject, CONTROL[:2] + FORGET + CONTROL[2:])
    assert kept == FORGET
    assert (report.n_items, report.n_known, report.n_dropped) == (8, 4, 4)
    # The split keeps both sides in order: the memorised facts, then what a control may use.
    assert split_known(subject, CONTROL[:2] + FORGET + CONTROL[2:]) == (FORGET, CONTROL)
    assert split_known(subject, []) == ([], [])


def test_bad_inputs_fail_before_training(subject, memorised):
    with pytest.raises(ConfigError, match="forget set is empty"):
        train(subject, "ga", [], progress=False)
    with pytest.raises(ConfigError, match="'ga_gd' needs a retain set"):
        train(subject, "ga_gd", FORGET, progress=False)
    with pytest.raises(ConfigError, match=r"unknown objective 'ascent'; known: .*npo"):
        unlearn(subject, FORGET, method="ascent", progress=False)
    with pytest.raises(ConfigError, match="lr must be positive"):
        unlearn(subject, FORGET, lr=0, progress=False)
    with pytest.raises(ConfigError, match="steps must be at least 1"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match=r"forget item 1: answer ' ' .* tokenises to nothing"):
        train(subject, "ga", [FORGET[0], Item("The capital of", " ")], progress=False)
    with pytest.raises(ConfigError, match="unknown trainable key"):
        train(
            subject,
            "ga",
            FORGET,
            config=TrainConfig(trainable_keys=("layers.9.q.weight",)),
            progress=False,
        )
    with pytest.raises(ConfigError, match="requests=5 is more than the 4 forget items"):
        train(subject, "ga", FORGET, config=TrainConfig(requests=5), progress=False)
    assert _equal(subject.snapshot(), memorised[1])


def test_overlap_between_forget_and_retain_warns_with_the_count(subject):
    with pytest.warns(UserWarning, match="2 item"):
        train(
            subject,
            "ga_gd",
            FORGET,
            RETAIN + FORGET[:2],
            TrainConfig(lr=1e-4, steps=1, eval_every=0),
            progress=False,
        )


@pytest.mark.slow
def test_ga_forgets_known_capitals_of_the_builtin_model(smollm_tl):
    """The study's setting: GA, AdamW, lr 1e-5, batch 8 on facts SmolLM2 knows: gone in a few steps."""
    facts = builtin("text").forget[:8]
    original = smollm_tl.snapshot()
    try:
        result = unlearn(
            smollm_tl, facts, method="ga", lr=1e-5, steps=3, eval_every=1, progress=False
        )
    finally:
        smollm_tl.restore(original)
    assert result.metrics("before", "forget").exact_match == 1.0
    assert result.metrics("after", "forget").exact_match == 0.0
    assert [s.loss for s in result.history] == sorted(s.loss for s in result.history)[::-1]
