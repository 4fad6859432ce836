"""Run a grid: skip the cells already finished, hand the rest to an executor, write each as it
returns, and estimate the time left from a measured cell."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from unlearn_lens.grid.cells import CELLS_DIR, CellOutput, CellRecord, CellStore, run_cell, task_of
from unlearn_lens.grid.executor import Executor, TaskFailure
from unlearn_lens.grid.spec import GridCell, GridSpec
from unlearn_lens.numbers import duration
from unlearn_lens.out_dir import check_not_foreign, check_out_location


@dataclass
class GridRun:
    """A grid's cells and the record of each that finished or failed (by cell id)."""

    cells: list[GridCell]
    records: dict[str, CellRecord]

    def failed(self) -> list[CellRecord]:
        return [record for record in self.records.values() if record.status == "failed"]


def run_grid(
    spec: GridSpec,
    out: str | Path,
    executor: Executor,
    *,
    retry_failed: bool = False,
    console: Console | None = None,
) -> GridRun:
    """Compute every cell of `spec` not yet in `out/cells/` (failed ones too with
    `retry_failed`) on `executor`, writing each as it returns; returns every cell's record."""
    out = Path(out)
    console = console or Console(stderr=True)
    check_out_location(out)
    check_not_foreign(out, False, (CELLS_DIR,))
    store = CellStore(out)
    records: dict[str, CellRecord] = {}
    todo: list[GridCell] = []
    for cell in spec.cells:
        record = store.record(cell)
        if record is None or (retry_failed and record.status == "failed"):
            todo.append(cell)
        else:
            records[cell.id] = record
    measured = [r.seconds for r in records.values() if r.status == "complete"]
    failed = sum(r.status == "failed" for r in records.values())
    console.print(
        f"grid {escape(spec.path)}: {len(spec.cells)} cells; {len(records) - failed} finished, "
        f"{failed} failed{'' if retry_failed else ' (--retry-failed reruns them)'}, "
        f"{len(todo)} to run on {executor.slots} slot(s)",
        highlight=False,
    )
    if todo and measured:
        _print_estimate(console, statistics.median(measured), len(todo), executor.slots, "stored")
    by_task = [task_of(cell) for cell in todo]
    for done, (index, result) in enumerate(executor.map(run_cell, by_task), start=1):
        cell = todo[index]
        output = (
            CellOutput(cell.id, {}, result.message, 0.0, "executor")
            if isinstance(result, TaskFailure)
            else result
        )
        record = store.write(cell, output)
        records[cell.id] = record
        outcome = (
            f"[green]complete[/] in {duration(record.seconds)}"
            if record.status == "complete"
            else f"[red]failed[/]: {escape(record.error or '')}"
        )
        console.print(f"[{done}/{len(todo)}] {escape(cell.id)} {outcome}", highlight=False)
        if done == 1 and not measured and len(todo) > 1 and record.status == "complete":
            _print_estimate(console, record.seconds, len(todo) - 1, executor.slots, "first cell")
    return GridRun(spec.cells, records)


def _print_estimate(console: Console, seconds: float, cells: int, slots: int, source: str) -> None:
    """The time `cells` more cells take at `seconds` each, `slots` at a time."""
    rounds = -(-cells // slots)
    console.print(
        f"estimate: {cells} cell(s) × {duration(seconds)} ({source}) on {slots} slot(s) "
        f"≈ {duration(rounds * seconds)}",
        highlight=False,
    )
