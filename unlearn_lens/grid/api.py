"""`audit_grid`: a grid file run end to end, locally or on Ray, with its summary written."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from unlearn_lens.grid.executor import executor_for
from unlearn_lens.grid.runner import GridRun, run_grid
from unlearn_lens.grid.spec import GridSpec, load_grid
from unlearn_lens.grid.summary import write_summary


def audit_grid(
    grid: str | Path | GridSpec,
    out: str | Path,
    *,
    ray: str | None = None,
    retry_failed: bool = False,
    console: Console | None = None,
    table: Console | None = None,
) -> GridRun:
    """Run every cell of `grid` (a grid file or a loaded `GridSpec`) not yet finished in `out`,
    then write summary.csv, summary.parquet and summary.html there (and print the table on
    `table`). `ray` is None (in this process), `"auto"`, an address, or `"local[:N]"`."""
    spec = grid if isinstance(grid, GridSpec) else load_grid(grid)
    console = console or Console(stderr=True)
    executor = executor_for(ray, spec.resources)
    try:
        run = run_grid(spec, out, executor, retry_failed=retry_failed, console=console)
    finally:
        executor.close()
    paths = write_summary(spec, run, out, table)
    console.print(f"summary: {paths['csv']}  {paths['parquet']}  {paths['html']}", highlight=False)
    return run
