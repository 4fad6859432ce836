"""`unlearn-lens grid GRID.toml --out DIR`: every cell of a grid file as an audit, in this
process or on Ray, cached in DIR/cells/, summarised in DIR/summary.{csv,parquet,html}."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from unlearn_lens.errors import UnlearnLensError

DEFAULT_OUT = Path("runs/grid")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `grid` subcommand to the `unlearn-lens` parser."""
    parser = subparsers.add_parser(
        "grid",
        help="run a grid of audits from a grid file (locally, or on Ray with --ray)",
        description="Expand GRID.toml ([axes], [fixed], [resources]) into cells, audit each one not "
        "yet finished in --out, and write a summary across cells.",
    )
    parser.add_argument("grid", type=Path, metavar="GRID.toml", help="the grid file")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"grid directory: cells/<id>/ and the summary (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--ray",
        default=None,
        metavar="WHERE",
        help="run cells as Ray tasks: auto (the cluster this machine joined), an address "
        "(HOST:PORT or ray://HOST:10001), or local[:N] (a Ray started here with N CPUs); "
        "default: one after another in this process",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="run again the cells that failed before"
    )
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> None:
    """Check the grid file, run its cells and write the summary."""
    from unlearn_lens.grid.api import audit_grid
    from unlearn_lens.grid.cells import CELLS_DIR, ERROR_FILE
    from unlearn_lens.grid.spec import load_grid
    from unlearn_lens.report.terminal import report_console

    spec = load_grid(args.grid)  # a bad grid file fails here, before Ray or any model starts
    run = audit_grid(
        spec,
        args.out,
        ray=args.ray,
        retry_failed=args.retry_failed,
        console=Console(stderr=True),
        table=report_console(),
    )
    failed = run.failed()
    if failed:
        where = args.out / CELLS_DIR / failed[0].id / ERROR_FILE
        raise UnlearnLensError(
            f"{len(failed)} of {len(run.cells)} cells failed (first: {where}); the others are in "
            f"{args.out}; fix the cause and rerun with --retry-failed"
        )
