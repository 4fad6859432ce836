"""Model Fisher from one batched backward per batch vs a brute-force loop of single-example backwards."""

from __future__ import annotations

import copy

import pytest
import torch

import unlearn_lens as ul
from unlearn_lens.data.items import Item
from unlearn_lens.diagnostics import LINEAR_COMPONENTS, FisherHooks, model_fisher
from unlearn_lens.metrics.token import target_loss
from unlearn_lens.models.architecture import named_parameters
from unlearn_lens.models.sources import BACKENDS

ITEMS = [
    Item("The capital of France is", " Paris"),
    Item(text="def x ( ) : return 1 + 2"),
    Item("The capital of Italy is", " Rome"),
    Item(text="the city of Rome"),
    Item("a b", " c d"),
]
RTOL = 1e-6
"""float64 models: the batched and per-example paths differ by summation order (and the
TransformerLens bridge by some float32 rounding inside, about 3e-7 relative)."""

MODELS = {
    "llama": lambda vocab: ul.tiny_llama(vocab_size=vocab),
    "llama_untied": lambda vocab: ul.tiny_llama(vocab_size=vocab, tied=False),
    "gpt2": lambda vocab: ul.tiny_gpt2(vocab_size=vocab),  # fused QKV in a Conv1D
}


@pytest.fixture(params=list(MODELS), scope="module")
def float64_model(request, tiny_tok):
    return MODELS[request.param](len(tiny_tok)).double()


def brute_force_fisher(model, subject, items) -> dict[str, torch.Tensor]:
    """Σ over items of (∂ log p(item) / ∂θ)², one backward per unpadded item on a plain HF copy, / n."""
    reference = copy.deepcopy(model)
    params = named_parameters(reference)
    names = sorted({subject.spec(key).param for key in subject.keys()})
    totals = {name: torch.zeros_like(params[name]) for name in names}
    for item in items:
        batch = subject.encode([item])
        log_p = -target_loss(
            reference(input_ids=batch.input_ids).logits, batch.labels, "sum_per_sequence"
        ).sum()
        grads = torch.autograd.grad(log_p, [params[name] for name in names], allow_unused=True)
        for name, grad in zip(names, grads, strict=True):
            if grad is not None:
                totals[name] += grad**2
    return {key: subject.spec(key).view(totals) / len(items) for key in subject.keys()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_fisher_equals_per_example_loop(float64_model, tiny_tok, backend):
    subject = ul.load(copy.deepcopy(float64_model), backend=backend, tokenizer=tiny_tok)
    expected = brute_force_fisher(float64_model, subject, ITEMS)
    fisher = model_fisher(subject, ITEMS, batch_size=3)  # padded batches of 3 and 2
    linear = [key for key in subject.keys() if subject.spec(key).component in LINEAR_COMPONENTS]
    assert sorted(fisher.values) == sorted(linear)
    assert sorted(fisher.skipped) == sorted(set(subject.keys()) - set(linear))
    assert fisher.n_examples == len(ITEMS)
    scale = max(float(v.abs().max()) for v in expected.values())
    for key, values in fisher.values.items():
        assert values.shape == subject.weight(key).shape and values.dtype == torch.float64
        # k biases have an exactly-zero gradient (softmax ignores a constant shift): atol covers them.
        torch.testing.assert_close(values, expected[key], rtol=RTOL, atol=RTOL * scale)
        assert fisher.addresses[key] == (subject.spec(key).layer, subject.spec(key).component)
    assert all(p.grad is None for p in subject.model.parameters()), (
        "Fisher must leave .grad untouched"
    )


def test_batch_size_does_not_change_fisher(both_backends):
    subject = both_backends["nnsight"]
    whole = model_fisher(subject, ITEMS, batch_size=len(ITEMS))
    single = model_fisher(subject, ITEMS, batch_size=1)
    # float32 sums in another order: an entry's error scales with the model's largest squared
    # gradients (measured: at most 2e-7 of the largest entry), not with the entry itself, which can
    # be exactly zero in exact arithmetic (GPT-2's key biases hold noise near 1e-20).
    scale = max(float(values.max()) for values in whole.values.values())
    for key, values in whole.values.items():
        torch.testing.assert_close(values, single.values[key], rtol=1e-4, atol=1e-5 * scale)


def test_keys_restrict_and_backends_agree(both_backends):
    mlp_out_weight = both_backends["nnsight"].keys(layers=[0], components=["mlp_down", "mlp_out"])[
        0
    ]
    keys = ["layers.1.q.weight", mlp_out_weight, "embed.weight"]
    results = {
        name: model_fisher(subject, ITEMS, keys=keys) for name, subject in both_backends.items()
    }
    tl, nn = results["transformer_lens"], results["nnsight"]
    assert sorted(tl.values) == sorted(keys[:2]) and tl.skipped == ("embed.weight",)
    for key in tl.values:
        torch.testing.assert_close(
            tl.values[key], nn.values[key], rtol=1e-4, atol=1e-6 * float(nn.values[key].max())
        )


def test_fisher_ignores_passes_without_gradients(both_backends):
    subject = both_backends["transformer_lens"]
    expected = model_fisher(subject, ITEMS[:2])
    with FisherHooks(subject) as hooks:
        for batch in subject.batches(ITEMS[:2], 2):
            subject.run(
                batch
            )  # a plain forward (no gradients) between the Fisher passes is ignored
            out = subject.run(batch, residual_layers=[0], grad=True)
            hooks.backward(batch, out.logits, out.residuals[0])
    got = hooks.result()
    for key, values in expected.values.items():
        torch.testing.assert_close(got.values[key], values)
    with pytest.raises(ValueError, match="no items"):
        model_fisher(subject, [])


def test_a_weight_used_twice_per_forward_gets_no_fisher(tiny_tok):
    model = ul.tiny_llama(vocab_size=len(tiny_tok))
    model.model.layers[1].self_attn.q_proj = model.model.layers[
        0
    ].self_attn.q_proj  # one Linear, run by two blocks
    subject = ul.load(model, backend="nnsight", tokenizer=tiny_tok)
    with pytest.warns(UserWarning, match="no Fisher for 2 linear weight"):
        fisher = model_fisher(subject, ITEMS[:2])
    assert {"layers.0.q.weight", "layers.1.q.weight"} <= set(fisher.skipped)
    assert "layers.0.q.weight" not in fisher.values and "layers.0.k.weight" in fisher.values
