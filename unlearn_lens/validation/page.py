"""The validation page: per-cell tables, the study's claims checked against them, the predictor's
held-out numbers, and the figures (PNG) — written from cached cells, so it is cheap to regenerate."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from unlearn_lens.atomic import write_bytes_atomic
from unlearn_lens.localize.reversion import RESTORE_FRACTION
from unlearn_lens.localize.summary import SHALLOW_FRACTION, shallow_limit, spearman
from unlearn_lens.numbers import finite_mean, number, percent
from unlearn_lens.predict.features import PREDICTOR_INPUTS, TOP_FRACTION
from unlearn_lens.predict.model import REVERSIBLE_RECOVERY
from unlearn_lens.regimes import RegimeThresholds
from unlearn_lens.report.figures import new_figure, save_figure
from unlearn_lens.unlearn.objectives import ObjectiveConfig
from unlearn_lens.validation.fitting import (
    PredictorFit,
    classified,
    forgotten,
    inconclusive,
    recovery,
)
from unlearn_lens.validation.grid import STUDY_OBJECTIVES, CellResult, GridSettings
from unlearn_lens.validation.kl_terms import (
    KL_FILE,
    KL_VARIANTS,
    SEPARATION,
    KLMeasurement,
    TermRun,
)

CKA_INTACT = 0.95
"""Mean lower-half debiased CKA at or above which representations count as intact."""

MAJORITY = 2 / 3
"""Share of cells a claim's pattern must hold in to count as holding (half of them: "partly")."""

DEPENDENCE = 0.25
"""A factor matters when the reversible share differs by this much between two of its levels."""


def _share(cells: Sequence[CellResult], test: Callable[[CellResult], bool]) -> float:
    return sum(map(test, cells)) / len(cells) if cells else math.nan


def _cka_lower(r: CellResult) -> float:
    return r.features["values"]["cka_lower"]


def _reversible(r: CellResult) -> bool:
    return bool(r.regime["reversible"])


def _depth(r: CellResult) -> int | None:
    return r.features["depth"]


def _n_layers(r: CellResult) -> int:
    return len(r.features["cka_forget"])


def _head_restore(r: CellResult) -> float:
    """Share of the forget NLL that reverting the output head alone restores."""
    return r.head_restore["nll"]


def _block_shares(r: CellResult) -> list[float]:
    """Each block's share of the whole update's Σ‖ΔW‖² (every distinct weight tensor)."""
    return r.features["delta_share"]


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
    pattern = _share(judged, lambda r: _reversible(r) and _cka_lower(r) >= CKA_INTACT)
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
            f"are reversible, mean lower-half CKA {number(finite_mean([_cka_lower(r) for r in cells]), 3)}, and "
            f"{percent(pattern)} show both (reversible and CKA ≥ {CKA_INTACT}); "
            f"{percent(_share(cells, lambda r: r.regime['catastrophic']))} "
            f"are catastrophic. Rule: holds if at least {percent(MAJORITY)} of the classified cells show the pattern.",
        )
    )

    harsh = [r for r in done if r.cell.lr == aggressive or r.cell.protocol == "continual"]
    judged = classified(harsh)
    gentle_cka = finite_mean([_cka_lower(r) for r in cells])
    harsh_cka = finite_mean([_cka_lower(r) for r in harsh])
    pattern = _share(judged, lambda r: not _reversible(r) and r.regime["catastrophic"])
    damage = harsh_cka < gentle_cka - 0.01
    claims.append(
        Claim(
            "Aggressive or continual settings cause deeper representational damage and failed recovery "
            "(irreversible, usually catastrophic).",
            _verdict(pattern) if damage else "does not hold" if pattern < 0.5 else "partly holds",
            f"lr {aggressive:g} or continual requests: {len(harsh)} forgotten "
            f"cells{_left_out(harsh)}; of the {len(judged)} classified "
            f"{percent(_share(judged, lambda r: not _reversible(r)))} irreversible, "
            f"{percent(_share(judged, lambda r: r.regime['catastrophic']))} catastrophic, "
            f"{percent(pattern)} both; mean "
            f"lower-half CKA {number(harsh_cka, 3)} against {number(gentle_cka, 3)} at the gentle "
            "setting. Rule: holds if at least "
            f"{percent(MAJORITY)} of the classified cells are irreversible and catastrophic and "
            "the lower-half CKA is lower by more "
            "than 0.01.",
        )
    )

    depths = [_depth(r) for r in done]
    shallow = _share(
        done,
        lambda r: (depth := _depth(r)) is not None and depth <= shallow_limit(_n_layers(r)),
    )
    n_layers = _n_layers(done[0]) if done else 0
    top = math.ceil(TOP_FRACTION * n_layers)
    head_nll = [_head_restore(r) for r in done]
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
            f"{percent(_share(done, lambda r: _head_restore(r) >= RESTORE_FRACTION))} of the "
            f"cells. The last {top} blocks carry "
            f"{percent(finite_mean([r.features['values']['delta_share_top'] for r in done]))} "
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
        ckas = [_cka_lower(r) for r in done]
        judged = classified(done)
        cka_recovery_rank = spearman(
            [1 - _cka_lower(r) for r in judged], [recovery(r) for r in judged]
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


def _objectives_left_out(settings: GridSettings) -> str:
    """The set-up clause naming the study's objectives this grid does not run (empty when it runs them all)."""
    absent = [method for method in STUDY_OBJECTIVES if method not in settings.methods]
    return (
        f" (the study's {' and '.join(absent)} are left out: see *Also measured*)" if absent else ""
    )


def _trio(r: CellResult, split: str) -> str:
    return f"{r.original[split].accuracy:.2f}→{r.unlearned[split].accuracy:.2f}→{r.relearned[split].accuracy:.2f}"


def _cell_table(results: Sequence[CellResult]) -> list[str]:
    lines = [
        "| objective | lr | protocol | forget o→u→r | retain o→u→r | recovery | control gain | "
        "peak excess | depth | head restore "
        "| CKA lower | regime |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        depth = _depth(r)
        lines.append(
            f"| {r.cell.method} | {r.cell.lr:g} | {r.cell.protocol} | {_trio(r, 'forget')} | {_trio(r, 'retain')} | "
            f"{number(r.recovery, 2)} | {number(r.control_gain, 2)} | {number(r.peak_excess, 2)} | "
            f"{depth if depth is not None else '>' + str(_n_layers(r))} | "
            f"{number(_head_restore(r), 2)} | {number(_cka_lower(r), 3)} | {r.regime['label']} |"
        )
    return lines


def _relearning_budget(results: Sequence[CellResult], settings: GridSettings) -> str:
    """The set-up line on the relearning budget: its size beside the unlearning budget, and what
    it taught the control."""
    gains = [r.control_gain for r in results]
    taught = (
        f" Across the {len(gains)} cells it raised the control's token accuracy by a median "
        f"{number(float(np.median(gains)), 2)} (range {min(gains):.2f} to {max(gains):.2f})."
        if gains
        else ""
    )
    return (
        f"- Relearning attack: {settings.relearn_steps} steps of {settings.batch_size} at lr "
        f"{settings.relearn_lr:g} on the "
        f"forget set ({settings.relearn_steps * settings.batch_size / settings.n_items:g} epochs "
        f"of its {settings.n_items} items); "
        "the *control* gets the same work on the novel control items, from the same unlearned weights. Unlearning, for "
        f"comparison: {settings.steps} steps of {settings.batch_size} per request, {settings.steps} (single) or "
        f"{settings.steps * settings.continual_requests} (continual) in all, at lr "
        f"{', '.join(f'{lr:g}' for lr in settings.lrs)}.{taught}"
    )


def _regime_rules(t: RegimeThresholds) -> str:
    """The set-up line on how a cell's regime is decided (as the audit decides it)."""
    return (
        "- Regimes as in [the concepts page](concepts/regimes.md), decided as the audit decides "
        "them: *not forgotten* when "
        f"forget accuracy fell by less than {percent(t.min_forgotten)}; reversible when recovery ≥ "
        f"{t.recovery:g} and its "
        "largest excess over the control's gain at equal work along the relearning curve (peak excess, on the recovery "
        f"scale) ≥ {t.control_margin:g}; *inconclusive* when recovery < {t.recovery:g} but the "
        "budget raised the control's "
        f"token accuracy by less than {t.min_control_gain:g}; catastrophic when retain accuracy fell by more than "
        f"{percent(t.retain_drop)} or retain NLL rose by more than {t.retain_nll_rise:.2f} nats."
    )


def _inconclusive_note(results: Sequence[CellResult], t: RegimeThresholds) -> str:
    """How many forgotten cells the budget could not judge, and where they are left out."""
    return (
        f"*Inconclusive*: {len(inconclusive(results))} of the {len(forgotten(results))} forgotten "
        "cells (recovery below "
        f"{t.recovery:g} while the relearning budget raised the control's token accuracy by less "
        f"than {t.min_control_gain:g}: "
        "an attack that teaches novel items nothing could not have shown recovery either). The "
        "table counts them; every "
        "reversible share, the recovery figures and the predictor leave them out."
    )


def _regime_counts(results: Sequence[CellResult], settings: GridSettings) -> list[str]:
    labels = sorted({r.regime["label"] for r in results})
    lines = [
        "| lr | protocol | " + " | ".join(labels) + " | mean recovery (classified) |",
        "|---|---|" + "---|" * (len(labels) + 1),
    ]
    for protocol in settings.protocols:
        for lr in settings.lrs:
            cells = [r for r in results if r.cell.lr == lr and r.cell.protocol == protocol]
            counts = " | ".join(
                str(sum(r.regime["label"] == label for r in cells)) for label in labels
            )
            lines.append(
                f"| {lr:g} | {protocol} | {counts} | "
                f"{number(finite_mean([r.recovery for r in classified(cells)]), 2)} |"
            )
    return lines


def _figure_recovery(results: Sequence[CellResult], settings: GridSettings, path: Path) -> Path:
    columns = [(lr, protocol) for protocol in settings.protocols for lr in settings.lrs]
    figure, axes = new_figure(4.2 * len(settings.domains), 3.6, 1, len(settings.domains))
    for ax, domain in zip(axes, settings.domains, strict=True):
        grid = np.full((len(settings.methods), len(columns)), np.nan)
        for r in results:
            if (
                r.cell.domain == domain
                and r.recovery is not None
                and r.regime["reversible"] is not None
            ):
                grid[
                    settings.methods.index(r.cell.method),
                    columns.index((r.cell.lr, r.cell.protocol)),
                ] = r.recovery
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(
            range(len(columns)),
            [f"{lr:g} {p}" for lr, p in columns],
            fontsize="x-small",
            rotation=45,
            ha="right",
        )
        ax.set_yticks(range(len(settings.methods)), settings.methods, fontsize="small")
        ax.set_title(
            f"{domain}: relearning recovery (blank: not forgotten or inconclusive)",
            fontsize="small",
        )
    figure.colorbar(image, ax=axes, shrink=0.8, label="recovery")
    return save_figure(figure, path)


def _figure_cka(results: Sequence[CellResult], settings: GridSettings, path: Path) -> Path:
    figure, (ax,) = new_figure(6.4, 4.2)
    colours = ["#2ca02c", "#ff7f0e", "#d62728", "#9467bd", "#8c564b"]
    for i, lr in enumerate(settings.lrs):
        for protocol, marker in (("single", "o"), ("continual", "^")):
            cells = [
                r for r in classified(results) if r.cell.lr == lr and r.cell.protocol == protocol
            ]
            ax.scatter(
                [_cka_lower(r) for r in cells],
                [recovery(r) for r in cells],
                color=colours[i % len(colours)],
                marker=marker,
                s=18,
                label=f"lr {lr:g}, {protocol}",
            )
    ax.axhline(REVERSIBLE_RECOVERY, color="grey", linewidth=0.5)
    ax.set_xlabel("mean debiased CKA, lower half of the blocks (forget items)")
    ax.set_ylabel("relearning recovery")
    ax.set_title("Representation change vs recovery (classified cells)")
    ax.legend(fontsize="x-small")
    return save_figure(figure, path)


def _figure_prediction(fit: PredictorFit, path: Path) -> Path:
    figure, axes = new_figure(9.6, 4.0, 1, 2)
    measured = [recovery(r) for r in fit.cells]
    for ax, held in zip(axes, fit.held_out, strict=True):
        ax.scatter(held.predictions, measured, s=14, color="#1f77b4")
        low = min(*measured, float(np.min(held.predictions)))
        high = max(*measured, float(np.max(held.predictions)))
        ax.plot([low, high], [low, high], color="grey", linewidth=0.5)
        ax.set_xlabel("predicted recovery (held out)")
        ax.set_ylabel("measured recovery")
        ax.set_title(f"{held.scheme}: Spearman {number(held.spearman, 2)}", fontsize="small")
    return save_figure(figure, path)


def _figure_depth(results: Sequence[CellResult], path: Path) -> Path:
    done = forgotten(results)
    figure, (ax,) = new_figure(6.4, 3.6)
    n_layers = _n_layers(done[0])
    depths = [d if (d := _depth(r)) is not None else n_layers + 1 for r in done]
    # matplotlib's stubs type `bins` as a sequence or int; the array works (numpy's histogram).
    ax.hist(depths, bins=np.arange(-0.5, n_layers + 2.5), color="#1f77b4")  # type: ignore[arg-type]
    ax.axvline(shallow_limit(n_layers) + 0.5, color="#d62728", linewidth=1, label="shallow limit")
    ax.set_xlabel(
        f"forgetting depth k (output head + last k of {n_layers} blocks reverted; 0 = head alone, "
        f"{n_layers + 1} = none suffices)",
        fontsize="small",
    )
    ax.set_ylabel("forgotten cells")
    ax.legend(fontsize="small")
    return save_figure(figure, path)


MAX_GROUPS_LISTED = 6
"""Groups whose Spearman the predictor table lists one by one; more are summarised."""


def _per_group(per_group: dict[str, float]) -> str:
    """Each group's held-out Spearman, or for many groups their median and range (groups too
    small or too uniform to rank are left out of the summary)."""
    if len(per_group) <= MAX_GROUPS_LISTED:
        return ", ".join(f"{group} {number(value, 2)}" for group, value in per_group.items())
    ranked = [v for v in per_group.values() if math.isfinite(v)]
    if not ranked:
        return f"{len(per_group)} groups, none rankable"
    return (
        f"median {number(float(np.median(ranked)), 2)} over {len(ranked)} of {len(per_group)} groups "
        f"(range {number(min(ranked), 2)} to {number(max(ranked), 2)})"
    )


def _predictor_section(fit: PredictorFit | None, link: str | None) -> list[str]:
    lines = ["## Predicting reversibility without the attack", ""]
    if fit is None:
        return [
            *lines,
            "Not fitted: held-out validation needs forgotten cells from at least two domains.",
            "",
        ]
    lr_rank = spearman([r.cell.lr for r in fit.cells], [recovery(r) for r in fit.cells])
    lines += [
        f"A ridge regression (features standardised, α = {fit.predictor.alpha:g}) of the measured recovery on features "
        "that cost one forward/backward pass per model, the weight deltas and about six reversions of the output head "
        "plus the last k blocks — no relearning:",
        "",
        "| input | Spearman with recovery (raw, no fit) | coefficient (per s.d.) |",
        "|---|---|---|",
        *(
            f"| `{name}` | {number(fit.baselines[name], 2)} | {number(coef, 3)} |"
            for name, coef in zip(PREDICTOR_INPUTS, fit.predictor.coef, strict=True)
        ),
        "",
        "For comparison, the unlearning learning rate alone (a setting, not a measurement) has "
        f"Spearman {number(lr_rank, 2)} "
        "with recovery on the same cells.",
        "",
        f"Fitted on the {len(fit.cells)} classified cells (forgotten, not inconclusive: an "
        "inconclusive cell's low recovery "
        "measures a weak attack, not lost knowledge); validated on held-out cells only (each group's cells are "
        "predicted by a fit on the other groups). *Leave one setting out* holds out every objective's cell of one "
        "domain × learning rate × protocol together: objectives that step alike under AdamW leave near-identical cells "
        "in many settings (see above), and holding out one objective at a time would test on cells "
        "whose twins the fit saw. "
        "The base rate is what always answering the more common call scores:",
        "",
        "| held out | Spearman (held-out predictions vs measured) | per group | mean abs. error | "
        "reversible call right | base rate |",
        "|---|---|---|---|---|---|",
    ]
    for held in fit.held_out:
        lines.append(
            f"| {held.scheme} | **{number(held.spearman, 2)}** | {_per_group(held.per_group)} | "
            f"{number(held.mean_abs_error, 2)} | {percent(held.reversible_calls_correct)} | {percent(held.base_rate)} |"
        )
    unbeaten = [
        held.scheme for held in fit.held_out if not held.reversible_calls_correct > held.base_rate
    ]
    if unbeaten:
        lines += [
            "",
            f"Its reversible/irreversible call does not beat the base rate ({', '.join(unbeaten)}): on this grid "
            "always answering the more common call scores as well, so read its held-out ranking (the Spearman "
            "column), not its call.",
        ]
    return [
        *lines,
        "",
        f"![Held-out predictions]({link})",
        "",
        "The fitted predictor ships with the package and is what "
        "`unlearn-lens compare ORIGINAL UNLEARNED --data FORGET.jsonl --predict-reversibility` uses; it prints these "
        "validation numbers beside its prediction. It was fitted on this model, these item sets and this relearning "
        "budget: on another model, read its ranking rather than its absolute value.",
        "",
    ]


def write_page(
    results: Sequence[CellResult],
    fit: PredictorFit | None,
    settings: GridSettings,
    *,
    page: str | Path,
    figure_dir: str | Path,
    command: str,
    runtime_seconds: float,
    kl: KLMeasurement | None = None,
) -> list[Path]:
    """Write the markdown page and its figures (without a predictor section when `fit` is None;
    `kl`, the measurement of `benchmarks/kl_gradients.py`, quoted where objectives coincide);
    returns the paths written."""
    page, figure_dir = Path(page), Path(figure_dir)
    figures = {
        "recovery": _figure_recovery(results, settings, figure_dir / "recovery.png"),
        "cka": _figure_cka(results, settings, figure_dir / "cka_vs_recovery.png"),
        "depth": _figure_depth(results, figure_dir / "depth.png"),
    }
    if fit is not None:
        figures["prediction"] = _figure_prediction(fit, figure_dir / "prediction.png")
    link = {
        name: Path(os.path.relpath(path, page.parent)).as_posix() for name, path in figures.items()
    }
    kl_link = Path(os.path.relpath(figure_dir / KL_FILE, page.parent)).as_posix()
    n_layers = _n_layers(results[0])
    lines = [
        "# Validation: does the tool reproduce the reversibility findings on a real model?",
        "",
        "Regenerate this page (finished cells are cached in `runs/validation`, so an interrupted run resumes):",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Where it explains why objectives coincide, the page quotes `{kl_link}`, written by "
        "`.venv/bin/python benchmarks/kl_gradients.py` (ten minutes; run it before the grid).",
        "",
        f"**{len(results)} cells**, total compute {runtime_seconds / 60:.1f} min on this machine "
        f"({number(finite_mean([r.seconds['total'] for r in results]), 1)} s per cell on average); "
        f"seed {settings.seed} everywhere.",
        "",
        "## Set-up",
        "",
        f"- Model: the built-in SmolLM2-135M-Instruct ({n_layers} blocks), raw weights, CPU, float32.",
        f"- Data: the first {settings.n_items} items of each built-in split (forget, retain, control) of the domains "
        f"{', '.join(settings.domains)}; every forget and retain item is known to the model, no control item is.",
        f"- Objectives: {', '.join(settings.methods)}{_objectives_left_out(settings)}; learning rates "
        f"{', '.join(f'{lr:g}' for lr in settings.lrs)} (AdamW, gradient clipping 1.0, batch {settings.batch_size}).",
        f"- Protocols: *single* = one request of {settings.steps} steps; *continual* = "
        f"{settings.continual_requests} requests "
        f"of {settings.n_items // settings.continual_requests} items, {settings.steps} steps each.",
        _relearning_budget(results, settings),
        "- Accuracies are token accuracies on the answer tokens, original → unlearned → relearned. Recovery = "
        "(relearned − unlearned) / (original − unlearned) on the forget set. Depth = smallest k (0 … "
        f"{n_layers}) whose reversion of the output head (final norm and unembedding) and the last k blocks restores "
        f"{percent(RESTORE_FRACTION)} of the forget NLL (found by bisection; k = 0: the head "
        "alone). Head restore = share "
        "of the forget NLL that reverting the output head alone restores. CKA lower = mean debiased CKA, original vs "
        f"unlearned, over blocks 0–{n_layers // 2 - 1}, forget items, masked-mean pooling.",
        _regime_rules(RegimeThresholds()),
        "",
        "## The study's claims on this model",
        "",
        "| claim | on SmolLM2-135M | evidence |",
        "|---|---|---|",
    ]
    lines += [
        f"| {c.text} | **{c.verdict}** | {c.evidence} |" for c in check_claims(results, settings)
    ]
    lines += ["", "Also measured:", ""]
    lines += [f"- {line}" for line in observations(results, settings, kl)]
    lines += [
        "",
        "## Regimes by setting",
        "",
        *_regime_counts(results, settings),
        "",
        _inconclusive_note(results, RegimeThresholds()),
        "",
        f"![Recovery by objective and setting]({link['recovery']})",
        "",
        f"![Lower-half CKA against recovery]({link['cka']})",
        "",
        f"![Forgetting depth]({link['depth']})",
        "",
    ]
    lines += _predictor_section(fit, link.get("prediction"))
    lines += [
        "## Every cell",
        "",
    ]
    for domain in settings.domains:
        lines += [
            f"### {domain}",
            "",
            *_cell_table([r for r in results if r.cell.domain == domain]),
            "",
        ]
    write_bytes_atomic(page, "\n".join(lines).encode())
    return [page, *figures.values()]


def _relearn_gain(cell: CellResult) -> float:
    """Forget accuracy the relearning attack brought back: relearned minus unlearned."""
    return cell.relearned["forget"].accuracy - cell.unlearned["forget"].accuracy
