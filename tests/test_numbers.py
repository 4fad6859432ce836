"""The shared number helpers of the reports."""

import math
import statistics

from unlearn_lens.numbers import MISSING, finite_mean, number, percent


def test_finite_mean_skips_missing_values_and_is_nan_when_none_is_left():
    assert finite_mean([1.0, None, math.nan, 2.0, math.inf, 6.0]) == statistics.mean(
        [1.0, 2.0, 6.0]
    )
    assert math.isnan(finite_mean([None, math.nan]))
    assert math.isnan(finite_mean([]))


def test_numbers_and_percentages_print_missing_values_as_a_dash():
    assert (
        number(0.12345) == "0.123"
        and number(2.5, 0) == "2"
        and number(None) == MISSING
        and number(math.nan, 2) == MISSING
    )
    assert (
        percent(0.237) == "24 %"
        and percent(1.0) == "100 %"
        and percent(None) == MISSING
        and percent(math.nan) == MISSING
    )
