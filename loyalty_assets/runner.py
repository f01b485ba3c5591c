"""What the CLI does through Dagster: as-of runs recorded in the instance, and model promotion."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import date, timedelta

import dagster as dg

from loyalty_assets.domain.storage import ObjectStore, open_store
from loyalty_assets.settings import Settings, load_settings


class RunFailed(Exception):
    """A Dagster run of the as-of plan did not succeed; the message says which step and why."""


def landing_store(uri: str) -> ObjectStore:
    from dagster_aws.s3 import S3Resource

    return open_store(uri, S3Resource().get_client() if uri.startswith("s3://") else None)


def _instance(settings: Settings) -> dg.DagsterInstance:
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def failure_summary(result: dg.ExecuteInProcessResult) -> str:
    """The failed steps and failed checks of a run, one per line."""
    lines = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            lines.append(f"{event.step_key}: {error.message.strip() if error else 'failed'}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                lines.append(
                    f"check {evaluation.asset_key.to_user_string()}.{evaluation.check_name} failed: "
                    f"{evaluation.description or ''}"
                )
    return "\n".join(lines) or "the run failed"


def execute_job(
    defs: dg.Definitions, instance: dg.DagsterInstance, job_name: str, partition_key: str, run_config=None
) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, partition_key=partition_key, run_config=run_config, raise_on_error=False
    )
    if not result.success:
        raise RunFailed(f"{job_name} [{partition_key}] failed (run {result.run_id}):\n{failure_summary(result)}")
    return result


def as_of_plan(as_of: date, drops_to_ingest: list[date], needs_segmentation: bool) -> list[tuple[str, str]]:
    """(job, partition) in the order the as-of run executes them."""
    previous_month = (as_of.replace(day=1) - timedelta(days=1)).replace(day=1)
    quarter_start = as_of.replace(month=3 * ((as_of.month - 1) // 3) + 1, day=1)
    previous_quarter = (quarter_start - timedelta(days=1)).replace(day=1)
    previous_quarter = previous_quarter.replace(month=3 * ((previous_quarter.month - 1) // 3) + 1)
    week = as_of - timedelta(days=as_of.weekday())
    plan = [("daily_ingest_job", drop.isoformat()) for drop in drops_to_ingest]
    if needs_segmentation:
        plan.append(("quarterly_segmentation_job", previous_quarter.isoformat()))
    plan.append(("monthly_churn_training_job", previous_month.isoformat()))
    plan.append(("weekly_scoring_job", week.isoformat()))
    return plan


def run_as_of(as_of: date, echo: Callable[[str], None]) -> None:
    from loyalty_assets.cli import UserError
    from loyalty_assets.definitions import defs
    from loyalty_assets.environment import resources_for

    settings = load_settings()
    resources = resources_for(settings)
    landing_dates = [day for day in resources["landing"].drop_dates("flight_activity") if day <= as_of]
    if as_of not in landing_dates:
        raise UserError(
            f"no drop dated {as_of} in {settings.landing_uri}: run `loyalty-assets sample-data --end {as_of}` "
            "or copy the day's files there"
        )
    lake = resources["lake"].store()
    ingested = set(lake.list_keys("raw_flight_activity"))
    drops = [day for day in landing_dates if day == as_of or f"raw_flight_activity/{day}.parquet" not in ingested]
    needs_segmentation = not lake.exists("segmentation_model.pkl")
    instance = _instance(settings)
    for job_name, partition_key in as_of_plan(as_of, drops, needs_segmentation):
        echo(f"running {job_name} for {partition_key}")
        execute_job(defs, instance, job_name, partition_key)
    echo(f"done: lake {settings.lake_uri}, Dagster instance {settings.dagster_home}")
