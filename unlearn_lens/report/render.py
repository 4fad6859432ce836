"""Render a run: terminal report, PNG figures and the self-contained HTML report, from results only."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from unlearn_lens.atomic import write_bytes_atomic
from unlearn_lens.report.audit_figures import headline_figures, write_method_figures
from unlearn_lens.report.findings import finding
from unlearn_lens.report.html import Card, Section, Table, render_html
from unlearn_lens.report.terminal import (
    BATTERY_HEADER,
    attribution_lines,
    battery_rows,
    budget_line,
    fmt,
    given_line,
    method_row,
    print_report,
    update_line,
)
from unlearn_lens.schema import dump
from unlearn_lens.study.intervals import STABLE
from unlearn_lens.study.results import AuditResults

REPORT_FILE = "report.html"
FIGURE_DIR = "figures"
SUMMARY_HEADER = (
    "method",
    "forget acc o→u→r",
    "retain acc o→u→r",
    "recovery",
    "50 % recovery",
    "gain: forget vs control",
    "forgetting depth",
    "regime",
)


def _significant(value: float) -> str:
    """Three significant digits: per-layer columns range from 1e-4 (relative deltas) to 1."""
    return "—" if value != value else f"{value:.3g}"


def findings(results: AuditResults, headline: dict[str, list[tuple[Path, str]]]) -> list[Section]:
    """The first screen: a card per method (forgotten? comes back? where? catastrophic?), then per
    method its warnings, where the forgetting lives beside the recovery curves, and the full
    verdicts with their thresholds and budgets one click away."""
    cards = []
    for result in results.methods.values():
        found = finding(results, result)
        cards.append(
            Card(
                found.method,
                found.regime,
                [(a.question, a.answer, a.detail) for a in found.answers],
            )
        )
    sections = [Section("Findings at a glance", cards=cards)]
    for method, result in results.methods.items():
        section = Section(
            f"Findings: {method}" + (" (given checkpoint)" if result.given is not None else "")
        )
        lines, warnings = attribution_lines(result)
        section.verdicts.extend(f"Warning: {line}" for line in warnings)
        given = given_line(result)
        section.evidence.extend(
            [
                *([given] if given else []),
                *([f"Regime: {result.regime.describe()}"] if result.regime is not None else []),
                *(
                    [f"Localisation: {result.localization.verdict}"]
                    if result.localization is not None
                    else []
                ),
                *lines,
                *(line for line in (budget_line(result), update_line(result)) if line is not None),
            ]
        )
        section.figures.extend(headline.get(method, []))
        sections.append(section)
    return sections


def html_sections(
    results: AuditResults,
    figures: dict[str, list[tuple[Path, str]]],
    headline: dict[str, list[tuple[Path, str]]] | None = None,
) -> list[Section]:
    """The report's sections: the findings first, then the summary, then per method its tables
    (collapsed) and figures, then settings."""
    data = results.data
    summary = Section(
        "Summary",
        paragraphs=[
            f"Model {results.config.model} ({results.config.backend} backend); data: {data.source if data else '—'}; "
            f"status: {results.status}.",
            "Accuracy is next-token accuracy on answer tokens: original → unlearned → relearned. Recovery is the "
            "fraction of the forget accuracy lost to unlearning that relearning brought back; the gain column sets "
            "the forget set's gain against what the same relearning budget taught the novel control set.",
        ],
        tables=[Table(SUMMARY_HEADER, [method_row(results, r) for r in results.methods.values()])],
    )
    if data is not None:
        summary.tables.append(
            Table(
                ("split", "given", "kept"),
                [
                    (split, str(data.given.get(split, "—")), str(len(items)))
                    for split, items in data.items.items()
                ],
                caption="Items (forget and retain: known to the original model; control: unknown to it)",
            )
        )
    sections = [*findings(results, headline or {}), summary]
    for method, result in results.methods.items():
        section = Section(f"Method: {method}")
        if result.battery is not None and result.battery.verdict is not None:
            section.tables.append(
                Table(
                    BATTERY_HEADER,
                    battery_rows(result),
                    caption="Recovery attacks, each against its own null: "
                    + result.battery.verdict.reason
                    + " (numbers with their 95 % paired-bootstrap interval over items and seeds; "
                    "stability: the share of resamples read the same way, borderline below "
                    f"{STABLE})",
                )
            )
        if result.localization is not None:
            columns = result.localization.columns
            names = list(columns)
            rows = [
                [str(layer)] + [_significant(columns[name][layer]) for name in names]
                for layer in range(result.localization.n_layers)
            ]
            section.tables.append(
                Table(["block", *names], rows, caption="Per-layer evidence", collapsed=True)
            )
            section.tables.append(
                Table(
                    ("column A", "column B", "Spearman ρ", "layers"),
                    [
                        (c.a, c.b, fmt(c.rho), str(c.n_layers))
                        for c in result.localization.correlations
                    ],
                    caption="Rank correlations between the per-layer columns",
                    collapsed=True,
                )
            )
        if result.attribution is not None:
            check = result.attribution.check
            checks = [
                (f"block {layer}", fmt(a), fmt(e))
                for layer, a, e in zip(
                    check.blocks, check.block_attributed, check.block_exact, strict=True
                )
            ]
            checks += [
                (f"L{layer}H{head}", fmt(a), fmt(e))
                for (layer, head), a, e in zip(
                    check.heads, check.head_attributed, check.head_exact, strict=True
                )
            ]
            section.tables.append(
                Table(
                    ("patch", "estimated", "exact reversion"),
                    checks,
                    collapsed=True,
                    caption="Verification: share of the forget NLL effect, estimated (blocks: integrated-gradient "
                    f"share; heads: {check.head_estimate}) vs exact reversion of the patch alone",
                )
            )
        if result.logit_lens is not None:
            section.paragraphs.append(
                "Logit lens: first layer where the answer's median rank departs from the original's: "
                + ", ".join(
                    f"{label} {value if value is not None else 'never'}"
                    for label, value in result.logit_lens.first_divergence.items()
                )
            )
        section.figures.extend(figures.get(method, []))
        sections.append(section)
    sections.append(
        Section(
            "Configuration and environment",
            preformatted=json.dumps(
                {"config": dump(results.config), "environment": results.environment}, indent=2
            ),
        )
    )
    return sections


def render_run(
    results: AuditResults,
    run_dir: str | Path | None,
    console: Console,
    layer_methods: Sequence[str] | None = None,
    verbose: bool = False,
) -> Path | None:
    """Print the terminal report (the evidence too with `verbose`); with a run directory, also
    write figures and report.html there."""
    print_report(console, results, layer_methods, verbose=verbose)
    if run_dir is None:
        return None
    run_dir = Path(run_dir)
    figures = {
        method: write_method_figures(result, run_dir / FIGURE_DIR)
        for method, result in results.methods.items()
    }
    headline = {
        method: headline_figures(result, run_dir / FIGURE_DIR)
        for method, result in results.methods.items()
    }
    page = render_html(
        f"unlearn-lens audit: {results.config.model}", html_sections(results, figures, headline)
    )
    path = write_bytes_atomic(run_dir / REPORT_FILE, page.encode())
    console.print(
        f"results: {run_dir / 'results.json'}  figures: {run_dir / FIGURE_DIR}/  report: {path}"
    )
    return path
