"""The battery's one verdict: reversible when any attack shows hidden knowledge beyond its null,
irreversible only when every attack with power failed, and never 'irreversible' beside a
recovery at or above the threshold."""

from __future__ import annotations

import itertools

from unlearn_lens.attacks.battery import (
    FAILED,
    HIDDEN,
    MATCHED,
    POWERLESS,
    battery_verdict,
    read_attack,
)
from unlearn_lens.regimes import RegimeThresholds

T = RegimeThresholds()


def _reading(name, recovery, null, could_work=True):
    return read_attack(name, "budget", recovery, null, could_work, T, "numbers")


def test_each_outcome_follows_its_rule():
    assert _reading("a", 0.9, 0.1).outcome == HIDDEN
    assert _reading("a", 0.9, 0.8).outcome == MATCHED, "a null as fast cannot tell"
    assert _reading("a", 0.2, 0.0).outcome == FAILED
    assert _reading("a", 0.2, 0.0, could_work=False).outcome == POWERLESS
    assert _reading("a", None, 0.0).outcome == POWERLESS
    # The margin applies at the threshold, inclusive, as the regime's does.
    assert _reading("a", T.recovery, T.recovery - T.control_margin).outcome == HIDDEN


def test_the_verdict_over_every_combination_of_readings():
    """Brute force over three attacks with recoveries around every threshold: the verdict's
    three cases, checked against their definitions."""
    levels = (None, 0.0, 0.3, T.recovery, 0.9)
    nulls = (0.0, 0.5, 0.9)
    for combo in itertools.product(itertools.product(levels, nulls, (True, False)), repeat=3):
        readings = [_reading(f"attack {i}", *spec) for i, spec in enumerate(combo)]
        verdict = battery_verdict(readings)
        high = [r for r in readings if r.recovery is not None and r.recovery >= T.recovery]
        beyond = [r for r in high if r.recovery - r.null >= T.control_margin]
        if beyond:
            assert verdict.reversible is True and verdict.decided_by == beyond[0].attack
            continue
        assert verdict.reversible is not True
        if high:
            assert verdict.reversible is None, "never irreversible beside a high recovery"
        elif any(r.could_work and r.recovery is not None for r in readings):
            assert verdict.reversible is False
        else:
            assert verdict.reversible is None, "no attack had power"


def test_the_reason_names_the_attack_and_its_numbers():
    verdict = battery_verdict(
        [_reading("quantisation q4_1", 0.83, 0.0), _reading("same-data", 0.1, 0.0)]
    )
    assert verdict.decided_by == "quantisation q4_1"
    assert (
        "quantisation q4_1 brought back 0.83" in verdict.reason and "null of 0.00" in verdict.reason
    )
