"""Rich rendering of a reversibility prediction, with the held-out validation it was judged by."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from unlearn_lens.metrics.bootstrap import BootstrapInterval
from unlearn_lens.numbers import number, percent
from unlearn_lens.predict.features import ReversibilityFeatures
from unlearn_lens.predict.model import REVERSIBLE_RECOVERY, ReversibilityPredictor


def print_prediction(
    console: Console,
    features: ReversibilityFeatures,
    predictor: ReversibilityPredictor,
    predicted: float,
) -> None:
    """The features with their contribution, the predicted recovery and call, then the validation numbers."""
    inputs = features.inputs
    table = Table(title="Reversibility without the attack: cheap features", title_justify="left")
    table.add_column("input")
    table.add_column("value", justify="right")
    table.add_column("training mean", justify="right")
    table.add_column("contribution", justify="right")
    contributions = (
        predictor.standardise([[inputs[name] for name in predictor.features]])[0] * predictor.coef
    )
    for name, mean, contribution in zip(
        predictor.features, predictor.mean, contributions, strict=True
    ):
        table.add_row(name, number(inputs[name], 4), number(mean, 4), f"{contribution:+.3f}")
    console.print(table)
    call = "reversible" if predicted >= REVERSIBLE_RECOVERY else "irreversible"
    depth = (
        f"{features.depth} of {features.n_layers}"
        if features.depth is not None
        else f"more than {features.n_layers}"
    )
    console.print(
        f"[bold]predicted relearning recovery {predicted:.2f}[/] → {call} (threshold {REVERSIBLE_RECOVERY}); "
        f"forgetting depth {depth} blocks"
    )
    validation = predictor.validation
    if validation:
        lines = []
        for held in (
            value for value in validation.values() if isinstance(value, dict) and "scheme" in value
        ):
            base = f" (base rate {percent(held['base_rate'])})" if "base_rate" in held else ""
            lines.append(
                f"{held['scheme']}: Spearman {number(held['spearman'], 2)}, mean abs. error "
                f"{number(held['mean_abs_error'], 2)}, reversible call right "
                f"{percent(held['reversible_calls_correct'])}{base}"
            )
        trained = predictor.trained_on
        console.print(
            f"validated on {validation['n_cells']} held-out cells of {trained.get('model', 'its')} grid "
            f"(docs/validation.md) — " + "; ".join(lines)
        )
        console.print(
            "[dim]fitted on one model, its item sets and one relearning budget: on another model, trust the ranking "
            "more than the value[/]"
        )


def print_forgotten(console: Console, forgotten: BootstrapInterval, n_items: int) -> None:
    """How much of the reference's token accuracy the updated model lost, with its interval: the
    prediction reads a model that forgot, and a share whose interval reaches below one half may
    not have."""
    console.print(
        f"forgotten share of token accuracy {forgotten.point:.2f} [{forgotten.low:.2f}, "
        f"{forgotten.high:.2f}] (95 % paired bootstrap, {forgotten.n_resamples} resamples of "
        f"{n_items} items)"
    )
