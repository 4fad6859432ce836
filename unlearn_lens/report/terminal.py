"""Rich terminal report of an audit: one summary row per method, then per-layer tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.table import Table

from unlearn_lens.localize.reversion import Metric
from unlearn_lens.localize.verification import top_indices
from unlearn_lens.metrics.bootstrap import BootstrapInterval
from unlearn_lens.numbers import share
from unlearn_lens.report.findings import finding
from unlearn_lens.study.results import AuditResults, MethodResults

EFFECT_COLUMNS = (
    ("revert ℓ: acc", "reversion_accuracy"),
    ("revert ℓ: nll", "reversion_nll"),
    ("attributed ℓ: nll", "attribution_nll"),
)
"""Per-layer effect columns: exact reversions (exact localisation) or attributions (the default)."""
TOP_HEADS_SHOWN = 5
"""Heads named in the attribution line: the few a reader can take in at a glance."""
REPORT_WIDTH = 180
"""Columns used when the report goes to a file or pipe (rich would assume 80 and wrap the layer table)."""


def report_console() -> Console:
    """A console for the report: the terminal's width, or `REPORT_WIDTH` when not a terminal."""
    console = Console()
    return console if console.is_terminal else Console(width=REPORT_WIDTH)


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table cell: fixed digits, '—' for missing or undefined values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _arrow(before: float | None, middle: float | None, after: float | None) -> str:
    return f"{fmt(before)} → {fmt(middle)} → {fmt(after)}"


def method_row(results: AuditResults, result: MethodResults) -> list[str]:
    """Summary cells of one method (stages not run yet show '—')."""
    forget_o = results.original["forget"].accuracy
    retain_o = results.original["retain"].accuracy
    forget_u = forget_r = retain_u = retain_r = None
    if "unlearned/forget" in result.comparisons:
        forget_u = result.comparisons["unlearned/forget"].updated_metrics.accuracy
        retain_u = result.comparisons["unlearned/retain"].updated_metrics.accuracy
        forget_r = result.comparisons["relearned/forget"].updated_metrics.accuracy
        retain_r = result.comparisons["relearned/retain"].updated_metrics.accuracy
    recovery = control = half = "—"
    if result.relearn is not None:
        rec = result.relearn.recovery["accuracy"]
        recovery = fmt(rec.recovery)
        control = f"{fmt(rec.forget_gain)} vs {fmt(rec.control_gain)}"
        step = result.relearn.steps_to_recover()
        half = f"step {step}" if step is not None else "not within budget"
    depth = "—"
    if result.localization is not None:
        found, n_layers = result.localization.forgetting_depth, result.localization.n_layers
        depth = f"{found}/{n_layers}" if found is not None else f">{n_layers}"
    regime = result.regime.label if result.regime is not None else "—"
    name = f"{result.method} (given)" if result.given is not None else result.method
    return [
        name,
        _arrow(forget_o, forget_u, forget_r),
        _arrow(retain_o, retain_u, retain_r),
        recovery,
        half,
        control,
        depth,
        regime,
    ]


def summary_table(results: AuditResults) -> Table:
    """One row per method: accuracies through the run, recovery against the control, depth, regime."""
    table = Table(
        title="Audit summary (token accuracy on answer tokens: original → unlearned → relearned)",
        title_justify="left",
    )
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("method", "left"),
        ("forget", "right"),
        ("retain", "right"),
        ("recovery", "right"),
        ("50 % recovery", "right"),
        ("gain: forget vs control", "right"),
        ("forgetting depth", "right"),
        ("regime", "left"),
    )
    for header, justify in columns:
        table.add_column(header, justify=justify)
    for result in results.methods.values():
        table.add_row(*method_row(results, result))
    return table


BATTERY_HEADER = ("attack", "budget", "recovery", "null", "excess", "reading", "stability")
"""Columns of the battery table: each recovery attack against its own null, each number with its
95 % interval where the attack's per-item outcomes were stored, and the reading's stability."""


def with_interval(value: float | None, interval: BootstrapInterval | None) -> str:
    """A number and, when known, its interval: `0.62 [0.41, 0.80]`."""
    if interval is None or value is None:
        return fmt(value)
    return f"{fmt(value)} [{fmt(interval.low)}, {fmt(interval.high)}]"


def battery_rows(result: MethodResults) -> list[tuple[str, ...]]:
    """One row per attack of the method's battery (none when no battery ran); a reading whose
    stability is below `STABLE` reads "borderline", naming the threshold it straddles."""
    if result.battery is None:
        return []
    rows: list[tuple[str, ...]] = []
    for r in result.battery.readings:
        i = r.intervals
        reading = r.outcome
        stability = "—"
        if i is not None:
            stability = f"{i.stability:.2f}"
            if i.n_seeds > 1:
                stability += f" ({i.n_seeds} seeds)"
            if i.borderline is not None:
                reading = f"{r.outcome}, borderline: {i.borderline}"
        rows.append(
            (
                r.attack,
                r.budget,
                with_interval(r.recovery, i.recovery if i else None),
                with_interval(r.null, i.null if i else None),
                with_interval(r.excess, i.excess if i else None),
                reading,
                stability,
            )
        )
    return rows


def battery_table(result: MethodResults) -> Table | None:
    """The battery as a rich table, titled with its verdict; None when no battery ran."""
    rows = battery_rows(result)
    if not rows or result.battery is None:
        return None
    verdict = result.battery.verdict
    table = Table(
        title=f"{result.method}: recovery attacks, each against its own null",
        caption=escape(verdict.reason) if verdict is not None else None,
    )
    for name in BATTERY_HEADER:
        table.add_column(
            name, justify="left" if name in ("attack", "budget", "reading") else "right"
        )
    intervals = [r.intervals for r in result.battery.readings if r.intervals is not None]
    if intervals:
        table.caption = (table.caption or "") + escape(
            f" [95 % paired-bootstrap intervals over items (and seeds), "
            f"{intervals[0].recovery.n_resamples} resamples; stability: the share of resamples "
            "read the same way]"
        )
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def budget_line(result: MethodResults) -> str | None:
    """The relearning budget against the unlearning budget: steps, learning rate, epochs, tokens
    (for a given checkpoint the unlearning budget is its run.json's, or unknown without one)."""
    if result.relearn is None:
        return None
    source, control = result.relearn.work["source"], result.relearn.work["control"]
    return (
        f"budgets — unlearning: {_unlearning_budget(result)}; relearning attack: {source.steps} "
        f"steps at lr {source.lr:g}, "
        f"{source.epochs:.2f} epochs of {source.n_items} items ({source.tokens_seen} tokens); "
        f"control: {control.steps} steps, "
        f"{control.epochs:.2f} epochs of {control.n_items} items ({control.tokens_seen} tokens)"
    )


def _unlearning_budget(result: MethodResults) -> str:
    """Steps, items per step, learning rate and tokens of the unlearning, as far as known."""
    unlearning = result.unlearn if result.given is None else result.given.unlearning
    if unlearning is None:
        return "unknown (a given checkpoint with no run.json beside it)"
    run = unlearning.run
    origin = f", from {result.given.run_file}" if result.given is not None else ""
    return (
        f"{run.steps_run} steps × {run.config.batch_size} items at lr {run.config.lr:g} "
        f"({run.tokens_seen} answer tokens{origin})"
    )


def given_line(result: MethodResults) -> str | None:
    """Where a given checkpoint is and how it was made (None for a method unlearned in the audit)."""
    return None if result.given is None else result.given.describe()


def update_line(result: MethodResults) -> str | None:
    """How relearning moved against unlearning, and how the unlearning update grew step by step."""
    parts = []
    directions = result.directions
    if directions is not None:
        finite = [(c, layer) for layer, c in enumerate(directions.cosine) if not math.isnan(c)]
        most = min(finite) if finite else None
        parts.append(
            f"relearning vs unlearning: overall cosine {fmt(directions.overall_cosine)}, undoes "
            f"{fmt(directions.overall_undone)} of the update"
            + (f"; most reversed at block {most[1]} (cosine {fmt(most[0])})" if most else "")
        )
    records = [record for record in result.tracking if record.phase == "unlearn"]
    if records:
        norms = [
            math.sqrt(
                sum(n * n for n in record.layers) + sum(n * n for n in record.non_layer.values())
            )
            for record in records
        ]
        parts.append("‖ΔW‖ by unlearning step: " + " ".join(f"{n:.3g}" for n in norms))
    return "; ".join(parts) or None


def layer_table(result: MethodResults) -> Table | None:
    """Per block: weight delta, reversion effect, representational change, Fisher change, logit lens."""
    if result.localization is None:
        return None
    columns = result.localization.columns
    forget = result.comparisons["unlearned/forget"]
    lens = result.logit_lens
    table = Table(
        title=f"{result.method}: per layer (block ℓ; CKA and logit lens read after the block)",
        title_justify="left",
    )
    effects = [(header, name) for header, name in EFFECT_COLUMNS if name in columns]
    headers = [
        "layer",
        "rel. Δ",
        "Δ share",
        *(header for header, _ in effects),
        "CKA forget (deb./bias.)",
        "CKA retain",
        "PC1 sim",
        "log10 Fisher ratio",
        "answer rank o/u/r",
        "cos(Δu, Δr)",
    ]
    for header in headers:
        table.add_column(header, justify="right")
    retain = result.comparisons["unlearned/retain"]
    ranks = (
        {label: readout.median_rank() for label, readout in lens.readouts.items()} if lens else {}
    )
    deltas = result.deltas
    assert deltas is not None, "tabulated once localised"
    cosine = result.directions.cosine if result.directions is not None else None
    tied = " (tied)" if deltas.tied_embeddings else ""
    blank = [""] * 6
    table.add_row(
        f"embed (input){tied}",
        "",
        fmt(deltas.input_embedding_share, 3),
        *(fmt(value) for value in _place_effects(result, "input_embedding", effects)),
        *blank,
    )
    for layer in range(result.localization.n_layers):
        stream = layer + 1
        cka = forget.layers[stream]
        rank = "/".join(
            f"{ranks[label][stream]:.0f}"
            for label in ("original", "unlearned", "relearned")
            if label in ranks
        )
        table.add_row(
            str(layer),
            _column(columns, "relative_delta", layer, 5),
            _column(columns, "delta_share", layer, 3),
            *(_column(columns, name, layer) for _, name in effects),
            f"{fmt(cka.cka_debiased, 3)} / {fmt(cka.cka_biased, 3)}",
            fmt(retain.layers[stream].cka_debiased, 3),
            fmt(cka.pc1_similarity, 3),
            _column(columns, "fisher_change", layer),
            rank or "—",
            fmt(cosine[layer]) if cosine is not None else "—",
        )
    table.add_row(
        f"head{tied}",
        "",
        fmt(deltas.head_share, 3),
        *(fmt(value) for value in _place_effects(result, "head", effects)),
        *blank,
    )
    return table


def _place_effects(
    result: MethodResults, place: str, effects: list[tuple[str, str]]
) -> list[float | None]:
    """The effect columns for a place outside the blocks (`"head"` or `"input_embedding"`): exact
    reversion effects from the sweep, or the attribution's share of the forget effect."""
    values: list[float | None] = []
    for _, name in effects:
        if name == "attribution_nll" and result.attribution is not None:
            values.append(result.attribution.attribution.forget.place(place, fraction=True))
        elif name.startswith("reversion_") and result.reversion is not None:
            metric: Metric = "nll" if name == "reversion_nll" else "accuracy"
            values.append(result.reversion.place(place).effect(metric))
        else:
            values.append(None)
    return values


def attribution_lines(result: MethodResults) -> tuple[list[str], list[str]]:
    """The attribution's completeness, its agreement with exact reversion and the top heads; and
    its warnings (low agreement, no convergence). Both empty without an attribution."""
    localized = result.attribution
    if localized is None:
        return [], []
    attribution, check = localized.attribution, localized.check
    table = attribution.single_patches.heads(fraction=True)
    top = top_indices(table, TOP_HEADS_SHOWN)
    heads = ", ".join(
        f"L{index // table.shape[1]}H{index % table.shape[1]} {share(table.flat[index])}"
        for index in top
    )
    lines = [
        f"weight attribution over {table.size} heads: completeness residual {fmt(100 * attribution.residual, 1)} % "
        f"({attribution.points} quadrature points); agreement with exact reversion: blocks ρ "
        f"{fmt(check.block_agreement)} "
        f"({len(check.blocks)} verified), heads ρ {fmt(check.head_agreement)} ({len(check.heads)} "
        f"verified, {check.head_estimate})",
        f"top heads (reverted alone, {check.head_estimate}; share of the forget effect): {heads}",
    ]
    return lines, localized.warnings()


def _column(columns: dict[str, list[float]], name: str, layer: int, digits: int = 2) -> str:
    values = columns.get(name)
    return fmt(values[layer], digits) if values is not None else "—"


def print_report(
    console: Console,
    results: AuditResults,
    layer_methods: Sequence[str] | None = None,
    verbose: bool = False,
) -> None:
    """Print the summary table and one findings line per method (with any warnings); with
    `verbose`, each verdict's evidence and thresholds, the attribution, budgets and the per-layer
    tables of `layer_methods` (default: the first method; given alone, they print without
    `verbose`)."""
    console.print(summary_table(results))
    for result in results.methods.values():
        console.print(escape(finding(results, result).line()), highlight=False)
        battery = battery_table(result)
        if battery is not None:
            console.print(battery)
        lines, warnings = attribution_lines(result)
        for line in warnings:
            console.print(f"  [yellow]warning:[/] {escape(line)}")
        if not verbose:
            continue
        if result.regime is not None:
            console.print(f"[bold]{result.method}[/] regime: {escape(result.regime.describe())}")
        if result.localization is not None:
            console.print(
                f"[bold]{result.method}[/] localisation: {escape(result.localization.verdict)}"
            )
        for line in lines:
            console.print(f"  {escape(line)}")
        for extra in (given_line(result), budget_line(result), update_line(result)):
            if extra is not None:
                console.print(f"[bold]{result.method}[/] {escape(extra)}", highlight=False)
    if verbose or layer_methods is not None:
        chosen = list(results.methods)[:1] if layer_methods is None else list(layer_methods)
        for method in chosen:
            if method in results.methods:
                table = layer_table(results.methods[method])
                if table is not None:
                    console.print(table)
    if not verbose:
        console.print(
            "evidence, thresholds and per-layer tables: add --verbose", style="dim", highlight=False
        )
    if results.status != "complete":
        console.print(f"[yellow]run status: {results.status}[/] (resume with --resume)")
