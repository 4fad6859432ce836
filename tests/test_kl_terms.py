"""The KL-term measurement: its instrumented objectives train exactly as the registered ones, and
its per-step numbers match gradients taken independently."""

from __future__ import annotations

import math

import pytest
import torch

import unlearn_lens as ul
from unlearn_lens.reproduction.claims import kl_finding
from unlearn_lens.reproduction.grid import GridSettings
from unlearn_lens.reproduction.kl_terms import (
    KLMeasurement,
    TermStep,
    instrumented,
    kl_cell,
    measure_kl_terms,
    term_run,
)
from unlearn_lens.schema import dump, read
from unlearn_lens.unlearn.loop import TrainConfig, train
from unlearn_lens.unlearn.objectives import ObjectiveConfig

SETTINGS = GridSettings(domains=("text",), n_items=4, steps=3, batch_size=2)


@pytest.fixture(scope="module")
def text_subject():
    """A tiny model whose word-level tokenizer knows the words of the first text items."""
    sets = ul.builtin("text")
    words = [
        word
        for item in [*sets.forget[:4], *sets.retain[:4]]
        for word in f"{item.prompt} {item.answer}".split()
    ]
    tok = ul.tiny_tokenizer(words)
    return ul.load(ul.tiny_llama(vocab_size=len(tok), n_layers=2), backend="nnsight", tokenizer=tok)


def _items():
    sets = ul.builtin("text")
    return sets.forget[:4], sets.retain[:4]


@pytest.mark.parametrize("method", ["ga_kl", "npo_kl"])
def test_instrumented_run_trains_like_the_registered_objective(text_subject, method):
    subject = text_subject
    forget, retain = _items()
    original = subject.snapshot()
    config = TrainConfig(lr=1e-2, steps=3, batch_size=2, objective=ObjectiveConfig(kl_weight=3.0))
    plain = train(subject, method, forget, retain, config, progress=False, keep_snapshots=False)
    plain_weights = subject.snapshot()
    subject.restore(original)
    steps: list[TermStep] = []
    measured = train(
        subject,
        instrumented(method, steps),
        forget,
        retain,
        config,
        progress=False,
        keep_snapshots=False,
    )
    for key, value in plain_weights.items():
        torch.testing.assert_close(subject.weight(key).detach(), value, rtol=1e-5, atol=1e-7)
    subject.restore(original)
    assert [s.loss for s in measured.history] == pytest.approx(
        [s.loss for s in plain.history], rel=1e-5, abs=1e-6
    )
    assert [s.step for s in steps] == [1, 2, 3]
    assert steps[0].kl == pytest.approx(0.0, abs=1e-5)  # the first step starts at the reference
    assert steps[-1].kl > 1e-4 and all(
        s.forget_grad_norm > 0 and math.isfinite(s.ratio) for s in steps
    )
    assert (steps[0].ga_cosine is None) == (method == "ga_kl")


def test_step_norms_match_gradients_taken_by_hand(text_subject):
    """Step 1's ‖∇GA‖ against a plain `backward()` of the registered ga; step 2's two norms and
    cosine against the gradient of their weighted sum that the training loop itself computes."""
    subject = text_subject
    forget, retain = _items()
    original = subject.snapshot()
    weight = 3.0
    config = TrainConfig(
        optimizer="sgd",
        lr=0.5,
        steps=2,
        batch_size=2,
        grad_clip=None,
        objective=ObjectiveConfig(kl_weight=weight),
    )
    steps: list[TermStep] = []
    train(
        subject,
        instrumented("ga_kl", steps),
        forget,
        retain,
        config,
        progress=False,
        keep_snapshots=False,
    )
    # The loop's last backward: ∇(forget term + w·KL) on step 2's weights and batches.
    total = sum(p.grad.double().square().sum() for p in subject.parameters() if p.grad is not None)
    s = steps[1]
    assert s.kl > 1e-3  # step 2 is off the reference, so the KL term has a gradient to check
    expected = (
        s.forget_grad_norm**2
        + weight**2 * s.kl_grad_norm**2
        + 2 * weight * s.forget_kl_cosine * s.forget_grad_norm * s.kl_grad_norm
    )
    assert float(total) == pytest.approx(expected, rel=1e-4)
    subject.restore(original)
    subject.model.zero_grad(set_to_none=True)
    # Plain GA on the same first batch, by an SGD step too small to matter; its .grad is the reference.
    ga_run = train(
        subject,
        "ga",
        forget,
        None,
        TrainConfig(optimizer="sgd", lr=1e-30, steps=1, batch_size=2, grad_clip=None),
        progress=False,
        keep_snapshots=False,
    )
    ga_norm = torch.sqrt(
        sum(p.grad.double().square().sum() for p in subject.parameters() if p.grad is not None)
    )
    subject.restore(original)
    assert steps[0].forget_loss == pytest.approx(ga_run.history[0].loss, rel=1e-6)
    assert steps[0].forget_grad_norm == pytest.approx(float(ga_norm), rel=1e-5)


def test_the_sweep_resumes_and_finds_where_the_objectives_separate(text_subject):
    subject = text_subject
    original = subject.snapshot()
    saved: list[int] = []
    first = measure_kl_terms(
        subject, SETTINGS, "text", 1e-2, [1.0], on_run=lambda m: saved.append(len(m.runs))
    )
    assert saved == [1, 2, 3, 4] and [(r.method, r.kl_weight) for r in first.runs] == [
        ("ga", 0.0),
        ("npo", 0.0),
        ("ga_kl", 1.0),
        ("npo_kl", 1.0),
    ]
    for key, value in original.items():
        torch.testing.assert_close(subject.weight(key).detach(), value, atol=0, rtol=0)
    again = measure_kl_terms(
        subject,
        SETTINGS,
        "text",
        1e-2,
        [1.0, 1e4],
        done=first.runs,
        on_run=lambda m: saved.append(len(m.runs)),
    )
    assert saved[4:] == [5, 6] and again.kl_weights("ga_kl") == [1.0, 1e4]
    # The same run again (seeded) gives the same numbers.
    rerun = term_run(subject, *_items(), "ga", TrainConfig(lr=1e-2, steps=3, batch_size=2))
    subject.restore(original)
    assert rerun.forget_accuracy == first.run("ga").forget_accuracy
    restored = read(KLMeasurement, dump(again))
    assert restored == again and restored.cell == kl_cell(SETTINGS, "text", 1e-2)
    for method, plain in (("ga_kl", "ga"), ("npo_kl", "npo")):
        gaps = {
            w: abs(again.run(method, w).forget_accuracy - again.run(plain).forget_accuracy)
            for w in (1.0, 1e4)
        }
        expected = next((w for w in (1.0, 1e4) if gaps[w] >= 0.01), None)
        assert again.separation(method) == expected
    text = kl_finding(again)
    assert (
        "kl_weight 1 (the grid's)" in text
        and f"‖∇KL‖/‖∇GA‖ {again.run('ga_kl', 1.0).steps[0].ratio:.1g})" in text
    )
