"""Each objective's loss against a float64 hand computation on a tiny model and batch."""

from __future__ import annotations

import math

import pytest
import torch

import unlearn_lens as ul
from unlearn_lens.data.items import Item
from unlearn_lens.errors import ConfigError
from unlearn_lens.unlearn import (
    OBJECTIVES,
    ObjectiveBatch,
    ObjectiveConfig,
    ObjectiveContext,
    ReferenceCache,
    TrainConfig,
    get_objective,
    needs_retain,
    npo_loss,
    random_labels,
    train,
    unlearning_methods,
)

WORDS = ("Veltravia", "Orsenne", "Drumlin", "Kessary", "Pellow")
FORGET = [
    Item("The capital of Veltravia is", "Orsenne Pellow"),  # two answer tokens
    Item("Drumlin", "Kessary"),  # shortest prompt: padded
    Item(text="the city of Orsenne was a capital"),  # plain text: every token after the first
]
RETAIN = [Item("1 plus 2 equals", "3"), Item(text="def x ( ) : return 1 + 2")]
TOL = 1e-5
"""float32 model against a float64 hand computation: agreement to float32 rounding."""


@pytest.fixture(scope="module")
def tok():
    return ul.tiny_tokenizer(WORDS)


@pytest.fixture(scope="module")
def subject(tok):
    return ul.load(
        ul.tiny_llama(vocab_size=len(tok), seed=1, n_layers=3), backend="nnsight", tokenizer=tok
    )


@pytest.fixture(scope="module")
def other(tok):
    """A second model: its outputs stand in for a reference that differs from the model being trained."""
    return ul.load(
        ul.tiny_llama(vocab_size=len(tok), seed=2, n_layers=3), backend="nnsight", tokenizer=tok
    )


def _ctx(subject, seed: int = 0, **options) -> ObjectiveContext:
    return ObjectiveContext(
        subject, ObjectiveConfig(**options), torch.Generator().manual_seed(seed), seed
    )


def _hf(subject, batch):
    """The HF module's own forward, hidden states included, in float64 afterwards."""
    with torch.no_grad():
        out = subject.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=True,
        )
    return out.logits.double(), [h.double() for h in out.hidden_states]


def _target_logprobs(subject, batch, labels=None) -> list[list[float]]:
    """Per sequence, log p(target) of every target token, by a loop over positions."""
    logits, _ = _hf(subject, batch)
    labels = batch.labels if labels is None else labels
    log_probs = torch.log_softmax(logits, dim=-1)
    rows = []
    for b in range(labels.shape[0]):
        rows.append(
            [
                float(log_probs[b, t - 1, labels[b, t]])
                for t in range(1, labels.shape[1])
                if labels[b, t] != -100
            ]
        )
    return rows


def _nll(subject, batch) -> float:
    rows = _target_logprobs(subject, batch)
    return -sum(sum(r) for r in rows) / sum(len(r) for r in rows)


def _kl(subject, batch, reference_log_probs) -> float:
    """Mean over real positions of Σ_v p_ref (log p_ref − log p_θ)."""
    logits, _ = _hf(subject, batch)
    log_q = torch.log_softmax(logits, dim=-1)
    ref = reference_log_probs.double()
    terms = []
    for b in range(batch.input_ids.shape[0]):
        for t in range(int(batch.attention_mask[b].sum())):
            terms.append(float((ref[b, t].exp() * (ref[b, t] - log_q[b, t])).sum()))
    return sum(terms) / len(terms)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def _examples(subject, other):
    """Forget and retain batches whose references come from the other model (so they differ)."""
    forget_batch, retain_batch = subject.encode(FORGET), subject.encode(RETAIN)
    ref_logprob = torch.tensor(
        [sum(r) for r in _target_logprobs(other, forget_batch)], dtype=torch.float32
    )
    ref_logits, ref_hidden = _hf(other, retain_batch)
    forget = ObjectiveBatch(forget_batch, reference_logprob=ref_logprob)
    retain = ObjectiveBatch(
        retain_batch,
        reference_log_probs=torch.log_softmax(ref_logits, dim=-1).float(),
        reference_residual=ref_hidden[2].float(),
    )
    return forget, retain


def _loss(name, ctx, forget, retain) -> float:
    with torch.no_grad():
        return float(get_objective(name).loss(ctx, forget, retain))


def test_ga_family_matches_hand_nll_and_kl(subject, other):
    forget, retain = _examples(subject, other)
    ctx = _ctx(subject, retain_weight=0.7, kl_weight=1.3)
    nll_f, nll_r = _nll(subject, forget.batch), _nll(subject, retain.batch)
    kl = _kl(subject, retain.batch, retain.reference_log_probs)
    assert kl > 1e-3
    assert _loss("finetune", ctx, forget, None) == pytest.approx(nll_f, abs=TOL)
    assert _loss("ga", ctx, forget, None) == pytest.approx(-nll_f, abs=TOL)
    assert _loss("ga_gd", ctx, forget, retain) == pytest.approx(-nll_f + 0.7 * nll_r, abs=TOL)
    assert _loss("ga_kl", ctx, forget, retain) == pytest.approx(-nll_f + 1.3 * kl, abs=TOL)


def test_npo_family_matches_hand_formula(subject, other):
    forget, retain = _examples(subject, other)
    beta = 0.3
    ctx = _ctx(subject, beta=beta, retain_weight=0.7, kl_weight=1.3)
    sums = [sum(r) for r in _target_logprobs(subject, forget.batch)]
    refs = forget.reference_logprob.double().tolist()
    npo = (
        -(2 / beta)
        * sum(_log_sigmoid(-beta * (s - r)) for s, r in zip(sums, refs, strict=True))
        / len(sums)
    )
    assert _loss("npo", ctx, forget, None) == pytest.approx(npo, abs=TOL)
    assert _loss("npo_gd", ctx, forget, retain) == pytest.approx(
        npo + 0.7 * _nll(subject, retain.batch), abs=TOL
    )
    kl = _kl(subject, retain.batch, retain.reference_log_probs)
    assert _loss("npo_kl", ctx, forget, retain) == pytest.approx(npo + 1.3 * kl, abs=TOL)


def test_simnpo_matches_hand_formula(subject):
    forget = ObjectiveBatch(subject.encode(FORGET))
    beta, gamma = 2.5, 0.4
    ctx = _ctx(subject, simnpo_beta=beta, simnpo_gamma=gamma)
    rows = _target_logprobs(subject, forget.batch)
    expected = (
        -(2 / beta) * sum(_log_sigmoid(-beta * sum(r) / len(r) - gamma) for r in rows) / len(rows)
    )
    assert _loss("simnpo", ctx, forget, None) == pytest.approx(expected, abs=TOL)


def test_rlabel_is_nll_of_labels_drawn_from_the_seeded_generator(subject):
    forget = ObjectiveBatch(subject.encode(FORGET))
    ctx = _ctx(subject, seed=5)
    labels = forget.batch.labels.clone()
    targets = labels != -100
    labels[targets] = torch.randint(
        0,
        subject.shape.vocab_size,
        (int(targets.sum()),),
        generator=torch.Generator().manual_seed(5),
    )
    rows = _target_logprobs(subject, forget.batch, labels)
    expected = -sum(sum(r) for r in rows) / sum(len(r) for r in rows)
    assert _loss("rlabel", ctx, forget, None) == pytest.approx(expected, abs=TOL)
    assert _loss("rlabel", ctx, forget, None) != pytest.approx(
        expected, abs=TOL
    )  # redrawn each call


def test_rmu_matches_hand_mse_at_the_block_output(subject, other):
    forget, retain = _examples(subject, other)
    ctx = _ctx(subject, seed=3, rmu_layer=1, rmu_coefficient=4.0, rmu_alpha=50.0)
    u = torch.rand(
        subject.shape.d_model, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    target = u / u.norm() * 4.0
    _, hidden_f = _hf(subject, forget.batch)
    _, hidden_r = _hf(subject, retain.batch)
    # hidden_states[2] is the output of block 1 (index 0 is the embedding).
    real_f, real_r = forget.batch.attention_mask.bool(), retain.batch.attention_mask.bool()
    forget_term = float(((hidden_f[2][real_f] - target) ** 2).mean())
    retain_term = float(
        ((hidden_r[2][real_r] - retain.reference_residual.double()[real_r]) ** 2).mean()
    )
    assert _loss("rmu", ctx, forget, retain) == pytest.approx(
        forget_term + 50.0 * retain_term, rel=1e-5
    )


def test_rmu_trains_only_mlp_output_projections_around_its_layer(subject):
    ctx = _ctx(subject, rmu_layer=2)
    assert get_objective("rmu").default_trainable(ctx) == [
        f"layers.{i}.mlp_down.weight" for i in (0, 1, 2)
    ]
    assert _ctx(subject).rmu_layer == 1  # n_layers // 3


def test_references_from_the_cache_equal_the_original_model(subject):
    """At the start the model *is* the reference: KL is 0, NPO is (2/β) log 2, RMU's retain MSE is 0."""
    ctx = _ctx(subject, rmu_coefficient=0.0)
    forget_idx, retain_idx = [2, 0], [1, 0]
    for name in ("npo_kl", "rmu"):
        spec = get_objective(name)
        cache = ReferenceCache.build(ctx, spec, FORGET, forget_idx, RETAIN, retain_idx)
        forget = cache.attach(
            ObjectiveBatch(subject.encode([FORGET[i] for i in forget_idx])), forget_idx, "forget"
        )
        retain = cache.attach(
            ObjectiveBatch(subject.encode([RETAIN[i] for i in retain_idx])), retain_idx, "retain"
        )
        if name == "npo_kl":
            assert _loss(name, ctx, forget, retain) == pytest.approx(20 * math.log(2), abs=1e-4)
        else:
            _, hidden = _hf(subject, forget.batch)
            real = forget.batch.attention_mask.bool()
            assert _loss(name, ctx, forget, retain) == pytest.approx(
                float((hidden[2][real] ** 2).mean()), rel=1e-5
            )


def test_npo_loss_is_non_negative_and_its_gradient_vanishes_as_the_likelihood_goes_to_zero():
    reference = torch.zeros(4, dtype=torch.float64)
    assert float(npo_loss(reference, reference, 0.1)) == pytest.approx(20 * math.log(2))
    grads = []
    for gap in (0.0, -10.0, -100.0, -400.0):
        logprob = torch.full((4,), gap, dtype=torch.float64, requires_grad=True)
        loss = npo_loss(logprob, reference, 0.1)
        assert float(loss) >= 0
        (grad,) = torch.autograd.grad(loss, logprob)
        # d loss / d log π_θ = 2 σ(β (log π_θ − log π_ref)) / batch
        assert grad[0].item() == pytest.approx(2 / (1 + math.exp(-0.1 * gap)) / 4, rel=1e-9)
        grads.append(grad[0].item())
    assert grads == sorted(grads, reverse=True) and grads[-1] < 1e-17


def test_npo_loss_stays_bounded_where_gradient_ascent_diverges(subject):
    snapshot = subject.snapshot()
    config = TrainConfig(lr=3e-2, steps=25, eval_every=0, max_loss_growth=1e9)
    try:
        ga = train(subject, "ga", FORGET, config=config, progress=False)
        subject.restore(snapshot)
        npo = train(subject, "npo", FORGET, config=config, progress=False)
    finally:
        subject.restore(snapshot)
    ga_losses, npo_losses = [s.loss for s in ga.history], [s.loss for s in npo.history]
    assert ga_losses[-1] < ga_losses[0] - 20  # −NLL keeps falling: unbounded below
    assert all(0 <= loss <= 20 * math.log(2) + 1e-4 for loss in npo_losses)


def test_random_labels_are_uniform_over_the_vocabulary():
    vocab = 20
    labels = torch.zeros(200, 51, dtype=torch.long)
    labels[:, 0] = -100  # never a target (and must stay -100)
    drawn = random_labels(labels, vocab, torch.Generator().manual_seed(0))
    assert (drawn[:, 0] == -100).all()
    counts = torch.bincount(drawn[:, 1:].flatten(), minlength=vocab).double()
    expected = counts.sum() / vocab
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 43.8  # the 0.999 quantile of chi-square with 19 degrees of freedom


def test_registry_names_and_lookup():
    assert unlearning_methods() == [
        "ga",
        "ga_gd",
        "ga_kl",
        "npo",
        "npo_gd",
        "npo_kl",
        "rlabel",
        "simnpo",
        "rmu",
    ]
    assert "finetune" in OBJECTIVES and not OBJECTIVES["finetune"].unlearning
    assert [name for name in OBJECTIVES if needs_retain(name)] == [
        "ga_gd",
        "ga_kl",
        "npo_gd",
        "npo_kl",
        "rmu",
    ]
    with pytest.raises(ConfigError, match="unknown objective 'gd'; known: finetune, ga, ga_gd"):
        get_objective("gd")
    with pytest.raises(ConfigError, match="unknown objective option"):
        ObjectiveConfig.from_options(betta=0.1)
    with pytest.raises(ConfigError, match="beta must be positive"):
        ObjectiveConfig(beta=0)
    assert get_objective("ga").summary == "Gradient ascent: `−NLL(forget)`."


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_trains_a_few_finite_steps(subject, name):
    snapshot = subject.snapshot()
    try:
        result = train(
            subject,
            name,
            FORGET,
            RETAIN,
            TrainConfig(lr=1e-3, steps=2, eval_every=0),
            progress=False,
        )
    finally:
        subject.restore(snapshot)
    assert result.stop_reason == "completed" and len(result.history) == 2
    assert all(math.isfinite(step.loss) for step in result.history)
