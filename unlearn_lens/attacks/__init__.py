"""Recovery attacks on an unlearned model, each against its own null: ways to bring "forgotten"
knowledge back, and the one verdict the battery of them gives."""

from unlearn_lens.attacks.battery import AttackReading, BatteryVerdict, battery_verdict, read_attack
from unlearn_lens.attacks.other_data import OtherDataAttack, other_data_attack
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
from unlearn_lens.attacks.split import (
    SPLIT_MIN_ITEMS,
    SplitHalf,
    SplitResult,
    split_halves,
    split_relearn,
)

__all__ = [
    "Q4_1_BLOCK",
    "SCHEMES",
    "SPLIT_MIN_ITEMS",
    "AttackReading",
    "BatteryVerdict",
    "LayerRounding",
    "OtherDataAttack",
    "QuantizationResult",
    "RoundedMetrics",
    "RoundingRecovery",
    "SchemeResult",
    "SplitHalf",
    "SplitResult",
    "battery_verdict",
    "input_axes",
    "other_data_attack",
    "quantization_attack",
    "read_attack",
    "round_snapshot",
    "round_weight",
    "rounding_shares",
    "rounding_step",
    "split_halves",
    "split_relearn",
]
