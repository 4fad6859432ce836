"""What an audit computed, as plain dataclasses that round-trip through one versioned JSON file."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

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
from unlearn_lens.metrics.token import TokenMetrics
from unlearn_lens.regimes import RegimeVerdict
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.study.given import GivenCheckpoint
from unlearn_lens.unlearn.api import UnlearnResult
from unlearn_lens.unlearn.relearn import RelearnResult

SCHEMA = "unlearn_lens.results"
RESULTS_VERSION = 2
"""Bumped on any incompatible change of the JSON layout; readers refuse other versions."""
RESULTS_FILE = "results.json"
TOP_LEVEL_FIELDS: dict[str, tuple[type, ...]] = {
    "status": (str,),
    "config": (dict,),
    "environment": (dict,),
    "data": (dict, type(None)),
    "original": (dict,),
    "methods": (dict,),
}
"""The fields every results.json holds (after `schema` and `version`), with the JSON types allowed."""
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


def _optional(data: dict[str, Any], key: str, cls):
    value = data.get(key)
    return None if value is None else cls.from_dict(value)


@dataclass
class DataSummary:
    """The items an audit used (after the known filter), and how many each split started with."""

    source: str
    items: dict[str, list[Item]]
    given: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "given": dict(self.given),
            "kept": {split: len(items) for split, items in self.items.items()},
            "items": {
                split: [item.to_dict() for item in items] for split, items in self.items.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSummary:
        items = {split: [Item(**item) for item in rows] for split, rows in data["items"].items()}
        return cls(source=data["source"], items=items, given=dict(data["given"]))


@dataclass
class MethodResults:
    """Every stage of one unlearning method, or of a checkpoint unlearned elsewhere; a stage that
    has not finished is None (or empty).

    For a given checkpoint `method` is its name, `given` says where it is and how it was made,
    and `unlearn` and `tracking` stay empty: the unlearning happened elsewhere.
    """

    method: str
    given: GivenCheckpoint | None = None
    unlearn: UnlearnResult | None = None
    tracking: list[DeltaRecord] = field(default_factory=list)
    relearn: RelearnResult | None = None
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    deltas: DeltaReport | None = None
    directions: UpdateDirections | None = None
    reversion: ReversionSweep | None = None
    heads: HeadAttribution | None = None
    attribution: AttributedLocalization | None = None
    logit_lens: LogitLens | None = None
    localization: LocalizationSummary | None = None
    regime: RegimeVerdict | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def opt(value):
            return None if value is None else value.to_dict()

        return {
            "method": self.method,
            "given": opt(self.given),
            "unlearn": opt(self.unlearn),
            "tracking": [record.to_dict() for record in self.tracking],
            "relearn": opt(self.relearn),
            "comparisons": {
                name: comparison.to_dict() for name, comparison in self.comparisons.items()
            },
            "deltas": opt(self.deltas),
            "directions": opt(self.directions),
            "reversion": opt(self.reversion),
            "heads": opt(self.heads),
            "attribution": opt(self.attribution),
            "logit_lens": opt(self.logit_lens),
            "localization": opt(self.localization),
            "regime": opt(self.regime),
            "seconds": dict(self.seconds),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodResults:
        return cls(
            method=data["method"],
            given=_optional(data, "given", GivenCheckpoint),
            unlearn=_optional(data, "unlearn", UnlearnResult),
            tracking=[DeltaRecord.from_dict(record) for record in data.get("tracking", [])],
            relearn=_optional(data, "relearn", RelearnResult),
            comparisons={
                name: Comparison.from_dict(c) for name, c in data.get("comparisons", {}).items()
            },
            deltas=_optional(data, "deltas", DeltaReport),
            directions=_optional(data, "directions", UpdateDirections),
            reversion=_optional(data, "reversion", ReversionSweep),
            heads=_optional(data, "heads", HeadAttribution),
            attribution=_optional(data, "attribution", AttributedLocalization),
            logit_lens=_optional(data, "logit_lens", LogitLens),
            localization=_optional(data, "localization", LocalizationSummary),
            regime=_optional(data, "regime", RegimeVerdict),
            seconds=dict(data.get("seconds", {})),
        )


@dataclass
class AuditResults:
    """One audit: its settings, environment, data, the original model's metrics and each method."""

    config: StudyConfig
    environment: dict[str, Any]
    status: str = "running"
    data: DataSummary | None = None
    original: dict[str, TokenMetrics] = field(default_factory=dict)
    methods: dict[str, MethodResults] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": RESULTS_VERSION,
            "status": self.status,
            "config": self.config.to_dict(),
            "environment": self.environment,
            "data": None if self.data is None else self.data.to_dict(),
            "original": {split: metrics.to_dict() for split, metrics in self.original.items()},
            "methods": {name: result.to_dict() for name, result in self.methods.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<results>") -> AuditResults:
        """Results from the JSON `to_dict` wrote; anything else is a `ConfigError` naming `source`
        and the first field at fault."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {_json_type(data)}")
        if data.get("schema") != SCHEMA:
            raise ConfigError(
                f"{source}: not an unlearn_lens results file (schema {data.get('schema')!r})"
            )
        if data.get("version") != RESULTS_VERSION:
            raise ConfigError(
                f"{source}: results version {data.get('version')} is not {RESULTS_VERSION}; rerun the audit"
            )
        for name, kinds in TOP_LEVEL_FIELDS.items():
            if name not in data:
                raise ConfigError(f"{source}: field '{name}' is missing")
            if not isinstance(data[name], kinds):
                raise ConfigError(
                    f"{source}: field '{name}' must be {' or '.join(_json_type(k()) for k in kinds)}, "
                    f"got {_json_type(data[name])}"
                )
        with _reading(source, "data"):
            summary = _optional(data, "data", DataSummary)
        with _reading(source, "original"):
            original = {split: TokenMetrics.from_dict(m) for split, m in data["original"].items()}
        methods = {}
        for name, method in data["methods"].items():
            with _reading(source, f"methods.{name}"):
                methods[name] = MethodResults.from_dict(method)
        return cls(
            config=StudyConfig.from_dict(data["config"], f"{source}: config"),
            environment=data["environment"],
            status=data["status"],
            data=summary,
            original=original,
            methods=methods,
        )

    def save(self, directory: str | Path) -> Path:
        """Write `results.json` into `directory`, atomically."""
        return write_json_atomic(Path(directory) / RESULTS_FILE, self.to_dict())

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
        return cls.from_dict(data, str(path))


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


@contextmanager
def _reading(source: str, section: str) -> Iterator[None]:
    """Turn what a malformed section raises while it is read into one `ConfigError` naming the
    file, the section and (for a missing one) the field."""
    try:
        yield
    except KeyError as error:
        raise ConfigError(f"{source}: {section}: field {error.args[0]!r} is missing") from None
    except (TypeError, AttributeError, ValueError) as error:
        raise ConfigError(f"{source}: {section}: malformed ({error})") from None
