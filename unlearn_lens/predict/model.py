"""A ridge-regression predictor of relearning recovery from cheap features, and its honest validation.

Inputs are standardised with the training cells' mean and standard deviation (a missing value,
NaN, becomes the training mean) and clipped to ±`Z_CLIP` standard deviations, then fitted by
ridge regression in float64; predictions are clipped to the range of recovery seen in training.
Validation holds out whole groups of cells (a domain, or every cell of one setting) and scores
predictions only on cells the fit never saw, beside the base rate a constant answer would score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, Field

from unlearn_lens.atomic import write_json_atomic
from unlearn_lens.errors import ConfigError
from unlearn_lens.localize.summary import spearman
from unlearn_lens.schema import InMemory, Real, dump, read

RIDGE_ALPHA = 1.0
"""Ridge penalty on standardised features: a hundred cells and six correlated features need
some shrinkage; fixed in advance rather than tuned on the cells that validate it."""

Z_CLIP = 3.0
"""Standardised inputs are clipped here: a linear fit must not extrapolate far beyond its cells."""

REVERSIBLE_RECOVERY = 0.5
"""Recovery at which a run is called reversible (the regime threshold, `RegimeThresholds.recovery`)."""

Values = Sequence[float] | np.ndarray
"""One number per cell, as a list or an array (converted to float64 inside)."""

Matrix = Sequence[Sequence[float]] | np.ndarray
"""Rows of feature values (rows: cells, columns: features), as nested lists or an array."""

BUILTIN_PREDICTOR = "reversibility.json"
"""The predictor fitted by `benchmarks/validation.py` on the validation grid, shipped with the package."""

CELL_FORMAT = 4
"""Version of what a validation cell measures, kept in a predictor's `trained_on`: bumped whenever
a definition changes, so that a predictor fitted on older cells says so when it is used.
4: each cell is an audit of one method (matched control sets, content-token scores)."""


def _range(bounds: Sequence[float | None]) -> tuple[float, float]:
    """A target range from JSON, where an unbounded side was written as null."""
    low, high = bounds
    return (-math.inf if low is None else float(low), math.inf if high is None else float(high))


@dataclass(frozen=True)
class ReversibilityPredictor:
    """Predicted recovery = intercept + Σ coef · clip((input − mean) / scale), clipped to `target_range`.

    `validation` holds the held-out numbers measured when it was made (see
    [`validate`][unlearn_lens.predict.model.validate]); `trained_on` says on what.
    """

    features: tuple[str, ...]
    mean: tuple[Real, ...]
    scale: tuple[Real, ...]
    coef: tuple[Real, ...]
    intercept: Real
    alpha: Real
    target_range: Annotated[tuple[float, float], BeforeValidator(_range)] = (-math.inf, math.inf)
    validation: dict[str, Any] = field(default_factory=dict)
    trained_on: dict[str, Any] = field(default_factory=dict)

    def staleness(self) -> str | None:
        """Why this predictor's cells differ from what this version measures, or None."""
        fitted = self.trained_on.get("cell_format")
        if fitted == CELL_FORMAT:
            return None
        which = "an unknown format" if fitted is None else f"format {fitted}"
        return (
            f"fitted on validation cells of {which}, this version measures format "
            f"{CELL_FORMAT}: re-run benchmarks/validation.py to refit it"
        )

    def standardise(self, X: Matrix) -> np.ndarray:
        """Standardised inputs clipped to ±`Z_CLIP`; NaN becomes 0 (the training mean)."""
        Z = (np.asarray(X, dtype=np.float64) - np.array(self.mean)) / np.array(self.scale)
        return np.clip(np.nan_to_num(Z, nan=0.0), -Z_CLIP, Z_CLIP)

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """Predicted recovery for each row of `X` (columns in `features` order)."""
        return np.clip(
            self.intercept + self.standardise(np.atleast_2d(X)) @ np.array(self.coef),
            *self.target_range,
        )

    def predict(self, values: Mapping[str, float]) -> float:
        """Predicted recovery from a mapping of feature name → value."""
        missing = [name for name in self.features if name not in values]
        if missing:
            raise ConfigError(f"the predictor needs the features {', '.join(missing)}")
        return float(self.predict_matrix(np.array([[values[name] for name in self.features]]))[0])

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, dump(self))

    @classmethod
    def load(cls, path: str | Path) -> ReversibilityPredictor:
        """Read a predictor file; a missing or malformed file is a one-line `ConfigError`."""
        path = Path(path)
        try:
            return read(cls, json.loads(path.read_text()), f"{path}: not a reversibility predictor")
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such predictor file") from None
        except ConfigError:
            raise
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ConfigError(
                f"{path}: not a reversibility predictor ({type(error).__name__}: {error})"
            ) from None


def fit_predictor(
    X: Matrix, y: Values, features: Sequence[str], alpha: float = RIDGE_ALPHA
) -> ReversibilityPredictor:
    """Ridge regression of `y` on the standardised, clipped columns of `X` (rows: cells)."""
    X = np.asarray(X, dtype=np.float64)
    targets = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != len(targets) or X.shape[1] != len(features):
        raise ValueError(
            f"X must be [cells, {len(features)} features] with one target per cell, got {X.shape} and {len(targets)}"
        )
    if len(targets) < 2:
        raise ValueError("fitting needs at least two cells")
    mean = np.nanmean(X, axis=0)
    scale = np.nanstd(X, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.where(
        np.isfinite(scale) & (scale > 0), scale, 1.0
    )  # a constant feature contributes nothing
    Z = np.clip(np.nan_to_num((X - mean) / scale, nan=0.0), -Z_CLIP, Z_CLIP)
    intercept = float(targets.mean())
    coef = np.linalg.solve(Z.T @ Z + alpha * np.eye(Z.shape[1]), Z.T @ (targets - intercept))
    return ReversibilityPredictor(
        features=tuple(features),
        mean=tuple(map(float, mean)),
        scale=tuple(map(float, scale)),
        coef=tuple(map(float, coef)),
        intercept=intercept,
        alpha=alpha,
        target_range=(float(targets.min()), float(targets.max())),
    )


def majority_share(y: Values) -> float:
    """Share of the cells whose reversible call (recovery ≥ `REVERSIBLE_RECOVERY`) is the more
    common one: what always answering that call scores."""
    reversible = float(np.mean(np.asarray(y, dtype=np.float64) >= REVERSIBLE_RECOVERY))
    return max(reversible, 1.0 - reversible)


@dataclass(frozen=True)
class HeldOut:
    """Predictions for every cell from a fit that did not see the cell's group.

    `base_rate` is what the reversible call scores without a predictor, always answering the
    more common call ([`majority_share`][unlearn_lens.predict.model.majority_share]): the number
    `reversible_calls_correct` must beat.
    """

    scheme: str
    predictions: InMemory[np.ndarray]
    spearman: Real
    per_group: Annotated[dict[str, Real], Field(serialization_alias="per_group_spearman")]
    mean_abs_error: Real
    reversible_calls_correct: Real
    base_rate: Real


def validate(
    X: Matrix,
    y: Values,
    groups: Sequence[str] | np.ndarray,
    features: Sequence[str],
    scheme: str,
    alpha: float = RIDGE_ALPHA,
) -> HeldOut:
    """Leave-one-group-out: fit on every other group, predict the held-out one.

    Reports the Spearman correlation of the pooled held-out predictions with `y`, the same per
    group, the mean absolute error, how often the reversible call (recovery ≥ 0.5) is right, and
    the base rate of that call. Cells of one group are never split between fit and prediction:
    give near-identical cells one group.
    """
    X, targets, group_of = (
        np.asarray(X, dtype=np.float64),
        np.asarray(y, dtype=np.float64),
        np.asarray(groups),
    )
    predictions = np.full(len(targets), np.nan)
    per_group = {}
    for group in dict.fromkeys(group_of.tolist()):
        held = group_of == group
        if held.all():
            raise ValueError(f"leave-one-group-out needs at least two groups, got only {group!r}")
        model = fit_predictor(X[~held], targets[~held], features, alpha)
        predictions[held] = model.predict_matrix(X[held])
        per_group[str(group)] = spearman(predictions[held], targets[held])
    return HeldOut(
        scheme=scheme,
        predictions=predictions,
        spearman=spearman(predictions, targets),
        per_group=per_group,
        mean_abs_error=float(np.mean(np.abs(predictions - targets))),
        reversible_calls_correct=float(
            np.mean((predictions >= REVERSIBLE_RECOVERY) == (targets >= REVERSIBLE_RECOVERY))
        ),
        base_rate=majority_share(targets),
    )


def builtin_predictor() -> ReversibilityPredictor:
    """The predictor fitted on the validation grid of the built-in model (see docs/validation.md)."""
    resource = files("unlearn_lens.predict") / BUILTIN_PREDICTOR
    if not resource.is_file():
        raise ConfigError(
            "the built-in reversibility predictor is missing; run benchmarks/validation.py to fit it"
        )
    return read(ReversibilityPredictor, json.loads(resource.read_text()), str(resource))
