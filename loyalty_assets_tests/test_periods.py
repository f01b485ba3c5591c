"""The calendar of the cadences that schedules, the runner and the API share."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from loyalty_assets.domain.periods import (
    month_start,
    previous_day,
    previous_month,
    previous_quarter,
    previous_week,
    quarter_start,
    week_start,
)


@pytest.mark.parametrize(
    "day, week, month, quarter",
    [
        (date(2024, 1, 1), date(2024, 1, 1), date(2024, 1, 1), date(2024, 1, 1)),  # a Monday, 1st of a quarter
        (date(2024, 3, 31), date(2024, 3, 25), date(2024, 3, 1), date(2024, 1, 1)),  # a Sunday
        (date(2026, 12, 3), date(2026, 11, 30), date(2026, 12, 1), date(2026, 10, 1)),  # week straddles months
    ],
)
def test_a_day_falls_in_the_periods_that_start_on_or_before_it(day, week, month, quarter):
    assert (week_start(day), month_start(day), quarter_start(day)) == (week, month, quarter)
    assert week.weekday() == 0
    assert previous_week(day) == week - timedelta(weeks=1)
    assert previous_month(day) == month_start(month - timedelta(days=1))
    assert previous_quarter(day) == quarter_start(quarter - timedelta(days=1))
    assert previous_day(day) == day - timedelta(days=1)


def test_the_periods_before_january_are_in_the_previous_year():
    day = date(2025, 1, 15)
    assert previous_month(day) == date(2024, 12, 1)
    assert previous_quarter(day) == date(2024, 10, 1)
    assert previous_week(date(2025, 1, 1)) == date(2024, 12, 23)
