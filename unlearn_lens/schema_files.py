"""The JSON Schemas shipped with the package (and the docs), generated from the results types.

Regenerate after changing a results type: `python -m unlearn_lens.schema_files`; a test fails
while a shipped file and the types differ.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from unlearn_lens.atomic import write_bytes_atomic
from unlearn_lens.calibrate.run import CalibrationResults
from unlearn_lens.predict.model import ReversibilityPredictor
from unlearn_lens.reproduction.grid import CellResult
from unlearn_lens.schema import schema_text
from unlearn_lens.study.results import AuditResults

SCHEMA_FILES: dict[str, tuple[Any, str]] = {
    "results.schema.json": (AuditResults, "unlearn_lens results.json"),
    "grid-cell.schema.json": (CellResult, "unlearn_lens validation grid cell"),
    "predictor.schema.json": (ReversibilityPredictor, "unlearn_lens reversibility predictor"),
    "calibration.schema.json": (CalibrationResults, "unlearn_lens calibration results.json"),
}
"""File name → (type, title) of every published schema."""
DOCS_SCHEMA_DIR = Path("docs/reference/schemas")
"""Where the docs keep their copy (relative to the repository root)."""


def shipped_schema_dir() -> Path:
    """The package's folder of schema files."""
    return Path(str(files("unlearn_lens") / "schemas"))


def write_schema_files(*directories: Path) -> list[Path]:
    """Write every schema into each directory; returns the paths written."""
    written = []
    for directory in directories:
        for name, (cls, title) in SCHEMA_FILES.items():
            written.append(write_bytes_atomic(directory / name, schema_text(cls, title).encode()))
    return written


if __name__ == "__main__":
    for path in write_schema_files(shipped_schema_dir(), DOCS_SCHEMA_DIR):
        print(path)
