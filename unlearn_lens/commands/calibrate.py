"""`unlearn-lens calibrate`: known cases built on your model and data, each audited as
`audit --unlearned` would, with what was built, what was found and pass/fail."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from unlearn_lens.calibrate.cases import CASES, CaseBudget
from unlearn_lens.commands.audit import settings

DEFAULT_OUT = Path("runs/calibrate")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `calibrate` subcommand (the model and data flags are `audit`'s)."""
    from unlearn_lens.commands.audit import register as register_audit

    scratch = argparse.ArgumentParser(add_help=False).add_subparsers()
    audit_parser = register_audit(scratch)
    parser = subparsers.add_parser(
        "calibrate",
        help="build known cases (shallow, deep, suppressed, sham, never known) and audit each",
        description="Build known cases on your model and data, audit each exactly as "
        "`audit --unlearned` does, and report what was built, what was found and pass/fail.",
    )
    skip = {"help", "methods", "unlearned", "resume", "out", "force", "verbose", "layers_for"}
    helps = {
        "lr": "learning rate of the shallow and deep cases' gradient ascent (default 1e-4)",
        "steps": "steps of the shallow and deep cases' gradient ascent (default 10)",
        "max_items": "items kept per split (default 8 here)",
        "relearn_steps": "relearning budget in steps (default 3 here)",
    }
    for action in audit_parser._actions:  # a scratch parser's actions: changing their help is safe
        if action.dest in skip:
            continue
        action.help = helps.get(action.dest, action.help)
        parser._add_action(action)
    parser.add_argument(
        "--cases",
        nargs="+",
        default=list(CASES),
        metavar="CASE",
        help=f"which cases to build (default all: {' '.join(CASES)})",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
        help=f"where results.json and report.html go (default {DEFAULT_OUT})",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace a calibration in --out")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a case fails"
    )
    parser.set_defaults(handler=run, methods=None, unlearned=None, resume=False)
    return parser


def calibration_settings(args: argparse.Namespace):
    """`audit`'s settings from the same flags, on the calibration's shorter defaults."""
    from unlearn_lens.calibrate.run import DEFAULT_CALIBRATION, check_cases
    from unlearn_lens.study.config import file_settings

    check_cases(args.cases)
    config = settings(args)
    in_file = file_settings(args.config) if args.config else {}
    defaults = {
        "max_items": (args.max_items, DEFAULT_CALIBRATION.max_items),
        "relearn_steps": (args.relearn_steps, DEFAULT_CALIBRATION.relearn_steps),
        "attacks": (args.attacks, DEFAULT_CALIBRATION.attacks),
    }
    return config.with_values(
        **{
            name: default
            for name, (given, default) in defaults.items()
            if given is None and name not in in_file
        }
    )


def run(args: argparse.Namespace) -> None:
    """Calibrate, print the table, write results.json and report.html; with --strict a failed case
    exits 1."""
    from unlearn_lens.calibrate.report import render_calibration
    from unlearn_lens.calibrate.run import calibrate
    from unlearn_lens.report.terminal import report_console

    config = calibration_settings(args)
    defaults = CaseBudget()
    budget = CaseBudget(
        lr=args.lr or defaults.lr, steps=args.steps or defaults.steps,
        batch_size=config.batch_size, seed=config.seed,
    )  # fmt: skip
    results = calibrate(config, cases=args.cases, budget=budget, out=args.out, force=args.force,
                        console=Console(stderr=True))  # fmt: skip
    render_calibration(results, args.out, report_console())
    if args.strict and not results.passed:
        raise SystemExit(1)
