"""One cell of a grid: a plain audit into a temporary directory, and the cache of finished cells.

`run_cell` is what an executor runs, anywhere: it needs no shared file system, because it
returns the small files of the run (results.json, the log) as bytes instead of writing them
where the driver can see. The driver alone writes them into `DIR/cells/<id>/`, each cell's
directory appearing whole (staged beside it, then renamed), so a crash never leaves half a
cell and a cell found there is finished. A cell knows nothing of where it runs.
"""

from __future__ import annotations

import io
import json
import os
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from unlearn_lens.atomic import staged_directory, write_bytes_atomic, write_json_atomic
from unlearn_lens.errors import UnlearnLensError, one_line
from unlearn_lens.grid.spec import GridCell, settings_hash
from unlearn_lens.schema import Real, dump, read
from unlearn_lens.study.audit import SNAPSHOT_DIR
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.study.results import RESULTS_FILE

CELLS_DIR = "cells"
CELL_FILE = "cell.json"
"""The record of a cell (settings hash, axis values, status, time, where it ran)."""
ERROR_FILE = "error.txt"
"""A failed cell's one-line error."""
LOG_FILE = "log.txt"
"""What the audit printed (and a failed cell's traceback)."""
MAX_SHIPPED_BYTES = 64 * 2**20
"""A file of the run larger than this stays on the worker (weights: results are far smaller)."""


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to compute a cell: its id and its settings as JSON data."""

    id: str
    settings: dict[str, Any]


@dataclass
class CellOutput:
    """What a cell's computation returns to the driver: its files (path in the run → bytes),
    or the one-line error that stopped it, with its time and where it ran."""

    id: str
    files: dict[str, bytes]
    error: str | None
    seconds: float
    worker: str


@dataclass
class CellRecord:
    """`cell.json`: a finished or failed cell, for the cache and the summary."""

    id: str
    settings_sha256: str
    axes: dict[str, Any]
    status: str
    seconds: Real
    worker: str
    finished: str
    error: str | None = None
    files: list[str] = field(default_factory=list)


def task_of(cell: GridCell) -> CellTask:
    """The plain data a worker computes `cell` from."""
    return CellTask(cell.id, dump(cell.config))


def run_cell(task: CellTask) -> CellOutput:
    """Audit one cell's settings into a temporary directory and return its small files; any
    error becomes the output's one-line `error` (with the traceback in the log), never a raise."""
    from unlearn_lens.study.audit import audit

    start = time.perf_counter()
    log = io.StringIO()
    console = Console(file=log, width=120, force_terminal=False)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="unlearn-lens-cell-") as scratch:
        run = Path(scratch) / "run"
        try:
            config = StudyConfig.from_dict(task.settings, f"cell {task.id}")
            audit(config, out=run, progress=False, console=console)
        except Exception as error:
            console.print(traceback.format_exc(), markup=False, highlight=False)
            files = {LOG_FILE: log.getvalue().encode()}
            return CellOutput(task.id, files, _describe(error), time.perf_counter() - start, worker)
        files = _small_files(run)
        files[LOG_FILE] = log.getvalue().encode()
    return CellOutput(task.id, files, None, time.perf_counter() - start, worker)


def _describe(error: Exception) -> str:
    """One line; an unexpected error's type is kept (a `RuntimeError` from torch says little without it)."""
    if isinstance(error, (UnlearnLensError, ValueError, OSError)):
        return one_line(error)
    return f"{type(error).__name__}: {one_line(error)}"


def _small_files(run: Path) -> dict[str, bytes]:
    """Every file of a finished run but the snapshots and anything over `MAX_SHIPPED_BYTES`."""
    files = {}
    for path in sorted(run.rglob("*")):
        relative = path.relative_to(run)
        if not path.is_file() or relative.parts[0] == SNAPSHOT_DIR:
            continue
        if path.stat().st_size <= MAX_SHIPPED_BYTES:
            files[relative.as_posix()] = path.read_bytes()
    return files


class CellStore:
    """`DIR/cells/`: one directory per finished or failed cell, written by the driver alone."""

    def __init__(self, out: str | Path) -> None:
        self.root = Path(out) / CELLS_DIR

    def directory(self, cell_id: str) -> Path:
        return self.root / cell_id

    def record(self, cell: GridCell) -> CellRecord | None:
        """The cell's record if it finished or failed with these very settings, else None."""
        path = self.directory(cell.id) / CELL_FILE
        if not path.is_file():
            return None
        try:
            record = read(CellRecord, json.loads(path.read_text(encoding="utf-8")), str(path))
        except (UnlearnLensError, ValueError):
            return None  # unreadable: computed again, its directory replaced
        return record if record.settings_sha256 == settings_hash(cell.config) else None

    def write(self, cell: GridCell, output: CellOutput) -> CellRecord:
        """Write what a cell's computation returned, whole or not at all; returns its record."""
        record = CellRecord(
            id=cell.id,
            settings_sha256=settings_hash(cell.config),
            axes=cell.axes,
            status="failed" if output.error is not None else "complete",
            seconds=round(output.seconds, 3),
            worker=output.worker,
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
            error=output.error,
            files=sorted(output.files),
        )
        if output.error is None and RESULTS_FILE not in output.files:
            record.status, record.error = "failed", f"the audit returned no {RESULTS_FILE}"
        with staged_directory(self.directory(cell.id)) as staging:
            for name, data in output.files.items():
                write_bytes_atomic(staging / name, data)
            if record.error is not None:
                write_bytes_atomic(staging / ERROR_FILE, (record.error + "\n").encode())
            write_json_atomic(staging / CELL_FILE, dump(record))
        return record
