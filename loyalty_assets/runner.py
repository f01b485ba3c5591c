"""What the CLI does through Dagster: as-of runs recorded in the instance, and model promotion."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import date, timedelta

import dagster as dg

from loyalty_assets.defs.orchestration.schedules import (
    previous_month,
    previous_quarter,
    quarter_start,
)
from loyalty_assets.defs.orchestration.sensors import root_error_message
from loyalty_assets.domain.drop_commits import accepted_drop_dates
from loyalty_assets.domain.storage import ObjectStore
from loyalty_assets.settings import Settings, load_settings


class RunFailed(Exception):
    """A Dagster run of the as-of plan did not succeed; the message says which step and why."""


def store_for_uri(uri: str) -> ObjectStore:
    """A folder, or an ``s3://`` prefix through dagster-aws ``S3Resource`` (honours ``AWS_ENDPOINT_URL``)."""
    from dagster_aws.s3 import S3Resource

    from loyalty_assets.defs.storage import store_at

    return store_at(uri, S3Resource())


def _instance(settings: Settings) -> dg.DagsterInstance:
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # Local default: SQLite storage in this folder; deploy/dagster.yaml is the production one.
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def failure_summary(result: dg.ExecuteInProcessResult) -> str:
    """The failed steps and failed checks of a run, one per line."""
    lines = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            lines.append(f"{event.step_key}: {root_error_message(error) if error else 'failed'}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                lines.append(
                    f"check {evaluation.asset_key.to_user_string()}.{evaluation.check_name} failed: "
                    f"{evaluation.description or ''}"
                )
    return "\n".join(lines) or "the run failed"


# The terminal shows warnings and errors; every event is still in the instance (make dev shows them).
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def execute_job(
    defs: dg.Definitions, instance: dg.DagsterInstance, job_name: str, partition_key: str, run_config: dict | None = None
) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        partition_key=partition_key,
        run_config={**QUIET_CONSOLE, **(run_config or {})},
        raise_on_error=False,
    )
    if not result.success:
        raise RunFailed(f"{job_name} [{partition_key}] failed (run {result.run_id}):\n{failure_summary(result)}")
    return result


def as_of_plan(as_of: date, drops_to_ingest: list[date], needs_segmentation: bool) -> list[tuple[str, str]]:
    """(job, partition) in the order the as-of run executes them."""
    plan = [("daily_ingest_job", drop.isoformat()) for drop in drops_to_ingest]
    if needs_segmentation:
        plan.append(("quarterly_segmentation_job", previous_quarter(as_of).isoformat()))
    plan.append(("monthly_churn_training_job", previous_month(as_of).isoformat()))
    plan.append(("weekly_scoring_job", (as_of - timedelta(days=as_of.weekday())).isoformat()))
    return plan


def demo_drop_dates(as_of: date) -> list[date]:
    """The week of drops ending on ``as_of``, plus the last drop of the previous month and quarter,
    which the monthly training and quarterly segmentation partitions of ``run --as-of`` read."""
    month_end = as_of.replace(day=1) - timedelta(days=1)
    quarter_end = quarter_start(as_of) - timedelta(days=1)
    return sorted({month_end, quarter_end, *(as_of - timedelta(days=back) for back in range(7))})


def run_as_of(as_of: date, echo: Callable[[str], None]) -> None:
    from loyalty_assets.cli import UserError
    from loyalty_assets.definitions import build_defs

    settings = load_settings()
    defs = build_defs(settings)
    resources = defs.resources
    landing_dates = [day for day in resources["landing"].drop_dates("flight_activity") if day <= as_of]
    if as_of not in landing_dates:
        raise UserError(
            f"no drop dated {as_of} in {settings.landing_uri}: run `loyalty-assets sample-data --end {as_of}` "
            "or copy the day's files there"
        )
    lake = resources["lake"].store()
    accepted = set(accepted_drop_dates(lake))
    drops = [day for day in landing_dates if day == as_of or day not in accepted]
    needs_segmentation = not lake.exists("segmentation_model.pkl") or not lake.exists(
        f"segmentation_model_candidate/{previous_quarter(as_of).isoformat()}.pkl"
    )
    instance = _instance(settings)
    for job_name, partition_key in as_of_plan(as_of, drops, needs_segmentation):
        echo(f"running {job_name} for {partition_key}")
        execute_job(defs, instance, job_name, partition_key)
    echo(f"done: lake {settings.lake_uri}, Dagster instance {settings.dagster_home}")


def write_sample_drops(as_of: date, echo: Callable[[str], None]) -> None:
    from loyalty_assets.domain.sample_data import SampleConfig, write_drops

    settings = load_settings()
    dates = demo_drop_dates(as_of)
    write_drops(store_for_uri(settings.landing_uri), dates, SampleConfig())
    echo(f"wrote sample drops {dates[0]} .. {dates[-1]} ({len(dates)} days) to {settings.landing_uri}")


def print_summary(as_of: date, echo: Callable[[str], None]) -> None:
    from loyalty_assets.defs.monitoring.assets import report_key
    from loyalty_assets.defs.scoring.exports import predictions_export_key
    from loyalty_assets.domain.scoring import tier_segment_counts
    from loyalty_assets.domain.storage import parquet_bytes_to_dataframe

    settings = load_settings()
    lake = store_for_uri(settings.lake_uri)
    week = (as_of - timedelta(days=as_of.weekday())).isoformat()
    predictions = parquet_bytes_to_dataframe(lake.get_bytes(f"churn_predictions/{week}.parquet"))
    echo(f"\nweek {week}: {len(predictions)} members scored (rows: risk tier, columns: segment)")
    echo(tier_segment_counts(predictions).to_string())
    echo("\noutputs:")
    echo(f"  predictions CSV   {lake.url(predictions_export_key(week, 'csv'))}")
    echo(f"  lake              {settings.lake_uri}")
    echo(f"  warehouse DuckDB  {settings.warehouse_path} (analytics.redshift_churn_predictions)")
    echo(f"  dashboard DuckDB  {settings.home / 'dashboard.duckdb'}")
    echo(f"  CRM export        {settings.home / 'appflow'}")
    echo(f"  marketing e-mail  {settings.outbox_uri}/marketing_{week}.eml")
    echo(f"  monitoring report {lake.url(report_key(week))}")
    echo(f"  Dagster instance  {settings.dagster_home}  (make dev, then http://127.0.0.1:3000)")


def demo(as_of: date, echo: Callable[[str], None]) -> None:
    """Sample data if the landing zone is empty, the whole graph as of ``as_of``, then a summary."""
    from loyalty_assets.environment import resources_for

    if not resources_for(load_settings())["landing"].drop_dates("flight_activity"):
        write_sample_drops(as_of, echo)
    run_as_of(as_of, echo)
    print_summary(as_of, echo)


CHAMPION_ASSETS = {"churn": "churn_model", "segmentation": "segmentation_model"}


def promote_model_version(kind: str, version: str, *, reason: str | None, force: bool, echo) -> None:
    """Materialize the champion asset with a registered version, recorded in the Dagster instance."""
    from loyalty_assets.definitions import build_defs
    from loyalty_assets.domain import registry

    settings = load_settings()
    defs = build_defs(settings)
    resources = defs.resources
    reason = reason or "manual promotion"
    registry.check_promotable(resources["lake"].store(), kind, version, force=force, reason=reason)
    asset_name = CHAMPION_ASSETS[kind]
    result = dg.materialize(
        list(defs.assets),
        selection=[asset_name],
        instance=_instance(settings),
        resources=resources,
        run_config={
            **QUIET_CONSOLE,
            "ops": {asset_name: {"config": {"version": version, "reason": reason, "force": force}}},
        },
        raise_on_error=False,
    )
    if not result.success:
        raise RunFailed(f"promoting {kind} {version} failed (run {result.run_id}):\n{failure_summary(result)}")
    echo(f"{kind} champion is now {version} ({reason})")


def list_model_versions(kind: str, echo) -> None:
    from loyalty_assets.domain import registry
    from loyalty_assets.environment import resources_for

    store = resources_for(load_settings())["lake"].store()
    champion = (registry.history(store, kind) or [{"version": None}])[-1]["version"]
    for entry in registry.versions(store, kind):
        marker = "*" if entry["version"] == champion else " "
        metrics = entry.get("metrics", {})
        score = metrics.get("roc_auc", metrics.get("silhouette"))
        echo(
            f"{marker} {entry['version']}  partition {entry['source_partition']}  gates passed: "
            f"{entry['gates_passed']}  {'roc_auc' if 'roc_auc' in metrics else 'silhouette'} "
            f"{score if score is None else round(score, 4)}"
        )
