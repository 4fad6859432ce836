"""Checks on an output directory before anything is written: a run never lands in a file, an
unwritable place, or over the user's own files."""

from __future__ import annotations

import os
from pathlib import Path

from unlearn_lens.errors import ConfigError

RUN_FILE = "run.json"
"""The record a training command (`unlearn`, `relearn`) writes in its `--out`; its presence marks a finished run."""
MODEL_DIR = "model"
"""Where in a training command's `--out` the trained checkpoint goes."""


def check_out_location(out: Path) -> None:
    """Refuse an `--out` that is a file, lies under a file, or cannot be created or written."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {existing} is not writable; choose another --out")


def foreign_entry(out: Path, markers: tuple[str, ...]) -> str | None:
    """The first entry of a non-empty `out` that holds none of `markers` (so is not a run of
    ours), or None."""
    if not out.is_dir() or any((out / name).exists() for name in markers):
        return None
    return next((entry.name for entry in sorted(out.iterdir())), None)


def check_out_dir(out: Path, force: bool, markers: tuple[str, ...]) -> None:
    """Refuse an unusable `--out`, one that already holds one of `markers` (a finished run), or a
    non-empty one holding other files, unless `force`."""
    check_out_location(out)
    held = [name for name in markers if (out / name).exists()]
    if held and not force:
        raise ConfigError(
            f"--out {out} already holds {held[0]}; pass --force to overwrite it or choose another --out"
        )
    check_not_foreign(out, force, markers)


def check_not_foreign(out: Path, force: bool, markers: tuple[str, ...]) -> None:
    """Refuse, unless `force`, a non-empty `out` that is not a run of ours: its files are the user's."""
    entry = foreign_entry(out, markers)
    if entry is not None and not force:
        raise ConfigError(
            f"--out {out} holds other files ({entry!r}) and no run of unlearn_lens; "
            "choose a new or empty directory, or pass --force to write into it"
        )
