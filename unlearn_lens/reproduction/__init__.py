"""The validation study: a grid of unlearning runs on the built-in model, and the page it writes."""

from unlearn_lens.reproduction.grid import (
    GRID_OBJECTIVES,
    STUDY_OBJECTIVES,
    Cell,
    CellResult,
    GridCache,
    GridSettings,
    run_cell,
    run_grid,
)

__all__ = [
    "GRID_OBJECTIVES",
    "STUDY_OBJECTIVES",
    "Cell",
    "CellResult",
    "GridCache",
    "GridSettings",
    "run_cell",
    "run_grid",
]
