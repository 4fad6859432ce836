"""Other-data relearning (Łucki et al. 2024; Hu et al. 2024): fine-tune the unlearned model on
data that holds no forget fact (the retain set, or unrelated text) and measure the forget set.

The attack never sees a forget fact, so its null is zero: whatever forget accuracy comes back
was still in the weights. The novel control's gain under the *same* fine-tune is measured
beside it: it says how much the attack moved the model on facts it never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from unlearn_lens.data.items import Item
from unlearn_lens.errors import ConfigError
from unlearn_lens.evaluation import evaluate_outcomes
from unlearn_lens.metrics.token import ItemOutcomes, TokenMetrics
from unlearn_lens.models.subject import Subject
from unlearn_lens.schema import Real
from unlearn_lens.unlearn.loop import TrainConfig, train
from unlearn_lens.unlearn.relearn import RelearnWork, recovery_ratio


@dataclass(frozen=True)
class OtherDataAttack:
    """One other-data fine-tune and what it did to the forget and control sets.

    `recovery` is the share of the forget accuracy unlearning removed that came back (None when
    unlearning removed too little to measure); its null is 0. `control_gain` is the control's
    accuracy gain under the same fine-tune (shown beside the recovery, not subtracted from it).
    `outcomes` holds the per-item outcomes of the four measurements (`forget_before`,
    `forget_after`, `control_before`, `control_after`), for intervals; empty in older results.
    """

    source: str
    work: RelearnWork
    forget_before: TokenMetrics
    forget_after: TokenMetrics
    control_before: TokenMetrics
    control_after: TokenMetrics
    recovery: Real | None
    outcomes: dict[str, ItemOutcomes] = field(default_factory=dict)

    @property
    def control_gain(self) -> float:
        return self.control_after.accuracy - self.control_before.accuracy


def other_data_attack(
    subject: Subject,
    source: str,
    source_items: Sequence[Item],
    forget_items: Sequence[Item],
    control_items: Sequence[Item],
    *,
    forget_original: float,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    forget_before: ItemOutcomes | None = None,
    control_before: ItemOutcomes | None = None,
    progress: bool = False,
) -> OtherDataAttack:
    """Fine-tune `subject` (the unlearned model) on `source_items` for `steps` and measure the
    forget and control sets before and after; `subject` ends fine-tuned. `forget_before` and
    `control_before` may be passed when already measured on these weights."""
    if not source_items:
        raise ConfigError(f"the {source} set is empty: other-data relearning needs items")
    forget_before = forget_before or evaluate_outcomes(subject, forget_items)
    control_before = control_before or evaluate_outcomes(subject, control_items)
    config = TrainConfig(lr=lr, steps=steps, batch_size=batch_size, seed=seed, eval_every=0)
    run = train(
        subject,
        "finetune",
        source_items,
        config=config,
        progress=progress,
        phase=f"relearn_{source}",
        keep_snapshots=False,
    )
    if run.interrupted:
        raise KeyboardInterrupt
    outcomes = {
        "forget_before": forget_before,
        "forget_after": evaluate_outcomes(subject, forget_items),
        "control_before": control_before,
        "control_after": evaluate_outcomes(subject, control_items),
    }
    metrics = {name: table.metrics() for name, table in outcomes.items()}
    return OtherDataAttack(
        source=source,
        work=RelearnWork.of(run, len(source_items)),
        **metrics,
        recovery=recovery_ratio(
            metrics["forget_after"].accuracy, metrics["forget_before"].accuracy, forget_original
        ),
        outcomes=outcomes,
    )
