"""Calibration: known cases built on the user's model and data, audited as any checkpoint is."""

from unlearn_lens.calibrate.cases import CASES, CaseBudget
from unlearn_lens.calibrate.checks import Check, Expectation
from unlearn_lens.calibrate.run import (
    DEFAULT_CALIBRATION,
    CalibrationResults,
    CaseResult,
    calibrate,
    default_expectations,
)

__all__ = [
    "CASES",
    "DEFAULT_CALIBRATION",
    "CalibrationResults",
    "CaseBudget",
    "CaseResult",
    "Check",
    "Expectation",
    "calibrate",
    "default_expectations",
]
