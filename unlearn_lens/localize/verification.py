"""Exact checks of a weight attribution: revert its top-ranked blocks and heads and compare.

Integrated gradients is exact in sum (completeness) but each part's share is an approximation
of what reverting that part alone does, since parts interact. The check reverts blocks (ranked
by their integrated-gradient share) and query heads (ranked by the first-order effect of
reverting each alone, when the attribution measured it: a head is a small patch, and the
gradient at the unlearned weights predicts it), one at a time, and reports the Spearman
correlation between estimated and exact effects; an agreement below the Spearman ρ its number of
pairs needs for significance (one-sided p < 0.05, `critical_spearman`) is a warning, never hidden.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from pydantic import computed_field

from unlearn_lens.localize.attribution import WeightAttribution
from unlearn_lens.localize.reversion import Reverter, layer_patch, query_heads_patch
from unlearn_lens.localize.summary import spearman
from unlearn_lens.schema import Real

N_VERIFIED_BLOCKS = 6
"""Blocks reverted exactly, about 2 s each on SmolLM2 with 32 forget items; with 6 pairs a
Spearman ρ ≥ 0.83 is significant (one-sided p < 0.05, `critical_spearman(6)`)."""
N_VERIFIED_HEADS = 8
"""Query heads reverted exactly; with 8 pairs a Spearman ρ ≥ 0.64 is significant (one-sided
p < 0.05, `critical_spearman(8)`)."""
SIGNIFICANCE = 0.05
"""One-sided level of the agreement test: the attribution's ranking is flagged when its Spearman ρ
with the exact effects could arise by chance (no association) more often than this."""
EXACT_PERMUTATIONS = 8
"""Largest number of pairs whose null distribution of Spearman ρ is enumerated (8! = 40320
permutations); beyond it the t approximation is used."""


def _student_t_sf(t: float, df: int, intervals: int = 4000) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom, t ≥ 0 (Simpson's rule on the density)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    x = np.linspace(0.0, t, intervals + 1)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x**2 / df))
    simpson = density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum()
    return 0.5 - float(simpson) * (t / intervals) / 3


def _t_critical(df: int, alpha: float) -> float:
    """The one-sided critical t: P(T > t) = `alpha`, by bisection."""
    low, high = 0.0, 1.0
    while _student_t_sf(high, df) > alpha:
        low, high = high, 2 * high
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if _student_t_sf(middle, df) > alpha else (low, middle)
    return (low + high) / 2


@cache
def critical_spearman(n: int, alpha: float = SIGNIFICANCE) -> float:
    """The smallest Spearman ρ significant at one-sided level `alpha` over `n` untied pairs.

    Exact for n ≤ `EXACT_PERMUTATIONS`: the smallest ρ whose upper tail over all n! equally likely
    rank orders has probability ≤ `alpha` (NaN-free: `inf` when even ρ = 1, of probability 1/n!, is
    too likely, as for n ≤ 3 at 0.05). Beyond, the t approximation:
    t = ρ √((n − 2) / (1 − ρ²)) follows Student's t with n − 2 degrees of freedom, so
    ρ_c = t_c / √(n − 2 + t_c²).
    """
    if n < 2:
        return math.inf
    if n <= EXACT_PERMUTATIONS:
        ranks = np.arange(n)
        d2 = np.array(
            [int(((np.asarray(p) - ranks) ** 2).sum()) for p in itertools.permutations(ranks)]
        )
        rho = 1 - 6 * d2 / (n * (n * n - 1))
        values, counts = np.unique(np.round(rho, 12), return_counts=True)
        tail = np.cumsum(counts[::-1])[::-1] / len(rho)  # P(ρ ≥ value)
        significant = values[tail <= alpha]
        return float(significant.min()) if significant.size else math.inf
    t = _t_critical(n - 2, alpha)
    return t / math.sqrt(n - 2 + t * t)


@dataclass(frozen=True)
class AttributionCheck:
    """Attributed and exact NLL effects (fractions of the forget effect) of the verified patches.

    **Fields:** `blocks`, the verified blocks (the top-attributed first, then blocks spread
    over the rest of the ranking); `block_attributed[i]`, `block_exact[i]` their
    effects; `heads`, the verified `(layer, query head)` pairs, whose exact patch reverts the
    head's q and o slices and its whole key-value head, and whose attributed effect is that of
    the same weights ([`LossAttribution.head_patch`][unlearn_lens.localize.LossAttribution.head_patch])
    in the estimate named by `head_estimate`.
    """

    blocks: list[int]
    block_attributed: list[Real]
    block_exact: list[Real]
    heads: list[tuple[int, int]]
    head_attributed: list[Real]
    head_exact: list[Real]
    head_estimate: str = "integrated gradients"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def block_agreement(self) -> Real:
        """Spearman ρ of attributed vs exact block effects (NaN with fewer than 3 blocks)."""
        return spearman(self.block_attributed, self.block_exact)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def head_agreement(self) -> Real:
        """Spearman ρ of attributed vs exact head effects (NaN with fewer than 3 heads)."""
        return spearman(self.head_attributed, self.head_exact)

    def warnings(self) -> list[str]:
        """One line per agreement below the Spearman ρ its number of pairs needs for significance
        (`critical_spearman`), or that too few pairs cannot test."""
        lines = []
        for name, rho, n in (
            ("blocks", self.block_agreement, len(self.blocks)),
            ("heads", self.head_agreement, len(self.heads)),
        ):
            if n == 0:
                continue
            critical = critical_spearman(n)
            if math.isinf(critical) or math.isnan(rho):
                lines.append(
                    f"attribution's agreement with exact reversion on the {n} verified {name} "
                    f"cannot be tested (Spearman {rho:.2f}; {n} pairs can never reach one-sided "
                    f"p < {SIGNIFICANCE})"
                    if math.isinf(critical)
                    else f"attribution's agreement with exact reversion on the {n} verified {name} "
                    "is undefined (constant effects)"
                )
            elif rho < critical:
                lines.append(
                    f"attribution disagrees with exact reversion on the {n} verified {name} "
                    f"(Spearman {rho:.2f} < {critical:.2f}, the ρ {n} pairs need for one-sided "
                    f"p < {SIGNIFICANCE}): trust the exact effects over the attributed ranking there"
                )
        return lines


def top_indices(values: np.ndarray, n: int) -> list[int]:
    """Flat indices of the `n` largest values (NaN last, ties in index order)."""
    flat = np.nan_to_num(np.asarray(values, dtype=np.float64).ravel(), nan=-np.inf)
    return [int(i) for i in np.argsort(-flat, kind="stable")[:n]]


def verified_indices(values: np.ndarray, n: int) -> list[int]:
    """Flat indices of the parts to verify: the top half of `n` by value (the parts a report names),
    then the rest at evenly spaced ranks down to the lowest.

    Top parts alone have nearly equal values on a deep update (SmolLM2 after GA: the top 8 of 270
    heads within 0.001 of the effect of each other), where a rank correlation measures noise; the
    spread half makes the agreement a test of the whole ranking.
    """
    order = top_indices(values, np.asarray(values).size)
    n = min(n, len(order))
    top = (n + 1) // 2
    spread = np.linspace(top - 1, len(order) - 1, n - top + 1)[1:].round().astype(int)
    return [order[rank] for rank in (*range(top), *sorted({int(r) for r in spread}))]


def verify_attribution(
    attribution: WeightAttribution,
    reverter: Reverter,
    *,
    n_blocks: int = N_VERIFIED_BLOCKS,
    n_heads: int = N_VERIFIED_HEADS,
    progress: bool = True,
) -> AttributionCheck:
    """Revert `n_blocks` blocks and `n_heads` query heads one at a time with `reverter` (forget set of
    the attribution, same snapshots): the top-ranked half and the rest spread over the ranking
    (see `verified_indices`); blocks ranked by their integrated-gradient share, heads by
    [`WeightAttribution.single_patches`][unlearn_lens.localize.WeightAttribution.single_patches]."""
    subject = reverter.subject
    block_fractions = attribution.forget.blocks(fraction=True)
    blocks = verified_indices(np.asarray(block_fractions), n_blocks)
    single = attribution.single_patches
    table = single.heads(fraction=True)
    heads = [divmod(index, table.shape[1]) for index in verified_indices(table, n_heads)]
    patches = [layer_patch(subject, layer) for layer in blocks] + [
        query_heads_patch(subject, [pair]) for pair in heads
    ]
    exact = [
        result.effect_nll
        for result in reverter.measure_all(patches, progress=progress, description="verification")
    ]
    return AttributionCheck(
        blocks=blocks,
        block_attributed=[block_fractions[layer] for layer in blocks],
        block_exact=exact[: len(blocks)],
        heads=[(int(layer), int(head)) for layer, head in heads],
        head_attributed=[single.head_patch(layer, head, fraction=True) for layer, head in heads],
        head_exact=exact[len(blocks) :],
        head_estimate="integrated gradients" if attribution.first_order is None else "first order",
    )
