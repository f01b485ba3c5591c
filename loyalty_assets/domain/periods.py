"""Calendar periods of the four cadences: the day a period starts, and the period before a day.

Weeks start on Monday and quarters on the 1st of January, April, July and October, as the
partitions of ``defs/partitions.py`` do; a period is named by its first day.
"""

from __future__ import annotations

from datetime import date, timedelta


def week_start(day: date) -> date:
    """The Monday of ``day``'s week: the weekly partition that holds it."""
    return day - timedelta(days=day.weekday())


def month_start(day: date) -> date:
    return day.replace(day=1)


def quarter_start(day: date) -> date:
    return day.replace(month=3 * ((day.month - 1) // 3) + 1, day=1)


def previous_day(day: date) -> date:
    return day - timedelta(days=1)


def previous_week(day: date) -> date:
    """The Monday of the week before ``day``'s week."""
    return week_start(day) - timedelta(weeks=1)


def previous_month(day: date) -> date:
    return month_start(month_start(day) - timedelta(days=1))


def previous_quarter(day: date) -> date:
    return quarter_start(quarter_start(day) - timedelta(days=1))
