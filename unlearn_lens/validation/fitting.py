"""Fit the reversibility predictor on the validation grid and validate it on held-out cells."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unlearn_lens.localize.summary import spearman
from unlearn_lens.predict.features import PREDICTOR_INPUTS, predictor_inputs
from unlearn_lens.predict.model import HeldOut, ReversibilityPredictor, fit_predictor, validate
from unlearn_lens.validation.grid import CellResult, GridSettings


def forgotten(results: Sequence[CellResult]) -> list[CellResult]:
    """Cells whose unlearning removed enough to classify (the regime's `min_forgotten`) and
    whose recovery is defined: the runs a user would ask the predictor about."""
    return [r for r in results if r.regime["reversible"] is not None and r.recovery is not None]


def feature_matrix(results: Sequence[CellResult]) -> np.ndarray:
    """Cells × predictor inputs (`PREDICTOR_INPUTS`), float64; a missing value is NaN."""
    rows = [predictor_inputs(r.features["values"]) for r in results]
    return np.array([[row[name] for name in PREDICTOR_INPUTS] for row in rows], dtype=np.float64)


@dataclass(frozen=True)
class PredictorFit:
    """The predictor fitted on every usable cell, its held-out validations, and one-feature baselines
    (the Spearman correlation of each raw feature with recovery, no fitting at all)."""

    predictor: ReversibilityPredictor
    cells: list[CellResult]
    by_domain: HeldOut
    by_method: HeldOut
    baselines: dict[str, float]


def train_predictor(results: Sequence[CellResult], settings: GridSettings) -> PredictorFit:
    """Fit on the forgotten cells; validate leaving one domain out, then one objective out."""
    cells = forgotten(results)
    if len({r.cell.domain for r in cells}) < 2 or len({r.cell.method for r in cells}) < 2:
        raise ValueError("validating the predictor needs forgotten cells from at least two domains and two objectives")
    X = feature_matrix(cells)
    y = np.array([r.recovery for r in cells], dtype=np.float64)
    by_domain = validate(X, y, [r.cell.domain for r in cells], PREDICTOR_INPUTS, "leave one domain out")
    by_method = validate(X, y, [r.cell.method for r in cells], PREDICTOR_INPUTS, "leave one objective out")
    predictor = dataclasses.replace(
        fit_predictor(X, y, PREDICTOR_INPUTS),
        validation={"n_cells": len(cells), "by_domain": by_domain.to_dict(), "by_method": by_method.to_dict()},
        trained_on={"model": "smollm2-135m", "cells": len(cells), "grid": settings.to_dict(),
                    "target": "relearning recovery of forget-set token accuracy"},
    )
    baselines = {name: spearman(X[:, i], y) for i, name in enumerate(PREDICTOR_INPUTS)}
    return PredictorFit(predictor=predictor, cells=cells, by_domain=by_domain, by_method=by_method, baselines=baselines)
