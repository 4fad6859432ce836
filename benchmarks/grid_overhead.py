"""What `unlearn-lens grid` adds to the audits it runs, and what local Ray workers buy.

On the tiny memorised model of the tests (tests/memorised.py, saved as a checkpoint so that every
cell loads it as a plain audit does), a 4-cell grid (method ga/npo × lr 1e-2/3e-2, `--steps N`
unlearning and relearning steps) is timed three ways:

1. in this process, against the same 4 audits called directly (`audit(config, out=...)`),
   alternating the two `--repeats` times; the overhead per cell is the median difference over 4,
   the summary (CSV, Parquet, HTML with 3 figures) timed apart, as it is paid once per grid;
2. on a local Ray with 1 worker (`--ray local:1`) and 3. with 2 (`--ray local:2`), each from
   `ray.init` to the last cell written, with Ray's start-up given apart and each cell's time as
   its worker measured it (a worker's first cell includes importing torch and the package).

    python benchmarks/grid_overhead.py [--steps 4] [--repeats 3]

Prints one JSON object of wall-clock seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import unlearn_lens as ul
from unlearn_lens.grid import LocalExecutor, RayExecutor, load_grid, run_grid, write_summary
from unlearn_lens.study.audit import audit

GRID = """\
[fixed]
model = "{root}/ck"
backend = "nnsight"
forget = "{root}/forget.jsonl"
retain = "{root}/retain.jsonl"
control = "{root}/control.jsonl"
steps = {steps}
batch_size = 4
relearn_steps = {steps}
relearn_lr = 1e-2
max_items = 8

[axes]
method = ["ga", "npo"]
lr = [1e-2, 3e-2]

[resources]
num_cpus = 1
"""


def _workspace(root: Path, steps: int) -> Path:
    from memorised import CONTROL, FORGET, RETAIN, memorised_subject

    for name, items in (("forget", FORGET), ("retain", RETAIN), ("control", CONTROL)):
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps(item.to_dict()) + "\n" for item in items)
        )
    ul.save_checkpoint(memorised_subject(), root / "ck")
    grid = root / "grid.toml"
    grid.write_text(GRID.format(root=root, steps=steps))
    return grid


def _quiet() -> Console:
    return Console(file=io.StringIO())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a Ray task asking for 1 CPU runs (OMP_NUM_THREADS=1)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        spec = load_grid(_workspace(root, args.steps))
        audit(spec.cells[0].config, progress=False, console=_quiet())  # warm imports and caches
        plain, grid, summary = [], [], []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            for index, cell in enumerate(spec.cells):
                audit(
                    cell.config,
                    out=root / f"plain{repeat}-{index}",
                    progress=False,
                    console=_quiet(),
                )
            plain.append(time.perf_counter() - start)
            out = root / f"grid{repeat}"
            start = time.perf_counter()
            run = run_grid(spec, out, LocalExecutor(), console=_quiet())
            grid.append(time.perf_counter() - start)
            start = time.perf_counter()
            write_summary(spec, run, out)
            summary.append(time.perf_counter() - start)
        cells = len(spec.cells)
        per_cell_plain = statistics.median(plain) / cells
        per_cell_overhead = (
            statistics.median(g - p for g, p in zip(grid, plain, strict=True)) / cells
        )
        ray = {}
        for workers in (1, 2):
            start = time.perf_counter()
            executor = RayExecutor(f"local:{workers}", spec.resources)
            started = time.perf_counter() - start
            run = run_grid(spec, root / f"ray{workers}", executor, console=_quiet())
            total = time.perf_counter() - start
            executor.close()
            ray[f"local:{workers}"] = {
                "ray_start_s": round(started, 2),
                "grid_s": round(total - started, 2),
                "total_s": round(total, 2),
                "cell_s_in_worker": sorted(round(r.seconds, 2) for r in run.records.values()),
            }
    print(
        json.dumps(
            {
                "cells": cells,
                "steps": args.steps,
                "plain_audit_per_cell_s": round(per_cell_plain, 3),
                "grid_overhead_per_cell_s": round(per_cell_overhead, 4),
                "grid_overhead_per_cell_percent": round(
                    100 * per_cell_overhead / per_cell_plain, 1
                ),
                "plain_4_cells_s": [round(x, 2) for x in plain],
                "grid_4_cells_s": [round(x, 2) for x in grid],
                "summary_s": round(statistics.median(summary), 2),
                "ray": ray,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
