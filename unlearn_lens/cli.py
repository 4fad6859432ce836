"""The `unlearn-lens` command: subcommands parse flags, call the library, and print with rich.

Every `UnlearnLensError` (and bad-input `ValueError` from data loading, and an `OSError` from a
file that cannot be read or written) ends as one red line on stderr and exit status 2, never a
traceback. A subcommand's `--out` is held for its whole run (`open_out`: a link resolved, the
run lock taken), so no two runs write one directory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from unlearn_lens.commands import (
    audit,
    calibrate,
    compare,
    grid,
    quantize,
    relearn,
    report,
    unlearn,
)
from unlearn_lens.commands.common import add_model_flags, command_console, note
from unlearn_lens.errors import ConfigError, UnlearnLensError, one_line
from unlearn_lens.out_dir import open_out
from unlearn_lens.quiet import quiet_third_party_bars

console = command_console()
error_console = Console(stderr=True)


def _cmd_inspect(args: argparse.Namespace) -> None:
    from unlearn_lens.models import load
    from unlearn_lens.report.inspect import print_inspection

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    subject = load(
        args.model,
        backend=args.backend,
        device=args.device,
        device_map=args.device_map,
        dtype=args.dtype,
    )
    print_inspection(console, subject, args.prompt, top_k=args.top_k)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="unlearn-lens", description="Audit whether an unlearned LM forgot or only hides."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser(
        "inspect", help="architecture summary and top next-token predictions for a prompt"
    )
    add_model_flags(inspect)
    inspect.add_argument(
        "prompt", nargs="?", default="The capital of France is", help="text to continue"
    )
    inspect.add_argument(
        "--top-k", type=int, default=5, help="how many predictions to show (default 5)"
    )
    inspect.set_defaults(handler=_cmd_inspect)
    for command in (audit, calibrate, report, compare, unlearn, relearn, quantize, grid):
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `unlearn-lens` console script."""
    args = build_parser().parse_args(argv)
    quiet_third_party_bars()
    try:
        with open_out(getattr(args, "out", None), note) as out:
            if out is not None:
                args.out = out
            args.handler(args)
    except (UnlearnLensError, ValueError, OSError) as error:
        error_console.print(
            f"[bold red]error:[/] {escape(one_line(error))}", highlight=False, soft_wrap=True
        )
        return 2
    except KeyboardInterrupt:
        error_console.print("[yellow]interrupted[/]")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
