"""Predicting how reversible an unlearning run is from what is cheap to measure after it."""

from unlearn_lens.predict.features import (
    FEATURE_NAMES,
    ReversibilityFeatures,
    measure_features,
    reversibility_features,
)
from unlearn_lens.predict.model import (
    REVERSIBLE_RECOVERY,
    HeldOut,
    ReversibilityPredictor,
    builtin_predictor,
    fit_predictor,
    validate,
)

__all__ = [
    "FEATURE_NAMES",
    "REVERSIBLE_RECOVERY",
    "HeldOut",
    "ReversibilityFeatures",
    "ReversibilityPredictor",
    "builtin_predictor",
    "fit_predictor",
    "measure_features",
    "reversibility_features",
    "validate",
]
