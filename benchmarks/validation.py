"""Validation study: the grid on the built-in model, the claims page and the fitted predictor.

    bash scripts/setup.sh && .venv/bin/python benchmarks/validation.py

Runs every cell of the study's grid file (`unlearn_lens/reproduction/study.toml`: 3 domains × 4
objectives × 2 learning rates × single/continual = 48 cells, each an audit of one method) not yet
finished in `--cache`, with `unlearn-lens grid`'s runner (in this process, or on Ray with
`--ray`), then fits and validates the reversibility predictor on the cells, writes it into the
package, and writes docs/validation.md with its figures. Ctrl-C keeps the finished cells; run the
same command again to resume. The page quotes `kl_gradients.json` beside its figures where it
explains why some objectives coincide: run benchmarks/kl_gradients.py first (ten minutes).

A grid of your own (a copy of the grid file with other values on the same four axes) needs its
own `--cache` and `--page`; its predictor is written only where `--predictor` says, so the
shipped one is replaced only by the shipped grid.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console

from unlearn_lens.grid import audit_grid
from unlearn_lens.predict.model import BUILTIN_PREDICTOR
from unlearn_lens.reproduction.cells import read_study
from unlearn_lens.reproduction.fitting import train_predictor
from unlearn_lens.reproduction.grid import STUDY_GRID, study_grid
from unlearn_lens.reproduction.kl_terms import KL_FILE, KLMeasurement
from unlearn_lens.reproduction.page import write_page

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "bash scripts/setup.sh && .venv/bin/python benchmarks/validation.py"
"""The regenerating command written at the top of the page (with this run's flags appended)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=ROOT / "runs" / "validation",
        help="finished cells (default runs/validation)",
    )
    parser.add_argument(
        "--page", type=Path, default=ROOT / "docs" / "validation.md", help="markdown page to write"
    )
    parser.add_argument(
        "--figures",
        type=Path,
        default=None,
        help="directory of the page's PNGs (default: figures/validation beside the page)",
    )
    parser.add_argument(
        "--predictor",
        type=Path,
        default=None,
        help="where to write the fitted predictor (default grid only: the one the package ships)",
    )
    parser.add_argument(
        "--grid", type=Path, default=STUDY_GRID, help="study grid file (default: the shipped one)"
    )
    parser.add_argument(
        "--ray", default=None, help="run the cells on Ray: auto, an address, or local[:N]"
    )
    parser.add_argument("--retry-failed", action="store_true", help="rerun failed cells")
    args = parser.parse_args()
    console = Console(stderr=True)
    start = time.perf_counter()
    spec, settings = study_grid(args.grid)
    predictor_path = args.predictor
    if predictor_path is None and args.grid.resolve() == STUDY_GRID.resolve():
        predictor_path = ROOT / "unlearn_lens" / "predict" / BUILTIN_PREDICTOR
    audit_grid(spec, args.cache, ray=args.ray, retry_failed=args.retry_failed, console=console)
    results = read_study(spec, args.cache)
    try:
        fit = train_predictor(results, settings)
    except ValueError as error:
        fit = None
        console.print(f"[yellow]no predictor:[/] {error}")
    if fit is not None and predictor_path is not None:
        fit.predictor.save(predictor_path)
        console.print(f"predictor written to {predictor_path}")
    compute = sum(r.seconds["total"] for r in results)
    figures = args.figures or args.page.parent / "figures" / "validation"
    kl_path = figures / KL_FILE
    kl = KLMeasurement.from_dict(json.loads(kl_path.read_text())) if kl_path.is_file() else None
    if kl is None:
        console.print(
            f"[yellow]no {kl_path}:[/] the page will not explain why objectives coincide (run "
            "benchmarks/kl_gradients.py)"
        )
    write_page(
        results,
        fit,
        settings,
        page=args.page,
        figure_dir=figures,
        command=" ".join([COMMAND, *map(shlex.quote, sys.argv[1:])]),
        runtime_seconds=compute,
        kl=kl,
    )
    held_out = (
        (
            "; predictor held-out Spearman "
            + ", ".join(
                f"{held.scheme} {held.spearman:.2f} (calls right "
                f"{held.reversible_calls_correct:.0%}, base rate {held.base_rate:.0%})"
                for held in fit.held_out
            )
        )
        if fit is not None
        else ""
    )
    console.print(
        f"{len(results)} cells, {compute / 60:.1f} min of cell compute in all{held_out}; wrote "
        f"{args.page} and {figures}"
    )
    console.print(f"this run: {time.perf_counter() - start:.0f} s wall")


if __name__ == "__main__":
    main()
