"""Diagnostics between checkpoints: pooled activations, model Fisher information, comparisons."""

from unlearn_lens.diagnostics.activations import (
    POOLINGS,
    TOKEN_SPANS,
    ActivationCollector,
    Pooling,
    TokenSpan,
    collect_activations,
    context_length,
    pool,
    token_mask,
)
from unlearn_lens.diagnostics.compare import (
    Comparison,
    FisherGroup,
    LayerComparison,
    ModelPass,
    check_compatible,
    compare,
    compare_model_fisher,
    compare_passes,
    compare_snapshots,
    model_pass,
)
from unlearn_lens.diagnostics.model_fisher import (
    LINEAR_COMPONENTS,
    FisherHooks,
    ModelFisher,
    model_fisher,
)

__all__ = [
    "LINEAR_COMPONENTS",
    "POOLINGS",
    "TOKEN_SPANS",
    "ActivationCollector",
    "Comparison",
    "FisherGroup",
    "FisherHooks",
    "LayerComparison",
    "ModelFisher",
    "ModelPass",
    "Pooling",
    "TokenSpan",
    "check_compatible",
    "collect_activations",
    "compare",
    "compare_model_fisher",
    "compare_passes",
    "compare_snapshots",
    "context_length",
    "model_fisher",
    "model_pass",
    "pool",
    "token_mask",
]
