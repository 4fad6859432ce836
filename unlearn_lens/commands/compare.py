"""`unlearn-lens compare REFERENCE UPDATED --data FILE`: diagnostics between two checkpoints.

Prints a per-layer table and the token metrics of both models; with `--out DIR`, also writes
`comparison.json` and PNG figures there. `--predict-reversibility` adds the cheap features of the
updated (unlearned) model and the predicted relearning recovery, with the predictor's held-out
validation numbers. Everything is computed before anything is written, and
the files are written into a staging directory that replaces its target only when complete, so
a failed run leaves no output behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

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
from unlearn_lens.diagnostics.activations import POOLINGS, TOKEN_SPANS
from unlearn_lens.errors import ConfigError
from unlearn_lens.evaluation import EVAL_BATCH_SIZE
from unlearn_lens.out_dir import check_out_dir
from unlearn_lens.schema import dump

if TYPE_CHECKING:
    from unlearn_lens.data.items import Item
    from unlearn_lens.diagnostics.compare import Comparison, ModelPass
    from unlearn_lens.models.subject import Subject
    from unlearn_lens.predict.model import ReversibilityPredictor

COMPARISON_FILE = "comparison.json"
"""The results file in `--out`; its presence marks a finished comparison."""
PREDICTION_FILE = "reversibility.json"
"""The features and predicted recovery in `--out`, with `--predict-reversibility`."""

console = command_console()


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `compare` subcommand to the `unlearn-lens` parser."""
    parser = subparsers.add_parser(
        "compare",
        help="per-layer CKA, PCA and Fisher diagnostics between two checkpoints of a model",
        description="Compare a reference checkpoint with an updated one (unlearned, relearned) on the same items.",
    )
    parser.add_argument(
        "reference",
        metavar="REFERENCE",
        help="reference model: built-in name, local directory or hub id",
    )
    parser.add_argument(
        "updated", metavar="UPDATED", help="updated model: built-in name, local directory or hub id"
    )
    parser.add_argument(
        "--data", required=True, metavar="SPEC", help=f"items to compare on: {DATA_SPEC}"
    )
    add_data_flags(parser)
    parser.add_argument(
        "--pooling",
        default="mean",
        choices=POOLINGS,
        help="how a sequence becomes a sample (default mean)",
    )
    parser.add_argument(
        "--tokens",
        default="all",
        choices=TOKEN_SPANS,
        help="which real tokens are pooled (default all)",
    )
    add_runtime_flags(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=EVAL_BATCH_SIZE,
        help=f"items per forward pass (default {EVAL_BATCH_SIZE})",
    )
    add_length_flags(parser)
    parser.add_argument(
        "--no-fisher", action="store_true", help="skip the Fisher information (no backward passes)"
    )
    parser.add_argument(
        "--fisher-components",
        action="store_true",
        help="compare the Fisher information per component (q, k, v, o, MLP) too",
    )
    parser.add_argument(
        "--predict-reversibility",
        action="store_true",
        help="treat REFERENCE as the original and UPDATED as the unlearned model, --data as the "
        "forget set, and predict how much a relearning attack would bring back, without running it",
    )
    parser.add_argument(
        "--predictor",
        type=Path,
        default=None,
        metavar="FILE",
        help="a predictor fitted by benchmarks/validation.py (default: the one shipped, fitted on SmolLM2-135M)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="write comparison.json and PNG figures here",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite an existing comparison in --out"
    )
    parser.set_defaults(handler=run)
    return parser


def write_outputs(
    comparison: Comparison, out: Path, prediction: dict[str, Any] | None = None
) -> list[Path]:
    """Write `comparison.json`, the figures and (when given) `reversibility.json` into `out`,
    atomically as a whole.

    They are written into a staging directory beside `out`; a new `out` is that directory
    renamed, an existing one receives the files one by one (`comparison.json` last).
    """
    from unlearn_lens.atomic import write_json_atomic
    from unlearn_lens.report.figures import write_comparison_figures

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}-{uuid.uuid4().hex[:12]}"
    staging.mkdir()  # not tempfile.mkdtemp: the directory becomes `out`, so it gets the umask's mode, not 0700
    try:
        names = [path.name for path in write_comparison_figures(comparison, staging)]
        if prediction is not None:
            write_json_atomic(staging / PREDICTION_FILE, prediction)
            names.append(PREDICTION_FILE)
        write_json_atomic(staging / COMPARISON_FILE, dump(comparison))
        names.append(COMPARISON_FILE)
        if out.exists():
            for name in names:
                os.replace(staging / name, out / name)
            if (
                prediction is None
            ):  # a forced rerun without prediction must not leave an old one beside it
                (out / PREDICTION_FILE).unlink(missing_ok=True)
        else:
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return [out / name for name in names]


def run(args: argparse.Namespace) -> None:
    """Load the items and both models, compare them, print the tables, write the outputs."""
    from unlearn_lens.data import chat_items, load_items
    from unlearn_lens.diagnostics.compare import compare_models
    from unlearn_lens.models import load
    from unlearn_lens.report.compare_table import print_comparison

    if args.out is not None:
        check_out_dir(args.out, args.force, (COMPARISON_FILE,))
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    check_max_tokens(args)
    if args.predictor is not None and not args.predict_reversibility:
        raise ConfigError("--predictor is used only with --predict-reversibility")
    predictor = _predictor(args) if args.predict_reversibility else None
    items = load_items(args.data, field_map(args))
    options = {
        "backend": args.backend,
        "device": args.device,
        "device_map": args.device_map,
        "dtype": args.dtype,
    }
    reference = load(args.reference, **options)
    if args.chat_template:  # before the length check: the template's tokens count too
        items = chat_items(items, reference.tokenizer)
    items = _check_items(reference, items, args)
    updated = load(args.updated, **options)
    comparison, reference_pass, updated_pass = compare_models(
        reference,
        updated,
        items,
        pooling=args.pooling,
        tokens=args.tokens,
        batch_size=args.batch_size,
        fisher=not args.no_fisher,
        fisher_components=args.fisher_components,
        progress=True,
    )
    print_comparison(console, comparison)
    prediction = (
        _predict(reference, updated, items, predictor, reference_pass, updated_pass)
        if predictor is not None
        else None
    )
    if args.out is not None:
        written = write_outputs(comparison, args.out, prediction)
        console.print(f"wrote {', '.join(path.name for path in written)} to {args.out}")


def _check_items(reference: Subject, items: list[Item], args: argparse.Namespace) -> list[Item]:
    """The items, each fitting the model (truncated with `--truncate`), repeats reported; refused
    when too few distinct items are left for debiased CKA."""
    from unlearn_lens.data.checks import check_distinct
    from unlearn_lens.metrics.cka import MIN_DEBIASED_SAMPLES

    items = fit_items(reference, items, args.data, str(args.data), args, console)
    if args.pooling != "tokens":
        check_distinct(
            str(args.data),
            items,
            MIN_DEBIASED_SAMPLES,
            f"debiased CKA with --pooling {args.pooling}",
        )
    return items


def _predictor(args: argparse.Namespace) -> ReversibilityPredictor:
    """The predictor to use, read before any model loads so a bad file fails at once."""
    from unlearn_lens.predict.model import ReversibilityPredictor, builtin_predictor

    predictor = (
        builtin_predictor()
        if args.predictor is None
        else ReversibilityPredictor.load(args.predictor)
    )
    stale = predictor.staleness()
    if stale is not None:
        console.print(f"[yellow]warning:[/] the reversibility predictor was {escape(stale)}")
    return predictor


def _predict(
    reference: Subject,
    updated: Subject,
    items: list[Item],
    predictor: ReversibilityPredictor,
    reference_pass: ModelPass,
    updated_pass: ModelPass,
) -> dict[str, Any]:
    """Measure the cheap features of `updated` against `reference` on the forget items (reusing the
    comparison's passes where their settings fit), print the prediction, and return what
    `reversibility.json` holds."""
    from unlearn_lens.predict.features import measure_features
    from unlearn_lens.report.prediction_table import print_prediction

    features = measure_features(
        updated,
        reference.snapshot(),
        items,
        original_pass=reference_pass,
        unlearned_pass=updated_pass,
        progress=True,
    )
    predicted = predictor.predict(features.inputs)
    print_prediction(console, features, predictor, predicted)
    forgotten = None
    if reference_pass.outcomes is not None and updated_pass.outcomes is not None:
        from unlearn_lens.report.prediction_table import print_forgotten
        from unlearn_lens.study.intervals import forgotten_interval

        forgotten = forgotten_interval(reference_pass.outcomes, updated_pass.outcomes)
        print_forgotten(console, forgotten, len(items))
    return {
        "predicted_recovery": predicted,
        "forgotten": None if forgotten is None else dump(forgotten),
        "features": dump(features),
        "predictor": dump(predictor),
    }
