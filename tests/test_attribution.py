"""Weight attribution by integrated gradients: completeness, the cases where it must equal exact
reversion, the tied head / input-embedding split, GQA head rows, the check and the JSON."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

import unlearn_lens as ul
from unlearn_lens.atomic import json_safe
from unlearn_lens.data.items import Item
from unlearn_lens.localize import (
    COMPLETENESS_TOLERANCE,
    N_VERIFIED_HEADS,
    AttributedLocalization,
    AttributionCheck,
    Reverter,
    WeightAttribution,
    attribute_weights,
    bisect_depth,
    critical_spearman,
    forgetting_depth,
    gauss_legendre,
    input_embedding_patch,
    last_layers_patch,
    layer_patch,
    localize_by_attribution,
    query_heads_patch,
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
    Item("3 times 3 equals", " 9"),
    Item("the author wrote a", " book"),
]
N_LAYERS = 3
LINEAR_SCALE = 1e-4
"""Relative size of a step small enough for the loss to be linear in it: second-order terms are
~1e-4 of the first-order ones, so each part's attribution must equal its exact reversion effect
to a small fraction of a percent of the total effect."""


def _perturbed(
    tiny_tok,
    scale: float,
    dtype=torch.float32,
    keys=None,
    tied: bool = True,
    backend: str = "nnsight",
):
    """A tiny GQA Llama, its snapshot, and a copy with `keys` (default all) moved by `scale` × each weight's std."""
    model = ul.tiny_llama(vocab_size=len(tiny_tok), n_layers=N_LAYERS, tied=tied).to(dtype)
    subject = ul.load(model, tokenizer=tiny_tok, backend=backend)
    original = subject.snapshot()
    generator = torch.Generator().manual_seed(0)
    moved = set(keys) if keys is not None else set(original)
    subject.restore(
        {
            key: weight
            + scale
            * weight.std()
            * torch.randn(weight.shape, generator=generator, dtype=weight.dtype)
            if key in moved
            else weight
            for key, weight in original.items()
        }
    )
    return subject, original, subject.snapshot()


def _ascended(tiny_tok, scale: float, tied: bool, backend: str):
    """A float64 tiny GQA Llama, its snapshot, and a copy moved by one sign-gradient ascent step on
    the forget loss (Adam's first step), `scale` × each weight's std: every part raises the loss,
    so no part's effect hides in a cancellation."""
    model = ul.tiny_llama(vocab_size=len(tiny_tok), n_layers=N_LAYERS, tied=tied).to(torch.float64)
    subject = ul.load(model, tokenizer=tiny_tok, backend=backend)
    original = subject.snapshot()
    batch = subject.encode(FORGET)
    target_loss(subject.run(batch, grad=True).logits, batch.labels).backward()
    grads = {name: param.grad for name, param in named_parameters(subject.model).items()}
    subject.restore(
        {
            key: weight + scale * weight.std() * torch.sign(subject.spec(key).view(grads))
            for key, weight in original.items()
        }
    )
    subject.model.zero_grad(set_to_none=True)
    return subject, original, subject.snapshot()


def test_gauss_legendre_integrates_polynomials_of_degree_2n_minus_1_exactly():
    for n in (1, 2, 4, 8):
        nodes, weights = gauss_legendre(n)
        assert weights.sum() == pytest.approx(1.0) and ((nodes > 0) & (nodes < 1)).all()
        assert (nodes ** (2 * n - 1) * weights).sum() == pytest.approx(1 / (2 * n))


def test_completeness_on_a_large_update(tiny_tok):
    """Far from linear: the rule is refined until Σ attributions matches L(θ_o) − L(θ_u) measured by
    plain evaluation, and every view of the attribution adds up to that same total."""
    subject, original, unlearned = _perturbed(
        tiny_tok, 1.0
    )  # measured: residual 186 % at 1 node, 41 % at 2, 0.1 % at 4
    result = attribute_weights(
        subject, original, unlearned, FORGET, RETAIN, first_points=1, progress=False
    )
    forget = result.forget
    subject.restore(original)
    reference = ul.evaluate(subject, FORGET).nll
    subject.restore(unlearned)
    assert (
        forget.loss_original == reference
        and forget.loss_unlearned == ul.evaluate(subject, FORGET).nll
    )
    assert result.points > 1, "a large update needs more than one node"
    assert result.converged and result.residual <= COMPLETENESS_TOLERANCE
    assert abs(forget.total - forget.change) <= COMPLETENESS_TOLERANCE * abs(forget.change)
    assert result.retain is not None and result.retain.change != 0
    assert result.passes == sum(2**i for i in range(int(math.log2(result.points)) + 1))
    # Views: blocks + head + input embedding = total; last_k[L] + input embedding = total.
    last_k = forget.last_k()
    assert last_k[0] == forget.output_head == forget.place("head")
    assert forget.place("input_embedding", fraction=True) == forget.input_embedding / forget.change
    assert last_k[-1] + forget.input_embedding == pytest.approx(forget.total, abs=1e-12)
    assert sum(forget.component_totals().values()) == pytest.approx(sum(forget.blocks()), abs=1e-12)
    assert all(torch.equal(subject.weight(key).detach(), unlearned[key]) for key in subject.keys())
    assert subject.readout_modules()[1].weight is subject.weight("embed.weight"), (
        "the tie is put back"
    )


def test_unlearning_confined_to_one_block_is_attributed_to_it_alone(tiny_tok):
    """Only block 1 moved: every other part has exactly zero attribution (its θ_o − θ_u is 0), so
    block 1 carries the whole effect, as its exact reversion (the original model) does; the
    last-k curve steps from 0 to 1 where the exact one does."""
    keys = [
        f"layers.1.{component}.weight"
        for component in (
            "q",
            "k",
            "v",
            "o",
            "mlp_gate",
            "mlp_up",
            "mlp_down",
            "norm_attn",
            "norm_mlp",
        )
    ]
    subject, original, unlearned = _perturbed(tiny_tok, 0.3, keys=keys)
    assert sorted(keys) == sorted(subject.keys(layers=[1]))
    result = attribute_weights(subject, original, unlearned, FORGET, progress=False)
    forget = result.forget
    blocks = forget.blocks(fraction=True)
    assert (
        blocks[0] == 0.0
        and blocks[2] == 0.0
        and forget.output_head == 0.0
        and forget.input_embedding == 0.0
    )
    reverter = Reverter(subject, original, FORGET, unlearned=unlearned)
    exact = reverter.measure(layer_patch(subject, 1)).effect_nll
    assert exact == pytest.approx(1.0, abs=1e-6)
    assert blocks[1] == pytest.approx(exact, abs=COMPLETENESS_TOLERANCE)
    exact_last_k = [
        reverter.measure(last_layers_patch(subject, k)).effect_nll for k in range(N_LAYERS + 1)
    ]
    assert exact_last_k[:2] == [0.0, 0.0] and exact_last_k[2:] == pytest.approx(
        [1.0, 1.0], abs=1e-6
    )
    assert forget.last_k(fraction=True)[:2] == [0.0, 0.0]
    assert forget.last_k(fraction=True)[2:] == pytest.approx(
        exact_last_k[2:], abs=COMPLETENESS_TOLERANCE
    )


@pytest.mark.parametrize(
    "tied, backend", [(True, "nnsight"), (False, "nnsight"), (True, "transformer_lens")]
)
def test_in_the_linear_regime_every_part_equals_its_exact_reversion(tiny_tok, tied, backend):
    """A tiny update in float64: each block, the output head, the input embedding and each query
    head (with its KV head) has an attribution equal to the exact effect of reverting it alone.
    With a tied matrix this checks the split into output use (head) and input use (embedding)."""
    subject, original, unlearned = _ascended(tiny_tok, LINEAR_SCALE, tied=tied, backend=backend)
    result = attribute_weights(subject, original, unlearned, FORGET, progress=False)
    forget = result.forget
    assert result.points == 2 and result.residual < 1e-4
    reverter = Reverter(subject, original, FORGET, unlearned=unlearned)
    pairs = [
        (
            forget.blocks(fraction=True)[layer],
            reverter.measure(layer_patch(subject, layer)).effect_nll,
        )
        for layer in range(N_LAYERS)
    ]
    pairs.append(
        (
            forget.output_head / forget.change,
            reverter.measure(last_layers_patch(subject, 0)).effect_nll,
        )
    )
    pairs.append(
        (
            forget.input_embedding / forget.change,
            reverter.measure(input_embedding_patch(subject)).effect_nll,
        )
    )
    pairs += [
        (
            forget.head_patch(layer, head, fraction=True),
            reverter.measure(query_heads_patch(subject, [(layer, head)])).effect_nll,
        )
        for layer in range(N_LAYERS)
        for head in range(subject.shape.n_heads)
    ]
    attributed, exact = np.array(pairs).T
    assert np.abs(exact).max() > 0.05, "the parts must carry effects the comparison can see"
    np.testing.assert_allclose(attributed, exact, atol=2e-4)  # measured: within 4e-5


@pytest.mark.parametrize("tied", [True, False])
def test_first_order_is_the_gradient_at_the_unlearned_weights_contracted_with_the_delta(
    tiny_tok, tied
):
    """`first_order` of a part is ∇L(θ_u) · (θ_o − θ_u) over that part's weights: against one plain
    autograd backward of the mean answer-token NLL at θ_u (no hooks, no untied leaf), per block and
    outside the blocks (head and input embedding together,
    since a tied matrix has one gradient for both uses). Finite differences cannot be the
    reference: Llama's RMSNorm computes in float32 even in a float64 model."""
    subject, original, unlearned = _perturbed(tiny_tok, 0.05, dtype=torch.float64, tied=tied)
    first = attribute_weights(subject, original, unlearned, FORGET, progress=False).first_order
    assert first is not None and first.change == pytest.approx(
        first.loss_original - first.loss_unlearned
    )
    subject.restore(unlearned)
    batch = subject.encode(FORGET)
    target_loss(subject.run(batch, grad=True).logits, batch.labels).backward()
    grads = {name: param.grad for name, param in named_parameters(subject.model).items()}
    terms = {
        spec.key: float(((original[spec.key] - unlearned[spec.key]) * spec.view(grads)).sum())
        for spec in subject.specs
    }
    subject.model.zero_grad(set_to_none=True)
    for layer in range(N_LAYERS):
        block = sum(value for key, value in terms.items() if subject.spec(key).layer == layer)
        assert first.blocks()[layer] == pytest.approx(block, rel=1e-9, abs=1e-15)
    outside = sum(value for key, value in terms.items() if subject.spec(key).layer is None)
    assert first.output_head + first.input_embedding == pytest.approx(outside, rel=1e-9, abs=1e-15)
    assert (
        first.total == pytest.approx(sum(terms.values()), rel=1e-9, abs=1e-15)
        and first.total != 0.0
    )


def test_gqa_head_rows_sum_to_the_attention_attribution(tiny_tok):
    subject, original, unlearned = _perturbed(tiny_tok, 0.05)
    forget = attribute_weights(subject, original, unlearned, FORGET, progress=False).forget
    shape = subject.shape
    assert shape.n_heads == 4 and shape.n_kv_heads == 2, (
        "the tiny Llama must use grouped-query attention"
    )
    heads = forget.heads()
    assert heads.shape == (N_LAYERS, shape.n_heads)
    attention = [
        sum(forget.components[c][layer] for c in ("q", "k", "v", "o")) for layer in range(N_LAYERS)
    ]
    np.testing.assert_allclose(heads.sum(axis=1), attention, rtol=1e-9, atol=1e-15)
    # A query head's patch holds its own slices and its whole KV head: over one KV group, the
    # patches count the KV head once per query head, the table once in all.
    group = shape.n_heads // shape.n_kv_heads
    for layer in range(N_LAYERS):
        for kv in range(shape.n_kv_heads):
            queries = range(kv * group, (kv + 1) * group)
            patches = sum(forget.head_patch(layer, h) for h in queries)
            assert patches == pytest.approx(
                sum(heads[layer, h] for h in queries) + (group - 1) * forget.kv_heads[layer][kv]
            )


def test_check_reverts_the_top_attributed_parts_and_round_trips(tiny_tok):
    subject, original, unlearned = _perturbed(tiny_tok, 0.05, dtype=torch.float64)
    localized = localize_by_attribution(
        subject, original, unlearned, FORGET, RETAIN, progress=False
    )
    check, forget = localized.check, localized.attribution.forget
    assert check.blocks == sorted(
        range(N_LAYERS), key=lambda layer: -forget.blocks(fraction=True)[layer]
    )
    reverter = Reverter(subject, original, FORGET, unlearned=unlearned)
    for (layer, head), exact in zip(check.heads, check.head_exact, strict=True):
        assert exact == reverter.measure(query_heads_patch(subject, [(layer, head)])).effect_nll
    # The top half of the verified heads are the top-ranked ones (by the first-order effect of
    # reverting each alone), the rest spread down to the lowest.
    assert check.head_estimate == "first order"
    table = localized.attribution.single_patches.heads(fraction=True)
    values = [table[layer, head] for layer, head in check.heads]
    assert (
        len(check.heads) == N_VERIFIED_HEADS
        and values[:4] == sorted(table.ravel(), reverse=True)[:4]
    )
    assert values[4:] == sorted(values[4:], reverse=True) and values[-1] == table.min()
    # The depth is exact: the bisection's effects are those of the patches themselves.
    for k, effect in localized.depth.last_k.items():
        assert effect == reverter.measure(last_layers_patch(subject, k)).effect_nll
    data = json.loads(json.dumps(json_safe(dump(localized))))
    again = read(AttributedLocalization, data)
    assert json_safe(dump(again)) == data
    assert isinstance(again.attribution, WeightAttribution) and again.check.heads == check.heads
    assert all(torch.equal(subject.weight(k).detach(), unlearned[k]) for k in subject.keys())


def _brute_critical(n: int, alpha: float = 0.05) -> float:
    """The one-sided critical Spearman ρ by counting: every permutation's ρ from the textbook
    formula 1 − 6 Σd² / (n (n² − 1)), then the smallest value whose upper tail is ≤ alpha."""
    rhos = [
        1 - 6 * sum((p - i) ** 2 for i, p in enumerate(perm)) / (n * (n * n - 1))
        for perm in itertools.permutations(range(n))
    ]
    total = len(rhos)
    significant = [r for r in set(rhos) if sum(x >= r - 1e-12 for x in rhos) / total <= alpha]
    return min(significant) if significant else math.inf


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7])
def test_critical_spearman_matches_a_brute_force_permutation_count(n):
    assert critical_spearman(n) == pytest.approx(_brute_critical(n), abs=1e-9)


def test_critical_spearman_tables_and_t_approximation():
    # Published one-sided 0.05 critical values (Zar 1972): n = 6: 0.829, 8: 0.643 (exact).
    assert critical_spearman(6) == pytest.approx(0.8286, abs=1e-4)
    assert critical_spearman(8) == pytest.approx(0.6429, abs=1e-4)
    assert math.isinf(critical_spearman(3))
    # Beyond 8 pairs, t_{0.95, n-2}: 1.8125 at 10 degrees of freedom (n = 12); ρ_c = t / √(n − 2 + t²).
    t = 1.812461
    assert critical_spearman(12) == pytest.approx(t / math.sqrt(10 + t * t), abs=1e-4)
    # The t approximation stays within 0.03 of the exact permutation value at n = 9.
    exact = np.array(list(itertools.permutations(range(9))))
    rho = 1 - 6 * ((exact - np.arange(9)) ** 2).sum(axis=1) / (9 * 80)
    values = np.unique(rho.round(12))
    exact9 = min(v for v in values if (rho >= v - 1e-12).mean() <= 0.05)
    assert abs(critical_spearman(9) - exact9) < 0.03


def test_low_agreement_is_a_warning():
    """A check warns below the ρ its number of pairs needs for significance: 0.83 for 6 blocks,
    0.64 for 8 heads; a ρ of 0.77 over 6 blocks, once enough by the old fixed 0.7, now warns."""
    blocks = [5, 0, 1, 2, 3, 4]
    attributed = [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    heads = [(0, h) for h in range(8)]
    head_attributed = [0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    agreeing = AttributionCheck(
        blocks, attributed, [0.5, 0.45, 0.3, 0.35, 0.1, 0.0],
        heads, head_attributed, [0.7, 0.8, 0.5, 0.6, 0.3, 0.4, 0.1, 0.2],
    )  # fmt: skip
    assert agreeing.block_agreement == pytest.approx(1 - 6 * 2 / 210)
    assert agreeing.head_agreement == pytest.approx(1 - 6 * 8 / 504)
    assert agreeing.warnings() == []
    weak = AttributionCheck(
        blocks, attributed, [0.4, 0.45, 0.5, 0.3, 0.2, 0.1],
        heads, head_attributed, head_attributed[::-1],
    )  # fmt: skip
    assert 0.7 < weak.block_agreement < critical_spearman(6)
    lines = weak.warnings()
    assert (
        len(lines) == 2
        and f"6 verified blocks (Spearman {weak.block_agreement:.2f} < 0.83" in lines[0]
        and "8 verified heads (Spearman -1.00 < 0.64" in lines[1]
    )
    few = AttributionCheck([0, 1], [0.5, 0.1], [0.4, 0.2], [], [], [])
    assert few.warnings() == [
        "attribution's agreement with exact reversion on the 2 verified blocks cannot be tested "
        "(Spearman nan; 2 pairs can never reach one-sided p < 0.05)"
    ]


def test_guided_bisection_equals_the_full_scan_from_every_guess():
    """Brute force: every non-decreasing curve over k = 0 … 5 on a grid of values, every guess:
    the answer is the full scan's; a right or off-by-one guess costs two calls."""
    levels = (0.0, 0.3, 0.79, 0.8, 0.95, 1.0)
    for curve in itertools.combinations_with_replacement(levels, 6):
        depth = forgetting_depth(curve, 0.8)
        for guess in range(len(curve)):
            calls = []
            found = bisect_depth(
                lambda k, calls=calls, curve=curve: calls.append(k) or curve[k],
                len(curve) - 1,
                0.8,
                guess=guess,
            )
            assert found == depth, (curve, guess)
            assert (
                len(calls) == len(set(calls)) <= 5
            )  # two around the guess, then log2 of the side left
            if (depth is not None and guess in (depth, depth - 1)) or (
                depth is None and guess >= len(curve) - 2
            ):
                assert len(calls) <= 2, (curve, guess, calls)
