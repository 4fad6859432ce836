"""The settings of an audit: defaults, a `study.toml` file, and command-line flags on top."""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from unlearn_lens.errors import ConfigError
from unlearn_lens.models.builtin import DEFAULT_MODEL

DEFAULT_METHODS = ("ga", "npo")
"""The default audit contrasts the plainest objective with its bounded, reference-anchored variant."""
LOCALIZATIONS = ("attribution", "exact")
"""How an audit localises: weight attribution with exact depth and checks, or the full reversion sweep."""


@dataclass(frozen=True)
class StudyConfig:
    """Everything that decides what an audit computes (and so what `--resume` must match)."""

    model: str = DEFAULT_MODEL
    backend: str = "transformer_lens"
    domain: str = "text"
    forget: str | None = None
    retain: str | None = None
    control: str | None = None
    methods: tuple[str, ...] = DEFAULT_METHODS
    requests: int = 1
    lr: float = 1e-5
    steps: int = 10
    batch_size: int = 8
    relearn_steps: int = 10
    relearn_lr: float | None = None
    relearn_source: str = "forget"
    max_items: int | None = 32
    known_only: bool = True
    pooling: str = "mean"
    localization: str = "attribution"
    seed: int = 0
    device: str | None = None
    objective_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        data = asdict(self)
        data["methods"] = list(self.methods)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<settings>") -> StudyConfig:
        """Settings from a mapping; unknown or mistyped fields are named in a one-line error."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"{source}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
            values[key] = _coerce(key, value, cls.__dataclass_fields__[key].default, source)
        config = cls(**values)
        config.validate(source)
        return config

    def merged(self, overrides: dict[str, Any], source: str = "command line") -> StudyConfig:
        """These settings with `overrides` (None values ignored) on top, validated."""
        present = {k: v for k, v in overrides.items() if v is not None}
        base = self.to_dict()
        base.update(present)
        return StudyConfig.from_dict(base, source)

    def validate(self, source: str = "<settings>") -> None:
        """Range checks that need no model or data."""
        for name in ("lr", "steps", "batch_size", "relearn_steps", "requests"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{source}: {name} must be positive, got {getattr(self, name)}")
        if self.relearn_lr is not None and self.relearn_lr <= 0:
            raise ConfigError(f"{source}: relearn_lr must be positive, got {self.relearn_lr}")
        if self.max_items is not None and self.max_items < 4:
            raise ConfigError(f"{source}: max_items must be at least 4 (debiased CKA needs 4 samples), got {self.max_items}")
        if not self.methods:
            raise ConfigError(f"{source}: methods is empty; give at least one unlearning method")
        if self.pooling not in ("mean", "last"):
            raise ConfigError(f"{source}: pooling must be 'mean' or 'last', got {self.pooling!r}")
        if self.localization not in LOCALIZATIONS:
            raise ConfigError(f"{source}: localization must be one of {', '.join(LOCALIZATIONS)}, got {self.localization!r}")

    def with_values(self, **changes: Any) -> StudyConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """Check a setting's type against its default's, converting lists to tuples for `methods`."""
    if key == "methods":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: setting 'methods' must be a list of method names, got {value!r}")
        return tuple(value)
    if key == "objective_options":
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: setting 'objective_options' must be a table, got {type(value).__name__}")
        return value
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{source}: setting {key!r} must be {type(default).__name__}, got {value!r}")
    return value


def _key_line(text: str, key: str) -> int | None:
    """1-based line where a top-level `key = ...` is written (tomllib does not report it)."""
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def load_config(path: str | Path) -> StudyConfig:
    """Settings from a `study.toml` (top-level keys named like the CLI flags, with underscores).

    Errors name the file, the line and the setting, e.g. `study.toml:3: setting 'steps' must be int`.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None
    for key, value in data.items():
        line = _key_line(text, key)
        where = f"{path}:{line}" if line else str(path)
        StudyConfig.from_dict({key: value}, where)
    return StudyConfig.from_dict(data, str(path))
