"""What relearning budget must the validation grid spend for its control to learn something?

    .venv/bin/python benchmarks/grid_budget.py [--domains text,code] [--steps 4,8,10] [--lrs 3e-5]

An "irreversible" verdict needs an attack that could have worked: below a control gain of
`RegimeThresholds.min_control_gain` the regime is "inconclusive". For each domain this runs a few
representative cells of the validation grid (`--cells`; by default ga at lr 3e-5, single request,
and npo at lr 1e-5, continual) with `run_cell` under each candidate relearning budget (`--steps`
× `--lrs`, everything else the grid's defaults), and records the control's token-accuracy gain,
the forget recovery, the peak excess, the regime and the seconds of the cell. The summary gives,
per budget, the control gain in each domain and the whole grid's duration estimated from the
measured seconds (cells of each protocol × the mean seconds of that protocol's measured cells).

Writes JSON after every cell (default docs/figures/validation/grid_budget.json); the same command
resumes, skipping rows already there, so it can run in parts. 50-160 s a cell on 2 CPU cores
(continual, math and more steps cost more). The committed JSON holds the default budgets in every
domain plus `--steps 4 --lrs 6e-5,1e-4` in every domain and, on text (whose control learns
slowest), `--steps 2,6 --lrs 3e-5` and `--steps 4,10 --lrs 1e-5`; GridSettings says what was chosen.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path
from statistics import mean, median
from typing import Any

from rich.console import Console
from rich.table import Table

from unlearn_lens.atomic import write_json_atomic
from unlearn_lens.models.sources import load
from unlearn_lens.numbers import number
from unlearn_lens.reproduction.grid import Cell, CellResult, GridSettings, domain_data, run_cell

ROOT = Path(__file__).resolve().parent.parent
BASE_KEYS = ("n_items", "steps", "batch_size", "continual_requests", "seed")
"""The grid settings every row shares; a file measured under others is refused rather than mixed."""


def _words(text: str) -> list[str]:
    return [word for word in text.split(",") if word]


def _cells(text: str, domains: list[str]) -> list[Cell]:
    """`method:lr:protocol,…` in each domain."""
    specs = [spec.split(":") for spec in _words(text)]
    return [
        Cell(domain, method, float(lr), protocol)
        for domain in domains
        for method, lr, protocol in specs
    ]


def _row(result: CellResult, settings: GridSettings) -> dict[str, Any]:
    return {
        "cell": dataclasses.asdict(result.cell),
        "relearn_steps": settings.relearn_steps,
        "relearn_lr": settings.relearn_lr,
        "forget": [
            result.original["forget"].accuracy,
            result.unlearned["forget"].accuracy,
            result.relearned["forget"].accuracy,
        ],
        "control_gain": result.control_gain,
        "recovery": result.recovery,
        "peak_excess": result.peak_excess,
        "regime": result.regime.label,
        "seconds": result.seconds,
    }


def _key(cell: dict[str, Any], steps: int, lr: float) -> tuple:
    return cell["domain"], cell["method"], cell["lr"], cell["protocol"], steps, lr


def _row_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Each cell under each relearning budget")
    for column in (
        "cell",
        "budget",
        "forget acc. o → u → r",
        "control gain",
        "recovery",
        "peak excess",
        "regime",
        "s unlearn",
        "s relearn",
        "s total",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        cell = Cell(**row["cell"])
        table.add_row(
            cell.name,
            f"{row['relearn_steps']} × {row['relearn_lr']:g}",
            " → ".join(f"{a:.2f}" for a in row["forget"]),
            number(row["control_gain"], 2),
            number(row["recovery"], 2),
            number(row["peak_excess"], 2),
            row["regime"],
            f"{row['seconds']['unlearn']:.0f}",
            f"{row['seconds']['relearn']:.0f}",
            f"{row['seconds']['total']:.0f}",
        )
    return table


def summarise(rows: list[dict[str, Any]], grid: GridSettings) -> list[dict[str, Any]]:
    """Per budget: the control gain and recovery by domain, seconds per cell by protocol and the
    estimated duration of `grid` (its cells of each protocol × that protocol's mean measured seconds;
    None unless the budget was measured in every domain and protocol, since code and math cost more than text)."""
    budgets = sorted({(row["relearn_steps"], row["relearn_lr"]) for row in rows})
    summary = []
    for steps, lr in budgets:
        mine = [row for row in rows if (row["relearn_steps"], row["relearn_lr"]) == (steps, lr)]
        seconds = {
            protocol: mean(
                row["seconds"]["total"] for row in mine if row["cell"]["protocol"] == protocol
            )
            for protocol in grid.protocols
            if any(row["cell"]["protocol"] == protocol for row in mine)
        }
        covered = {(row["cell"]["domain"], row["cell"]["protocol"]) for row in mine} >= set(
            itertools.product(grid.domains, grid.protocols)
        )
        estimate = (
            sum(seconds[cell.protocol] for cell in grid.cells()) if covered else None
        )  # domains differ in cost
        summary.append(
            {
                "relearn_steps": steps,
                "relearn_lr": lr,
                "epochs": steps * grid.batch_size / grid.n_items,
                "control_gain": {
                    domain: [row["control_gain"] for row in mine if row["cell"]["domain"] == domain]
                    for domain in dict.fromkeys(row["cell"]["domain"] for row in mine)
                },
                "recovery": [row["recovery"] for row in mine],
                "inconclusive": sum(row["regime"] == "inconclusive" for row in mine),
                "cells": len(mine),
                "seconds_per_cell": seconds,
                "grid_hours": None if estimate is None else estimate / 3600,
            }
        )
    return summary


def _summary_table(summary: list[dict[str, Any]], grid: GridSettings) -> Table:
    domains = list(dict.fromkeys(domain for entry in summary for domain in entry["control_gain"]))
    table = Table(
        title=f"By budget (control gain: min–max over the cells; grid of {len(grid.cells())} cells)"
    )
    for column in (
        "budget",
        "epochs",
        *(f"control gain {d}" for d in domains),
        "median recovery",
        "inconclusive",
        *(f"s/cell {p}" for p in grid.protocols),
        "grid (h)",
    ):
        table.add_column(column, justify="right")
    for entry in summary:
        gains = [entry["control_gain"].get(d, []) for d in domains]
        recoveries = [r for r in entry["recovery"] if r is not None]
        table.add_row(
            f"{entry['relearn_steps']} × {entry['relearn_lr']:g}",
            f"{entry['epochs']:g}",
            *(f"{min(g):.2f}–{max(g):.2f}" if g else "" for g in gains),
            number(median(recoveries), 2) if recoveries else "–",
            f"{entry['inconclusive']} of {entry['cells']}",
            *(number(entry["seconds_per_cell"].get(p), 0) for p in grid.protocols),
            number(entry["grid_hours"], 2),
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", default="text,code,math", help="comma-separated domains")
    parser.add_argument(
        "--cells",
        default="ga:3e-5:single,npo:1e-5:continual",
        help="representative cells in each domain, as method:lr:protocol, comma-separated",
    )
    parser.add_argument("--steps", default="4,8,10", help="relearning steps to try")
    parser.add_argument("--lrs", default="3e-5", help="relearning learning rates to try")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "figures" / "validation" / "grid_budget.json"
    )
    args = parser.parse_args()
    console = Console()
    grid = GridSettings()
    base = {key: getattr(grid, key) for key in BASE_KEYS}
    stored = (
        json.loads(args.out.read_text()) if args.out.is_file() else {"settings": base, "rows": []}
    )
    if stored["settings"] != base:
        raise SystemExit(
            f"{args.out} was measured with other grid settings ({stored['settings']}, now {base}); "
            "give another --out or delete it"
        )
    rows = stored["rows"]
    done = {_key(row["cell"], row["relearn_steps"], row["relearn_lr"]) for row in rows}
    budgets = [(int(steps), float(lr)) for lr in _words(args.lrs) for steps in _words(args.steps)]
    todo = [
        (cell, steps, lr)
        for cell in _cells(args.cells, _words(args.domains))
        for steps, lr in budgets
        if _key(dataclasses.asdict(cell), steps, lr) not in done
    ]
    console.print(f"{len(done)} rows in {args.out}, {len(todo)} to run")
    if todo:
        subject = load("smollm2-135m")
        original = subject.snapshot()
        data = {
            domain: domain_data(subject, domain, grid.n_items)
            for domain in dict.fromkeys(cell.domain for cell, _, _ in todo)
        }
        for cell, steps, lr in todo:
            settings = dataclasses.replace(grid, relearn_steps=steps, relearn_lr=lr)
            row = _row(run_cell(subject, original, data[cell.domain], cell, settings), settings)
            rows.append(row)
            console.print(
                f"{cell.name}, {steps} × {lr:g}: control gain {row['control_gain']:.2f}, recovery "
                f"{number(row['recovery'], 2)}, {row['regime']}, {row['seconds']['total']:.0f} s"
            )
            write_json_atomic(
                args.out, {"settings": base, "rows": rows, "summary": summarise(rows, grid)}
            )
    console.print(_row_table(rows))
    console.print(_summary_table(summarise(rows, grid), grid))


if __name__ == "__main__":
    main()
