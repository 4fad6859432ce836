"""`unlearn-lens report RUN_DIR`: re-render a run's terminal report, figures and HTML without recomputing."""

from __future__ import annotations

import argparse
from pathlib import Path

from unlearn_lens.commands.common import add_report_flags


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `report` subcommand to the `unlearn-lens` parser."""
    parser = subparsers.add_parser(
        "report", help="re-render a finished (or interrupted) audit from its results.json"
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the audit's --out directory")
    add_report_flags(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> None:
    """Load results.json and render it."""
    from unlearn_lens.commands.common import note
    from unlearn_lens.report.render import render_run
    from unlearn_lens.report.terminal import report_console
    from unlearn_lens.run_lock import run_lock
    from unlearn_lens.study.results import AuditResults

    with run_lock(args.run_dir, on_takeover=note):  # no audit writes there while figures are drawn
        render_run(
            AuditResults.load(args.run_dir),
            args.run_dir,
            report_console(),
            layer_methods=args.layers_for,
            verbose=args.verbose,
        )
