"""Validation study: the full grid on the built-in model, the claims page and the fitted predictor.

    bash scripts/setup.sh && .venv/bin/python benchmarks/validation.py

Runs every cell not yet cached in `--cache` (3 domains × 6 objectives × 3 learning rates ×
single/continual = 108 cells, about 35 s each on 2 CPU cores), fits and validates the
reversibility predictor on them, writes it into the package, and writes docs/validation.md with
its figures. Ctrl-C keeps the finished cells; run the same command again to resume.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from unlearn_lens.models.sources import load
from unlearn_lens.predict.model import BUILTIN_PREDICTOR
from unlearn_lens.validation.fitting import train_predictor
from unlearn_lens.validation.grid import GridSettings, run_grid
from unlearn_lens.validation.page import write_page

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "bash scripts/setup.sh && .venv/bin/python benchmarks/validation.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "validation", help="finished cells (default runs/validation)")
    parser.add_argument("--page", type=Path, default=ROOT / "docs" / "validation.md", help="markdown page to write")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures" / "validation", help="directory of the page's PNGs")
    parser.add_argument("--predictor", type=Path, default=ROOT / "unlearn_lens" / "predict" / BUILTIN_PREDICTOR,
                        help="where to write the fitted predictor (default: the one the package ships)")
    args = parser.parse_args()
    console = Console(stderr=True)
    start = time.perf_counter()
    settings = GridSettings()
    results = run_grid(load("smollm2-135m"), settings, args.cache, console=console)
    fit = train_predictor(results, settings)
    fit.predictor.save(args.predictor)
    compute = sum(r.seconds["total"] for r in results)
    write_page(results, fit, settings, page=args.page, figure_dir=args.figures, command=COMMAND, runtime_seconds=compute)
    console.print(
        f"{len(results)} cells ({compute / 60:.1f} min of cell compute in all); predictor held-out Spearman: "
        f"{fit.by_domain.scheme} {fit.by_domain.spearman:.2f}, {fit.by_method.scheme} {fit.by_method.spearman:.2f}; "
        f"wrote {args.page}, {args.figures} and {args.predictor}"
    )
    console.print(f"this run: {time.perf_counter() - start:.0f} s wall")


if __name__ == "__main__":
    main()
