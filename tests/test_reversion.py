"""Weight-reversion patching, forgetting depth and the head table, on tiny models; one real-model run."""

from __future__ import annotations

import itertools
import json
import math
import time

import pytest
import torch

import unlearn_lens as ul
from unlearn_lens.data.items import Item
from unlearn_lens.evaluation import evaluate
from unlearn_lens.localize import (
    HeadAttribution,
    Patch,
    ReversionSweep,
    Reverter,
    forgetting_depth,
    full_patch,
    head_attribution,
    input_embedding_patch,
    last_layers_patch,
    layer_patch,
    logit_lens,
    query_heads_patch,
    restoration_effect,
    reversion_sweep,
    summarise_localization,
    weight_deltas,
)
from unlearn_lens.metrics import target_loss
from unlearn_lens.models.architecture import named_parameters
from unlearn_lens.schema import dump, read

FORGET = [
    Item("The capital of France is", " Paris"),
    Item("The capital of Italy is", " Rome"),
    Item("The capital of Veltravia is", " Orsenne"),
    Item("The capital of Kessary is", " Drumlin"),
]
RETAIN = [
    Item("1 plus 2 equals", " 3"),
    Item("2 plus 2 equals", " 4"),
    Item("3 times 3 equals", " 9"),
    Item("the author wrote a", " book"),
    Item("def x ( ) :", " return"),
]
N_LAYERS = 3
MAX_ROUNDS = 10


def _train(subject, items, steps, lr, params=None, ascend=False):
    """Plain AdamW on the answer NLL (or its negative, gradient ascent)."""
    batch = subject.encode(items)
    optimiser = torch.optim.AdamW(
        params if params is not None else subject.parameters(), lr=lr, weight_decay=0.0
    )
    for _ in range(steps):
        loss = target_loss(subject.run(batch, grad=True).logits, batch.labels)
        optimiser.zero_grad()
        (-loss if ascend else loss).backward()
        optimiser.step()


@pytest.fixture(scope="module")
def trained(tiny_tok):
    """A tiny Llama that knows the forget and retain answers, and its weights after
    gradient ascent on the forget set through the last block only."""
    subject = ul.load(
        ul.tiny_llama(vocab_size=len(tiny_tok), n_layers=N_LAYERS),
        tokenizer=tiny_tok,
        backend="nnsight",
    )
    for _ in range(MAX_ROUNDS):
        if evaluate(subject, FORGET).accuracy == 1.0 and evaluate(subject, RETAIN).accuracy == 1.0:
            break
        _train(subject, FORGET + RETAIN, steps=10, lr=2e-2)
    original = subject.snapshot()
    assert evaluate(subject, FORGET).accuracy == 1.0 and evaluate(subject, RETAIN).accuracy == 1.0
    last_block = [subject.weight(key) for key in subject.keys(layers=[N_LAYERS - 1])]
    for _ in range(MAX_ROUNDS):
        _train(subject, FORGET, steps=3, lr=5e-2, params=last_block, ascend=True)
        if evaluate(subject, FORGET).accuracy == 0.0:
            break
    unlearned = subject.snapshot()
    assert evaluate(subject, FORGET).accuracy == 0.0
    return subject, original, unlearned


def _fresh(trained):
    subject, original, unlearned = trained
    subject.restore(unlearned)
    return subject, original, unlearned


def _assert_weights_equal(subject, snapshot):
    for key in subject.keys():
        assert torch.equal(subject.weight(key).detach().cpu(), snapshot[key]), key


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_reverting_everything_restores_the_original_exactly(tiny_tok, family):
    make = ul.tiny_llama if family == "llama" else ul.tiny_gpt2
    subject = ul.load(make(vocab_size=len(tiny_tok)), tokenizer=tiny_tok, backend="nnsight")
    original = subject.snapshot()
    batch = subject.encode(FORGET + RETAIN)
    logits_original = subject.run(batch).logits
    original_forget, original_retain = evaluate(subject, FORGET), evaluate(subject, RETAIN)
    generator = torch.Generator().manual_seed(0)
    subject.restore(
        {k: t + 0.05 * torch.randn(t.shape, generator=generator) for k, t in original.items()}
    )
    unlearned = subject.snapshot()
    reverter = Reverter(
        subject, original, FORGET, RETAIN, batch_size=3
    )  # batch 2 mixes forget and retain
    # Reverting all layers and the non-layer weights is the original model (batches differ from
    # evaluate()'s, so NLL agrees to float32 rounding; the logits below agree to the bit).
    for ours, reference in (
        (reverter.original.forget, original_forget),
        (reverter.original.retain, original_retain),
    ):
        assert ours.accuracy == reference.accuracy and ours.nll == pytest.approx(
            reference.nll, rel=1e-6
        )
    patch = full_patch(subject)
    assert {"embed.weight", "final_norm.weight"} <= set(patch.keys) and patch.output_head
    subject.restore(original, patch.keys)
    torch.testing.assert_close(subject.run(batch).logits, logits_original, atol=0, rtol=0)
    subject.restore(unlearned)
    # Batched forget + retain evaluation agrees with evaluate() on each set alone.
    assert reverter.unlearned.forget.accuracy == evaluate(subject, FORGET).accuracy
    assert reverter.unlearned.retain.nll == pytest.approx(evaluate(subject, RETAIN).nll, rel=1e-6)
    reversion_sweep(reverter, head_counts=[1, 3], progress=False)
    _assert_weights_equal(subject, unlearned)


def test_last_block_unlearning_has_depth_one_and_is_shallow(trained):
    subject, original, unlearned = _fresh(trained)
    reverter = Reverter(subject, original, FORGET, RETAIN, unlearned=unlearned)
    deltas = weight_deltas(subject.specs, original, unlearned)
    sweep = reversion_sweep(reverter, deltas, progress=False)
    _assert_weights_equal(subject, unlearned)
    # Only the last block changed: reverting it alone is the original; reverting others does nothing.
    assert sweep.layer_effects("nll") == pytest.approx([0.0, 0.0, 1.0], abs=1e-12)
    assert sweep.layer_effects("accuracy") == pytest.approx([0.0, 0.0, 1.0], abs=1e-12)
    # k = 0 is the output head alone, which unlearning did not touch here.
    assert sweep.last_k_effects() == pytest.approx([0.0, 1.0, 1.0, 1.0], abs=1e-12)
    assert sweep.head.label == "head" and sweep.input_embedding.effect_nll == 0.0
    assert sweep.forgetting_depth == 1
    assert sweep.original.forget.accuracy == 1.0 and sweep.unlearned.forget.accuracy == 0.0
    by_component = {r.label: r for r in sweep.components}
    assert by_component["embed"].effect_nll == 0.0 and by_component["final_norm"].effect_nll == 0.0
    assert set(by_component) == {
        "embed",
        "q",
        "k",
        "v",
        "o",
        "mlp_gate",
        "mlp_up",
        "mlp_down",
        "norm_attn",
        "norm_mlp",
        "final_norm",
    }
    assert sweep.head_counts == [1, 2, 4, 8, 12]
    assert all(
        layer == N_LAYERS - 1 for layer, _ in sweep.head_order[:4]
    )  # only the last block's heads moved
    summary = summarise_localization(deltas, sweep)
    assert summary.shallow is True and summary.verdict.startswith(
        "shallow (depth 1 ≤ 1 of 3 blocks): 100 %"
    )
    assert read(ReversionSweep, json.loads(json.dumps(dump(sweep)))) == sweep


def _params(subject) -> dict[str, torch.Tensor]:
    """Every parameter of the HF model by name (tied duplicates included), detached copies."""
    return {name: p.detach().clone() for name, p in named_parameters(subject.model).items()}


def _perturbed(subject, scale=0.05, seed=0):
    """The subject's weights and a copy of them with Gaussian noise on every weight (the
    embedding included), written into the subject: an 'unlearned' model that moved everywhere."""
    original = subject.snapshot()
    generator = torch.Generator().manual_seed(seed)
    subject.restore(
        {k: t + scale * torch.randn(t.shape, generator=generator) for k, t in original.items()}
    )
    return original, subject.snapshot()


@pytest.mark.parametrize("backend", ["nnsight", "transformer_lens"])
def test_tied_head_patch_reverts_the_output_use_only_and_reties(tiny_tok, backend):
    subject = ul.load(
        ul.tiny_llama(vocab_size=len(tiny_tok), n_layers=N_LAYERS),
        tokenizer=tiny_tok,
        backend=backend,
    )
    assert subject.shape.tied_embeddings
    original, unlearned = _perturbed(subject)
    before = _params(subject)
    embed = named_parameters(subject.model)["model.embed_tokens.weight"]
    with subject.head_from(original):
        inside = named_parameters(subject.model)
        assert torch.equal(inside["lm_head.weight"].detach(), original["embed.weight"])
        assert torch.equal(inside["model.embed_tokens.weight"].detach(), unlearned["embed.weight"])
        assert torch.equal(inside["model.norm.weight"].detach(), original["final_norm.weight"])
        changed = {name for name, p in inside.items() if not torch.equal(p.detach(), before[name])}
        assert changed == {"lm_head.weight", "model.norm.weight"}
    # Retied, and every weight bit-identical to before.
    after = named_parameters(subject.model)
    assert after["lm_head.weight"] is embed and after["model.embed_tokens.weight"] is embed
    assert all(torch.equal(after[name].detach(), value) for name, value in before.items())

    reverter = Reverter(subject, original, FORGET, RETAIN, unlearned=unlearned)
    everything = Patch(
        "head + all blocks + embed (input)",
        keys=(*last_layers_patch(subject, N_LAYERS).keys, *input_embedding_patch(subject).keys),
        output_head=True,
    )
    restored = reverter.measure(everything)
    assert restored.effect_nll == 1.0
    assert (
        restored.forget == reverter.original.forget and restored.retain == reverter.original.retain
    )
    # The head alone and the input embedding alone are different patches with different effects.
    head, inputs = (
        reverter.measure(last_layers_patch(subject, 0)),
        reverter.measure(input_embedding_patch(subject)),
    )
    assert head.forget != inputs.forget and head.forget != reverter.unlearned.forget
    # Reverting the tied matrix's input use alone is the model with the original embedding
    # feeding the blocks and the unlearned matrix reading out: build that model by hand.
    untied = ul.tiny_llama(vocab_size=len(tiny_tok), n_layers=N_LAYERS, tied=False)
    reference = ul.load(untied, tokenizer=tiny_tok, backend="nnsight")
    reference.restore(
        {
            **unlearned,
            "embed.weight": original["embed.weight"],
            "unembed.weight": unlearned["embed.weight"],
        }
    )
    assert evaluate(reference, FORGET).nll == pytest.approx(inputs.forget.nll, rel=1e-6)
    after = named_parameters(subject.model)
    assert after["lm_head.weight"] is after["model.embed_tokens.weight"]
    _assert_weights_equal(subject, unlearned)


def test_untied_head_patch_touches_only_the_unembedding_and_final_norm(tiny_tok):
    subject = ul.load(
        ul.tiny_llama(vocab_size=len(tiny_tok), n_layers=N_LAYERS, tied=False),
        tokenizer=tiny_tok,
        backend="nnsight",
    )
    assert not subject.shape.tied_embeddings and "unembed.weight" in subject.head_keys()
    original, unlearned = _perturbed(subject)
    before = _params(subject)
    with subject.head_from(original):
        changed = {
            name
            for name, p in named_parameters(subject.model).items()
            if not torch.equal(p.detach(), before[name])
        }
    assert changed == {"lm_head.weight", "model.norm.weight"}
    reverter = Reverter(subject, original, FORGET, RETAIN, unlearned=unlearned)
    sweep = reversion_sweep(reverter, head_counts=[1], progress=False)
    assert len(sweep.last_k) == N_LAYERS + 1 and sweep.last_k[0].label == "head"
    # Head + all blocks + input embedding is the whole model.
    assert sweep.last_k[-1].effect_nll < 1.0
    everything = Patch(
        "all",
        keys=(*last_layers_patch(subject, N_LAYERS).keys, *input_embedding_patch(subject).keys),
        output_head=True,
    )
    assert reverter.measure(everything).effect_nll == 1.0
    _assert_weights_equal(subject, unlearned)


def test_head_patch_reverts_query_head_with_its_kv_head_and_nothing_else(trained):
    subject, original, unlearned = _fresh(trained)
    patch = query_heads_patch(subject, [(2, 3)])
    assert patch.label == "L2H3"
    assert dict(patch.heads) == {
        "layers.2.q.weight": (3,),
        "layers.2.o.weight": (3,),
        "layers.2.k.weight": (1,),
        "layers.2.v.weight": (1,),
    }
    subject.restore(original, patch.keys)
    for key, heads in patch.heads:
        subject.restore_heads(original, key, heads)
    spec = subject.spec("layers.2.k.weight")
    assert torch.equal(
        spec.head_view(subject.weight("layers.2.k.weight"), 1).detach(),
        spec.head_view(original["layers.2.k.weight"], 1),
    )
    assert torch.equal(
        spec.head_view(subject.weight("layers.2.k.weight"), 0).detach(),
        spec.head_view(unlearned["layers.2.k.weight"], 0),
    )
    assert torch.equal(
        subject.weight("layers.2.mlp_down.weight").detach(), unlearned["layers.2.mlp_down.weight"]
    )
    subject.restore(unlearned)


def test_head_attribution_table(trained):
    subject, original, unlearned = _fresh(trained)
    reverter = Reverter(subject, original, FORGET, RETAIN, unlearned=unlearned)
    deltas = weight_deltas(subject.specs, original, unlearned)
    table = head_attribution(deltas, reverter, n_layers=1, progress=False)
    assert table.reversion_layers == [N_LAYERS - 1]  # the only block with a share of the update
    delta = table.matrix()
    assert delta.shape == (N_LAYERS, 4) and not delta[:2].any() and (delta[2] > 0).all()
    nll = table.matrix("reversion_nll")
    assert torch.isnan(torch.from_numpy(nll[:2])).all()
    single = reverter.measure(query_heads_patch(subject, [(2, 1)]))
    assert nll[2, 1] == single.effect_nll
    _assert_weights_equal(subject, unlearned)
    assert read(HeadAttribution, json.loads(json.dumps(dump(table)))).reversion_layers == [2]
    with pytest.raises(ValueError, match="needs the reversion sweep"):
        head_attribution(deltas, reverter, ranked_by="reversion")
    with pytest.raises(
        ValueError, match="head_counts must lie between 1 and the number of query heads \\(12\\)"
    ):
        reversion_sweep(reverter, deltas, head_counts=[0, 4], progress=False)


def test_effect_and_depth_helpers():
    assert restoration_effect(2.0, 4.0, 1.0) == pytest.approx(
        2 / 3
    )  # NLL 4 → 2 of the way back to 1
    assert restoration_effect(0.5, 0.0, 1.0) == 0.5
    assert math.isnan(restoration_effect(0.3, 0.5, 0.5))
    assert forgetting_depth([0.1, 0.79, 0.8, 0.95]) == 2  # k = 0 is the head alone
    assert forgetting_depth([0.9, 0.95]) == 0
    assert forgetting_depth([0.1, 0.5], restore_fraction=0.4) == 1
    assert forgetting_depth([0.1, 0.2, 0.3]) is None
    assert forgetting_depth([math.nan, math.nan]) is None


def test_layer_patch_lists_exactly_that_layers_keys(trained):
    subject, _, _ = _fresh(trained)
    patch = layer_patch(subject, 1)
    assert patch.keys and all(subject.spec(key).layer == 1 for key in patch.keys)
    assert len(patch.keys) == len(subject.keys(layers=[1]))


@pytest.mark.slow
def test_real_model_gradient_ascent_localisation(smollm_tl):
    """GA on eight capitals (lr 1e-5, 10 steps), then logit lens, reversion sweep and depth."""
    subject = smollm_tl
    countries = ["France", "Italy", "Japan", "Spain", "Germany", "Egypt", "Canada", "Kenya"]
    capitals = [" Paris", " Rome", " Tokyo", " Madrid", " Berlin", " Cairo", " Ottawa", " Nairobi"]
    forget = [Item(f"The capital of {c} is", a) for c, a in zip(countries, capitals, strict=True)]
    retain = [
        Item("The chemical symbol for gold is", " Au"),
        Item("The largest planet in the solar system is", " Jupiter"),
        Item("Water is made of hydrogen and", " oxygen"),
        Item("The author of Hamlet is William", " Shakespeare"),
        Item("The opposite of hot is", " cold"),
        Item("One, two, three, four,", " five"),
        Item("The color of the sky on a clear day is", " blue"),
        Item("Monday, Tuesday,", " Wednesday"),
    ]
    original = subject.snapshot()
    try:
        batch = subject.encode(forget)
        optimiser = torch.optim.AdamW(subject.parameters(), lr=1e-5)
        for _ in range(10):
            loss = -target_loss(subject.run(batch, grad=True).logits, batch.labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        unlearned = subject.snapshot()
        start = time.perf_counter()
        lens = logit_lens(
            subject, forget, {"original": original, "unlearned": unlearned}, progress=False
        )
        lens_seconds = time.perf_counter() - start
        start = time.perf_counter()
        reverter = Reverter(subject, original, forget, retain, unlearned=unlearned)
        deltas = weight_deltas(subject.specs, original, unlearned)
        sweep = reversion_sweep(reverter, deltas, progress=False)
        sweep_seconds = time.perf_counter() - start
        summary = summarise_localization(deltas, sweep)
        _assert_weights_equal(subject, unlearned)
        print(
            f"\nforget accuracy {sweep.original.forget.accuracy:.3f} → {sweep.unlearned.forget.accuracy:.3f}, "
            f"NLL {sweep.original.forget.nll:.2f} → {sweep.unlearned.forget.nll:.2f}; "
            f"retain NLL {sweep.original.retain.nll:.2f} → {sweep.unlearned.retain.nll:.2f}"
        )
        print("median rank original :", [round(r) for r in lens.readouts["original"].median_rank()])
        print(
            "median rank unlearned:", [round(r) for r in lens.readouts["unlearned"].median_rank()]
        )
        print(
            "first divergent stream:",
            lens.first_divergence["unlearned"],
            f"(logit lens {lens_seconds:.1f} s)",
        )
        print("last-k NLL effects:", [round(e, 2) for e in sweep.last_k_effects()])
        print("last-k accuracy effects:", [round(e, 2) for e in sweep.last_k_effects("accuracy")])
        print("per-layer NLL effects:", [round(e, 2) for e in sweep.layer_effects()])
        print("components:", {r.label: round(r.effect_nll, 2) for r in sweep.components})
        print("top heads:", {r.label: round(r.effect_nll, 2) for r in sweep.top_heads})
        print(
            f"depth {sweep.forgetting_depth}; sweep {sweep_seconds:.0f} s; verdict: {summary.verdict}"
        )
        assert sweep.unlearned.forget.accuracy < sweep.original.forget.accuracy
        # The answer's latent rank follows the original deep into the network, then the unlearned
        # model's answer sinks thousands deep (measured: divergence at stream 27, final rank ~40 000).
        assert lens.first_divergence["unlearned"] >= 20
        assert (
            lens.readouts["unlearned"].median_rank()[-1] > 1000
            and lens.readouts["original"].median_rank()[-1] <= 2
        )
        # Reverting more of the top layers restores more, and reverting every block restores it all
        # (the embeddings barely move under GA at this learning rate).
        effects = sweep.last_k_effects()
        assert (
            all(b >= a - 0.01 for a, b in itertools.pairwise(effects))
            and sweep.forgetting_depth is not None
        )
    finally:
        subject.restore(original)
