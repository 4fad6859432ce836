"""`unlearn-lens audit`: the whole study in one command, saved to a run directory.

With no arguments it runs on the embedded default (built-in SmolLM2-135M, the built-in text
sets, methods ga and ga_gd). Flags override a `--config study.toml`, which overrides defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from unlearn_lens.attacks.battery import BATTERY_ATTACKS
from unlearn_lens.attacks.quantize import SCHEMES
from unlearn_lens.commands.common import (
    DATA_SPEC,
    add_data_flags,
    add_length_flags,
    add_model_flags,
    add_report_flags,
)
from unlearn_lens.data.builtin_sets import BUILTIN_DOMAINS
from unlearn_lens.data.fields import DataError
from unlearn_lens.data.loaders import check_spec
from unlearn_lens.errors import ConfigError
from unlearn_lens.study.config import LOCALIZATIONS, StudyConfig, file_settings

DEFAULT_OUT = Path("runs/audit")
THRESHOLD_SETTINGS = (
    "min_forgotten",
    "recovery_threshold",
    "control_margin",
    "min_control_gain",
    "retain_drop",
    "retain_nll_rise",
    "restore_fraction",
)
"""Verdict settings that have a flag each (`--min-forgotten` …)."""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `audit` subcommand to the `unlearn-lens` parser."""
    parser = subparsers.add_parser(
        "audit",
        help="unlearn, relearn, diagnose and localise: the whole study, with reports",
        description="Run the reversibility study for each method and write results.json, figures and report.html.",
    )
    add_model_flags(parser, defaults=False)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="study.toml holding any of these settings (flags win)",
    )
    parser.add_argument(
        "--domain",
        default=None,
        help=f"built-in data sets: {', '.join(BUILTIN_DOMAINS)} (default text)",
    )
    parser.add_argument(
        "--forget", default=None, metavar="SPEC", help=f"your forget items: {DATA_SPEC}"
    )
    parser.add_argument(
        "--retain", default=None, metavar="SPEC", help="your retain items (any form --forget takes)"
    )
    parser.add_argument(
        "--control", default=None, metavar="SPEC", help="novel control items the model never knew"
    )
    add_data_flags(parser, defaults=False)
    parser.add_argument(
        "--method",
        dest="methods",
        action="append",
        default=None,
        help="unlearning method, repeatable: ga ga_gd ga_kl npo npo_gd npo_kl rlabel simnpo rmu "
        "(default ga, ga_gd; none when --unlearned is given)",
    )
    parser.add_argument(
        "--unlearned",
        action="append",
        default=None,
        metavar="[NAME=]PATH",
        help="a checkpoint unlearned elsewhere (directory, unlearn --out, or hub id) to audit against --model "
        "instead of unlearning it here; repeatable (default name: its directory, or OUT for OUT/model)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="1 = single request; k = continual, k sequential requests",
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="unlearning learning rate (default 1e-5)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="unlearning steps per request (default 10)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="items per step (default 8)")
    parser.add_argument(
        "--relearn-steps", type=int, default=None, help="relearning budget in steps (default 10)"
    )
    parser.add_argument(
        "--relearn-lr",
        type=float,
        default=None,
        help="relearning learning rate (default 3e-5: chosen so the control learns; see the regimes page)",
    )
    parser.add_argument(
        "--relearn-source",
        default=None,
        help="forget, retain, unrelated, or a data spec like --forget's (default forget)",
    )
    verdict = parser.add_argument_group(
        "verdict thresholds (printed with every verdict; see the regimes page)"
    )
    for name, meaning in (
        (
            "min-forgotten",
            "share of forget accuracy unlearning must remove to classify reversibility (default 0.5)",
        ),
        ("recovery-threshold", "recovery that counts as reversible (default 0.5)"),
        (
            "control-margin",
            "how far recovery must beat the control's gain, same scale (default 0.25)",
        ),
        (
            "min-control-gain",
            "control accuracy gain below which a low recovery is inconclusive (default 0.1)",
        ),
        ("retain-drop", "relative retain accuracy drop that is catastrophic (default 0.2)"),
        ("retain-nll-rise", "retain NLL rise in nats that is catastrophic (default ln 2)"),
        (
            "restore-fraction",
            "share of the forget effect a head + last-k reversion must restore to set the depth (default 0.8)",
        ),
    ):
        verdict.add_argument(f"--{name}", type=float, default=None, metavar="X", help=meaning)
    verdict.add_argument(
        "--verdict-metric",
        choices=("token", "exact"),
        default=None,
        help="decide verdicts on token accuracy over content answer tokens (token, default) or on "
        "greedy exact match per item (exact; the curve's peak excess is then not used)",
    )
    parser.add_argument(
        "--attack",
        dest="attacks",
        action="append",
        choices=BATTERY_ATTACKS,
        default=None,
        help="recovery attack beside same-data relearning, repeatable (default: all of "
        f"{', '.join(BATTERY_ATTACKS)}; the split needs 8 forget items)",
    )
    parser.add_argument(
        "--no-battery",
        dest="attacks",
        action="store_const",
        const=[],
        help="same-data relearning only, no other recovery attack",
    )
    parser.add_argument(
        "--quantization-scheme",
        dest="quantization_schemes",
        action="append",
        choices=SCHEMES,
        default=None,
        help="rounding of the quantisation attack, repeatable (default int8 and q4_1)",
    )
    parser.add_argument(
        "--lens-decoder",
        choices=("fixed", "own"),
        default=None,
        help="logit lens: read every model through the original's head (fixed, default) or its own",
    )
    parser.add_argument(
        "--max-items", type=int, default=None, help="items kept per split (default 32)"
    )
    add_length_flags(parser, defaults=False)
    parser.add_argument(
        "--keep-unknown",
        action="store_true",
        default=None,
        help="skip the known filter on forget/retain",
    )
    parser.add_argument(
        "--localization",
        default=None,
        choices=LOCALIZATIONS,
        help="attribution: integrated gradients over every weight, exact depth and checks (default); "
        "exact: revert every block, last-k, component and head set one by one",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="run every relearning attack (same-data, split, other-data) with N seeds, --seed "
        "to --seed + N - 1 (batch order, split draw); intervals resample seeds and items; "
        "verdicts read the first (default 1)",
    )
    parser.add_argument(
        "--low-memory",
        action="store_true",
        default=None,
        help="keep the original weights on disk too (same numbers, less memory, slower)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"run directory (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in --out"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace a finished or different run in --out"
    )
    add_report_flags(parser)
    parser.set_defaults(handler=run)
    return parser


def settings(args: argparse.Namespace) -> StudyConfig:
    """Defaults, then the config file, then the flags that were given."""
    from_file = file_settings(args.config) if args.config else {}
    base = StudyConfig.from_dict(from_file, str(args.config)) if args.config else StudyConfig()
    unlearned = given_checkpoints(args.unlearned) if args.unlearned else None
    methods = args.methods
    if unlearned is not None and methods is None and "methods" not in from_file:
        methods = []  # checkpoints given and no method named: audit only the checkpoints
    flags = {
        "model": args.model,
        "backend": args.backend,
        "device": args.device,
        "device_map": args.device_map,
        "dtype": args.dtype,
        "domain": args.domain,
        "prompt_field": args.prompt_field,
        "answer_field": args.answer_field,
        "text_field": args.text_field,
        "chat_template": args.chat_template,
        "forget": args.forget,
        "retain": args.retain,
        "control": args.control,
        "methods": methods,
        "unlearned": unlearned,
        "requests": args.requests,
        "lr": args.lr,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "relearn_steps": args.relearn_steps,
        "relearn_lr": args.relearn_lr,
        "relearn_source": args.relearn_source,
        "max_items": args.max_items,
        "max_tokens": args.max_tokens,
        "truncate": args.truncate,
        "seed": args.seed,
        "seeds": args.seeds,
        "localization": args.localization,
        "known_only": False if args.keep_unknown else None,
        "low_memory": args.low_memory,
        "lens_decoder": args.lens_decoder,
        "attacks": args.attacks,
        "quantization_schemes": args.quantization_schemes,
        "verdict_metric": args.verdict_metric,
        **{name: getattr(args, name) for name in THRESHOLD_SETTINGS},
    }
    config = base.merged(flags)
    if config.domain not in BUILTIN_DOMAINS:
        raise ConfigError(
            f"--domain {config.domain!r} is unknown; choose one of {', '.join(BUILTIN_DOMAINS)}"
        )
    from unlearn_lens.study.stages import RELEARN_SOURCES

    specs = {name: getattr(config, name) for name in ("forget", "retain", "control")}
    if config.relearn_source not in RELEARN_SOURCES:
        specs["relearn-source"] = config.relearn_source
    for name, spec in specs.items():
        try:
            if spec is not None:
                check_spec(spec)
        except DataError as error:
            raise ConfigError(f"--{name} {error}") from None
    return config


def given_checkpoints(values: list[str]) -> dict[str, str]:
    """`--unlearned [NAME=]PATH` values as names to paths; a name given twice is refused."""
    from unlearn_lens.study.given import checkpoint_name

    named: dict[str, str] = {}
    for value in values:
        name, _, source = (
            value.partition("=") if "=" in value else (checkpoint_name(value), "", value)
        )
        if name in named:
            raise ConfigError(
                f"--unlearned: two checkpoints are named {name!r} ({named[name]} and {source}); "
                "name them with --unlearned NAME=PATH"
            )
        named[name] = source
    return named


def run(args: argparse.Namespace) -> None:
    """Run (or resume) the audit, then print the report and write figures and HTML."""
    from unlearn_lens.report.render import render_run
    from unlearn_lens.report.terminal import report_console
    from unlearn_lens.study.audit import audit

    config = settings(args)
    results = audit(
        config, out=args.out, resume=args.resume, force=args.force, console=Console(stderr=True)
    )
    render_run(
        results, args.out, report_console(), layer_methods=args.layers_for, verbose=args.verbose
    )
