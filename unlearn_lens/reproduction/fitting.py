"""Fit the reversibility predictor on the validation grid and validate it on held-out cells."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unlearn_lens.localize.summary import spearman
from unlearn_lens.predict.features import PREDICTOR_INPUTS, predictor_inputs
from unlearn_lens.predict.model import (
    CELL_FORMAT,
    HeldOut,
    ReversibilityPredictor,
    fit_predictor,
    validate,
)
from unlearn_lens.regimes import INCONCLUSIVE, NOT_FORGOTTEN
from unlearn_lens.reproduction.grid import CellResult, GridSettings
from unlearn_lens.schema import dump


def forgotten(results: Sequence[CellResult]) -> list[CellResult]:
    """Cells whose unlearning removed enough to classify (the regime's `min_forgotten`) and
    whose recovery is defined, inconclusive ones included: what unlearning did to the weights."""
    return [r for r in results if r.regime.label != NOT_FORGOTTEN and r.recovery is not None]


def recovery(r: CellResult) -> float:
    """The recovery of a cell `forgotten` kept (it keeps only cells whose recovery is defined)."""
    assert r.recovery is not None, f"{r.cell} has no recovery: it is not a forgotten cell"
    return r.recovery


def inconclusive(results: Sequence[CellResult]) -> list[CellResult]:
    """Forgotten cells whose recovery stayed low while the relearning budget taught the control
    less than `min_control_gain`: the attack could not have shown recovery."""
    return [r for r in forgotten(results) if r.regime.label == INCONCLUSIVE]


def classified(results: Sequence[CellResult]) -> list[CellResult]:
    """Forgotten cells with a reversibility verdict (not inconclusive): the runs whose recovery
    says whether the knowledge was still there, and the ones a user would ask the predictor about."""
    return [r for r in forgotten(results) if r.regime.reversible is not None]


def setting(r: CellResult) -> str:
    """The cell's (domain, learning rate, protocol): the group its objectives' near-twins share."""
    return f"{r.cell.domain} lr {r.cell.lr:g} {r.cell.protocol}"


def feature_matrix(results: Sequence[CellResult]) -> np.ndarray:
    """Cells × predictor inputs (`PREDICTOR_INPUTS`), float64; a missing value is NaN."""
    rows = [predictor_inputs(r.features.values) for r in results]
    return np.array([[row[name] for name in PREDICTOR_INPUTS] for row in rows], dtype=np.float64)


@dataclass(frozen=True)
class PredictorFit:
    """The predictor fitted on every usable cell, its held-out validations, and one-feature baselines
    (the Spearman correlation of each raw feature with recovery, no fitting at all).

    `by_setting` holds out every cell of one (domain, learning rate, protocol) together: ga and
    npo (and the KL variants, when run) leave near-identical cells in many settings, so holding
    out one objective at a time would test on cells whose twins the fit saw.
    """

    predictor: ReversibilityPredictor
    cells: list[CellResult]
    by_domain: HeldOut
    by_setting: HeldOut
    baselines: dict[str, float]

    @property
    def held_out(self) -> tuple[HeldOut, HeldOut]:
        """The validations, in the order the page shows them."""
        return self.by_domain, self.by_setting


def train_predictor(results: Sequence[CellResult], settings: GridSettings) -> PredictorFit:
    """Fit on the classified cells (inconclusive ones left out: their low recovery measures a
    weak attack, not lost knowledge); validate leaving one domain out, then one setting out."""
    cells = classified(results)
    if len({r.cell.domain for r in cells}) < 2:
        raise ValueError(
            "validating the predictor needs classified cells (forgotten, not inconclusive) from at least two domains"
        )
    X = feature_matrix(cells)
    y = np.array([recovery(r) for r in cells], dtype=np.float64)
    by_domain = validate(
        X, y, [r.cell.domain for r in cells], PREDICTOR_INPUTS, "leave one domain out"
    )
    by_setting = validate(
        X, y, [setting(r) for r in cells], PREDICTOR_INPUTS, "leave one setting out"
    )
    predictor = dataclasses.replace(
        fit_predictor(X, y, PREDICTOR_INPUTS),
        validation={
            "n_cells": len(cells),
            "by_domain": dump(by_domain),
            "by_setting": dump(by_setting),
        },
        trained_on={
            "model": "smollm2-135m",
            "cells": len(cells),
            "inconclusive_left_out": len(inconclusive(results)),
            "grid": dump(settings),
            "cell_format": CELL_FORMAT,
            "target": "relearning recovery of forget-set token accuracy",
        },
    )
    baselines = {name: spearman(X[:, i], y) for i, name in enumerate(PREDICTOR_INPUTS)}
    return PredictorFit(
        predictor=predictor,
        cells=cells,
        by_domain=by_domain,
        by_setting=by_setting,
        baselines=baselines,
    )
