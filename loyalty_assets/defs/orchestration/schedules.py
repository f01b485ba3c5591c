"""Schedules at 02:00 in the settings' timezone, each targeting the period that just ended.

Each tick computes its partition key explicitly from the scheduled time (the quarterly cron
cannot use the partitioned-job schedule builder, so all four share this one pattern).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from zoneinfo import ZoneInfo

import dagster as dg

from loyalty_assets.defs.orchestration.jobs import (
    daily_ingest_job,
    monthly_churn_training_job,
    quarterly_segmentation_job,
    weekly_scoring_job,
)
from loyalty_assets.domain.periods import previous_day, previous_month, previous_quarter, previous_week
from loyalty_assets.settings import Settings


def _partition_schedule(
    settings: Settings,
    name: str,
    cron: str,
    job: dg.UnresolvedAssetJobDefinition,
    partition_for: Callable[[date], date],
) -> dg.ScheduleDefinition:
    status = dg.DefaultScheduleStatus.RUNNING if settings.schedules_running else dg.DefaultScheduleStatus.STOPPED
    timezone = ZoneInfo(settings.timezone)

    @dg.schedule(
        name=name,
        cron_schedule=cron,
        job=job,
        execution_timezone=settings.timezone,
        default_status=status,
        description=f"{job.name} at {cron} ({settings.timezone}) for the period that just ended.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        # The daemon passes the tick in the execution timezone; a caller may pass it in UTC.
        tick = context.scheduled_execution_time.astimezone(timezone)
        partition_key = partition_for(tick.date()).isoformat()
        return dg.RunRequest(run_key=f"{name}:{partition_key}", partition_key=partition_key)

    return _schedule


def build_schedules(settings: Settings) -> list[dg.ScheduleDefinition]:
    """The four schedules in ``settings.timezone``, RUNNING by default when ``settings.schedules_running``."""
    return [
        _partition_schedule(settings, "daily_ingest_schedule", "0 2 * * *", daily_ingest_job, previous_day),
        _partition_schedule(settings, "weekly_scoring_schedule", "0 2 * * 1", weekly_scoring_job, previous_week),
        _partition_schedule(
            settings, "monthly_churn_training_schedule", "0 2 1 * *", monthly_churn_training_job, previous_month
        ),
        _partition_schedule(
            settings,
            "quarterly_segmentation_schedule",
            "0 2 1 1,4,7,10 *",
            quarterly_segmentation_job,
            previous_quarter,
        ),
    ]

