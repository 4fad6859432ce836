"""`unlearn-lens relearn CHECKPOINT --data SPEC`: a relearning attack on a checkpoint, with its control, saved.

Fine-tunes the checkpoint on `--data` for `--steps` and spends equal work (as many epochs of its
own items at the same items per step) on the `--control` items the checkpoint does not already
answer (as the audit keeps them), from the same weights,
as the audit's relearning stage does. Writes `OUT/model` (the relearned checkpoint) and then
`OUT/run.json` (settings, data, the recovery curve after every step and the work each run did);
`run.json` marks a finished run, and an existing one is only replaced with `--force`. Ctrl-C
stops the run and writes nothing.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

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
from unlearn_lens.out_dir import MODEL_DIR, RUN_FILE, check_out_dir
from unlearn_lens.schema import dump
from unlearn_lens.study.config import DEFAULT_RELEARN_LR
from unlearn_lens.unlearn.loop import TrainConfig

if TYPE_CHECKING:
    from unlearn_lens.data.items import Item
    from unlearn_lens.models.subject import Subject

DEFAULT_CONTROL = "builtin:text"
"""The control when none is given: the built-in text domain's novel facts (fictional countries,
books and elements), which no model can know."""

console = command_console()


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `relearn` subcommand to the `unlearn-lens` parser."""
    parser = subparsers.add_parser(
        "relearn",
        help="relearning attack on a checkpoint, with a control; save the relearned model and its recovery curve",
        description="Fine-tune a checkpoint on --data for a budget, spend equal work on novel --control items, "
        "and save the relearned model with run.json (recovery curve step by step).",
    )
    parser.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="the model to attack: a local directory, the --out of unlearn, a built-in name or a hub id",
    )
    parser.add_argument(
        "--data", required=True, metavar="SPEC", help=f"items to relearn on: {DATA_SPEC}"
    )
    parser.add_argument(
        "--control",
        metavar="SPEC",
        help="novel items that get the same work, in any form --data takes (default: the built-in text control)",
    )
    parser.add_argument(
        "--retain", metavar="SPEC", help="items measured after every step too, for the curve"
    )
    add_data_flags(parser)
    add_runtime_flags(parser)
    parser.add_argument(
        "--steps", type=int, default=10, help="relearning budget in optimiser steps (default 10)"
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=DEFAULT_RELEARN_LR,
        help=f"learning rate (default {DEFAULT_RELEARN_LR:g}, the audit's)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="items per step (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of batching (default 0)")
    parser.add_argument(
        "--split",
        action="store_true",
        help="disjoint-split attack instead: fine-tune on one half of --data, measure the other, "
        "then swap (the control measured under the same runs is the null); writes run.json only",
    )
    add_length_flags(parser)
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help=f"write {MODEL_DIR}/ and {RUN_FILE} here",
    )
    parser.add_argument(
        "--force", action="store_true", help=f"overwrite an existing {RUN_FILE} in --out"
    )
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> None:
    """Handler of `unlearn-lens relearn`."""
    from unlearn_lens.data import builtin, chat_items, load_items
    from unlearn_lens.models import load
    from unlearn_lens.unlearn import relearn

    check_out_dir(args.out, args.force, (RUN_FILE, MODEL_DIR))
    TrainConfig(
        lr=args.lr, steps=args.steps, batch_size=args.batch_size, seed=args.seed
    )  # bad settings fail before the model loads
    check_max_tokens(args)
    fields = field_map(args)
    sources = {"data": args.data, "control": args.control or DEFAULT_CONTROL, "retain": args.retain}
    sets = {
        "data": load_items(args.data, fields),
        "control": load_items(args.control, fields)
        if args.control
        else list(builtin("text").control),
        "retain": load_items(args.retain, fields) if args.retain else [],
    }
    checkpoint = args.checkpoint
    subject = load(
        checkpoint,
        backend=args.backend,
        device=args.device,
        device_map=args.device_map,
        dtype=args.dtype,
    )
    if args.chat_template:
        sets = {split: chat_items(items, subject.tokenizer) for split, items in sets.items()}
    sets = {
        split: fit_items(subject, items, sources[split], split, args, console)
        for split, items in sets.items()
    }
    sets["control"], n_given = _novel(subject, sets["control"]), len(sets["control"])
    console.print(
        f"control: kept {len(sets['control'])} of {n_given} items (those the checkpoint does not answer)"
    )
    if args.split:
        _split(subject, sets, args, sources, fields, n_given)
        return
    result = relearn(
        subject,
        sets["data"],
        sets["control"],
        steps=args.steps,
        retain_items=sets["retain"],
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    record = {
        "command": "relearn",
        "model": checkpoint,
        "backend": args.backend,
        "dtype": args.dtype,
        "data": {
            **sources,
            "fields": asdict(fields),
            "chat_template": args.chat_template,
            **{f"n_{split}": len(items) for split, items in sets.items()},
            "n_control_given": n_given,
        },
        "result": dump(result),
        "model_dir": MODEL_DIR,
    }
    _save(subject, record, args.out)
    _print_summary(result, args.out)


def _split(subject, sets, args, sources, fields, n_given: int) -> None:
    """`relearn --split`: both halves of the disjoint split, their held-back and control curves
    in run.json, and a table of each half (the checkpoint's weights are left as they were)."""
    from unlearn_lens.atomic import write_json_atomic
    from unlearn_lens.attacks.split import split_relearn

    result = split_relearn(
        subject,
        sets["data"],
        sets["control"],
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    record = {
        "command": "relearn --split",
        "model": args.checkpoint,
        "data": {**sources, "fields": asdict(fields), "n_control_given": n_given},
        "result": dump(result),
    }
    write_json_atomic(args.out / RUN_FILE, record)
    table = Table(
        title="relearn --split: held-back half and control under the same runs (token accuracy)",
        title_justify="left",
    )
    for column in ("half", "trained on", "held back", "held back before → after", "control gain"):
        table.add_column(column)
    for index, half in enumerate(result.halves):
        before, after = half.held_back_curve[0].accuracy, half.held_back_curve[-1].accuracy
        gain = half.control_curve[-1].accuracy - half.control_curve[0].accuracy
        table.add_row(
            str(index + 1),
            f"{len(half.trained)} items",
            f"{len(half.held_back)} items",
            f"{before:.4f} → {after:.4f}",
            f"{gain:+.4f}",
        )
    console.print(table)
    console.print(f"run record (both halves' curves, item indices): {args.out / RUN_FILE}")


def _novel(subject: Subject, control: list[Item]) -> list[Item]:
    """The control items the model does not already answer, as the audit keeps them: a control it
    knows cannot gain, and would make any recovery look faster than learning."""
    from unlearn_lens.errors import ConfigError
    from unlearn_lens.unlearn.known import split_known

    novel = split_known(subject, control)[1]
    if not novel:
        raise ConfigError(
            f"the checkpoint already answers all {len(control)} control items; give novel ones with --control"
        )
    return novel


def _save(subject, record: dict[str, Any], out: Path) -> None:
    """Write the relearned model, then run.json (an older run.json goes first, so an interrupted
    save never leaves a record beside a model it does not describe)."""
    from unlearn_lens.atomic import write_json_atomic
    from unlearn_lens.models.saving import save_checkpoint

    (out / RUN_FILE).unlink(missing_ok=True)
    save_checkpoint(subject, out / MODEL_DIR)
    write_json_atomic(out / RUN_FILE, record)


def _print_summary(result, out: Path) -> None:
    table = Table(
        title="relearn: the attack and its control (token accuracy on answers)",
        title_justify="left",
    )
    for column in ("set", "before", "after", "gain", "work"):
        table.add_column(column, justify="left" if column in ("set", "work") else "right")
    for name, before, after, work in (
        ("data", result.forget_before, result.forget_after, result.work["source"]),
        ("control", result.control_before, result.control_after, result.work["control"]),
    ):
        table.add_row(
            name,
            f"{before.accuracy:.4f}",
            f"{after.accuracy:.4f}",
            f"{after.accuracy - before.accuracy:+.4f}",
            f"{work.steps} steps at lr {work.lr:g}, {work.epochs:.2f} epochs of {work.n_items} "
            f"items ({work.tokens_seen} tokens)",
        )
    console.print(table)
    console.print(f"model (relearned): {out / MODEL_DIR}")
    console.print(f"run record (recovery curve, work): {out / RUN_FILE}")
