"""The four answers a reader comes for, per method: forgotten? comes back? where? catastrophic?

Each answer is a word or a number first (`answer`), the evidence behind it second (`detail`):
the terminal prints the answers on one line (the evidence with `--verbose`), the HTML report
shows them as a card with the evidence one click away. Everything is read from the results.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from unlearn_lens.localize.verification import top_indices
from unlearn_lens.numbers import MISSING, percent, share
from unlearn_lens.study.results import AuditResults, MethodResults
from unlearn_lens.study.stages import RELEARN_SOURCES

TOP_PLACES = 3
"""Blocks and heads named in the "where" answer: the few a reader takes in at a glance."""

BLOCK_EFFECTS = ("attribution_nll", "reversion_nll")
"""Per-block columns that give each block's share of the forget-NLL change (attribution, or exact
reversion with `--localization exact`): the "where" answer ranks blocks by the first present."""

QUESTIONS = ("forgotten", "comes back", "where", "catastrophic")
"""The card's questions, in the order they are asked."""


@dataclass(frozen=True)
class Answer:
    """One question's answer: a word or number first, then the evidence it rests on."""

    question: str
    answer: str
    detail: str


@dataclass(frozen=True)
class Finding:
    """A method's card: its regime and the four answers."""

    method: str
    regime: str
    answers: list[Answer]

    def line(self) -> str:
        """The card on one line, for the terminal."""
        return f"{self.method}: " + " · ".join(f"{a.question}? {a.answer}" for a in self.answers)


def finding(results: AuditResults, result: MethodResults) -> Finding:
    """The card of one method (answers of stages not run yet read '–')."""
    name = f"{result.method} (given)" if result.given is not None else result.method
    return Finding(
        method=name,
        regime=result.regime.label if result.regime is not None else MISSING,
        answers=[
            _forgotten(result),
            _comes_back(results, result),
            _where(result),
            _catastrophic(result),
        ],
    )


def _value(evidence: Mapping[str, float | None], key: str) -> float:
    """A number the regime's evidence always holds."""
    value = evidence[key]
    assert value is not None, f"the regime's evidence holds {key}"
    return value


def _forgotten(result: MethodResults) -> Answer:
    verdict = result.regime
    if verdict is None:
        return Answer("forgotten", MISSING, "not measured yet")
    t = verdict.thresholds
    forgotten, before, after = (
        _value(verdict.evidence, key)
        for key in ("forgotten", "forget_original", "forget_unlearned")
    )
    word = "yes" if forgotten >= t.min_forgotten else "no"
    return Answer(
        "forgotten",
        f"{word} (accuracy {_signed(after - before, '.2f')})",
        f"forget token accuracy {before:.2f} → {after:.2f}, "
        f"a drop of {percent(forgotten)} of the original; forgotten means a drop of at least "
        f"{percent(t.min_forgotten)}",
    )


def _comes_back(results: AuditResults, result: MethodResults) -> Answer:
    answer = _comes_back_point(results, result)
    intervals = result.intervals
    if intervals is None or answer.answer in (MISSING,) or answer.answer.startswith("n/a"):
        return answer
    r, p = intervals.recovery, intervals.peak_excess
    sureness = (
        f"same-data recovery {r.point:.2f} [{r.low:.2f}, {r.high:.2f}], peak excess "
        f"{p.point:.2f} [{p.low:.2f}, {p.high:.2f}] (95 %, {r.n_resamples} paired resamples of "
        f"{intervals.n_items[0]} forget and {intervals.n_items[1]} control items); label "
        f"stability {intervals.stability:.2f}"
    )
    headline = answer.answer
    if intervals.borderline is not None:
        headline = f"borderline ({intervals.borderline}): {headline}"
    return Answer(answer.question, headline, f"{sureness}; {answer.detail}")


def _comes_back_point(results: AuditResults, result: MethodResults) -> Answer:
    verdict, relearned = result.regime, result.relearn
    if verdict is None or relearned is None:
        return Answer("comes back", MISSING, "not measured yet")
    e, t = verdict.evidence, verdict.thresholds
    work, source = relearned.work["source"], results.config.relearn_source
    named = source in RELEARN_SOURCES
    attack = f"relearning on the {source} set" if named else f"relearning on {source}"
    budget = f"{attack}, {work.steps} steps at lr {work.lr:g}"
    if e["recovery"] is None:
        return Answer("comes back", "n/a (nothing forgotten)", f"{budget}: {verdict.describe()}")
    word = {True: "yes", False: "no", None: verdict.label}[verdict.reversible]
    battery = result.battery
    if battery is not None and battery.verdict is not None:
        decided = next((r for r in battery.readings if r.attack == verdict.decided_by), None)
        best = max(
            (r for r in battery.readings if r.recovery is not None),
            key=lambda r: r.recovery or 0.0,
            default=None,
        )
        shown = decided or best
        headline = (
            f"{word}, {shown.recovery:.2f} of the loss ({shown.attack}, null {shown.null:.2f})"
            if shown is not None and shown.recovery is not None
            else word
        )
        return Answer(
            "comes back",
            headline,
            f"{battery.verdict.reason}; "
            + "; ".join(f"{r.attack}: {r.outcome}, {r.evidence}" for r in battery.readings)
            + f" (reversible needs recovery ≥ {t.recovery:.2f} and ≥ {t.control_margin:.2f} "
            "beyond the null)",
        )
    control = (
        f"; the same budget taught the novel control {e['control_gain_absolute']:.2f} accuracy "
        f"({e['control_gain']:.2f} on the recovery scale), excess {e['excess_recovery']:.2f} "
        f"(reversible needs ≥ {t.control_margin:.2f})"
        if e["control_gain"] is not None
        else "; no control"
    )
    return Answer(
        "comes back",
        f"{word}, {e['recovery']:.2f} of the loss ({attack})",
        f"{budget}: forget accuracy {e['forget_unlearned']:.2f} → {e['forget_relearned']:.2f}, "
        f"recovery {e['recovery']:.2f} (reversible needs ≥ {t.recovery:.2f}){control}",
    )


def _where(result: MethodResults) -> Answer:
    summary = result.localization
    if summary is None:
        return Answer("where", MISSING, "not localised yet")
    n_layers, depth = summary.n_layers, summary.forgetting_depth
    kind = {True: "shallow", False: "deep", None: "unresolved"}[summary.shallow]
    depth_text = f"{depth}/{n_layers} blocks" if depth is not None else f">{n_layers} blocks"
    places = _top_places(result)
    top = f"; top {', '.join(places)}" if places else ""
    return Answer(
        "where",
        f"{kind}, depth {depth_text}{top}",
        f"{summary.verdict} Top places: share of the forget-loss change each one's weight update "
        "carries (a fraction of the whole; blocks from the per-layer effect column, heads reverted "
        "alone).",
    )


def _top_places(result: MethodResults) -> list[str]:
    """The largest blocks by forget effect, then the largest heads, each with its share."""
    assert result.localization is not None, "places are read once localised"
    columns = result.localization.columns
    effect = next((name for name in BLOCK_EFFECTS if name in columns), None)
    places = []
    if effect is not None:
        values = np.nan_to_num(np.asarray(columns[effect], dtype=float), nan=-math.inf)
        for index in top_indices(values, TOP_PLACES):
            places.append(f"block {index} {share(float(values[index]))}")
    if result.attribution is not None:
        heads = result.attribution.attribution.single_patches.heads(fraction=True)
        for index in top_indices(heads, TOP_PLACES):
            layer, head = divmod(int(index), heads.shape[1])
            places.append(f"L{layer}H{head} {share(float(heads.flat[index]))}")
    return places


def _catastrophic(result: MethodResults) -> Answer:
    verdict = result.regime
    if verdict is None:
        return Answer("catastrophic", MISSING, "not measured yet")
    e, t = verdict.evidence, verdict.thresholds
    drop = (
        f"retain accuracy {_signed(-e['retain_drop'], '.0%')}"
        if e["retain_drop"] is not None
        else f"retain NLL {_signed(_value(e, 'retain_nll_rise'), '.2f')} nats"
    )
    retain = (
        f"retain accuracy {e['retain_original']:.2f} → {e['retain_unlearned']:.2f}"
        if e["retain_drop"] is not None
        else "no retain accuracy drop to measure"
    )
    nll = (
        f", retain NLL {e['retain_nll_original']:.2f} → {e['retain_nll_unlearned']:.2f} nats"
        if e["retain_nll_rise"] is not None
        else ""
    )
    return Answer(
        "catastrophic",
        f"{'yes' if verdict.catastrophic else 'no'} ({drop})",
        f"{retain}{nll}; catastrophic when retain accuracy falls by more than "
        f"{percent(t.retain_drop)} or retain NLL rises by more than {t.retain_nll_rise:.2f} nats",
    )


def _signed(change: float, spec: str) -> str:
    """A change with its sign in front (a true minus sign), e.g. `−0.73` or `+5 %`."""
    text = format(abs(change), spec).replace("%", " %")
    return f"{'−' if change < 0 else '+'}{text}"
