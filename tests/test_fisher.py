import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from unchecked import unchecked

from unlearn_lens.metrics import (
    QUANTILE_LEVELS,
    FisherProfile,
    FisherSummary,
    compare_fisher,
    per_example_linear_grad_sq,
    shared_value_range,
    summarise_fisher,
)

VOCAB, WIDTH, HIDDEN = 11, 6, 5


class ToyLM(nn.Module):
    """Embedding, causal running mean, MLP, unembedding: two linear layers to take Fisher of."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.fc = nn.Linear(WIDTH, HIDDEN)
        self.unembed = nn.Linear(HIDDEN, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        positions = torch.arange(1, ids.shape[1] + 1, dtype=x.dtype).unsqueeze(-1)
        x = x.cumsum(dim=1) / positions  # position t sees tokens 0..t only
        return self.unembed(torch.tanh(self.fc(x)))


def example_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed NLL over the target tokens of each sequence (the -log p(x) of the Fisher)."""
    per_token = F.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none"
    )
    return per_token.sum(dim=1)


def make_batch(seed: int):
    """Right-padded batch of 5 sequences of different lengths, padding with token 0."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [7, 4, 6, 3, 7]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    labels = torch.full_like(ids, -100)
    for b, length in enumerate(lengths):
        ids[b, :length] = torch.randint(1, VOCAB, (length,), generator=generator)
        labels[b, 1:length] = ids[b, 1:length]
    attention_mask = torch.arange(ids.shape[1]) < torch.tensor(lengths).unsqueeze(1)
    return ids, labels, attention_mask, lengths


def brute_force_grad_sq(model: ToyLM, ids, labels, lengths) -> dict[str, torch.Tensor]:
    """One backward per example on the unpadded sequence; square; sum over examples."""
    weights = {"fc": model.fc.weight, "unembed": model.unembed.weight}
    totals = {name: torch.zeros_like(w, dtype=torch.float64) for name, w in weights.items()}
    for b, length in enumerate(lengths):
        loss = example_nll(model(ids[b : b + 1, :length]), labels[b : b + 1, :length]).sum()
        grads = torch.autograd.grad(loss, list(weights.values()))
        for name, grad in zip(weights, grads, strict=True):
            totals[name] += grad.to(torch.float64) ** 2
    return totals


def hooked_grad_sq(model: ToyLM, ids, labels, attention_mask) -> dict[str, torch.Tensor]:
    """One batched backward; inputs from forward hooks, output gradients from tensor hooks."""
    captured: dict[str, dict[str, torch.Tensor]] = {"fc": {}, "unembed": {}}

    def capture(name):
        def hook(module, inputs, output):
            captured[name]["inputs"] = inputs[0].detach()
            output.register_hook(
                lambda grad: captured[name].__setitem__("grad_outputs", grad.detach())
            )

        return hook

    handles = [
        model.fc.register_forward_hook(capture("fc")),
        model.unembed.register_forward_hook(capture("unembed")),
    ]
    try:
        example_nll(model(ids), labels).sum().backward()  # a sum over examples, not a mean
    finally:
        for handle in handles:
            handle.remove()
    return {
        name: per_example_linear_grad_sq(c["inputs"], c["grad_outputs"], attention_mask)
        for name, c in captured.items()
    }


@pytest.fixture
def model() -> ToyLM:
    torch.manual_seed(0)
    return ToyLM().double()


def test_batched_hooks_match_per_example_loop(model):
    ids, labels, attention_mask, lengths = make_batch(1)
    expected = brute_force_grad_sq(model, ids, labels, lengths)
    model.zero_grad()
    got = hooked_grad_sq(model, ids, labels, attention_mask)
    for name in expected:
        assert got[name].shape == expected[name].shape
        assert got[name].dtype == torch.float64
        torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=1e-14)


def test_differs_from_squared_batch_mean_gradient(model):
    ids, labels, attention_mask, lengths = make_batch(2)
    fisher = hooked_grad_sq(model, ids, labels, attention_mask)["unembed"] / len(lengths)
    model.zero_grad()
    (example_nll(model(ids), labels).mean()).backward()
    squared_mean_grad = model.unembed.weight.grad.to(torch.float64) ** 2
    assert not torch.allclose(fisher, squared_mean_grad, rtol=0.1)
    # Jensen: the mean of squares is at least the square of the mean, element by element.
    assert (fisher >= squared_mean_grad - 1e-15).all()


def explicit_loop(inputs, grad_outputs, mask):
    """Σ_b (Σ_t m g ⊗ a)², with an outer product per token."""
    batch, seq, _ = inputs.shape
    total = torch.zeros(grad_outputs.shape[-1], inputs.shape[-1], dtype=torch.float64)
    for b in range(batch):
        grad = torch.zeros_like(total)
        for t in range(seq):
            if mask[b, t]:
                grad += torch.outer(grad_outputs[b, t].double(), inputs[b, t].double())
        total += grad**2
    return total


FLOAT32_RTOL = 1e-5
"""Float32 products and a float32 sum over a handful of examples: ~1e-6 relative error."""


def test_matches_explicit_loop_and_masked_tokens_contribute_nothing():
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(4, 5, 3, generator=generator, dtype=torch.float64)
    grad_outputs = torch.randn(
        4, 5, 2, generator=generator, dtype=torch.float64
    )  # non-zero at padding too
    mask = torch.rand(4, 5, generator=generator) > 0.3
    got = per_example_linear_grad_sq(inputs, grad_outputs, mask)
    torch.testing.assert_close(
        got, explicit_loop(inputs, grad_outputs, mask), rtol=1e-12, atol=1e-14
    )
    garbage = torch.where(mask.unsqueeze(-1), inputs, torch.full_like(inputs, 1e3))
    torch.testing.assert_close(
        per_example_linear_grad_sq(garbage, grad_outputs, mask), got, rtol=1e-12, atol=1e-14
    )
    everything = per_example_linear_grad_sq(inputs, grad_outputs)
    torch.testing.assert_close(
        everything, explicit_loop(inputs, grad_outputs, torch.ones(4, 5, dtype=torch.bool))
    )
    assert not torch.allclose(everything, got)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs_match_float64_loop_to_float32_rounding(dtype):
    """Float32 work (bfloat16 upcast first) against the float64 loop on the same values."""
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(9, 12, 17, generator=generator).to(dtype)
    grad_outputs = torch.randn(9, 12, 13, generator=generator).to(dtype)
    mask = torch.rand(9, 12, generator=generator) > 0.2
    got = per_example_linear_grad_sq(inputs, grad_outputs, mask)
    assert got.dtype == torch.float64
    expected = explicit_loop(inputs, grad_outputs, mask)
    # atol only for entries whose per-example gradients nearly cancel to 0.
    torch.testing.assert_close(got, expected, rtol=FLOAT32_RTOL, atol=1e-5 * float(expected.mean()))
    assert not torch.equal(got, expected)  # really computed in float32, not float64


def test_float32_model_matches_float64_per_example_loop(model):
    """The whole path in float32 (forward, backward, hooks) against float64 backward passes."""
    ids, labels, attention_mask, lengths = make_batch(6)
    expected = brute_force_grad_sq(model, ids, labels, lengths)
    got = hooked_grad_sq(model.float(), ids, labels, attention_mask)
    for name in expected:
        assert got[name].dtype == torch.float64
        atol = 1e-5 * float(expected[name].mean())
        torch.testing.assert_close(got[name], expected[name], rtol=FLOAT32_RTOL, atol=atol)


def test_grad_sq_shape_errors():
    with pytest.raises(ValueError, match="same batch and seq"):
        unchecked(per_example_linear_grad_sq)(torch.randn(2, 3, 4), torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="token_mask"):
        unchecked(per_example_linear_grad_sq)(
            torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.ones(2, 4, dtype=torch.bool)
        )


def lognormal(seed: int, n: int, scale: float = 1.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(scale * np.exp(rng.standard_normal(n) * 2.0 - 8.0))


def test_summary_matches_numpy():
    values = lognormal(5, 1001)
    values[::10] = 0.0
    summary = summarise_fisher(values.reshape(7, 143), bins=12)
    v = values.numpy()
    assert summary.n == 1001
    assert summary.n_zero == int((v == 0).sum())
    assert summary.mean == pytest.approx(v.mean(), rel=1e-12)
    assert summary.median == pytest.approx(np.median(v), rel=1e-12)
    assert list(summary.quantiles) == list(QUANTILE_LEVELS)
    for level, value in summary.quantiles.items():
        assert value == pytest.approx(np.quantile(v, level), rel=1e-12)
    positives = v[v > 0]
    edges = np.logspace(np.log10(positives.min()), np.log10(positives.max()), 13)
    assert summary.edges == pytest.approx(list(edges), rel=1e-12)
    edges[0], edges[-1] = positives.min(), positives.max()
    assert list(summary.counts) == np.histogram(positives, bins=edges)[0].tolist()
    assert sum(summary.counts) == positives.size
    assert (summary.n_below, summary.n_above) == (0, 0)


def sort_based_quantile(values: np.ndarray, level: float) -> float:
    """Linear interpolation between the order statistics around `level · (n - 1)`."""
    ordered = np.sort(values)
    position = level * (ordered.size - 1)
    below = math.floor(position)
    above = min(below + 1, ordered.size - 1)
    return float(ordered[below] + (position - below) * (ordered[above] - ordered[below]))


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 4096, 100_003])
def test_quantiles_match_sort_based_reference(n):
    rng = np.random.default_rng(n)
    values = np.exp(rng.standard_normal(n) * 3.0 - 6.0)
    values[rng.random(n) < 0.3] = 0.0  # many ties at 0, as in real Fisher values
    values[rng.random(n) < 0.1] = values[0]  # ties among positive values too
    summary = summarise_fisher(torch.from_numpy(values))
    assert summary.median == pytest.approx(sort_based_quantile(values, 0.5), rel=1e-15, abs=0)
    for level, value in summary.quantiles.items():
        assert value == pytest.approx(sort_based_quantile(values, level), rel=1e-15, abs=0)


def test_summary_hand_computed():
    values = torch.tensor([0.0, 1e-3, 3e-3, 3e-2, 1.0], dtype=torch.float64)
    summary = summarise_fisher(values, bins=3)
    assert summary.median == 3e-3
    assert summary.mean == pytest.approx(1.034 / 5, rel=1e-12)
    assert summary.quantiles[0.25] == 1e-3
    assert summary.quantiles[0.05] == pytest.approx(0.2 * 1e-3, rel=1e-12)
    assert summary.edges == pytest.approx([1e-3, 1e-2, 1e-1, 1.0], rel=1e-12)
    assert summary.counts == (2, 1, 1)  # the first edge and the last bin are closed
    assert summary.n_zero == 1


def test_value_range_counts_out_of_range_values():
    values = torch.tensor([1e-5, 2e-3, 5e-2, 5.0, 0.0], dtype=torch.float64)
    summary = summarise_fisher(values, bins=2, value_range=(1e-3, 1e-1))
    assert summary.edges == pytest.approx([1e-3, 1e-2, 1e-1], rel=1e-12)
    assert summary.counts == (1, 1)
    assert (summary.n_below, summary.n_above, summary.n_zero) == (1, 1, 1)


def test_value_exactly_on_the_last_edge_is_in_the_last_bin():
    values = torch.tensor([1e-3, 1e-1, 1e-1, 0.0], dtype=torch.float64)
    summary = summarise_fisher(values, bins=2, value_range=(1e-3, 1e-1))
    assert summary.counts == (1, 2)
    assert (summary.n_below, summary.n_above) == (0, 0)


def test_profile_of_parts_matches_numpy_on_their_concatenation():
    """A layer profiled as its separate matrices (views, nothing concatenated is kept) gives, for
    any shared range and however often reused, the statistics numpy computes on the joined values."""
    parts = [lognormal(8, 120).reshape(10, 12), lognormal(9, 35, scale=3.0), torch.zeros(2, 5)]
    parts[0][0, :4] = 0.0
    v = np.concatenate([p.numpy().ravel() for p in parts])
    profile = FisherProfile.of(*parts)
    other = lognormal(10, 50, scale=100.0).numpy()
    positives = v[v > 0]
    assert profile.positive_range == (positives.min(), positives.max())
    value_range = shared_value_range(profile, FisherProfile.of(torch.from_numpy(other)))
    assert value_range == (min(positives.min(), other.min()), max(positives.max(), other.max()))
    for bins, span in ((7, None), (11, value_range), (11, value_range)):
        summary = profile.summary(bins, span)
        low, high = span if span is not None else (positives.min(), positives.max())
        edges = np.logspace(np.log10(low), np.log10(high), bins + 1)
        edges[0], edges[-1] = low, high
        assert summary.edges == pytest.approx(list(edges), rel=1e-12)
        inside = positives[(positives >= low) & (positives <= high)]
        assert (
            list(summary.counts) == np.histogram(inside, bins=np.asarray(summary.edges))[0].tolist()
        )
        assert (summary.n_below, summary.n_above) == (
            int((positives < low).sum()),
            int((positives > high).sum()),
        )
        assert (summary.n, summary.n_zero) == (v.size, int((v == 0).sum()))
        assert summary.mean == pytest.approx(
            v.mean(), rel=1e-12
        ) and summary.median == pytest.approx(np.median(v), rel=1e-12)
        for level, value in summary.quantiles.items():
            assert value == pytest.approx(np.quantile(v, level), rel=1e-12)


def test_shared_value_range_gives_identical_edges():
    a, b = lognormal(6, 300), lognormal(7, 500, scale=0.01)
    value_range = shared_value_range(a, b, torch.zeros(3))
    assert value_range == (float(b.min()), float(a.max()))
    sa, sb = summarise_fisher(a, 20, value_range), summarise_fisher(b, 20, value_range)
    assert sa.edges == sb.edges
    assert sum(sa.counts) == 300 and sum(sb.counts) == 500
    assert shared_value_range(torch.zeros(4)) is None


def test_single_positive_value_gets_a_decade_wide_histogram():
    summary = summarise_fisher(torch.tensor([0.0, 1e-4, 1e-4]), bins=2)
    assert summary.edges == pytest.approx([1e-4 / math.sqrt(10), 1e-4, 1e-4 * math.sqrt(10)])
    assert sum(summary.counts) == 2


def test_all_zero_values_warn_and_give_empty_histogram():
    with pytest.warns(UserWarning, match="all 6 Fisher values are 0"):
        summary = summarise_fisher(torch.zeros(2, 3))
    assert summary.edges == () and summary.counts == ()
    assert summary.mean == 0.0 and summary.n_zero == 6


def test_summary_input_errors():
    with pytest.raises(ValueError, match="cannot be negative"):
        summarise_fisher(torch.tensor([1.0, -1e-3]))
    with pytest.raises(ValueError, match="empty"):
        summarise_fisher(torch.tensor([]))
    with pytest.raises(ValueError, match="NaN"):
        summarise_fisher(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="0 < low <= high"):
        summarise_fisher(torch.tensor([1.0]), value_range=(0.0, 1.0))


def reference_ks(a: np.ndarray, b: np.ndarray) -> float:
    """Largest gap between the two empirical CDFs, checked at every sample point."""
    return max(abs((a <= x).mean() - (b <= x).mean()) for x in np.concatenate([a, b]))


def test_compare_two_all_zero_layers():
    with pytest.warns(UserWarning, match="Fisher values are 0"):
        comparison = compare_fisher(torch.zeros(5), torch.zeros(5))
    assert comparison.log10_mean_ratio == 0.0
    assert comparison.histogram_tv_distance == 0.0
    assert comparison.ks_statistic == 0.0


def test_compare_identical_is_zero():
    a = lognormal(8, 400)
    comparison = compare_fisher(a, a.clone())
    assert comparison.log10_mean_ratio == 0.0
    assert comparison.log10_median_ratio == 0.0
    assert comparison.histogram_tv_distance == 0.0
    assert comparison.ks_statistic == 0.0


def test_compare_scaled_distribution():
    original = lognormal(9, 400)
    updated = lognormal(10, 300, scale=0.1)
    updated[:30] = 0.0
    comparison = compare_fisher(original, updated, bins=15)
    o, u = original.numpy(), updated.numpy()
    assert comparison.log10_mean_ratio == pytest.approx(math.log10(u.mean() / o.mean()), rel=1e-12)
    assert comparison.log10_median_ratio == pytest.approx(
        math.log10(np.median(u) / np.median(o)), rel=1e-12
    )
    assert comparison.ks_statistic == pytest.approx(reference_ks(o, u), abs=1e-12)
    assert comparison.original.edges == comparison.updated.edges
    # Total variation over the shared bins, zeros as an extra bin.
    p = np.array([comparison.original.n_zero, *comparison.original.counts]) / 400
    q = np.array([comparison.updated.n_zero, *comparison.updated.counts]) / 300
    assert comparison.histogram_tv_distance == pytest.approx(0.5 * np.abs(p - q).sum(), rel=1e-12)
    assert 0.0 < comparison.histogram_tv_distance <= 1.0


def test_compare_summaries_needs_shared_edges():
    a, b = lognormal(11, 200), lognormal(12, 200, scale=3.0)
    value_range = shared_value_range(a, b)
    from_summaries = compare_fisher(
        summarise_fisher(a, 10, value_range), summarise_fisher(b, 10, value_range)
    )
    from_values = compare_fisher(a, b, bins=10)
    assert from_summaries.ks_statistic is None
    assert from_summaries.histogram_tv_distance == pytest.approx(from_values.histogram_tv_distance)
    assert from_summaries.log10_mean_ratio == pytest.approx(from_values.log10_mean_ratio)
    with pytest.raises(ValueError, match="different histogram edges"):
        compare_fisher(summarise_fisher(a, 10), summarise_fisher(b, 10))
    with pytest.raises(TypeError, match="two FisherSummary"):
        compare_fisher(summarise_fisher(a, 10), b)


def test_compare_with_zero_mean_is_infinite_not_nan():
    a = lognormal(13, 50)
    comparison = compare_fisher(a, torch.zeros(50))
    assert comparison.log10_mean_ratio == -math.inf
    assert comparison.log10_median_ratio == -math.inf
    assert comparison.histogram_tv_distance == 1.0
    assert comparison.ks_statistic == 1.0
    assert isinstance(comparison.updated, FisherSummary)
