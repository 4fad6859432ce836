"""Localisation by attribution: integrated gradients for every weight, exact reversions where a
number is the verdict (the forgetting depth) or checks the attribution (its top blocks and heads).

The default localisation of an audit. Its cost is a few forward/backward passes plus
`N_VERIFIED_BLOCKS` + `N_VERIFIED_HEADS` and two (the depth guessed right) to about
log2(L + 1) + 3 (guessed wrong) exact evaluations of the forget set, instead of one evaluation
per block, last-k, component and head set of the full sweep.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from unlearn_lens.data.items import Item
from unlearn_lens.localize.attribution import WeightAttribution, attribute_weights
from unlearn_lens.localize.reversion import (
    RESTORE_FRACTION,
    DepthEvidence,
    Reverter,
    forgetting_depth,
    measure_depth,
)
from unlearn_lens.localize.summary import shallow_limit
from unlearn_lens.localize.verification import AttributionCheck, verify_attribution
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.schema import Real


@dataclass(frozen=True)
class AttributedLocalization:
    """What localisation by attribution measured: the attribution, its exact check and the exact
    depth, and the wall-clock `seconds` of each of the three (`attribution` includes the exact
    evaluations of the unlearned and original models)."""

    attribution: WeightAttribution
    check: AttributionCheck
    depth: DepthEvidence
    seconds: dict[str, Real] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        """Low agreement with exact reversion, and a completeness residual above tolerance."""
        lines = self.check.warnings()
        if not self.attribution.converged:
            lines.append(
                f"weight attribution did not converge: completeness residual {self.attribution.residual:.3f} > "
                f"{self.attribution.tolerance} after {self.attribution.points} quadrature points"
            )
        return lines


def localize_by_attribution(
    subject: Subject,
    original: Snapshot,
    unlearned: Snapshot,
    forget_set: Sequence[Item],
    retain_set: Sequence[Item] = (),
    *,
    restore_fraction: float = RESTORE_FRACTION,
    progress: bool = True,
) -> AttributedLocalization:
    """Attribute the forget and retain loss changes to every weight, find the forgetting depth by
    exact bisection, and revert the top-attributed blocks and heads exactly to check the
    attribution. The subject holds `unlearned` afterwards."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    # Exact reversions only need the forget effect: no retain items, so each costs a forget pass.
    reverter = Reverter(subject, original, forget_set, unlearned=unlearned)
    forget_losses = (reverter.unlearned.forget.nll, reverter.original.forget.nll)
    attribution = attribute_weights(
        subject,
        original,
        unlearned,
        forget_set,
        retain_set,
        known_losses={"forget": forget_losses},
        progress=progress,
    )
    seconds["attribution"] = time.perf_counter() - started
    # The attributed head + last-k curve guesses the depth; the bisection then checks it exactly.
    started = time.perf_counter()
    n_layers = subject.shape.n_layers
    guess = forgetting_depth(attribution.forget.last_k(fraction=True), restore_fraction)
    depth = measure_depth(
        reverter,
        shallow_limit(n_layers),
        restore_fraction,
        guess=n_layers if guess is None else guess,
    )
    seconds["depth"] = time.perf_counter() - started
    started = time.perf_counter()
    check = verify_attribution(attribution, reverter, progress=progress)
    seconds["verification"] = time.perf_counter() - started
    subject.restore(unlearned)
    return AttributedLocalization(
        attribution, check, depth, {stage: round(value, 2) for stage, value in seconds.items()}
    )
