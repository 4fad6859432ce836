"""The validation study: a grid of audits on the built-in model (a grid file shipped with the
package), the claims judged on its cells, and the page it writes."""

from unlearn_lens.reproduction.cells import audit_features, cell_result, read_study
from unlearn_lens.reproduction.grid import (
    GRID_OBJECTIVES,
    STUDY_GRID,
    STUDY_OBJECTIVES,
    Cell,
    CellResult,
    GridSettings,
    study_grid,
)

__all__ = [
    "GRID_OBJECTIVES",
    "STUDY_GRID",
    "STUDY_OBJECTIVES",
    "Cell",
    "CellResult",
    "GridSettings",
    "audit_features",
    "cell_result",
    "read_study",
    "study_grid",
]
