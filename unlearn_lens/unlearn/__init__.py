"""Unlearning and relearning: objectives by name, one training loop, relearning attacks with a control."""

from unlearn_lens.unlearn.api import UnlearnResult, unlearn
from unlearn_lens.unlearn.known import KnownFilterReport, filter_known, split_known
from unlearn_lens.unlearn.loop import (
    DEFAULT_STEPS,
    MAX_LOSS_GROWTH,
    TrainConfig,
    TrainingStep,
    TrainResult,
    train,
)
from unlearn_lens.unlearn.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveBatch,
    ObjectiveConfig,
    ObjectiveContext,
    get_objective,
    needs_retain,
    npo_loss,
    objective,
    random_labels,
    unlearning_methods,
)
from unlearn_lens.unlearn.reference import ReferenceCache
from unlearn_lens.unlearn.relearn import (
    RECOVERY_MIN_LOSS,
    CurvePoint,
    Recovery,
    RecoveryCurve,
    RelearnResult,
    RelearnWork,
    budget_steps,
    equal_work_steps,
    relearn,
)

__all__ = [
    "DEFAULT_STEPS",
    "MAX_LOSS_GROWTH",
    "OBJECTIVES",
    "RECOVERY_MIN_LOSS",
    "CurvePoint",
    "KnownFilterReport",
    "Objective",
    "ObjectiveBatch",
    "ObjectiveConfig",
    "ObjectiveContext",
    "Recovery",
    "RecoveryCurve",
    "ReferenceCache",
    "RelearnResult",
    "RelearnWork",
    "TrainConfig",
    "TrainResult",
    "TrainingStep",
    "UnlearnResult",
    "budget_steps",
    "equal_work_steps",
    "filter_known",
    "get_objective",
    "needs_retain",
    "npo_loss",
    "objective",
    "random_labels",
    "relearn",
    "split_known",
    "train",
    "unlearn",
    "unlearning_methods",
]
