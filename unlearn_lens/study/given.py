"""Checkpoints unlearned elsewhere, audited like a method: where each one is, the name it goes by,
and how it was unlearned when `unlearn-lens unlearn` made it (the `run.json` beside it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearn_lens.errors import ConfigError
from unlearn_lens.models.checkpoints import checkpoint_directory, weights_digest
from unlearn_lens.models.sources import HUB_ID
from unlearn_lens.out_dir import MODEL_DIR, RUN_FILE
from unlearn_lens.schema import read
from unlearn_lens.unlearn.api import UnlearnResult


@dataclass
class GivenCheckpoint:
    """A checkpoint unlearned elsewhere.

    `source` is what was given (a directory or a hub id) and `directory` where its files were
    read. When `unlearn-lens unlearn` made it (`source` is its `OUT/model`, or `OUT` itself),
    `run_file` is the `run.json` it wrote beside the model, `unlearning` the run recorded there
    (method, settings, history) and `unlearned_from` the model it started from; otherwise all
    three are None and how it was unlearned is unknown. `weights_sha256` fingerprints the weights
    read, so that resuming a run refuses a checkpoint that changed in between.
    """

    source: str
    directory: str
    weights_sha256: str | None = None
    run_file: str | None = None
    unlearning: UnlearnResult | None = None
    unlearned_from: str | None = None

    def describe(self) -> str:
        """One line for the reports: where the checkpoint is, and how it was made as far as known."""
        where = (
            self.source
            if self.directory == self.source
            else f"{self.source} (read from {self.directory})"
        )
        if self.unlearning is None:
            return (
                f"given checkpoint {where}; no run.json of unlearn-lens unlearn beside it, "
                "so how it was unlearned is unknown"
            )
        config = self.unlearning.config
        return (
            f"given checkpoint {where}; its {self.run_file}: {self.unlearning.method} at lr {config.lr:g}, "
            f"{self.unlearning.run.steps_run} steps in {config.requests} request(s), from {self.unlearned_from}"
        )


def checkpoint_name(source: str) -> str:
    """The name a checkpoint goes by when none is given: its directory's name, or the run
    directory's for `OUT/model` (where `unlearn-lens unlearn` saves); a hub id's repository name."""
    path = Path(source)
    if path.is_dir() or not HUB_ID.match(source):
        resolved = path.resolve()
        return resolved.parent.name if resolved.name == MODEL_DIR else resolved.name
    return source.rsplit("/", 1)[-1]


def locate(source: str) -> GivenCheckpoint:
    """Find a given checkpoint's files (a directory, the `--out` of `unlearn-lens unlearn`, a
    built-in name or a hub id) and read the `run.json` that `unlearn-lens unlearn` wrote beside it."""
    directory = checkpoint_directory(source)
    digest = weights_digest(directory)
    run_file = directory.parent / RUN_FILE
    if not Path(source).is_dir() or directory.name != MODEL_DIR or not run_file.is_file():
        return GivenCheckpoint(source, str(directory), digest)
    record = _read_record(run_file)
    if record.get("command") != "unlearn":
        return GivenCheckpoint(source, str(directory), digest)
    try:
        unlearning = read(UnlearnResult, record.get("result"), f"{run_file}: result")
    except ConfigError as error:
        raise ConfigError(
            f"{error}; not a run record of unlearn-lens unlearn: move it away to audit the "
            "checkpoint without it"
        ) from None
    return GivenCheckpoint(
        source, str(directory), digest, str(run_file), unlearning, record.get("model")
    )


def _read_record(run_file: Path) -> dict[str, Any]:
    """A run.json as a JSON object, or a one-line error naming it."""
    try:
        record = json.loads(run_file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise ConfigError(
            f"{run_file}: cannot be read as JSON ({error}); move it away to audit the checkpoint without it"
        ) from None
    if not isinstance(record, dict):
        raise ConfigError(
            f"{run_file}: not a run record (a JSON object); move it away to audit the checkpoint without it"
        )
    return record
