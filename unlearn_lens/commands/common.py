"""Flags shared by the subcommands that load one model."""

from __future__ import annotations

import argparse

from unlearn_lens.models import BACKENDS, DEFAULT_MODEL


def add_model_flags(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """`--model`, `--backend`, `--device`, `--device-map`. With `defaults=False` they default to
    None, so a config file's values are kept unless a flag is given."""
    parser.add_argument("--model", default=DEFAULT_MODEL if defaults else None,
                        help=f"built-in name, local directory or hub id (default {DEFAULT_MODEL})")
    add_runtime_flags(parser, defaults=defaults)


def add_runtime_flags(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """`--backend`, `--device`, `--device-map`: how a model is loaded, for commands that name their models otherwise."""
    parser.add_argument("--backend", default="transformer_lens" if defaults else None, choices=BACKENDS,
                        help="hook backend (default transformer_lens)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: where transformers puts it)")
    parser.add_argument("--device-map", default=None, help="transformers device_map for models spanning several GPUs, e.g. auto")

