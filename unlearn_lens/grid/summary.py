"""The summary across a grid's cells: one row per cell and method, as a terminal table, CSV,
Parquet and one self-contained HTML page (recovery by axis, regime counts, forgetting depth).

Read from the cells' files only (`DIR/cells/<id>/results.json` and `cell.json`), so a summary
can be rewritten at any time, of a grid finished or not.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from unlearn_lens.atomic import write_bytes_atomic
from unlearn_lens.attacks.battery import FAILED, HIDDEN, MATCHED, POWERLESS, AttackReading
from unlearn_lens.grid.cells import CellStore
from unlearn_lens.grid.runner import GridRun
from unlearn_lens.grid.spec import GridSpec, value_label
from unlearn_lens.numbers import MISSING, duration, number
from unlearn_lens.report.figures import new_figure, save_figure
from unlearn_lens.report.html import Section, Table, render_html
from unlearn_lens.study.results import AuditResults

SUMMARY_CSV, SUMMARY_PARQUET, SUMMARY_HTML = "summary.csv", "summary.parquet", "summary.html"
FIGURE_DIR = "figures"
EVIDENCE = (
    "forget_original",
    "forget_unlearned",
    "forget_relearned",
    "recovery",
    "control_gain",
    "excess_recovery",
    "retain_drop",
    "retain_nll_rise",
)
"""The regime's numbers each row carries (see `RegimeVerdict.evidence`)."""
NOT_RUN = "not run"
BATTERY_PREFIX = "battery_"
"""Prefix of the battery's columns: `battery_<attack>_recovery`, `battery_<attack>_outcome`."""


def summary_rows(spec: GridSpec, run: GridRun, out: str | Path) -> list[dict[str, Any]]:
    """One row per cell and method (one per failed or unrun cell), in the grid's order; each
    attack of the battery any row ran gets a recovery and an outcome column in every row."""
    store = CellStore(out)
    axes = _axis_columns(spec)
    rows = []
    for cell in spec.cells:
        base = {"cell": cell.id} | {
            name: _axis_value(cell.axes[name], kind) for name, kind in axes.items()
        }
        record = run.records.get(cell.id)
        if record is None or record.status != "complete":
            status = NOT_RUN if record is None else record.status
            error = None if record is None else record.error
            rows.append(base | _empty_row(status, error, record.seconds if record else None))
            continue
        results = AuditResults.load(store.directory(cell.id))
        for method, result in results.methods.items():
            evidence = result.regime.evidence if result.regime else {}
            localization = result.localization
            rows.append(
                base
                | {
                    "method": method,
                    "status": record.status,
                    "regime": result.regime.label if result.regime else None,
                    "reversible": result.regime.reversible if result.regime else None,
                    "catastrophic": result.regime.catastrophic if result.regime else None,
                    "decided_by": result.regime.decided_by if result.regime else None,
                }
                | {name: _float(evidence.get(name)) for name in EVIDENCE}
                | {
                    "depth": localization.forgetting_depth if localization else None,
                    "n_layers": localization.n_layers if localization else None,
                    "seconds": record.seconds,
                    "error": None,
                }
                | _battery_columns(result.battery.readings if result.battery else [])
            )
    attacks = dict.fromkeys(key for row in rows for key in row if key.startswith(BATTERY_PREFIX))
    return [row | {key: row.get(key) for key in attacks} for row in rows]


def _battery_columns(readings: list[AttackReading]) -> dict[str, Any]:
    """`battery_<attack>_recovery` and `battery_<attack>_outcome` of each reading."""
    columns: dict[str, Any] = {}
    for reading in readings:
        columns[f"{BATTERY_PREFIX}{reading.attack}_recovery"] = _float(reading.recovery)
        columns[f"{BATTERY_PREFIX}{reading.attack}_outcome"] = reading.outcome
    return columns


def _axis_columns(spec: GridSpec) -> dict[str, type | None]:
    """Axis name → the scalar type all its values share (None: written as labels); `method`
    is left out, each row naming its method."""
    columns: dict[str, type | None] = {}
    for name, values in spec.axes.items():
        if name == "method":
            continue
        kinds = {type(value) for value in values}
        kind = kinds.pop() if len(kinds) == 1 else None
        columns[name] = kind if kind in (str, int, float, bool) else None
    return columns


def _axis_value(value: Any, kind: type | None) -> Any:
    return value if kind is not None else value_label(value)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _empty_row(status: str, error: str | None, seconds: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {"method": None, "status": status, "regime": None}
    row |= {"reversible": None, "catastrophic": None, "decided_by": None} | dict.fromkeys(EVIDENCE)
    return row | {"depth": None, "n_layers": None, "seconds": seconds, "error": error}


def write_summary(
    spec: GridSpec, run: GridRun, out: str | Path, console: Console | None = None
) -> dict[str, Path]:
    """Write summary.csv, summary.parquet and summary.html into `out` (and print the table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    rows = summary_rows(spec, run, out)
    if console is not None:
        print_summary(console, spec, rows)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    paths = {"csv": write_bytes_atomic(out / SUMMARY_CSV, text.getvalue().encode())}
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    paths["parquet"] = write_bytes_atomic(out / SUMMARY_PARQUET, buffer.getvalue().to_pybytes())
    figures = _figures(spec, rows, out / FIGURE_DIR)
    page = render_html(f"unlearn-lens grid: {spec.path}", _sections(spec, rows, figures))
    paths["html"] = write_bytes_atomic(out / SUMMARY_HTML, page.encode())
    return paths


def _table_cells(spec: GridSpec, row: dict[str, Any]) -> list[str]:
    axes = [str(value_label(row[name])) for name in _axis_columns(spec)]
    return [
        row["cell"],
        *axes,
        row["method"] or MISSING,
        row["regime"] or row["status"],
        row["decided_by"] or MISSING,
        number(row["recovery"], 2),
        number(row["control_gain"], 2),
        MISSING if row["depth"] is None else f"{row['depth']}/{row['n_layers']}",
        MISSING if row["seconds"] is None else duration(row["seconds"]),
    ]


def _table_header(spec: GridSpec) -> list[str]:
    return [
        "cell",
        *_axis_columns(spec),
        "method",
        "regime",
        "decided by",
        "recovery",
        "control gain",
        "depth",
        "time",
    ]


def print_summary(console: Console, spec: GridSpec, rows: list[dict[str, Any]]) -> None:
    """The summary as a rich table, then each failed cell's error."""
    table = RichTable(title=f"grid {spec.path}: {len(spec.cells)} cells", title_justify="left")
    for name in _table_header(spec):
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*_table_cells(spec, row), style="red" if row["status"] == "failed" else None)
    console.print(table)
    for row in rows:
        if row["status"] == "failed":
            console.print(
                f"[red]failed[/] {row['cell']}: {row['error']}", markup=True, highlight=False
            )


def _sections(
    spec: GridSpec, rows: list[dict[str, Any]], figures: list[tuple[Path, str]]
) -> list[Section]:
    statuses = Counter(row["status"] for row in rows if row["status"] != "complete")
    complete = sum(
        1
        for cell in spec.cells
        if any(r["cell"] == cell.id and r["status"] == "complete" for r in rows)
    )
    overview = (
        f"{len(spec.cells)} cells over {', '.join(spec.axes) or 'no axis'}: {complete} complete"
        + "".join(f", {count} {status}" for status, count in sorted(statuses.items()))
        + ". Each complete cell is an audit in cells/<id>/ (render one with `unlearn-lens report cells/<id>`)."
    )
    table = Table(
        _table_header(spec),
        [_table_cells(spec, row) for row in rows],
        "one row per cell and method",
    )
    errors = [f"{row['cell']}: {row['error']}" for row in rows if row["status"] == "failed"]
    return [
        Section("Overview", paragraphs=[overview], tables=[table]),
        Section("Figures", figures=figures, figure_columns=2),
        *([Section("Failed cells", preformatted="\n".join(errors))] if errors else []),
    ]


def _figures(spec: GridSpec, rows: list[dict[str, Any]], directory: Path) -> list[tuple[Path, str]]:
    done = [row for row in rows if row["status"] == "complete"]
    if not done:
        return []
    return [
        (
            _plot_recovery_by_axis(spec, done, directory / "grid-recovery.png"),
            "Recovery by axis: "
            "the share of the forgotten accuracy relearning brought back, one point per cell and method",
        ),
        (
            _plot_counts(
                [row["regime"] or MISSING for row in done], "regime", directory / "grid-regimes.png"
            ),
            "Regimes: how many cells and methods fell into each",
        ),
        (
            _plot_counts(
                [MISSING if row["depth"] is None else str(row["depth"]) for row in done],
                "forgetting depth (blocks reverted with the head)",
                directory / "grid-depth.png",
            ),
            "Forgetting depth: how many of the last blocks must be reverted to restore the forget set",
        ),
        *(
            [(battery, "The battery: how each attack read, over the cells and methods it ran on")]
            if (battery := _plot_battery(done, directory / "grid-battery.png")) is not None
            else []
        ),
    ]


def _plot_battery(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """A stacked bar per attack of the battery: how many rows read hidden, matched, failed or
    powerless (None when no row ran the battery)."""
    suffix = "_outcome"
    attacks = [k[len(BATTERY_PREFIX) : -len(suffix)] for k in rows[0] if k.endswith(suffix)]
    if not attacks:
        return None
    figure, (ax,) = new_figure(5.0, 3.4)
    bottom = [0] * len(attacks)
    for i, outcome in enumerate((HIDDEN, MATCHED, FAILED, POWERLESS)):
        counts = [
            sum(row[f"{BATTERY_PREFIX}{attack}{suffix}"] == outcome for row in rows)
            for attack in attacks
        ]
        ax.bar(range(len(attacks)), counts, bottom=bottom, color=f"C{i}", label=outcome)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.set_xticks(range(len(attacks)), attacks, fontsize="small")
    ax.set_ylabel("cells × methods")
    ax.legend(fontsize="x-small")
    return save_figure(figure, path)


def _plot_recovery_by_axis(spec: GridSpec, rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per axis (the method as its own): recovery at each value, coloured by method."""
    names = ["method"] + [name for name in _axis_columns(spec) if len(spec.axes[name]) > 1]
    columns = min(3, len(names))
    figure, axes = new_figure(
        4.2 * columns, 3.4 * -(-len(names) // columns), -(-len(names) // columns), columns
    )
    methods = sorted({row["method"] for row in rows})
    colours = {method: f"C{i % 10}" for i, method in enumerate(methods)}
    for ax, name in zip(axes, names, strict=False):
        labels = sorted({str(value_label(row[name])) for row in rows}, key=_natural)
        position = {label: i for i, label in enumerate(labels)}
        for method in methods:
            points = [
                (position[str(value_label(r[name]))], r["recovery"])
                for r in rows
                if r["method"] == method
            ]
            points = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
            offset = 0.08 * (methods.index(method) - (len(methods) - 1) / 2)
            ax.scatter(
                [x + offset for x, _ in points],
                [y for _, y in points],
                color=colours[method],
                s=18,
                label=method,
            )
        ax.set_xticks(
            range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0, fontsize="small"
        )
        ax.set_xlabel(name)
        ax.set_ylabel("recovery")
        ax.axhline(0.0, color="black", linewidth=0.5)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="x-small")
    return save_figure(figure, path)


def _natural(label: str) -> tuple[int, float | str]:
    """Numbers in numeric order, before any text."""
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)


def _plot_counts(values: list[str], name: str, path: Path) -> Path:
    """A bar per distinct value with how many rows hold it."""
    counts = Counter(values)
    labels = sorted(counts, key=_natural)
    figure, (ax,) = new_figure(5.0, 3.4)
    ax.bar(range(len(labels)), [counts[label] for label in labels], color="#4456aa")
    ax.set_xticks(
        range(len(labels)), labels, rotation=20 if len(labels) > 3 else 0, fontsize="small"
    )
    ax.set_xlabel(name)
    ax.set_ylabel("cells × methods")
    return save_figure(figure, path)
