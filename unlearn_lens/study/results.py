"""What an audit computed, as plain dataclasses that round-trip through one versioned JSON file."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import computed_field

from unlearn_lens.atomic import write_json_atomic
from unlearn_lens.data.items import Item
from unlearn_lens.diagnostics.compare import Comparison
from unlearn_lens.errors import ConfigError
from unlearn_lens.localize.attributed import AttributedLocalization
from unlearn_lens.localize.deltas import DeltaReport, UpdateDirections
from unlearn_lens.localize.heads import HeadAttribution
from unlearn_lens.localize.logit_lens import LogitLens
from unlearn_lens.localize.reversion import ReversionSweep
from unlearn_lens.localize.summary import LocalizationSummary
from unlearn_lens.localize.tracking import DeltaRecord
from unlearn_lens.metrics.token import ItemOutcomes, TokenMetrics
from unlearn_lens.regimes import RegimeVerdict
from unlearn_lens.schema import Real, dump, read
from unlearn_lens.study.battery import Battery
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.study.given import GivenCheckpoint
from unlearn_lens.study.intervals import VerdictIntervals
from unlearn_lens.unlearn.api import UnlearnResult
from unlearn_lens.unlearn.relearn import RecoveryCurve, RelearnResult

SCHEMA = "unlearn_lens.results"
RESULTS_VERSION = 2
"""Bumped on any incompatible change of the JSON layout; readers refuse other versions."""
RESULTS_FILE = "results.json"
COMPARISONS = ("unlearned/forget", "unlearned/retain", "relearned/forget", "relearned/retain")
"""The diagnostics of a method: each updated model against the original, on each data set."""


def environment() -> dict[str, Any]:
    """Versions, platform and time of this run (for reproducing it)."""
    packages: dict[str, str | None] = {}
    for name in ("unlearn-lens", "torch", "transformers", "transformer-lens", "nnsight", "numpy"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": packages,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


@dataclass
class DataSummary:
    """The items an audit used (after the known filter), and how many each split started with."""

    source: str
    items: dict[str, list[Item]]
    given: dict[str, int]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kept(self) -> dict[str, int]:
        """Items kept per split."""
        return {split: len(items) for split, items in self.items.items()}


@dataclass
class MethodResults:
    """Every stage of one unlearning method, or of a checkpoint unlearned elsewhere; a stage that
    has not finished is None (or empty).

    For a given checkpoint `method` is its name, `given` says where it is and how it was made,
    and `unlearn` and `tracking` stay empty: the unlearning happened elsewhere.
    `relearn_seeds` holds the same-data relearning curves of the further seeds (`seeds` > 1;
    `relearn` is the first seed's), read by the intervals only.
    """

    method: str
    given: GivenCheckpoint | None = None
    unlearn: UnlearnResult | None = None
    tracking: list[DeltaRecord] = field(default_factory=list)
    relearn: RelearnResult | None = None
    relearn_seeds: list[RecoveryCurve] = field(default_factory=list)
    battery: Battery | None = None
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    deltas: DeltaReport | None = None
    directions: UpdateDirections | None = None
    reversion: ReversionSweep | None = None
    heads: HeadAttribution | None = None
    attribution: AttributedLocalization | None = None
    logit_lens: LogitLens | None = None
    localization: LocalizationSummary | None = None
    regime: RegimeVerdict | None = None
    intervals: VerdictIntervals | None = None
    seconds: dict[str, Real] = field(default_factory=dict)


@dataclass
class AuditResults:
    """One audit: its settings, environment, data, the original model's metrics and each method."""

    config: StudyConfig
    environment: dict[str, Any]
    status: str = "running"
    data: DataSummary | None = None
    original: dict[str, TokenMetrics] = field(default_factory=dict)
    methods: dict[str, MethodResults] = field(default_factory=dict)
    original_outcomes: dict[str, ItemOutcomes] = field(default_factory=dict)

    @computed_field(alias="schema")  # type: ignore[prop-decorator]
    @property
    def _schema(self) -> str:
        return SCHEMA

    @computed_field  # type: ignore[prop-decorator]
    @property
    def version(self) -> int:
        """The layout's version, `RESULTS_VERSION` (history in CHANGELOG.md)."""
        return RESULTS_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready results, `schema` and `version` first."""
        data = dump(self)
        return {"schema": data.pop("schema"), "version": data.pop("version"), **data}

    @classmethod
    def from_json(cls, data: Any, source: str = "<results>") -> AuditResults:
        """Results from the JSON `to_json` wrote; anything else is a `ConfigError` naming `source`
        and the path of the first field at fault."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {_json_type(data)}")
        if data.get("schema") != SCHEMA:
            raise ConfigError(
                f"{source}: not an unlearn_lens results file (schema {data.get('schema')!r})"
            )
        if data.get("version") != RESULTS_VERSION:
            raise ConfigError(
                f"{source}: results version {data.get('version')} is not {RESULTS_VERSION}; "
                "rerun the audit"
            )
        results = read(cls, data, source)
        results.config.validate(f"{source}: config")
        for name, method in results.methods.items():
            _check_lengths(method, f"{source}: methods.{name}")
        return results

    def save(self, directory: str | Path) -> Path:
        """Write `results.json` into `directory`, atomically."""
        return write_json_atomic(Path(directory) / RESULTS_FILE, self.to_json())

    @classmethod
    def load(cls, directory: str | Path) -> AuditResults:
        """Read `results.json` from a run directory (or the file itself)."""
        given = Path(directory)
        path = given if given.is_file() or given.suffix == ".json" else given / RESULTS_FILE
        if not path.exists():
            run_dir = path.parent
            missing = "no such run directory" if not run_dir.exists() else f"no {RESULTS_FILE}"
            raise ConfigError(
                f"{run_dir}: {missing}, so no results here; run `unlearn-lens audit --out {run_dir}` first"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
        except OSError as error:
            raise ConfigError(f"{path}: cannot read it ({error.strerror})") from None
        return cls.from_json(data, str(path))


def _json_type(value: Any) -> str:
    """How JSON names the type of a parsed value."""
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _check_lengths(method: MethodResults, where: str) -> None:
    """Per-layer lists hold one value per layer of the model the method's results describe (its
    localisation's `n_layers`): a file with more or fewer is refused, naming the field."""
    summary = method.localization
    if summary is None:
        return
    n = summary.n_layers
    fields: dict[str, int] = {
        f"localization.columns.{column}": len(values) for column, values in summary.columns.items()
    }
    if method.deltas is not None:
        fields["deltas.layers"] = len(method.deltas.layers)
    for name, comparison in method.comparisons.items():
        fields[f"comparisons.{name}.layers"] = len(comparison.layers) - 1  # stream 0: embeddings
    for index, record in enumerate(method.tracking):
        fields[f"tracking[{index}].layers"] = len(record.layers)
    for field_name, length in fields.items():
        if length != n:
            raise ConfigError(
                f"{where}.{field_name}: {length} per-layer values, but the model has {n} layers "
                "(localization.n_layers)"
            )
