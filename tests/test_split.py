"""Disjoint-split relearning on a tiny model that memorised its facts."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from memorised import CONTROL, FORGET, RETAIN, memorised_subject

from unlearn_lens.attacks import SPLIT_MIN_ITEMS, split_halves, split_relearn
from unlearn_lens.errors import ConfigError
from unlearn_lens.evaluation import items_correct

FACTS = FORGET + RETAIN
"""Eight known facts (four capitals, four sums): the forget set the split divides."""

ATTACK = {"steps": 6, "lr": 1e-2, "batch_size": 4}
"""Adam at the memorising rate for a fifth of the memorising steps, on each half of four facts."""


@pytest.fixture(scope="module")
def perturbed():
    """(subject, original weights, perturbed weights): the "forgetting" is one shared perturbation,
    the final norm's weight negated, that every fact depends on alike."""
    subject = memorised_subject()
    original = subject.snapshot()
    broken = {**original, "final_norm.weight": -original["final_norm.weight"]}
    subject.restore(broken)
    assert not any(items_correct(subject, FACTS)), "the perturbation left some fact answered"
    return subject, original, broken


def test_split_halves_are_seeded_disjoint_and_cover_the_set():
    for n in (2, 7, 8, 33):
        a, b = split_halves(n, seed=3)
        assert (a, b) == split_halves(n, seed=3)
        assert sorted(a + b) == list(range(n)) and not set(a) & set(b)
        assert len(a) - len(b) == n % 2
    assert len({tuple(split_halves(16, seed)[0]) for seed in range(5)}) > 1
    with pytest.raises(ConfigError, match="at least 2"):
        split_halves(1, seed=0)
    assert SPLIT_MIN_ITEMS == 8


def test_the_split_never_trains_on_a_held_back_item_and_is_deterministic(perturbed, monkeypatch):
    """Every batch the training loop encodes is recorded (evaluation batches go through
    `subject.batches`, not `encode`) and assigned to its run by the step callbacks."""
    subject, original, broken = perturbed
    subject.restore(broken)
    encode = subject.encode
    pending, runs = [], []

    def recording(items, *args, **kwargs):
        pending.extend(items)
        return encode(items, *args, **kwargs)

    def step(event) -> None:
        if event.step == 1:
            runs.append([])
        runs[-1].extend(pending)
        pending.clear()

    monkeypatch.setattr(subject, "encode", recording)
    result = split_relearn(
        subject,
        FACTS,
        CONTROL,
        original=original,
        seed=1,
        callbacks=[step],
        progress=False,
        **ATTACK,
    )
    assert len(runs) == 2 and not pending
    for half, seen in zip(result.halves, runs, strict=True):
        assert set(seen) == {FACTS[i] for i in half.trained}
        assert not set(seen) & {FACTS[i] for i in half.held_back}
        assert len(seen) == half.work.items_seen == ATTACK["steps"] * ATTACK["batch_size"]
    first, second = result.halves
    assert (first.trained, first.held_back) == (second.held_back, second.trained)
    assert (first.trained, first.held_back) == split_halves(len(FACTS), seed=1)
    # The subject ends with the weights it started from, and the same seed gives the same result.
    assert all(torch.equal(subject.snapshot()[k], v) for k, v in broken.items())
    monkeypatch.undo()
    again = split_relearn(
        subject, FACTS, CONTROL, original=original, seed=1, progress=False, **ATTACK
    )
    assert dataclasses.asdict(again) == dataclasses.asdict(result)


def test_an_empty_control_is_refused(perturbed):
    with pytest.raises(ConfigError, match="control set is empty"):
        split_relearn(perturbed[0], FACTS, [], steps=1, progress=False)
