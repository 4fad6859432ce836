"""Checks on an output directory before anything is written: a run never lands in a file, an
unwritable place, over the user's own files, through a dangling link, or beside another run."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from unlearn_lens.atomic import through_link
from unlearn_lens.errors import ConfigError
from unlearn_lens.run_lock import run_lock

RUN_FILE = "run.json"
"""The record a training command (`unlearn`, `relearn`) writes in its `--out`; its presence marks a finished run."""
MODEL_DIR = "model"
"""Where in a training command's `--out` the trained checkpoint goes."""


@contextmanager
def open_out(out: Path | None, say: Callable[[str], None]) -> Iterator[Path | None]:
    """Hold `out` for one run: yield the directory to write (a link's target) with its run lock
    held until the block ends; `None` passes through.

    A link is resolved and `say` gets one line naming its target (so `--force` replaces the
    target's contents and leaves the link); a dangling link, a file, or an unwritable place is
    refused before anything is written; another process writing there refuses at once (see
    `run_lock`), and a lock left by a dead one is taken over, `say` getting one line.
    """
    if out is None:
        yield None
        return
    out = resolve_link(out, say)
    check_out_location(out)
    with run_lock(out, on_takeover=say):
        yield out


def resolve_link(out: Path, say: Callable[[str], None]) -> Path:
    """`out` itself, or the directory it links to (said in one line); a link to nothing is refused."""
    if not out.is_symlink():
        return out
    if not out.exists():
        raise ConfigError(
            f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist; "
            "create its target or give another --out"
        )
    target = through_link(out)
    say(f"--out {out} is a symbolic link: writing into its target {target}")
    return target


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
