"""The four cadences. Every definition uses LOYALTY_START_DATE and LOYALTY_TIMEZONE.

The asset decorators need them when their modules are imported, so this module reads the settings
then; ``build_defs(settings)`` checks that the settings it is given agree (``check_partitions_match``).
"""

from __future__ import annotations

import dagster as dg

from loyalty_assets.settings import Settings, load_settings

_settings = load_settings()

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=_settings.start_date, timezone=_settings.timezone, end_offset=1
)
"""One partition per landing drop ``dt=YYYY-MM-DD``; today's drop can be ingested today."""

weekly_partitions = dg.WeeklyPartitionsDefinition(
    start_date=_settings.start_date, timezone=_settings.timezone, day_offset=1, end_offset=1
)
"""Weeks start on Monday; the current week can be scored before it ends (``run --as-of``)."""

monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=_settings.start_date, timezone=_settings.timezone, end_offset=1
)
"""Month K is fed by the latest drop dated in K, whose complete months end at K-1. The current
month exists too, so a first run can train from a single history extract (``run --as-of``)."""

quarterly_partitions = dg.TimeWindowPartitionsDefinition(
    start=_settings.start_date,
    cron_schedule="0 0 1 1,4,7,10 *",
    fmt="%Y-%m-%d",
    timezone=_settings.timezone,
    end_offset=1,
)
"""Quarters start on the 1st of January, April, July and October; the current one exists too."""


def check_partitions_match(settings: Settings) -> None:
    """ValueError when ``settings`` ask for another start date or timezone than the partitions have."""
    if (settings.start_date, settings.timezone) != (_settings.start_date, _settings.timezone):
        raise ValueError(
            f"the partitions start on {_settings.start_date} in {_settings.timezone} (LOYALTY_START_DATE and "
            f"LOYALTY_TIMEZONE when the assets were imported), not on {settings.start_date} in {settings.timezone}"
        )
