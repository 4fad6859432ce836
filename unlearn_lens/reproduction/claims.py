"""The study's claims judged on the grid's cells: each claim's rule, its verdict and the numbers
behind it, plus the observations and the KL finding the page quotes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from unlearn_lens.localize.reversion import RESTORE_FRACTION
from unlearn_lens.localize.summary import SHALLOW_FRACTION, shallow_limit, spearman
from unlearn_lens.numbers import finite_mean, number, percent
from unlearn_lens.predict.features import TOP_FRACTION
from unlearn_lens.reproduction.fitting import classified, forgotten, inconclusive, recovery
from unlearn_lens.reproduction.grid import CellResult, GridSettings
from unlearn_lens.reproduction.kl_terms import (
    KL_VARIANTS,
    SEPARATION,
    KLMeasurement,
    TermRun,
)
from unlearn_lens.unlearn.objectives import ObjectiveConfig

CKA_INTACT = 0.95
"""Mean lower-half debiased CKA at or above which representations count as intact."""


MAJORITY = 2 / 3
"""Share of cells a claim's pattern must hold in to count as holding (half of them: "partly")."""


DEPENDENCE = 0.25
"""A factor matters when the reversible share differs by this much between two of its levels."""


def _share(cells: Sequence[CellResult], test: Callable[[CellResult], bool]) -> float:
    return sum(map(test, cells)) / len(cells) if cells else math.nan


def lower_cka(r: CellResult) -> float:
    return r.features.values["cka_lower"]


def _reversible(r: CellResult) -> bool:
    return bool(r.regime.reversible)


def depth_of(r: CellResult) -> int | None:
    return r.features.depth


def n_layers_of(r: CellResult) -> int:
    return len(r.features.cka_forget)


def head_restore_of(r: CellResult) -> float:
    """Share of the forget NLL that reverting the output head alone restores."""
    return r.head_restore["nll"]


def _block_shares(r: CellResult) -> list[float]:
    """Each block's share of the whole update's Σ‖ΔW‖² (every distinct weight tensor)."""
    return r.features.delta_share


def _finite_median(values: Sequence[float]) -> float:
    """Median of the finite values; NaN when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


@dataclass(frozen=True)
class Claim:
    """One of the study's claims, the verdict on this model and the numbers behind it."""

    text: str
    verdict: str
    evidence: str


def _verdict(share: float) -> str:
    if math.isnan(share):
        return "untested"
    return "holds" if share >= MAJORITY else "partly holds" if share >= 0.5 else "does not hold"


def _left_out(cells: Sequence[CellResult]) -> str:
    """The clause naming the inconclusive cells left out of a reversible share (empty when none)."""
    n = len(inconclusive(cells))
    return (
        f", {n} of them inconclusive (the budget taught the control too little) and left out"
        if n
        else ""
    )


def check_claims(results: Sequence[CellResult], settings: GridSettings) -> list[Claim]:
    """Each claim of the study, judged by a rule stated in its evidence."""
    done = forgotten(results)
    aggressive = max(settings.lrs)
    # The gentlest setting that forgets at all: below it there is nothing whose reversibility to judge.
    gentle = min(
        (r.cell.lr for r in done if r.cell.protocol == "single"), default=min(settings.lrs)
    )
    below = [r for r in results if r.cell.lr < gentle and r.cell.protocol == "single"]
    claims = []

    cells = [r for r in done if r.cell.lr == gentle and r.cell.protocol == "single"]
    judged = classified(cells)
    n_all = sum(1 for r in results if r.cell.lr == gentle and r.cell.protocol == "single")
    pattern = _share(judged, lambda r: _reversible(r) and lower_cka(r) >= CKA_INTACT)
    gentler = (
        f" (none of the {len(below)} single-request cells at lower learning rates forgot)"
        if below
        else ""
    )
    claims.append(
        Claim(
            "Gentle settings give token-level collapse with intact representations, and are reversible.",
            _verdict(pattern),
            f"gentlest forgetting setting, lr {gentle:g}, single request{gentler}: {len(cells)} of {n_all} cells forgot"
            f"{_left_out(cells)}; of the {len(judged)} classified {percent(_share(judged, _reversible))} "
            f"are reversible, mean lower-half CKA {number(finite_mean([lower_cka(r) for r in cells]), 3)}, and "
            f"{percent(pattern)} show both (reversible and CKA ≥ {CKA_INTACT}); "
            f"{percent(_share(cells, lambda r: r.regime.catastrophic))} "
            f"are catastrophic. Rule: holds if at least {percent(MAJORITY)} of the classified cells show the pattern.",
        )
    )

    harsh = [r for r in done if r.cell.lr == aggressive or r.cell.protocol == "continual"]
    judged = classified(harsh)
    gentle_cka = finite_mean([lower_cka(r) for r in cells])
    harsh_cka = finite_mean([lower_cka(r) for r in harsh])
    pattern = _share(judged, lambda r: not _reversible(r) and r.regime.catastrophic)
    damage = harsh_cka < gentle_cka - 0.01
    claims.append(
        Claim(
            "Aggressive or continual settings cause deeper representational damage and failed recovery "
            "(irreversible, usually catastrophic).",
            _verdict(pattern) if damage else "does not hold" if pattern < 0.5 else "partly holds",
            f"lr {aggressive:g} or continual requests: {len(harsh)} forgotten "
            f"cells{_left_out(harsh)}; of the {len(judged)} classified "
            f"{percent(_share(judged, lambda r: not _reversible(r)))} irreversible, "
            f"{percent(_share(judged, lambda r: r.regime.catastrophic))} catastrophic, "
            f"{percent(pattern)} both; mean "
            f"lower-half CKA {number(harsh_cka, 3)} against {number(gentle_cka, 3)} at the gentle "
            "setting. Rule: holds if at least "
            f"{percent(MAJORITY)} of the classified cells are irreversible and catastrophic and "
            "the lower-half CKA is lower by more "
            "than 0.01.",
        )
    )

    depths = [depth_of(r) for r in done]
    shallow = _share(
        done, lambda r: (d := depth_of(r)) is not None and d <= shallow_limit(n_layers_of(r))
    )
    n_layers = n_layers_of(done[0]) if done else 0
    top = math.ceil(TOP_FRACTION * n_layers)
    head_nll = [head_restore_of(r) for r in done]
    median_depth = (
        float(np.median([d if d is not None else n_layers + 1 for d in depths]))
        if depths
        else math.nan
    )
    claims.append(
        Claim(
            "Shallow weight perturbations near the output concentrate the forget effect.",
            _verdict(shallow),
            f"{percent(shallow)} of {len(done)} forgotten cells have a forgetting depth ≤ "
            f"{shallow_limit(n_layers)} of {n_layers} "
            f"blocks (reverting the output head and the last {round(100 * SHALLOW_FRACTION)} % of the blocks restores "
            f"{percent(RESTORE_FRACTION)} of the forget NLL); median depth "
            f"{number(median_depth, 0)}. "
            f"The output head alone (final norm and unembedding, depth 0) restores a median "
            f"{number(_finite_median(head_nll), 2)} of the forget NLL, "
            f"{percent(RESTORE_FRACTION)} or more in "
            f"{percent(_share(done, lambda r: head_restore_of(r) >= RESTORE_FRACTION))} of the "
            f"cells. The last {top} blocks carry "
            f"{percent(finite_mean([r.features.values['delta_share_top'] for r in done]))} "
            "of the blocks' Σ‖ΔW‖² (their uniform share would be "
            f"{percent(top / n_layers if n_layers else math.nan)}) and "
            f"{percent(finite_mean([sum(_block_shares(r)[-top:]) for r in done]))} of the whole "
            "update's, whose Σ‖ΔW‖² runs over "
            "every distinct weight tensor, a tied embedding and unembedding matrix counted once; "
            "the weights outside the "
            f"blocks (embeddings, final norm, unembedding) carry "
            f"{percent(finite_mean([1 - sum(_block_shares(r)) for r in done]))} of it. "
            f"Rule: holds if at least {percent(MAJORITY)} of the forgotten cells are shallow.",
        )
    )

    spreads = []
    factors = (
        ("domain", "domain", settings.domains),
        ("learning rate", "lr", settings.lrs),
        ("protocol", "protocol", settings.protocols),
        ("objective", "method", settings.methods),
    )
    for factor, field_name, order in factors:
        levels = {
            level: [r for r in classified(done) if getattr(r.cell, field_name) == level]
            for level in order
        }
        shares = {
            f"{level:g}" if isinstance(level, float) else level: _share(cells_, _reversible)
            for level, cells_ in levels.items()
            if cells_
        }
        spread = max(shares.values()) - min(shares.values()) if shares else math.nan
        spreads.append(
            (
                factor,
                spread,
                ", ".join(f"{level} {percent(share)}" for level, share in shares.items()),
            )
        )
    depends = [factor for factor, spread, _ in spreads if spread >= DEPENDENCE]
    claims.append(
        Claim(
            "Reversibility depends on the domain and the hyperparameters.",
            "holds"
            if {"domain"} & set(depends) and {"learning rate", "protocol"} & set(depends)
            else "partly holds"
            if depends
            else "does not hold",
            "Reversible share of the classified cells by "
            + "; by ".join(f"{f}: {levels} (spread {percent(s)})" for f, s, levels in spreads)
            + f". Rule: a factor matters when the spread is at least {percent(DEPENDENCE)}; "
            "holds if the domain and the learning rate "
            "or protocol both matter.",
        )
    )
    return claims


def _stepping_alike(settings: GridSettings) -> list[str]:
    """The grid's objectives whose updates coincide under AdamW: GA, NPO and their KL variants."""
    return [method for method in ("ga", "ga_kl", "npo", "npo_kl") if method in settings.methods]


def observations(
    results: Sequence[CellResult], settings: GridSettings, kl: KLMeasurement | None = None
) -> list[str]:
    """Measured facts beyond the claims that a reader of the grid should not miss; `kl`, the
    measurement of `benchmarks/kl_gradients.py`, explains why some objectives coincide."""
    lines = []
    groups: dict[tuple, dict[str, float]] = {}
    for r in results:
        groups.setdefault((r.cell.domain, r.cell.lr, r.cell.protocol), {})[r.cell.method] = (
            r.unlearned["forget"].accuracy
        )
    alike = _stepping_alike(settings)
    if len(alike) >= 2:
        complete = [accuracy for accuracy in groups.values() if all(m in accuracy for m in alike)]
        same = sum(len({round(accuracy[m], 2) for m in alike}) == 1 for accuracy in complete)
        absent = [method for method in KL_VARIANTS if method not in settings.methods]
        twins = (
            f" {' and '.join(absent)}, the study's KL variants, are left out of this grid: at the default kl_weight "
            f"{ObjectiveConfig().kl_weight:g} they end where {' and '.join(KL_VARIANTS[m] for m in absent)} do, so "
            "their cells would be twins."
            if absent
            else ""
        )
        lines.append(
            f"Under AdamW the objective matters less than it seems: {', '.join(alike)} leave the same forget accuracy "
            f"(to two decimals) in {same} of {len(complete)} domain × learning-rate × protocol groups.{twins} "
            + (
                kl_finding(kl)
                if kl is not None
                else "Why is not measured here: run `benchmarks/kl_gradients.py`."
            )
        )
    done = forgotten(results)
    if done:
        ckas = [lower_cka(r) for r in done]
        judged = classified(done)
        cka_recovery_rank = spearman(
            [1 - lower_cka(r) for r in judged], [recovery(r) for r in judged]
        )
        lines.append(
            f"Representations below the middle barely move even when everything is destroyed: the lower-half debiased "
            f"CKA of the forgotten cells lies between {min(ckas):.4f} and {max(ckas):.4f}; yet the "
            "size of that gap from 1 "
            f"has Spearman {number(cka_recovery_rank, 2)} with "
            f"recovery over the {len(judged)} classified cells."
        )
        reversible = [r for r in done if _reversible(r)]
        if reversible:
            lines.append(
                "Where forgetting was reversible, relearning gained a median "
                f"{number(float(np.median([_relearn_gain(r) for r in reversible])), 2)} "
                "accuracy on the forget set against a median "
                f"{number(float(np.median([r.control_gain for r in reversible])), 2)} on the novel "
                "control from the same budget: the knowledge was still there."
            )
    return lines


def _span(values: Sequence[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f} to {max(values):.{digits}f}"


def _kl_separations(measurement: KLMeasurement, split: Literal["forget", "retain"]) -> str:
    """At which swept kl_weight each KL variant's `split` accuracy first leaves its plain objective's."""
    return " and ".join(
        f"{method} at kl_weight {weight:g}"
        if (weight := measurement.separation(method, split)) is not None
        else f"{method} at none up to {max(measurement.kl_weights(method)):g}"
        for method in KL_VARIANTS
    )


def kl_finding(measurement: KLMeasurement) -> str:
    """Why the KL variants and NPO follow GA, in the numbers `benchmarks/kl_gradients.py` measured."""
    cell = measurement.cell
    weights = measurement.kl_weights("ga_kl")
    grid_weight = ObjectiveConfig().kl_weight
    base = grid_weight if grid_weight in weights else weights[0]
    runs = {method: measurement.run(method, base) for method in KL_VARIANTS}
    plain = {method: measurement.run(name) for method, name in KL_VARIANTS.items()}
    first = runs["ga_kl"].steps[0]
    later = {method: run.steps[1:] for method, run in runs.items()}
    ratios = " and ".join(
        f"‖∇KL‖/‖∇{KL_VARIANTS[method].upper()}‖ {_span([s.ratio for s in steps])} ({method})"
        for method, steps in later.items()
    )
    cosines = [s.forget_kl_cosine for steps in later.values() for s in steps]

    def accuracies(run: TermRun) -> str:
        return f"{run.forget_accuracy:.2f}/{run.retain_accuracy:.2f}"

    same = all(
        abs(getattr(runs[m], split) - getattr(plain[m], split)) < SEPARATION
        for m in KL_VARIANTS
        for split in ("forget_accuracy", "retain_accuracy")
    )
    ends = "; ".join(
        f"{method} {accuracies(runs[method])} against {KL_VARIANTS[method]} {accuracies(plain[method])}"
        for method in KL_VARIANTS
    )
    sweep = "; ".join(
        f"{method} "
        + ", ".join(
            f"{run.kl_weight:g}: {accuracies(run)} (forget NLL {run.forget_nll:.1f})"
            for run in (
                measurement.run(method, weight) for weight in measurement.kl_weights(method)
            )
        )
        + f", against {KL_VARIANTS[method]}'s forget NLL {plain[method].forget_nll:.1f}"
        for method in KL_VARIANTS
    )
    ga_cosine = min(s.ga_cosine for s in runs["npo_kl"].steps if s.ga_cosine is not None)
    grid = " (the grid's)" if base == grid_weight else ""
    return (
        f"Measured on one cell ({cell['domain']}, lr {cell['lr']:g}, single request, "
        f"{cell['steps']} AdamW steps of batch "
        f"{cell['batch_size']}, gradients over every trainable weight; `benchmarks/kl_gradients.py`): the retain KL "
        f"vanishes only at the first step, on the reference weights (KL {first.kl:.1g}, "
        f"‖∇KL‖/‖∇GA‖ {first.ratio:.1g}). "
        f"From the second step on, at kl_weight {base:g}{grid}, the KL reaches "
        f"{max(s.kl for s in runs['ga_kl'].steps):.2f}, "
        f"{ratios}, and the two gradients point against each other (cosine {_span(cosines)}). "
        f"{'Yet the runs end where the plain objectives do' if same else 'The runs end'} "
        f"(forget/retain accuracy): {ends}. "
        f"NPO's gradient is parallel to GA's (cosine at least {ga_cosine:.3f} at every step of "
        "npo_kl), and Adam's update "
        "does not depend on a gradient's overall scale, so NPO steps like GA: npo ends at "
        f"{accuracies(plain['npo_kl'])}, "
        f"ga at {accuracies(plain['ga_kl'])}. Raising kl_weight (forget/retain accuracy by kl_weight): {sweep}. Retain "
        f"accuracy first moves by {SEPARATION:g} or more from the plain objective's for "
        f"{_kl_separations(measurement, 'retain')}; "
        f"forget accuracy for {_kl_separations(measurement, 'forget')}."
    )


def _relearn_gain(cell: CellResult) -> float:
    """Forget accuracy the relearning attack brought back: relearned minus unlearned."""
    return cell.relearned["forget"].accuracy - cell.unlearned["forget"].accuracy
