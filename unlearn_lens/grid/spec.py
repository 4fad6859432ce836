"""A grid file: axes over audit settings, fixed settings and the resources each cell asks for.

```toml
[fixed]                      # settings every cell shares (any key of study.toml)
model = "HuggingFaceTB/SmolLM2-135M-Instruct"
steps = 10

[axes]                       # the grid is the product of these lists, in file order
method = ["ga", "npo"]       # one method per cell (`methods = [["ga", "npo"]]` runs both in one)
lr = [1e-5, 3e-5]
data = [{ domain = "text" }, { forget = "f.jsonl", retain = "r.jsonl" }]  # a free name: tables

[resources]                  # what each cell's Ray task asks for (ignored when run locally)
num_cpus = 4
num_gpus = 1
memory = "24GiB"
```

An axis named like a setting takes that setting's values; `method` and `unlearned` take one
method or checkpoint per value; any other name takes tables of settings that change together.
Every cell is checked as a whole (`StudyConfig.from_dict`) before anything runs, and every error
names the file, the line and the key. Relative paths that exist are made absolute, so a cell
reads the same files wherever it runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from unlearn_lens.errors import ConfigError
from unlearn_lens.schema import dump
from unlearn_lens.study.config import StudyConfig

TABLES = ("axes", "fixed", "resources")
"""The tables a grid file may hold."""
SETTINGS = tuple(f.name for f in fields(StudyConfig))
"""What an axis or a fixed key may name (besides the one-per-cell aliases below)."""
SINGULAR = {"method": "methods"}
"""Axes that run one value per cell of a list setting: `method = ["ga", "npo"]`."""
PATH_SETTINGS = ("model", "forget", "retain", "control", "relearn_source")
"""Settings that may name a local file or directory (made absolute when it exists)."""
MEMORY_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
MEMORY_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
ID_LABEL_CHARS = 60
"""Longest readable part of a cell id (the hash after it keeps ids unique)."""


@dataclass(frozen=True)
class Resources:
    """What one cell's Ray task asks of the cluster: CPUs, GPUs and memory in bytes (None: no
    reservation). Running locally ignores them."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None


@dataclass(frozen=True)
class GridCell:
    """One point of the grid: its id, the axis values that chose it and its full settings."""

    id: str
    axes: dict[str, Any]
    config: StudyConfig


@dataclass(frozen=True)
class GridSpec:
    """A parsed grid file."""

    path: str
    axes: dict[str, list[Any]]
    fixed: dict[str, Any]
    resources: Resources
    cells: list[GridCell]


def load_grid(path: str | Path) -> GridSpec:
    """Read and check a grid file, expanding every cell; errors name the file, line and key."""
    path = Path(path)
    text = _read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None
    for key, value in data.items():
        where = _where(path, text, None, key)
        if key not in TABLES:
            raise ConfigError(f"{where}: unknown table {key!r}; a grid file holds {_join(TABLES)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a table ([{key}]), got {value!r}")
    fixed = data.get("fixed", {})
    for key, value in fixed.items():
        where = _where(path, text, "fixed", key)
        if key in SINGULAR:
            raise ConfigError(f"{where}: [fixed] {key}: give {SINGULAR[key]} = [...] instead")
        _check(_named_runs(key, value, fixed), f"{where}: [fixed]")
    axes = data.get("axes", {})
    settings_of: dict[str, list[dict[str, Any]]] = {}
    for key, values in axes.items():
        settings_of[key] = _axis_settings(path, text, key, values)
    _check_disjoint(path, text, fixed, settings_of)
    resources = _resources(path, text, data.get("resources", {}))
    cells = _expand(path, fixed, axes, settings_of)
    return GridSpec(str(path), axes, fixed, resources, cells)


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give the grid's .toml file")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such grid file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}); TOML files are UTF-8"
        ) from None


def _axis_settings(path: Path, text: str, key: str, values: Any) -> list[dict[str, Any]]:
    """The settings each value of an axis sets, each checked on its own."""
    where = _where(path, text, "axes", key)
    if not isinstance(values, list) or not values:
        raise ConfigError(
            f"{where}: [axes] {key} must be a non-empty list of values, got {values!r}"
        )
    settings = []
    for index, value in enumerate(values):
        source = f"{where}: [axes] {key}[{index}]"
        one: dict[str, Any]
        if key in SINGULAR:
            if not isinstance(value, str):
                raise ConfigError(f"{source}: must be a method name, got {value!r}")
            one = {SINGULAR[key]: [value]}
        elif key == "unlearned":
            one = {key: _checkpoint(value, source)}
        elif key in SETTINGS:
            one = {key: value}
        elif isinstance(value, dict) and value:
            if any(name in SINGULAR for name in value):
                raise ConfigError(f"{source}: give methods = [...] in a table, not method")
            one = dict(value)
        else:
            raise ConfigError(
                f"{source}: {key!r} is not a setting, so its values must be tables of settings "
                f'(e.g. {{ forget = "f.jsonl", retain = "r.jsonl" }}), got {value!r}; '
                f"settings: {_join(SETTINGS)}"
            )
        _check(_named_runs(None, None, one), source)
        settings.append(one)
    return settings


def _check(settings: dict[str, Any], source: str) -> None:
    """Settings checked as a study.toml's are, and every method they name known."""
    from unlearn_lens.unlearn.objectives import get_objective

    config = StudyConfig.from_dict(settings, source)
    for method in config.methods if "methods" in settings else ():
        try:
            get_objective(method)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None


def _checkpoint(value: Any, source: str) -> dict[str, str]:
    """An `unlearned` axis value: a path or hub id (named after it), or a table of name = path."""
    from unlearn_lens.study.given import checkpoint_name

    if isinstance(value, str) and value:
        return {checkpoint_name(value): value}
    if isinstance(value, dict):
        return value
    raise ConfigError(f"{source}: must be a checkpoint path, hub id or table, got {value!r}")


def _named_runs(key: str | None, value: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Settings to check: checkpoints alone audit no default methods (as in study.toml)."""
    one = dict(settings) if key is None else {key: value}
    if key in ("methods", "unlearned"):
        one = {name: settings[name] for name in ("methods", "unlearned") if name in settings}
    if "unlearned" in one and "methods" not in one:
        one["methods"] = []
    return one


def _check_disjoint(
    path: Path, text: str, fixed: dict[str, Any], settings_of: dict[str, list[dict[str, Any]]]
) -> None:
    """Each setting is fixed or varied by one axis, never both or twice."""
    owner = dict.fromkeys(fixed, "[fixed]")
    for axis, settings in settings_of.items():
        for name in sorted({name for one in settings for name in one}):
            if name in owner and owner[name] != f"[axes] {axis}":
                raise ConfigError(
                    f"{_where(path, text, 'axes', axis)}: [axes] {axis} sets {name!r}, which "
                    f"{owner[name]} sets too; set each setting in one place"
                )
            owner[name] = f"[axes] {axis}"


def _resources(path: Path, text: str, table: dict[str, Any]) -> Resources:
    """The `[resources]` table, checked."""
    known = {f.name for f in fields(Resources)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{_where(path, text, 'resources', key)}: [resources] {key}"
        if key not in known:
            raise ConfigError(f"{where}: unknown resource; known: {_join(sorted(known))}")
        if key == "memory":
            values[key] = parse_memory(value, where)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}: must be a number ≥ 0, got {value!r}")
        values[key] = float(value)
    return Resources(**values)


def parse_memory(value: Any, where: str) -> int:
    """Bytes from a number of bytes or a string like `"24GiB"` or `"500 MB"`."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = (
        re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
        if isinstance(value, str)
        else None
    )
    unit = match.group(2).upper() if match else None
    if match is None or unit not in MEMORY_UNITS or float(match.group(1)) <= 0:
        raise ConfigError(
            f'{where}: must be bytes or a size like "24GiB" or "500MB", got {value!r}'
        )
    return int(float(match.group(1)) * MEMORY_UNITS[unit])


def _expand(
    path: Path,
    fixed: dict[str, Any],
    axes: dict[str, list[Any]],
    settings_of: dict[str, list[dict[str, Any]]],
) -> list[GridCell]:
    """Every cell of the product, checked as a whole, with its id."""
    cells: list[GridCell] = []
    names = list(axes)
    for indices in itertools.product(*(range(len(axes[name])) for name in names)):
        chosen = {name: axes[name][i] for name, i in zip(names, indices, strict=True)}
        settings = dict(fixed)
        for name, i in zip(names, indices, strict=True):
            settings.update(settings_of[name][i])
        if "unlearned" in settings and "methods" not in settings:
            settings["methods"] = []
        label = " ".join(f"{key}={value_label(value)}" for key, value in chosen.items())
        config = _absolute_paths(
            StudyConfig.from_dict(settings, f"{path}: cell {label or '(the only one)'}")
        )
        cells.append(GridCell(cell_id(config, chosen), chosen, config))
    return cells


def _absolute_paths(config: StudyConfig) -> StudyConfig:
    """`config` with every relative path that exists made absolute (a worker's directory may differ)."""
    from unlearn_lens.study.audit import RELEARN_SOURCES

    changes: dict[str, Any] = {}
    for name in PATH_SETTINGS:
        value = getattr(config, name)
        if name == "relearn_source" and value in RELEARN_SOURCES:
            continue  # a named split, not a file
        if value is not None and not Path(value).is_absolute() and Path(value).exists():
            changes[name] = str(Path(value).resolve())
    unlearned = {
        name: str(Path(value).resolve()) if Path(value).exists() else value
        for name, value in config.unlearned.items()
    }
    if unlearned != config.unlearned:
        changes["unlearned"] = unlearned
    return config.with_values(**changes) if changes else config


def settings_hash(config: StudyConfig) -> str:
    """A stable digest of every setting: the cache key of a cell."""
    canonical = json.dumps(dump(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def cell_id(config: StudyConfig, axes: dict[str, Any]) -> str:
    """`lr=1e-05_method=ga-3fa9c01b2d`: the axis values, readable, then the settings' hash."""
    readable = "_".join(f"{key}={value_label(value)}" for key, value in axes.items())
    readable = re.sub(r"[^A-Za-z0-9._+=-]+", "-", readable)[:ID_LABEL_CHARS].strip("-_")
    digest = settings_hash(config)[:10]
    return f"{readable}-{digest}" if readable else digest


def value_label(value: Any) -> str:
    """An axis value in a few characters: a path by its file name, a table by its values."""
    if isinstance(value, dict):
        return "+".join(value_label(v) for v in value.values())
    if isinstance(value, list):
        return "+".join(value_label(v) for v in value)
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return Path(value).name or value
    return str(value)


def _where(path: Path, text: str, table: str | None, key: str) -> str:
    """`path:line` of `key` (in `[table]`, or at the top level), or the path alone."""
    line = _key_line(text, table, key)
    return f"{path}:{line}" if line else str(path)


def _key_line(text: str, table: str | None, key: str) -> int | None:
    """1-based line of `key = ...` inside `[table]` (or of the `[key]` header at the top level)."""
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
    assignment = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        found = header.match(line)
        if found:
            current = found.group(1)
            if table is None and current == key:
                return number
            continue
        if current == table and assignment.match(line):
            return number
    return None


def _join(names: Any) -> str:
    return ", ".join(names)
