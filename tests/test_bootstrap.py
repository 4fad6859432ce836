import math

import numpy as np
import pytest

from unlearn_lens.metrics import ItemOutcomes
from unlearn_lens.metrics.bootstrap import (
    Bootstrap,
    control_gain,
    excess,
    forgotten,
    peak_excess,
    recovery,
)
from unlearn_lens.regimes import classify_regime


def outcomes(tokens, correct, nll=None) -> ItemOutcomes:
    tokens, correct = np.asarray(tokens), np.asarray(correct)
    nll = np.zeros(len(tokens)) if nll is None else np.asarray(nll, dtype=float)
    return ItemOutcomes(
        tokens.tolist(), correct.tolist(), (correct == tokens).astype(int).tolist(), nll.tolist()
    )


def bernoulli_items(rng, n, p) -> ItemOutcomes:
    """`n` one-token items, each answered with probability `p`."""
    return outcomes(np.ones(n, int), rng.binomial(1, p, n))


def test_paired_resamples_match_a_brute_force_loop():
    rng = np.random.default_rng(1)
    tokens = rng.integers(1, 4, 12)
    forget = {
        name: outcomes(tokens, rng.binomial(tokens, p), rng.gamma(2.0, 1.0, 12))
        for name, p in (("original", 0.9), ("unlearned", 0.2), ("relearned", 0.6))
    }
    control_tokens = rng.integers(1, 4, 7)
    control = {
        name: outcomes(control_tokens, rng.binomial(control_tokens, p))
        for name, p in (("before", 0.1), ("after", 0.4))
    }
    boot = Bootstrap([forget, control], n_resamples=50, seed=3)
    forget_indices, control_indices = boot.indices
    assert forget_indices.shape == (50, 12) and control_indices.shape == (50, 7)
    for group, indices in ((forget, forget_indices), (control, control_indices)):
        for name, table in group.items():
            # Resample b: every table of the group sums the same drawn items.
            for b, drawn in enumerate(indices):
                picked = list(drawn)
                n_tokens = sum(table.n_tokens[i] for i in picked)
                assert boot.resampled[name].n_tokens[b] == n_tokens
                assert (
                    boot.resampled[name].accuracy[b]
                    == sum(table.n_correct[i] for i in picked) / n_tokens
                )
                assert boot.resampled[name].exact_match[b] == np.mean(
                    [table.exact[i] for i in picked]
                )
                assert boot.resampled[name].nll[b] == pytest.approx(
                    math.fsum(table.nll_sum[i] for i in picked) / n_tokens, rel=1e-12
                )
            assert boot.point[name].accuracy[0] == table.metrics().accuracy
            assert boot.point[name].nll[0] == pytest.approx(table.metrics().nll, rel=1e-12)
    # The control's draw is its own: not the forget indices cut to its size.
    assert not np.array_equal(control_indices, forget_indices[:, :7])


def test_same_seed_same_resamples_and_other_seed_others():
    rng = np.random.default_rng(0)
    table = {"t": outcomes(np.ones(20, int), rng.binomial(1, 0.5, 20), rng.normal(1, 0.3, 20))}

    def nll(t):
        return t["t"].nll

    first, again, other = (Bootstrap([table], 300, seed=s) for s in (5, 5, 6))
    assert np.array_equal(first.indices[0], again.indices[0])
    assert first.interval(nll) == again.interval(nll)
    assert not np.array_equal(first.indices[0], other.indices[0])
    assert first.interval(nll) != other.interval(nll)


def test_misaligned_tables_and_repeated_names_are_refused():
    a, b = outcomes([1, 1], [1, 0]), outcomes([1, 1, 1], [1, 0, 0])
    with pytest.raises(ValueError, match="same items"):
        Bootstrap([{"a": a, "b": b}])
    with pytest.raises(ValueError, match="unique"):
        Bootstrap([{"a": a}, {"a": b}])


# Coverage of percentile intervals on simulated items. 400 sets give a coverage estimate whose
# binomial standard error at 0.95 is sqrt(0.95 * 0.05 / 400) = 0.011; we accept 3 of them either
# side. The percentile bootstrap of a mean undercovers at small n (its spread is the plug-in
# one, sqrt((n-1)/n) of the unbiased, and the distribution of 30 Bernoulli draws is discrete and
# skewed): we allow 0.03 more below, so coverage must lie in [0.95 - 0.03 - 0.033, 0.95 + 0.033].
N_SETS, N_ITEMS = 400, 30
COVERAGE_RANGE = (0.95 - 0.03 - 0.033, 0.95 + 0.033)


def test_intervals_of_a_mean_cover_at_their_nominal_rate():
    rng = np.random.default_rng(11)
    p = 0.3
    groups = [{f"set{k}": bernoulli_items(rng, N_ITEMS, p)} for k in range(N_SETS)]
    boot = Bootstrap(groups, n_resamples=1000, seed=0)
    covered = []
    for k in range(N_SETS):
        interval = boot.interval(lambda t, k=k: t[f"set{k}"].accuracy)
        covered.append(interval.low <= p <= interval.high)
    assert COVERAGE_RANGE[0] <= np.mean(covered) <= COVERAGE_RANGE[1]


def test_paired_intervals_of_a_difference_cover_at_their_nominal_rate():
    """Before/after tables of the same items: an item known before stays known with
    probability 0.7, an unknown one becomes known with 0.2, so the true change is
    0.6 * (0.7 - 1) + 0.4 * 0.2 = -0.1. Resampling the two tables independently would ignore
    their correlation and over-cover; pairing must come out at the nominal rate."""
    rng = np.random.default_rng(12)
    truth = 0.6 * (0.7 - 1) + 0.4 * 0.2
    groups = []
    for k in range(N_SETS):
        before = rng.binomial(1, 0.6, N_ITEMS)
        after = np.where(before == 1, rng.binomial(1, 0.7, N_ITEMS), rng.binomial(1, 0.2, N_ITEMS))
        ones = np.ones(N_ITEMS, int)
        groups.append({f"before{k}": outcomes(ones, before), f"after{k}": outcomes(ones, after)})
    boot = Bootstrap(groups, n_resamples=1000, seed=0)
    covered = [
        (lambda i: i.low <= truth <= i.high)(
            boot.interval(lambda t, k=k: t[f"after{k}"].accuracy - t[f"before{k}"].accuracy)
        )
        for k in range(N_SETS)
    ]
    assert COVERAGE_RANGE[0] <= np.mean(covered) <= COVERAGE_RANGE[1]


def test_label_stability_is_one_far_from_a_threshold_and_a_half_on_it():
    rng = np.random.default_rng(4)
    far = {"far": bernoulli_items(rng, 30, 0.95)}
    boot = Bootstrap([far], seed=0)
    assert boot.point["far"].accuracy[0] > 0.85
    assert boot.stability(lambda t: t["far"].accuracy >= 0.5) == 1.0
    # A continuous statistic with the threshold at its own point estimate: about half the
    # resamples fall on either side (standard error of the share at B = 4000: 0.008).
    n = 30
    on = {"on": outcomes(np.ones(n, int), np.ones(n, int), rng.normal(2.0, 0.5, n))}
    boot = Bootstrap([on], seed=0)
    threshold = boot.point["on"].nll[0]
    assert abs(boot.stability(lambda t: t["on"].nll > threshold) - 0.5) < 0.05


def test_peak_is_taken_inside_each_resample():
    """Five curve points with equal true excess: the maximum of noisy points is biased up, so
    the interval of the peak taken inside each resample reaches at least the point peak, and
    its lower end is at least the lower end of any one point's interval."""
    rng = np.random.default_rng(8)
    n = 20
    tokens = rng.integers(1, 4, n)
    forget = {"original": outcomes(tokens, tokens), "f0": outcomes(tokens, np.zeros(n, int))}
    control = {"c0": outcomes(tokens, np.zeros(n, int))}
    for k in range(1, 5):
        forget[f"f{k}"] = outcomes(tokens, rng.binomial(tokens, 0.6))
        control[f"c{k}"] = outcomes(tokens, rng.binomial(tokens, 0.3))

    def excess_at(t, k):
        return excess(
            t["original"].accuracy,
            t["f0"].accuracy,
            t[f"f{k}"].accuracy,
            t["c0"].accuracy,
            t[f"c{k}"].accuracy,
        )

    def peak(t):
        return peak_excess(
            t["original"].accuracy,
            t["f0"].accuracy,
            [t[f"f{k}"].accuracy for k in range(5)],
            [t[f"c{k}"].accuracy for k in range(5)],
        )

    boot = Bootstrap([forget, control], seed=2)
    interval = boot.interval(peak)
    points = [boot.interval(lambda t, k=k: excess_at(t, k)) for k in range(5)]
    assert interval.point == pytest.approx(max(p.point for p in points))
    assert interval.high >= interval.point
    assert interval.low >= max(p.low for p in points)
    assert interval.high > max(p.high for p in points[1:]) - 1e-12


@pytest.mark.parametrize("seed", range(20))
def test_statistics_agree_with_classify_regime(seed):
    rng = np.random.default_rng(seed)
    unlearned, relearned, before, after = rng.uniform(0, 1, 4)
    original = rng.uniform(min(unlearned + 0.05, 1.0), 1.0)
    verdict = classify_regime(
        original,
        unlearned,
        relearned,
        control_before=before,
        control_after=after,
        retain_original=1.0,
        retain_unlearned=1.0,
    )
    e = verdict.evidence
    assert forgotten(original, unlearned) == pytest.approx(e["forgotten"], rel=1e-12)
    if e["recovery"] is not None:
        assert recovery(original, unlearned, relearned) == pytest.approx(e["recovery"], rel=1e-12)
        assert control_gain(original, unlearned, before, after) == pytest.approx(
            e["control_gain"], rel=1e-12
        )
        assert excess(original, unlearned, relearned, before, after) == pytest.approx(
            e["excess_recovery"], rel=1e-12, abs=1e-15
        )


def test_undefined_resamples_are_counted_not_interpolated():
    """Recovery is a ratio over what unlearning removed; a resample that draws only items
    unlearning did not touch has nothing removed and no recovery."""
    original = outcomes([1, 1, 1], [1, 1, 1])
    unlearned = outcomes([1, 1, 1], [0, 1, 1])
    relearned = outcomes([1, 1, 1], [1, 1, 1])
    boot = Bootstrap([{"o": original, "u": unlearned, "r": relearned}], n_resamples=400, seed=0)
    interval = boot.interval(lambda t: recovery(t["o"].accuracy, t["u"].accuracy, t["r"].accuracy))
    # P(item 0 never drawn in 3 draws) = (2/3)^3 = 0.296.
    assert interval.n_undefined / 400 == pytest.approx((2 / 3) ** 3, abs=0.07)
    assert (interval.point, interval.low, interval.high) == (1.0, 1.0, 1.0)
