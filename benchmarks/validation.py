"""Validation study: the grid on the built-in model, the claims page and the fitted predictor.

    bash scripts/setup.sh && .venv/bin/python benchmarks/validation.py

Runs every cell not yet cached in `--cache` (by default 3 domains × 4 objectives × 2 learning
rates × single/continual = 48 cells, about 100 s a single-request cell and 130 s a continual one
on 2 CPU cores, 1 h 43 min in all when measured; benchmarks/grid_budget.py measured this and chose the relearning
budget, see `GridSettings`), fits and validates the
reversibility predictor on them, writes it into the package, and writes docs/validation.md with
its figures. Ctrl-C keeps the finished cells; run the same command again to resume. The page
quotes `kl_gradients.json` beside its figures where it explains why some objectives coincide:
run benchmarks/kl_gradients.py first (ten minutes) to measure it.

A grid of your own choosing (for example `--methods npo --lrs 2e-5 --domains math`) needs its
own `--cache` and `--page`; its predictor is written only where `--predictor` says, so the
shipped one is replaced only by the default grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console

from unlearn_lens.models.sources import load
from unlearn_lens.predict.model import BUILTIN_PREDICTOR
from unlearn_lens.reproduction.fitting import train_predictor
from unlearn_lens.reproduction.grid import GridSettings, run_grid
from unlearn_lens.reproduction.kl_terms import KL_FILE, KLMeasurement
from unlearn_lens.reproduction.page import write_page

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "bash scripts/setup.sh && .venv/bin/python benchmarks/validation.py"
"""The regenerating command written at the top of the page (with this run's flags appended)."""


def _words(text: str) -> tuple[str, ...]:
    return tuple(word for word in text.split(",") if word)


def _settings(args: argparse.Namespace) -> GridSettings:
    """The default grid with whatever the flags change."""
    changes = {
        "domains": _words(args.domains) if args.domains else None,
        "methods": _words(args.methods) if args.methods else None,
        "protocols": _words(args.protocols) if args.protocols else None,
        "lrs": tuple(float(lr) for lr in _words(args.lrs)) if args.lrs else None,
        "n_items": args.n_items,
        "steps": args.steps,
        "relearn_steps": args.relearn_steps,
        "relearn_lr": args.relearn_lr,
    }
    return dataclasses.replace(
        GridSettings(), **{key: value for key, value in changes.items() if value is not None}
    )


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
    parser.add_argument("--domains", help="comma-separated subset of text,code,math")
    parser.add_argument("--methods", help="comma-separated objectives (default: the study's six)")
    parser.add_argument("--lrs", help="comma-separated learning rates")
    parser.add_argument("--protocols", help="comma-separated subset of single,continual")
    parser.add_argument("--n-items", type=int, help="items per split and cell")
    parser.add_argument("--steps", type=int, help="unlearning steps per request")
    parser.add_argument("--relearn-steps", type=int, help="relearning budget in steps")
    parser.add_argument("--relearn-lr", type=float, help="relearning learning rate")
    args = parser.parse_args()
    console = Console(stderr=True)
    start = time.perf_counter()
    settings = _settings(args)
    predictor_path = args.predictor
    if predictor_path is None and settings == GridSettings():
        predictor_path = ROOT / "unlearn_lens" / "predict" / BUILTIN_PREDICTOR
    results = run_grid(load("smollm2-135m"), settings, args.cache, console=console)
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
