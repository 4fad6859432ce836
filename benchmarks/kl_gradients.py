"""Why ga, ga_kl, npo and npo_kl coincide on the validation grid: the KL term measured step by step.

    .venv/bin/python benchmarks/kl_gradients.py

Takes one cell of the validation grid on the built-in SmolLM2 (text domain, single request, lr
1e-5, the grid's items, steps, batch and seed) and runs it with ga and npo, then with ga_kl and
npo_kl at each `--kl-weights` value (the grid uses 1). Every step of a KL run logs the retain KL,
the forget term, the norm of each term's gradient and their ratio, on the same weights and
batches; the sweep reports the final forget and retain accuracy of each run. Writes
docs/figures/validation/kl_gradients.json, which the validation page quotes. About a minute a KL
run on 2 CPU cores, ten for the default sweep; the JSON is saved after every run, so the same
command resumes an interrupted sweep, and a longer `--kl-weights` list adds only the new runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from unlearn_lens.atomic import write_json_atomic
from unlearn_lens.models.sources import load
from unlearn_lens.numbers import number
from unlearn_lens.reproduction.claims import kl_finding
from unlearn_lens.reproduction.grid import GridSettings
from unlearn_lens.reproduction.kl_terms import (
    KL_FILE,
    KL_VARIANTS,
    KLMeasurement,
    kl_cell,
    measure_kl_terms,
)

ROOT = Path(__file__).resolve().parent.parent


def _step_table(measurement: KLMeasurement, weight: float) -> Table:
    table = Table(
        title=f"Per step, kl_weight {weight:g} (terms on the weights before the step's update)"
    )
    for column in (
        "objective",
        "step",
        "forget term",
        "KL",
        "‖∇forget‖",
        "‖∇KL‖",
        "‖∇KL‖/‖∇forget‖",
        "cos(∇forget, ∇KL)",
        "cos(∇NPO, ∇GA)",
    ):
        table.add_column(column, justify="right")
    for method in KL_VARIANTS:
        for s in measurement.run(method, weight).steps:
            table.add_row(
                method,
                str(s.step),
                f"{s.forget_loss:.4g}",
                f"{s.kl:.3g}",
                f"{s.forget_grad_norm:.4g}",
                f"{s.kl_grad_norm:.3g}",
                f"{s.ratio:.3g}",
                f"{s.forget_kl_cosine:.3f}",
                "" if s.ga_cosine is None else f"{s.ga_cosine:.6f}",
            )
    return table


def _sweep_table(measurement: KLMeasurement) -> Table:
    table = Table(title="Final accuracy by kl_weight (0: the plain objective)")
    for column in (
        "objective",
        "kl_weight",
        "forget acc",
        "retain acc",
        "forget NLL",
        "retain NLL",
        "max ‖∇KL‖/‖∇forget‖",
        "Δ forget acc vs plain",
    ):
        table.add_column(column, justify="right")
    for plain in KL_VARIANTS.values():
        run = measurement.run(plain)
        table.add_row(
            plain,
            "0",
            number(run.forget_accuracy, 3),
            number(run.retain_accuracy, 3),
            number(run.forget_nll, 3),
            number(run.retain_nll, 3),
            "",
            "",
        )
    for method, plain in KL_VARIANTS.items():
        for weight in measurement.kl_weights(method):
            run = measurement.run(method, weight)
            table.add_row(
                method,
                f"{weight:g}",
                number(run.forget_accuracy, 3),
                number(run.retain_accuracy, 3),
                number(run.forget_nll, 3),
                number(run.retain_nll, 3),
                f"{max(s.ratio for s in run.steps):.3g}",
                f"{run.forget_accuracy - measurement.run(plain).forget_accuracy:+.3f}",
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--domain", default="text", help="built-in domain of the cell (default text)"
    )
    parser.add_argument(
        "--lr", type=float, default=1e-5, help="unlearning learning rate of the cell (default 1e-5)"
    )
    parser.add_argument(
        "--kl-weights",
        default="1,10,30,100",
        help="comma-separated kl_weight values (default 1,10,30,100)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "figures" / "validation" / KL_FILE,
        help="JSON to write (and to resume from)",
    )
    args = parser.parse_args()
    console = Console(width=150)  # the tables' columns, unabridged
    settings = GridSettings()
    weights = [float(w) for w in args.kl_weights.split(",") if w]
    done = []
    if args.out.is_file():
        stored = KLMeasurement.from_dict(json.loads(args.out.read_text()))
        if stored.cell == kl_cell(settings, args.domain, args.lr):
            done = stored.runs
        else:
            console.print(
                f"[yellow]{args.out} holds another cell ({stored.cell}); starting afresh[/]"
            )
    start = time.perf_counter()

    def save(measurement: KLMeasurement) -> None:
        write_json_atomic(args.out, measurement.to_dict())
        console.print(
            f"{measurement.runs[-1].method} at kl_weight {measurement.runs[-1].kl_weight:g} done "
            f"({time.perf_counter() - start:.0f} s)"
        )

    measurement = measure_kl_terms(
        load("smollm2-135m"), settings, args.domain, args.lr, weights, done=done, on_run=save
    )
    write_json_atomic(args.out, measurement.to_dict())
    for weight in sorted({w for method in KL_VARIANTS for w in measurement.kl_weights(method)}):
        console.print(_step_table(measurement, weight))
    console.print(_sweep_table(measurement))
    console.print("\nFor the validation page:\n")
    console.print(kl_finding(measurement), markup=False, highlight=False)
    console.print(f"\nwrote {args.out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
