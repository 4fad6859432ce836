"""The calibration's table (terminal and HTML), on top of the audits' own report sections."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from unlearn_lens.atomic import write_bytes_atomic
from unlearn_lens.calibrate.run import CalibrationResults, CaseResult
from unlearn_lens.report.audit_figures import headline_figures, write_method_figures
from unlearn_lens.report.html import Section, Table, render_html
from unlearn_lens.report.render import FIGURE_DIR, REPORT_FILE, html_sections

HEADER = ("case", "built", "found", "checks", "result", "time")


def _checks(case: CaseResult) -> str:
    return "; ".join(
        f"{'✓' if check.passed else '✗'} {check.name}: {check.measured} (expected {check.expected})"
        for check in case.checks
    )


def _time(case: CaseResult) -> str:
    return (
        f"{sum(case.seconds.values()):.0f} s (build {case.seconds.get('build', 0):.0f}, "
        f"audit {case.seconds.get('audit', 0):.0f})"
    )


def rows(results: CalibrationResults) -> list[tuple[str, ...]]:
    """One row per case: what was built, what the audit found, each check, PASS/FAILED, time."""
    return [
        (
            case.case,
            case.built,
            case.found,
            _checks(case),
            "PASS" if case.passed else "FAILED",
            _time(case),
        )
        for case in results.cases.values()
    ]


def print_calibration(console: Console, results: CalibrationResults) -> None:
    """The calibration table, one row per case, failed cases in red."""
    table = RichTable(title=f"Calibration on {escape(results.config.model)}", show_lines=True)
    for name in HEADER:
        table.add_column(name, overflow="fold")
    for row in rows(results):
        style = "green" if row[4] == "PASS" else "bold red"
        table.add_row(*(escape(cell) for cell in row[:4]), f"[{style}]{row[4]}[/]", row[5])
    console.print(table)
    failed = [case.case for case in results.cases.values() if not case.passed]
    console.print(
        f"[bold red]{len(failed)} case(s) FAILED: {', '.join(failed)}[/]"
        if failed
        else "[green]every case read as built[/]"
    )


def render_calibration(
    results: CalibrationResults, out: str | Path | None, console: Console
) -> None:
    """Print the table; with `out`, write report.html and the audits' figures there: the table on
    top, then each audit's own sections."""
    print_calibration(console, results)
    if out is None:
        return
    sections = [
        Section(
            "Calibration",
            paragraphs=[
                "Each case is built so that its reading is known, then audited exactly as a checkpoint "
                "given with `audit --unlearned`; a case passes when every reading matches its construction."
            ],
            tables=[Table(HEADER, rows(results))],
        )
    ]
    for name, audited in results.audits.items():
        where = Path(out) / FIGURE_DIR / name
        figures = {m: write_method_figures(r, where) for m, r in audited.methods.items()}
        headline = {m: headline_figures(r, where) for m, r in audited.methods.items()}
        sections.append(Section(f"Audit of the {name.replace('_', ' ')} case(s)"))
        sections.extend(html_sections(audited, figures, headline))
    page = render_html(f"unlearn-lens calibrate: {results.config.model}", sections)
    path = write_bytes_atomic(Path(out) / REPORT_FILE, page.encode())
    console.print(f"results: {Path(out) / 'results.json'}  report: {path}")
