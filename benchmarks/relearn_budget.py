"""How large must the default relearning budget be for the control to learn something?

A relearning attack that teaches novel items nothing cannot show that forgotten items are
gone, so the audit's default budget was chosen with this script: on the built-in model and
the built-in text sets (the audit's known filter, 32 items a split), unlearn with each default
method at the audit's settings, then spend each candidate budget (steps × learning rate, batch
8, equal work for the control) on the forget set and on the novel control, and print forget
recovery and control gain for each.

    bash scripts/setup.sh && .venv/bin/python benchmarks/relearn_budget.py [--lrs 1e-5,3e-5,1e-4] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

import unlearn_lens as ul
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.unlearn import relearn, unlearn


def known(subject: ul.Subject, items: list[ul.Item], want: bool, limit: int) -> list[ul.Item]:
    """The first `limit` items the model answers (`want=True`) or fails (`want=False`)."""
    return [
        item for item, ok in zip(items, ul.items_correct(subject, items), strict=True) if ok == want
    ][:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", default="1e-5,3e-5,1e-4", help="relearning learning rates to try")
    parser.add_argument("--steps", type=int, default=10, help="relearning steps on the forget set")
    args = parser.parse_args()
    defaults = StudyConfig()
    subject = ul.load(defaults.model)
    sets = ul.builtin(defaults.domain)
    forget = known(subject, list(sets.forget), True, defaults.max_items)
    retain = known(subject, list(sets.retain), True, defaults.max_items)
    control = known(subject, list(sets.control), False, defaults.max_items)
    original = subject.snapshot()
    original_forget = ul.evaluate(subject, forget)
    console = Console()
    console.print(
        f"forget {len(forget)}, retain {len(retain)}, control {len(control)} items; "
        f"unlearning at lr {defaults.lr}, {defaults.steps} steps, batch {defaults.batch_size}"
    )
    table = Table(
        title=f"Relearning budgets ({args.steps} steps, batch {defaults.batch_size}, equal work on the control)"
    )
    for header in (
        "method",
        "relearn lr",
        "forget acc. o → u → r",
        "recovery",
        "control gain",
        "steps to 50 %",
        "seconds",
    ):
        table.add_column(header, justify="right")
    for method in defaults.methods:
        subject.restore(original)
        unlearn(
            subject,
            forget,
            retain,
            method,
            lr=defaults.lr,
            steps=defaults.steps,
            batch_size=defaults.batch_size,
            seed=defaults.seed,
            progress=False,
            keep_snapshots=False,
        )
        unlearned = subject.snapshot()
        for lr in (float(word) for word in args.lrs.split(",")):
            subject.restore(unlearned)
            started = time.perf_counter()
            result = relearn(
                subject,
                forget,
                control,
                steps=args.steps,
                lr=lr,
                batch_size=defaults.batch_size,
                original_forget=original_forget,
                seed=defaults.seed,
                progress=False,
            )
            rec = result.recovery["accuracy"]
            half = result.steps_to_recover()
            table.add_row(
                method,
                f"{lr:g}",
                f"{rec.original:.2f} → {rec.unlearned:.2f} → {rec.relearned:.2f}",
                f"{rec.recovery:.2f}" if rec.recovery is not None else "—",
                f"{rec.control_gain:.2f}",
                str(half) if half is not None else "not within budget",
                f"{time.perf_counter() - started:.0f}",
            )
    console.print(table)


if __name__ == "__main__":
    main()
