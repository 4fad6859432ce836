"""Recovery attacks on an unlearned model: ways to bring "forgotten" knowledge back."""

from unlearn_lens.attacks.quantize import (
    Q4_1_BLOCK,
    SCHEMES,
    LayerRounding,
    QuantizationResult,
    RoundedMetrics,
    RoundingRecovery,
    SchemeResult,
    input_axes,
    quantization_attack,
    round_snapshot,
    round_weight,
    rounding_shares,
    rounding_step,
)

__all__ = [
    "Q4_1_BLOCK",
    "SCHEMES",
    "LayerRounding",
    "QuantizationResult",
    "RoundedMetrics",
    "RoundingRecovery",
    "SchemeResult",
    "input_axes",
    "quantization_attack",
    "round_snapshot",
    "round_weight",
    "rounding_shares",
    "rounding_step",
]
