"""The battery's one verdict: reversible when any attack shows hidden knowledge beyond its null,
irreversible only when every attack with power failed, and never 'irreversible' beside a
recovery at or above the threshold."""

from __future__ import annotations

import io
import itertools
import math

import pytest
from data.make_results_v2 import stored_config
from memorised import memorised_subject
from rich.console import Console

from unlearn_lens.attacks.battery import (
    FAILED,
    HIDDEN,
    MATCHED,
    POWERLESS,
    battery_verdict,
    read_attack,
)
from unlearn_lens.regimes import RegimeThresholds
from unlearn_lens.report.render import REPORT_FILE, render_run
from unlearn_lens.study.audit import audit
from unlearn_lens.study.results import AuditResults

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


def test_an_audit_reads_every_attack_and_shows_the_battery(tmp_path):
    """On the tiny memorised model (4 forget items: too few for the split), the battery reads
    same-data, retain, unrelated and both quantisation schemes; the regime takes its verdict,
    the report shows the table, and the results round-trip."""
    config = stored_config(tmp_path, "attribution")
    results = audit(
        config,
        out=tmp_path / "run",
        subject=memorised_subject(),
        progress=False,
        console=Console(file=io.StringIO()),
    )
    battery = results.methods["ga"].battery
    attacks = [r.attack for r in battery.readings]
    assert attacks == [
        "same-data relearning",
        "retain relearning",
        "unrelated relearning",
        "quantisation int8",
        "quantisation q4_1",
    ]
    # Every reading carries its intervals, whose points are the reading's own token numbers.
    for reading in battery.readings:
        intervals = reading.intervals
        assert intervals is not None and intervals.metric == "token" and intervals.n_seeds == 1
        if reading.recovery is None:
            assert not math.isfinite(intervals.recovery.point)
        else:
            assert intervals.recovery.point == pytest.approx(reading.recovery)
            assert intervals.excess.point == pytest.approx(reading.excess)
        assert intervals.null.point == pytest.approx(reading.null)
    regime = results.methods["ga"].regime
    assert (
        regime.battery == battery.verdict.reason and regime.reversible == battery.verdict.reversible
    )
    assert AuditResults.load(tmp_path / "run").methods["ga"].battery == battery
    console = Console(record=True, width=300, file=io.StringIO())
    render_run(results, tmp_path / "run", console)
    assert "recovery attacks, each against its own null" in console.export_text()
    assert (
        "Recovery attacks, each against its own null"
        in (tmp_path / "run" / REPORT_FILE).read_text()
    )
