"""Pure metric functions on activation, gradient and logit tensors (float64 inside)."""

from unlearn_lens.metrics.cka import MIN_DEBIASED_SAMPLES, CKAResult, cka_both, linear_cka
from unlearn_lens.metrics.fisher import (
    QUANTILE_LEVELS,
    FisherComparison,
    FisherProfile,
    FisherSummary,
    compare_fisher,
    per_example_linear_grad_sq,
    shared_value_range,
    summarise_fisher,
)
from unlearn_lens.metrics.pca import (
    PCAShift,
    mean_pca_distance,
    pc1_similarity,
    pca_distance,
    pca_shift,
    principal_angle_cosines,
    subspace_similarity,
)
from unlearn_lens.metrics.token import (
    ItemOutcomes,
    TokenMetrics,
    TokenMetricsAccumulator,
    per_sequence_correct,
    sequence_logprob,
    target_loss,
    token_metrics,
    token_nll,
)

__all__ = [
    "MIN_DEBIASED_SAMPLES",
    "QUANTILE_LEVELS",
    "CKAResult",
    "FisherComparison",
    "FisherProfile",
    "FisherSummary",
    "ItemOutcomes",
    "PCAShift",
    "TokenMetrics",
    "TokenMetricsAccumulator",
    "cka_both",
    "compare_fisher",
    "linear_cka",
    "mean_pca_distance",
    "pc1_similarity",
    "pca_distance",
    "pca_shift",
    "per_example_linear_grad_sq",
    "per_sequence_correct",
    "principal_angle_cosines",
    "sequence_logprob",
    "shared_value_range",
    "subspace_similarity",
    "summarise_fisher",
    "target_loss",
    "token_metrics",
    "token_nll",
]
