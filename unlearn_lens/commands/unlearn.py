"""`unlearn-lens unlearn`: unlearn a forget set from a model and save the result.

Writes `OUT/model` (an ordinary Hugging Face checkpoint that `--model OUT/model` loads back)
and then `OUT/run.json` (settings, data sources, per-step history, metrics before and after);
`run.json` marks a finished run, and an existing one is only replaced with `--force`. Ctrl-C
stops training, saves what finished (the model after the last completed request, if any, and
the history so far), says where, and exits with status 130.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table

from unlearn_lens.commands.common import (
    DATA_SPEC,
    add_data_flags,
    add_length_flags,
    add_model_flags,
    check_max_tokens,
    command_console,
    field_map,
    fit_items,
)
from unlearn_lens.data import BUILTIN_DOMAINS, builtin, load_items
from unlearn_lens.out_dir import MODEL_DIR, RUN_FILE, check_out_dir
from unlearn_lens.schema import dump
from unlearn_lens.unlearn.loop import DEFAULT_STEPS, TrainConfig

console = command_console()


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `unlearn` subcommand to the `unlearn-lens` parser."""
    parser = subparsers.add_parser(
        "unlearn",
        help="unlearn a forget set from a model; save the model and the run's history",
        description="Unlearn a forget set (a file, or a built-in domain) and save the unlearned model with run.json.",
    )
    add_model_flags(parser)
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--forget", metavar="SPEC", help=f"forget items: {DATA_SPEC}")
    data.add_argument(
        "--domain",
        choices=BUILTIN_DOMAINS,
        help="built-in forget and retain sets (default text when --forget is not given)",
    )
    parser.add_argument(
        "--retain",
        metavar="SPEC",
        help="retain items, in any form --forget takes (default with --domain: its retain set)",
    )
    add_data_flags(parser)
    parser.add_argument(
        "--method",
        default="ga",
        help="unlearning objective: ga, ga_gd, ga_kl, npo, npo_gd, npo_kl, rlabel, simnpo, rmu (default ga)",
    )
    parser.add_argument("--lr", type=float, default=1e-5, help="learning rate (default 1e-5)")
    parser.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"optimiser steps per request (default {DEFAULT_STEPS})",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="items per step (default 8)")
    parser.add_argument(
        "--requests",
        type=int,
        default=1,
        help="split the forget set into this many sequential requests (default 1)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of batching and random labels (default 0)"
    )
    parser.add_argument(
        "--known-only",
        action="store_true",
        help="keep only forget items the model answers exactly before unlearning",
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


def _load_data(args: argparse.Namespace) -> tuple[list, list, dict[str, Any]]:
    """Forget and retain items, and where they came from (for run.json)."""
    fields = field_map(args)
    if args.forget is not None:
        forget, forget_source = load_items(args.forget, fields), args.forget
        retain, retain_source = [], None
    else:
        domain = args.domain or "text"
        sets = builtin(domain)
        forget, forget_source = list(sets.forget), f"builtin:{domain}"
        retain, retain_source = list(sets.retain), f"builtin:{domain}"
    if args.retain is not None:
        retain, retain_source = load_items(args.retain, fields), args.retain
    return forget, retain, {"forget": forget_source, "retain": retain_source}


def run(args: argparse.Namespace) -> None:
    """Handler of `unlearn-lens unlearn`."""
    from unlearn_lens.data import chat_items
    from unlearn_lens.models import load
    from unlearn_lens.unlearn import filter_known, get_objective, unlearn

    check_out_dir(args.out, args.force, (RUN_FILE, MODEL_DIR))
    get_objective(args.method)  # an unknown method or bad setting fails before the model loads
    TrainConfig(
        lr=args.lr,
        steps=args.steps,
        batch_size=args.batch_size,
        requests=args.requests,
        seed=args.seed,
    )
    check_max_tokens(args)
    forget, retain, sources = _load_data(args)
    subject = load(
        args.model,
        backend=args.backend,
        device=args.device,
        device_map=args.device_map,
        dtype=args.dtype,
    )
    if args.chat_template:
        forget, retain = (
            chat_items(forget, subject.tokenizer),
            chat_items(retain, subject.tokenizer),
        )
    forget, retain = (
        fit_items(subject, items, sources[split], split, args, console)
        for split, items in (("forget", forget), ("retain", retain))
    )
    known = None
    if args.known_only:
        forget, known = filter_known(subject, forget)
        console.print(f"known-only: kept {known.n_known} of {known.n_items} forget items")
    result = unlearn(
        subject,
        forget,
        retain or None,
        args.method,
        lr=args.lr,
        steps=args.steps,
        batch_size=args.batch_size,
        requests=args.requests,
        seed=args.seed,
    )
    record = {
        "command": "unlearn",
        "model": args.model,
        "backend": args.backend,
        "dtype": args.dtype,
        "data": {
            **sources,
            "fields": asdict(field_map(args)),
            "chat_template": args.chat_template,
            "n_forget": len(forget),
            "n_retain": len(retain),
            "known_filter": dump(known) if known is not None else None,
        },
        "result": dump(result),
    }
    saved = _save(subject, result, record, args.out)
    _print_summary(result, saved, args.out)
    if result.run.interrupted:
        raise KeyboardInterrupt


def _save(subject, result, record: dict[str, Any], out: Path) -> str | None:
    """Write the model (if any request finished) and run.json; return what the model holds."""
    from unlearn_lens.atomic import write_json_atomic
    from unlearn_lens.models.saving import save_checkpoint

    run = result.run
    state = "unlearned" if not run.interrupted else None
    if run.interrupted and run.snapshots:
        subject.restore(run.snapshots[-1])
        state = f"after request {len(run.snapshots) - 1} (the last finished before Ctrl-C)"
    if state is not None:
        save_checkpoint(subject, out / MODEL_DIR)
    elif (out / MODEL_DIR).exists():
        shutil.rmtree(
            out / MODEL_DIR
        )  # --force over an older run: no stale model beside the new record
    record["model_dir"] = MODEL_DIR if state is not None else None
    record["model_state"] = state
    write_json_atomic(out / RUN_FILE, record)
    return state


def _print_summary(result, saved: str | None, out: Path) -> None:
    run = result.run
    table = Table(title=f"unlearn: {result.method}", title_justify="left")
    for column in ("set", "metric", "before", "after"):
        table.add_column(column, justify="left" if column in ("set", "metric") else "right")
    for part in ("forget", "retain"):
        before, after = result.metrics("before", part), result.metrics("after", part)
        if before is None:
            continue
        for metric in ("exact_match", "accuracy", "nll"):
            table.add_row(
                part,
                metric,
                f"{getattr(before, metric):.4f}",
                f"{getattr(after, metric):.4f}" if after is not None else "–",
            )
    console.print(table)
    per_step = run.seconds / run.steps_run if run.steps_run else 0.0
    console.print(f"{run.steps_run} steps ({per_step:.2f} s/step), stopped: {run.stop_reason}")
    if run.interrupted:
        where = run.stopped_at or {}
        console.print(
            f"[yellow]interrupted[/] after step {where.get('step', 0)} (request {where.get('request', 0)})"
        )
    if saved is not None:
        console.print(f"model ({saved}): {out / MODEL_DIR}")
    else:
        console.print("no request finished: no model saved")
    console.print(f"run record: {out / RUN_FILE}")
