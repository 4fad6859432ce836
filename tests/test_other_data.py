"""Other-data relearning: recovery read on the forget set from a fine-tune that never sees a
forget item, and its null: facts the model never knew stay unknown."""

from __future__ import annotations

import pytest
import torch
from memorised import CONTROL, FORGET, RETAIN, memorised_subject

from unlearn_lens.attacks.other_data import other_data_attack
from unlearn_lens.evaluation import evaluate
from unlearn_lens.unlearn import TrainConfig, train

BUDGET = {"steps": 10, "lr": 1e-2, "batch_size": 4, "seed": 0}


def test_recovery_is_read_on_the_forget_set_from_a_fine_tune_on_retain_data_only():
    subject = memorised_subject()
    original = evaluate(subject, FORGET).accuracy
    train(
        subject,
        "ga",
        FORGET,
        config=TrainConfig(lr=1e-2, steps=3, batch_size=4, eval_every=0),
        progress=False,
    )
    before = evaluate(subject, FORGET)
    start = subject.snapshot()
    attack = other_data_attack(
        subject, "retain", RETAIN, FORGET, CONTROL, forget_original=original, **BUDGET
    )
    after = evaluate(subject, FORGET).accuracy
    assert attack.forget_before == before and attack.forget_after.accuracy == after
    lost = original - before.accuracy
    assert lost > 0 and attack.recovery == pytest.approx((after - before.accuracy) / lost)
    assert attack.work.items_seen == BUDGET["steps"] * BUDGET["batch_size"]
    # The same fine-tune, by hand on retain alone, ends on the same weights: no forget item trained.
    moved = subject.snapshot()
    subject.restore(start)
    config = TrainConfig(eval_every=0, **BUDGET)
    train(subject, "finetune", RETAIN, config=config, progress=False)
    assert all(torch.equal(moved[k], subject.snapshot()[k]) for k in moved)


def test_facts_never_known_do_not_come_back():
    """The null: on facts the model never knew (the control, read as if 'forgotten' from a
    perfect original), fine-tuning on retain data brings nothing back."""
    subject = memorised_subject()
    attack = other_data_attack(
        subject, "retain", RETAIN, CONTROL, FORGET, forget_original=1.0, **BUDGET
    )
    assert attack.forget_before.accuracy == 0.0 and attack.recovery == 0.0
