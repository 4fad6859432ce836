"""What each known case must read, and whether the audit read it: every check with its numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from unlearn_lens.regimes import NOT_FORGOTTEN, VERDICT_METRICS
from unlearn_lens.study.results import MethodResults


@dataclass(frozen=True)
class Expectation:
    """The reading a case must give; None leaves a reading unchecked.

    - `forgotten`: the regime says forgotten (True) or "not forgotten" (False).
    - `max_depth` / `min_depth`: bounds on the forgetting depth (blocks reverted with the head);
      with `min_depth`, no depth at all ("deep, no depth restores") also passes.
    - `no_depth`: no depth is reported.
    - `reversible`: the regime's reversibility.
    - `first_blocks_share`: at least this share of the attributed (or reverted) forget effect lies
      in the first `first_blocks` blocks.
    - `lens_reads_answer`: through the original's head (the fixed decoder), the last stream of the
      audited weights ranks the first answer token as the original's does (within the logit
      lens's divergence factor).
    - `max_excess`: relearning gains on the forget set at most this much token accuracy more than
      the same budget teaches the novel control set.
    """

    forgotten: bool | None = None
    max_depth: int | None = None
    min_depth: int | None = None
    no_depth: bool = False
    reversible: bool | None = None
    first_blocks: int = 0
    first_blocks_share: float | None = None
    lens_reads_answer: bool = False
    max_excess: float | None = None


@dataclass
class Check:
    """One reading set against its expectation."""

    name: str
    expected: str
    measured: str
    passed: bool


def _depth_text(result: MethodResults) -> str:
    assert result.localization is not None
    depth = result.localization.forgetting_depth
    return "none" if depth is None else str(depth)


def _first_blocks_share(result: MethodResults, blocks: int) -> float:
    """The share of the forget effect in the first `blocks` blocks: attribution, else exact reversion."""
    assert result.localization is not None
    columns = result.localization.columns
    column = columns.get("attribution_nll") or columns.get("reversion_nll") or []
    values = [value for value in column if not math.isnan(value)]
    total = math.fsum(abs(value) for value in values)
    if not total:
        return math.nan
    return math.fsum(abs(value) for value in column[:blocks] if not math.isnan(value)) / total


def _lens_ranks(result: MethodResults) -> tuple[float, float, float]:
    """Median first-answer-token rank at the last stream: original and audited weights through the
    original's head, and the audited weights through their own head."""
    lens = result.logit_lens
    assert lens is not None
    return (
        lens.fixed_head["original"].median_rank()[-1],
        lens.fixed_head["unlearned"].median_rank()[-1],
        lens.own_head["unlearned"].median_rank()[-1],
    )


def check_case(result: MethodResults, expectation: Expectation, metric: str) -> list[Check]:
    """Every reading `expectation` names, from the audit's results of the case."""
    assert result.regime is not None and result.localization is not None
    regime, localization = result.regime, result.localization
    depth = localization.forgetting_depth
    checks: list[Check] = []
    if expectation.forgotten is not None:
        forgotten = regime.label != NOT_FORGOTTEN
        share = regime.evidence.get("forgotten")
        checks.append(
            Check(
                "forgotten",
                "forgotten" if expectation.forgotten else NOT_FORGOTTEN,
                f"{regime.label} (share forgotten {_fmt(share)})",
                forgotten == expectation.forgotten,
            )
        )
    if expectation.max_depth is not None:
        checks.append(
            Check(
                "depth",
                f"≤ {expectation.max_depth}",
                _depth_text(result),
                depth is not None and depth <= expectation.max_depth,
            )
        )
    if expectation.min_depth is not None:
        checks.append(
            Check(
                "depth",
                f"≥ {expectation.min_depth} (or none restores)",
                _depth_text(result),
                depth is None or depth >= expectation.min_depth,
            )
        )
    if expectation.no_depth:
        checks.append(Check("depth", "none", _depth_text(result), depth is None))
    if expectation.reversible is not None:
        checks.append(
            Check(
                "reversible",
                "reversible" if expectation.reversible else "not reversible",
                f"{regime.label} (recovery {_fmt(regime.evidence.get('recovery'))}, excess over "
                f"control {_fmt(regime.evidence.get('excess_recovery'))})",
                regime.reversible is expectation.reversible
                if expectation.reversible
                else regime.reversible is not True,
            )
        )
    if expectation.first_blocks_share is not None:
        share = _first_blocks_share(result, expectation.first_blocks)
        checks.append(
            Check(
                f"effect in blocks 0–{expectation.first_blocks - 1}",
                f"≥ {expectation.first_blocks_share:.0%}",
                _fmt(share),
                share >= expectation.first_blocks_share,
            )
        )
    if expectation.lens_reads_answer:
        assert result.logit_lens is not None
        original, fixed, own = _lens_ranks(result)
        factor = result.logit_lens.divergence_factor
        checks.append(
            Check(
                "logit lens (fixed decoder), last stream",
                f"answer rank within {factor:g}× the original's ({original:g})",
                f"rank {fixed:g} (own head {own:g})",
                fixed <= factor * original,
            )
        )
    if expectation.max_excess is not None:
        assert result.relearn is not None
        recovery = result.relearn.recovery[VERDICT_METRICS[metric]]
        gain, control = recovery.forget_gain, recovery.control_gain
        checks.append(
            Check(
                "relearning gain over the control",
                f"≤ {expectation.max_excess:.2f}",
                f"{gain - control:+.2f} (forget {gain:+.2f}, control {control:+.2f})",
                gain - control <= expectation.max_excess,
            )
        )
    return checks


def _fmt(value: float | None) -> str:
    return "—" if value is None or value != value else f"{value:.2f}"
