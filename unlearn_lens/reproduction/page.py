"""The reproduction page: per-cell tables, the judged claims, the predictor's held-out numbers and
the figures, laid out as Markdown from cached cells, so it is cheap to regenerate."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unlearn_lens.atomic import write_bytes_atomic
from unlearn_lens.localize.reversion import RESTORE_FRACTION
from unlearn_lens.localize.summary import spearman
from unlearn_lens.numbers import finite_mean, number, percent
from unlearn_lens.predict.features import PREDICTOR_INPUTS
from unlearn_lens.regimes import RegimeThresholds
from unlearn_lens.reproduction.claims import (
    check_claims,
    depth_of,
    head_restore_of,
    lower_cka,
    n_layers_of,
    observations,
)
from unlearn_lens.reproduction.figures import (
    figure_cka,
    figure_depth,
    figure_prediction,
    figure_recovery,
)
from unlearn_lens.reproduction.fitting import (
    PredictorFit,
    classified,
    forgotten,
    inconclusive,
    recovery,
)
from unlearn_lens.reproduction.grid import STUDY_OBJECTIVES, CellResult, GridSettings
from unlearn_lens.reproduction.kl_terms import (
    KL_FILE,
    KLMeasurement,
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
        depth = depth_of(r)
        lines.append(
            f"| {r.cell.method} | {r.cell.lr:g} | {r.cell.protocol} | {_trio(r, 'forget')} | {_trio(r, 'retain')} | "
            f"{number(r.recovery, 2)} | {number(r.control_gain, 2)} | {number(r.peak_excess, 2)} | "
            f"{depth if depth is not None else '>' + str(n_layers_of(r))} | "
            f"{number(head_restore_of(r), 2)} | {number(lower_cka(r), 3)} | {r.regime.label} |"
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
    labels = sorted({r.regime.label for r in results})
    lines = [
        "| lr | protocol | " + " | ".join(labels) + " | mean recovery (classified) |",
        "|---|---|" + "---|" * (len(labels) + 1),
    ]
    for protocol in settings.protocols:
        for lr in settings.lrs:
            cells = [r for r in results if r.cell.lr == lr and r.cell.protocol == protocol]
            counts = " | ".join(
                str(sum(r.regime.label == label for r in cells)) for label in labels
            )
            lines.append(
                f"| {lr:g} | {protocol} | {counts} | "
                f"{number(finite_mean([r.recovery for r in classified(cells)]), 2)} |"
            )
    return lines


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
        "recovery": figure_recovery(results, settings, figure_dir / "recovery.png"),
        "cka": figure_cka(results, settings, figure_dir / "cka_vs_recovery.png"),
        "depth": figure_depth(results, figure_dir / "depth.png"),
    }
    if fit is not None:
        figures["prediction"] = figure_prediction(fit, figure_dir / "prediction.png")
    link = {
        name: Path(os.path.relpath(path, page.parent)).as_posix() for name, path in figures.items()
    }
    kl_link = Path(os.path.relpath(figure_dir / KL_FILE, page.parent)).as_posix()
    n_layers = n_layers_of(results[0])
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
        f"- Data: each cell is an audit of one method (a cell of the grid file `unlearn_lens/reproduction/study.toml`) "
        f"on at most {settings.n_items} items of each built-in split (forget, retain, control) of the domains "
        f"{', '.join(settings.domains)}, as the audit keeps them: forget and retain items the model answers, "
        "control items it does not.",
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
