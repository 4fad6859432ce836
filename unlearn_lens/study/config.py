"""The settings of an audit: defaults, a `study.toml` file, and command-line flags on top."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from unlearn_lens.attacks.battery import BATTERY_ATTACKS
from unlearn_lens.attacks.quantize import SCHEMES
from unlearn_lens.data.fields import FieldMap
from unlearn_lens.errors import ConfigError
from unlearn_lens.localize.logit_lens import DECODERS
from unlearn_lens.localize.reversion import RESTORE_FRACTION
from unlearn_lens.models.builtin import DEFAULT_MODEL
from unlearn_lens.models.dtypes import DTYPES
from unlearn_lens.regimes import VERDICT_METRICS, RegimeThresholds
from unlearn_lens.schema import Real, dump

DEFAULT_METHODS = ("ga", "ga_gd")
"""The default audit contrasts plain gradient ascent with gradient difference (GA plus the retain
NLL), the same number of steps at the same learning rate. Measured on the built-in text sets with
SmolLM2 (10 steps of 8 at lr 1e-5, 32 known items): ga leaves forget/retain token accuracy
0.27/0.44 (catastrophic), ga_gd 0.37/0.82 (forgotten, retain within the 20 % drop); npo (the former
second default) steps like ga under AdamW and left the same numbers, and rmu (0.99+/1.00, nothing
forgotten at this learning rate) and simnpo (0.27/0.46, catastrophic) gave no contrast either."""
CHECKPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
"""What a given checkpoint's name may be: like a method's, it names report rows and files (snapshots, figures)."""
NAMED_RUNS = ("methods", "unlearned")
NAME_LISTS = ("methods", "attacks", "quantization_schemes")
"""Settings that hold a list of names (a single name is read as a list of one)."""
"""The settings that name what an audit studies: unlearning methods, and checkpoints unlearned elsewhere."""
LOCALIZATIONS = ("attribution", "exact")
"""How an audit localises: weight attribution with exact depth and checks, or the full reversion sweep."""

DEFAULT_RELEARN_LR = 3e-5
"""Relearning learning rate of the default audit (10 steps of 8): measured with
benchmarks/relearn_budget.py on the built-in text sets, 1e-5 teaches the novel control 0.06-0.08
token accuracy (too little for a low recovery to mean anything), 3e-5 teaches it 0.32 without
saturating it, 1e-4 teaches it 0.66 and saturates both curves."""


@dataclass(frozen=True)
class StudyConfig:
    """Everything that decides what an audit computes (and so what `--resume` must match)."""

    model: str = DEFAULT_MODEL
    backend: str = "transformer_lens"
    domain: str = "text"
    forget: str | None = None
    retain: str | None = None
    control: str | None = None
    prompt_field: str | None = None
    answer_field: str | None = None
    text_field: str | None = None
    chat_template: bool = False
    methods: tuple[str, ...] = DEFAULT_METHODS
    unlearned: dict[str, str] = field(default_factory=dict)
    requests: int = 1
    lr: Real = 1e-5
    steps: int = 10
    batch_size: int = 8
    relearn_steps: int = 10
    relearn_lr: float | None = DEFAULT_RELEARN_LR
    relearn_source: str = "forget"
    max_items: int | None = 32
    max_tokens: int | None = None
    truncate: bool = False
    known_only: bool = True
    pooling: Literal["mean", "last"] = "mean"
    localization: str = "attribution"
    seed: int = 0
    seeds: int = 1
    """Runs of every relearning attack (same-data, split, other-data), with seeds `seed`,
    `seed + 1`, …: intervals resample them with the items; verdicts read the first."""
    device: str | None = None
    device_map: str | None = None
    dtype: str = "float32"
    objective_options: dict[str, Any] = field(default_factory=dict)
    min_forgotten: Real = RegimeThresholds.min_forgotten
    recovery_threshold: Real = RegimeThresholds.recovery
    control_margin: Real = RegimeThresholds.control_margin
    min_control_gain: Real = RegimeThresholds.min_control_gain
    retain_drop: Real = RegimeThresholds.retain_drop
    retain_nll_rise: Real = RegimeThresholds.retain_nll_rise
    restore_fraction: Real = RESTORE_FRACTION
    verdict_metric: str = "token"
    lens_decoder: str = "fixed"
    attacks: tuple[str, ...] = BATTERY_ATTACKS
    quantization_schemes: tuple[str, ...] = SCHEMES
    low_memory: bool = False
    """Keep the original weights on disk too (read weight by weight; the numbers are unchanged)."""

    def thresholds(self) -> RegimeThresholds:
        """The regime thresholds these settings give (see `RegimeThresholds` for each reason)."""
        return RegimeThresholds(
            min_forgotten=self.min_forgotten,
            recovery=self.recovery_threshold,
            control_margin=self.control_margin,
            min_control_gain=self.min_control_gain,
            retain_drop=self.retain_drop,
            retain_nll_rise=self.retain_nll_rise,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<settings>") -> StudyConfig:
        """Settings from a mapping; unknown or mistyped fields are named in a one-line error."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown setting {key!r}; known: {', '.join(sorted(known))}"
                )
            values[key] = _coerce(key, value, cls.__dataclass_fields__[key].default, source)
        config = cls(**values)
        config.validate(source)
        return config

    def merged(self, overrides: dict[str, Any], source: str = "command line") -> StudyConfig:
        """These settings with `overrides` (None values ignored) on top, validated."""
        present = {k: v for k, v in overrides.items() if v is not None}
        base = dump(self)
        base.update(present)
        return StudyConfig.from_dict(base, source)

    def validate(self, source: str = "<settings>") -> None:
        """Range checks that need no model or data; non-finite numbers and unknown objective
        options are refused by name."""
        from unlearn_lens.unlearn.objectives import ObjectiveConfig

        for name in ("lr", "relearn_lr"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{source}: {name} must be a finite number, got {value}")
        for name in (
            "lr",
            "steps",
            "batch_size",
            "relearn_steps",
            "requests",
            "relearn_lr",
            "seeds",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{source}: {name} must be positive, got {value}")
        if self.max_items is not None and self.max_items < 4:
            raise ConfigError(
                f"{source}: max_items must be at least 4 (debiased CKA needs 4 samples), got {self.max_items}"
            )
        if self.max_tokens is not None and self.max_tokens < 2:
            raise ConfigError(
                f"{source}: max_tokens must be at least 2 (a target needs a token before it), got {self.max_tokens}"
            )
        try:
            ObjectiveConfig.from_options(**self.objective_options)
        except ConfigError as error:
            raise ConfigError(f"{source}: [objective_options] {error}") from None
        if not self.methods and not self.unlearned:
            raise ConfigError(
                f"{source}: methods is empty; give at least one unlearning method or unlearned checkpoint"
            )
        self._validate_names(source)
        for name in (
            "min_forgotten",
            "recovery_threshold",
            "min_control_gain",
            "retain_drop",
            "restore_fraction",
        ):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"{source}: {name} must lie in (0, 1], got {getattr(self, name)}")
        if not 0 <= self.control_margin <= 1:
            raise ConfigError(
                f"{source}: control_margin must lie in [0, 1], got {self.control_margin}"
            )
        if not self.retain_nll_rise > 0:
            raise ConfigError(
                f"{source}: retain_nll_rise must be positive (nats per token), got {self.retain_nll_rise}"
            )
        if self.verdict_metric not in VERDICT_METRICS:
            raise ConfigError(
                f"{source}: verdict_metric must be one of {', '.join(VERDICT_METRICS)}, "
                f"got {self.verdict_metric!r}"
            )
        if self.lens_decoder not in DECODERS:
            raise ConfigError(
                f"{source}: lens_decoder must be one of {', '.join(DECODERS)}, got {self.lens_decoder!r}"
            )
        unknown = [name for name in self.attacks if name not in BATTERY_ATTACKS]
        if unknown:
            raise ConfigError(
                f"{source}: unknown attack {unknown[0]!r}; known: {', '.join(BATTERY_ATTACKS)}"
            )
        unknown = [name for name in self.quantization_schemes if name not in SCHEMES]
        if unknown:
            raise ConfigError(
                f"{source}: unknown quantization scheme {unknown[0]!r}; known: {', '.join(SCHEMES)}"
            )
        if self.pooling not in ("mean", "last"):
            raise ConfigError(f"{source}: pooling must be 'mean' or 'last', got {self.pooling!r}")
        for name in ("prompt_field", "answer_field", "text_field", "device_map"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{source}: {name} must be a non-empty string, got {value!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"{source}: dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}"
            )
        if self.localization not in LOCALIZATIONS:
            raise ConfigError(
                f"{source}: localization must be one of {', '.join(LOCALIZATIONS)}, got {self.localization!r}"
            )

    def _validate_names(self, source: str) -> None:
        """Every method and given checkpoint has its own name, usable in file names."""
        repeated = sorted({method for method in self.methods if self.methods.count(method) > 1})
        if repeated:
            raise ConfigError(
                f"{source}: method {repeated[0]!r} is given twice; give each method once"
            )
        for name, checkpoint in self.unlearned.items():
            if name in self.methods:
                raise ConfigError(
                    f"{source}: {name!r} names both a method and an unlearned checkpoint ({checkpoint}); "
                    "name the checkpoint otherwise with --unlearned NAME=PATH"
                )
            if not CHECKPOINT_NAME.match(name):
                raise ConfigError(
                    f"{source}: unlearned checkpoint name {name!r} is not usable (letters, digits, '.', '_', '+' "
                    "and '-', starting with a letter or digit); name it with --unlearned NAME=PATH"
                )
            if not checkpoint:
                raise ConfigError(
                    f"{source}: unlearned checkpoint {name!r} has an empty path; give its directory or hub id"
                )

    @property
    def field_map(self) -> FieldMap:
        """Which record fields the data specs are read through."""
        return FieldMap(prompt=self.prompt_field, answer=self.answer_field, text=self.text_field)

    def with_values(self, **changes: Any) -> StudyConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """Check a setting's type against its default's, converting lists to tuples for `methods`."""
    if key in NAME_LISTS:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: setting {key!r} must be a list of names, got {value!r}")
        return tuple(value)
    if key == "unlearned":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(
                f"{source}: setting 'unlearned' must be a table of names to checkpoint paths or hub ids, got {value!r}"
            )
        return dict(value)
    if key == "objective_options":
        if not isinstance(value, dict):
            raise ConfigError(
                f"{source}: setting 'objective_options' must be a table, got {type(value).__name__}"
            )
        return value
    if value is None:
        return value
    if default is None:  # an optional setting: check against the type it holds when set
        if key not in _OPTIONAL_TYPES:
            return value
        default = _OPTIONAL_TYPES[key]()
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
        raise ConfigError(
            f"{source}: setting {key!r} must be {type(default).__name__}, got {value!r}"
        )
    return value


_OPTIONAL_TYPES = {
    "forget": str,
    "retain": str,
    "control": str,
    "relearn_lr": float,
    "max_items": int,
    "max_tokens": int,
    "device": str,
}
"""What each setting that defaults to None holds when it is set."""


def _key_line(text: str, key: str) -> int | None:
    """1-based line where `key = ...` or a `[key]` table is written (tomllib does not report it)."""
    pattern = re.compile(rf"^\s*(\[\s*{re.escape(key)}\s*\]|{re.escape(key)}\s*=)")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def load_config(path: str | Path) -> StudyConfig:
    """Settings from a `study.toml` (top-level keys named like the CLI flags, with underscores).

    Errors name the file, the line and the setting, e.g. `study.toml:3: setting 'steps' must be int`.
    """
    return StudyConfig.from_dict(file_settings(path), str(path))


def file_settings(path: str | Path) -> dict[str, Any]:
    """The settings a `study.toml` sets, each checked (errors name the file, line and setting).

    A file naming `unlearned` checkpoints and no `methods` audits only those checkpoints: its
    `methods` is set empty here, so the default methods do not join them.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give the study.toml file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}); TOML files are UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None
    if "unlearned" in data and "methods" not in data:
        data["methods"] = []
    for key, value in data.items():
        line = _key_line(text, key)
        where = f"{path}:{line}" if line else str(path)
        if key == "objective_options" and isinstance(value, dict):
            for (
                option,
                setting,
            ) in value.items():  # each option first, so an error names its own line
                line = _key_line(text, option)
                StudyConfig.from_dict(
                    {key: {option: setting}}, f"{path}:{line}" if line else str(path)
                )
        # Methods and checkpoints are checked together: their names must differ, and one must name something.
        named = (
            {name: data[name] for name in NAMED_RUNS if name in data}
            if key in NAMED_RUNS
            else {key: value}
        )
        StudyConfig.from_dict(named, where)
    return data
