"""Flags shared by the subcommands that load one model, and the checks those flags ask of what they read."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from unlearn_lens.data.fields import FieldMap
from unlearn_lens.errors import ConfigError
from unlearn_lens.models import BACKENDS, DEFAULT_MODEL, DTYPES

if TYPE_CHECKING:
    from unlearn_lens.data.items import Item
    from unlearn_lens.models.subject import Subject


def command_console() -> Console:
    """A command's standard output: lines are never folded at the width (a path stays one piece
    to copy or to parse when the output is piped), tables still fit the terminal."""
    return Console(soft_wrap=True)


notes = Console(stderr=True)
"""Where `note` prints: stderr, beside warnings and errors, so a command's output stays its own."""


def note(line: str) -> None:
    """Print one line of information about how a command runs (a resolved link, a lock taken over)."""
    notes.print(f"[yellow]note:[/] {escape(line)}", highlight=False, soft_wrap=True)


DATA_SPEC = "a .jsonl, .json, .csv, .parquet or .txt file, a save_to_disk directory, or hf:NAME[:CONFIG]:SPLIT"
"""What a data flag takes, for its help text."""


def add_model_flags(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """`--model` and the runtime flags (`--backend`, `--device`, `--device-map`, `--dtype`).
    With `defaults=False` they default to None, so a config file's values are kept unless a
    flag is given."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL if defaults else None,
        help=f"built-in name, local directory or hub id (default {DEFAULT_MODEL})",
    )
    add_runtime_flags(parser, defaults=defaults)


def add_runtime_flags(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """`--backend`, `--device`, `--device-map`, `--dtype`: how a model is loaded, for commands
    that name their models otherwise."""
    parser.add_argument(
        "--backend",
        default="transformer_lens" if defaults else None,
        choices=BACKENDS,
        help="hook backend (default transformer_lens)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu or cuda (default: where transformers puts it)",
    )
    parser.add_argument(
        "--device-map",
        default=None,
        help="transformers device_map for models spanning several GPUs, e.g. auto",
    )
    parser.add_argument(
        "--dtype",
        default="float32" if defaults else None,
        choices=tuple(DTYPES),
        help="weights' dtype (default float32); diagnostics still compute in float64",
    )


def add_data_flags(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """`--prompt-field`, `--answer-field`, `--text-field`, `--chat-template`: how records become items.
    With `defaults=False`, `--chat-template` defaults to None so a config file's value is kept."""
    parser.add_argument(
        "--prompt-field",
        default=None,
        metavar="NAME",
        help="record field holding the prompt (default: prompt or question)",
    )
    parser.add_argument(
        "--answer-field",
        default=None,
        metavar="NAME",
        help="record field holding the answer (default: answer or completion)",
    )
    parser.add_argument(
        "--text-field",
        default=None,
        metavar="NAME",
        help="record field holding a plain text (default: text)",
    )
    parser.add_argument(
        "--chat-template",
        action="store_true",
        default=False if defaults else None,
        help="wrap each prompt in the tokenizer's chat template (instruct models); the answer stays the only target",
    )


def add_length_flags(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """`--max-tokens`, `--truncate`: the longest item allowed, and whether a longer one is shortened
    instead of refused. With `defaults=False`, `--truncate` defaults to None so a config file's value is kept."""
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        metavar="N",
        help="refuse any item longer than N tokens (default: the model's context length)",
    )
    parser.add_argument(
        "--truncate",
        action="store_true",
        default=False if defaults else None,
        help="shorten an over-long item from the left of its prompt instead of refusing it (the answer is kept whole)",
    )


def check_max_tokens(args: argparse.Namespace) -> None:
    """Refuse a `--max-tokens` no item could meet, before any model loads."""
    if args.max_tokens is not None and args.max_tokens < 2:
        raise ConfigError(
            f"--max-tokens must be at least 2 (a target needs a token before it), got {args.max_tokens}"
        )


def fit_items(
    subject: Subject,
    items: list[Item],
    source: str | Path | None,
    split: str,
    args: argparse.Namespace,
    console: Console,
) -> list[Item]:
    """The items, each fitting the model's context and `--max-tokens` (refused with file:line, or
    truncated with `--truncate`); a warning names truncated and repeated items."""
    from unlearn_lens.data.checks import check_token_lengths, describe_duplicates, item_locations

    where = item_locations(source, len(items), str(source))
    fitted, truncated = check_token_lengths(
        subject, items, where, args.max_tokens, args.truncate, split
    )
    for note in (truncated, describe_duplicates(split, fitted, where)):
        if note is not None:
            console.print(f"[yellow]warning:[/] {escape(note)}")
    return fitted


def field_map(args: argparse.Namespace) -> FieldMap:
    """The `FieldMap` of the data flags."""
    return FieldMap(prompt=args.prompt_field, answer=args.answer_field, text=args.text_field)


def add_report_flags(parser: argparse.ArgumentParser) -> None:
    """How much of the terminal report to print: `--verbose` and `--layers-for` (audit and report)."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print each verdict's evidence and thresholds, the attribution, budgets and the "
        "per-layer table (default: the summary and one findings line per method)",
    )
    parser.add_argument(
        "--layers-for",
        action="append",
        default=None,
        metavar="METHOD",
        help="print per-layer tables for this method (repeatable; with --verbose the default is the first)",
    )
