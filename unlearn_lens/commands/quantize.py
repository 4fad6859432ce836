"""`unlearn-lens quantize CHECKPOINT --reference ORIGINAL --forget SPEC`: the quantisation attack on
a checkpoint alone.

Rounds CHECKPOINT and the model it was unlearned from (`--reference`) the same way (int8 per
output channel, GGUF Q4_1), measures forget (and retain) accuracy of all four, and writes
`OUT/quantize.json`: the settings, the data and the result (metrics, recovery, per layer the share of
the update below half a rounding step). An existing `quantize.json` is only replaced with `--force`.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from unlearn_lens.attacks.quantize import SCHEMES
from unlearn_lens.commands.common import (
    DATA_SPEC,
    add_data_flags,
    add_length_flags,
    add_runtime_flags,
    check_max_tokens,
    command_console,
    field_map,
    fit_items,
)
from unlearn_lens.out_dir import check_out_dir
from unlearn_lens.schema import dump

if TYPE_CHECKING:
    from unlearn_lens.attacks.quantize import QuantizationResult

QUANTIZE_FILE = "quantize.json"
"""The record `unlearn-lens quantize` writes in its `--out`."""

console = command_console()


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `quantize` subcommand to the `unlearn-lens` parser."""
    parser = subparsers.add_parser(
        "quantize",
        help="quantisation attack on a checkpoint: does rounding its weights bring forgotten facts back?",
        description="Round CHECKPOINT and its --reference (the model before unlearning) to int8 and/or "
        "GGUF Q4_1, measure --forget (and --retain) on all four, and write quantize.json.",
    )
    parser.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="the unlearned model: a local directory, the --out of unlearn, a built-in name or a hub id",
    )
    parser.add_argument(
        "--reference",
        required=True,
        metavar="ORIGINAL",
        help="the model before unlearning, in any form CHECKPOINT takes",
    )
    parser.add_argument(
        "--forget", required=True, metavar="SPEC", help=f"forget items: {DATA_SPEC}"
    )
    parser.add_argument("--retain", metavar="SPEC", help="retain items, in any form --forget takes")
    parser.add_argument(
        "--scheme",
        action="append",
        choices=SCHEMES,
        help="rounding scheme, repeatable: int8 (per output channel) or q4_1 (GGUF, blocks of 32); "
        "default both",
    )
    add_data_flags(parser)
    add_runtime_flags(parser)
    add_length_flags(parser)
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help=f"write {QUANTIZE_FILE} here"
    )
    parser.add_argument(
        "--force", action="store_true", help=f"overwrite an existing {QUANTIZE_FILE} in --out"
    )
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> None:
    """Handler of `unlearn-lens quantize`."""
    from unlearn_lens.atomic import write_json_atomic
    from unlearn_lens.attacks.quantize import quantization_attack
    from unlearn_lens.data import chat_items, load_items
    from unlearn_lens.diagnostics import check_compatible
    from unlearn_lens.models import load

    check_out_dir(args.out, args.force, (QUANTIZE_FILE,))
    check_max_tokens(args)
    fields = field_map(args)
    sources = {"forget": args.forget, "retain": args.retain}
    sets = {
        "forget": load_items(args.forget, fields),
        "retain": load_items(args.retain, fields) if args.retain else [],
    }
    runtime = {
        "backend": args.backend,
        "device": args.device,
        "device_map": args.device_map,
        "dtype": args.dtype,
    }
    reference = load(args.reference, **runtime)
    subject = load(args.checkpoint, **runtime)
    check_compatible(reference, subject, sets["forget"])
    original = reference.snapshot()
    del reference
    if args.chat_template:
        sets = {split: chat_items(items, subject.tokenizer) for split, items in sets.items()}
    sets = {
        split: fit_items(subject, items, sources[split], split, args, console)
        for split, items in sets.items()
    }
    schemes = tuple(dict.fromkeys(args.scheme or SCHEMES))
    result = quantization_attack(
        subject, original, subject.snapshot(), sets["forget"], sets["retain"], schemes
    )
    record = {
        "command": "quantize",
        "model": args.checkpoint,
        "reference": args.reference,
        "backend": args.backend,
        "dtype": args.dtype,
        "data": {
            **sources,
            "fields": asdict(fields),
            "chat_template": args.chat_template,
            **{f"n_{split}": len(items) for split, items in sets.items()},
        },
        "result": dump(result),
    }
    write_json_atomic(args.out / QUANTIZE_FILE, record)
    _print_summary(result, args.out)


def _print_summary(result: QuantizationResult, out: Path) -> None:
    table = Table(
        title="quantize: token accuracy on answers, full precision and rounded",
        title_justify="left",
    )
    columns = (
        "scheme",
        "set",
        "original",
        "unlearned",
        "original rounded",
        "unlearned rounded",
        "recovery",
        "vs rounded original",
        "update < ½ step",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("scheme", "set") else "right")
    for name, scheme in result.schemes.items():
        recovery = scheme.recovery["accuracy"]
        for part, metrics in (("forget", scheme.forget), ("retain", scheme.retain)):
            if metrics is None:
                continue
            forget_row = part == "forget"
            table.add_row(
                name if forget_row else "",
                part,
                *(
                    f"{getattr(metrics, field).accuracy:.4f}"
                    for field in ("original", "unlearned", "original_rounded", "unlearned_rounded")
                ),
                _ratio(recovery.recovery) if forget_row else "",
                _ratio(recovery.recovery_rounded_reference) if forget_row else "",
                f"{scheme.total.below_half_step:.1%}" if forget_row else "",
            )
    console.print(table)
    console.print(f"record (metrics, recovery, per-layer rounding shares): {out / QUANTIZE_FILE}")


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
