"""Grids of audits: a grid file expanded into cells, each a plain audit, run in this process or as
Ray tasks, cached by settings, and summarised across cells.

The rooms keep apart what DESIGN.md keeps apart: `spec` reads the grid file, `cells` computes and
stores one cell (knowing nothing of Ray), `executor` runs tasks (knowing nothing of audits),
`runner` ties them, `summary` reads the cells back into tables and figures.
"""

from unlearn_lens.grid.api import audit_grid
from unlearn_lens.grid.cells import CellRecord, CellStore, run_cell
from unlearn_lens.grid.executor import LocalExecutor, RayExecutor, TaskFailure
from unlearn_lens.grid.runner import GridRun, run_grid
from unlearn_lens.grid.spec import GridCell, GridSpec, Resources, load_grid
from unlearn_lens.grid.summary import summary_rows, write_summary

__all__ = [
    "CellRecord",
    "CellStore",
    "GridCell",
    "GridRun",
    "GridSpec",
    "LocalExecutor",
    "RayExecutor",
    "Resources",
    "TaskFailure",
    "audit_grid",
    "load_grid",
    "run_cell",
    "run_grid",
    "summary_rows",
    "write_summary",
]
