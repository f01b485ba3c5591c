"""What the CLI does through Dagster: as-of runs and model promotion, launched in the code location.

Every run carries the repository origin of workspace.yaml's code location, so it shows on its
job's Runs tab and timeline in the UI and can be re-executed from there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from loyalty_assets.defs.automation.sensors import root_error_message
from loyalty_assets.domain import lake_keys
from loyalty_assets.domain.drop_commits import accepted_drop_dates
from loyalty_assets.domain.periods import month_start, previous_month, previous_quarter, quarter_start, week_start
from loyalty_assets.domain.storage import ObjectStore
from loyalty_assets.errors import RunFailed, UserError
from loyalty_assets.settings import Settings

# The code location as workspace.yaml and [tool.dagster] name it.
CODE_LOCATION_MODULE = "loyalty_assets.definitions"
CODE_LOCATION_NAME = "loyalty_assets"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def store_for_uri(uri: str, settings: Settings) -> ObjectStore:
    """A folder, or an ``s3://`` prefix through dagster-aws ``S3Resource`` with the network bounds of
    ``settings`` (honours ``AWS_ENDPOINT_URL``)."""
    from loyalty_assets.defs.resources.clients import bounded_s3
    from loyalty_assets.defs.resources.storage import store_at

    return store_at(uri, bounded_s3(settings.network))


def landing_drop_dates(landing, settings: Settings) -> list[date]:
    """The landing zone's drop dates; an unreachable or missing bucket is one line naming the URI."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return landing.drop_dates("flight_activity")
    except (BotoCoreError, ClientError, OSError) as error:
        raise UserError(f"cannot list the landing zone {settings.landing_uri}: {error}") from error


def instance_for(settings: Settings) -> dg.DagsterInstance:
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # Local default: SQLite storage in this folder; deploy/dagster.yaml is the production one.
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def _one_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else ""


def run_summary(result: dg.ExecuteInProcessResult | dg.JobExecutionResult) -> tuple[list[str], list[str]]:
    """(failures, warnings): one line per failed step or failed ERROR check, one per failed WARN check."""
    failures, warnings = [], []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            data = event.event_specific_data
            description = data.user_failure_data.description if data.user_failure_data else None
            message = description or (root_error_message(data.error) if data.error else "failed")
            failures.append(f"{event.step_key}: {_one_line(message)}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if evaluation.passed:
                continue
            line = f"check {evaluation.asset_key.to_user_string()}.{evaluation.check_name}"
            if evaluation.severity == dg.AssetCheckSeverity.WARN:
                warnings.append(f"warning: {line}: {_one_line(evaluation.description or '')}")
            else:
                failures.append(f"{line} failed: {_one_line(evaluation.description or '')}")
    return failures, warnings


def failure_summary(result: dg.ExecuteInProcessResult | dg.JobExecutionResult) -> str:
    """The failed steps and failed ERROR checks of a run, one per line."""
    return "\n".join(run_summary(result)[0]) or "the run failed"


# The terminal shows the Dagster log only with --verbose; every event is in the instance either way
# (and the UI shows it).
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
VERBOSE_CONSOLE = {"loggers": {"console": {"config": {"log_level": "DEBUG"}}}}


def _run_config(verbose: bool, run_config: dict | None = None) -> dict:
    """In-process execution, with the console log of ``verbose``."""
    return {
        **(run_config or {}),
        "execution": {"config": {"in_process": {}}},
        **(VERBOSE_CONSOLE if verbose else QUIET_CONSOLE),
    }


def _repository_origin():
    """The repository origin `dagster dev -w workspace.yaml` gives this code location (Dagster has
    no public API to build it outside a workspace process)."""
    from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
    from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin, RemoteRepositoryOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            executable_path=sys.executable, module_name=CODE_LOCATION_MODULE, working_directory=str(PROJECT_ROOT)
        ),
        location_name=CODE_LOCATION_NAME,
    )
    return RemoteRepositoryOrigin(code_location_origin=location, repository_name=SINGLETON_REPOSITORY_NAME)


def launch(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    job_name: str,
    *,
    partition_key: str | None = None,
    asset_selection: set[dg.AssetKey] | None = None,
    run_config: dict | None = None,
    verbose: bool = False,
) -> dg.JobExecutionResult:
    """Create the run with the code location's origin and execute it here, in process, on ``defs``
    (built for the current settings)."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import execute_run

    job = defs.resolve_job_def(job_name)
    if asset_selection:
        job = job.get_subset(asset_selection=asset_selection)
    code = ReconstructableRepository.for_module(CODE_LOCATION_MODULE, "defs", str(PROJECT_ROOT))
    run = instance.create_run_for_job(
        job_def=job,
        run_config=_run_config(verbose, run_config),
        tags={"dagster/partition": partition_key} if partition_key else None,
        job_code_origin=code.get_reconstructable_job(job_name).get_python_origin(),
        remote_job_origin=_repository_origin().get_job_origin(job_name),
        asset_selection=frozenset(asset_selection) if asset_selection else None,
    )
    return execute_run(InMemoryJob(job), run, instance)


def execute_job(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    job_name: str,
    partition_key: str,
    run_config: dict | None = None,
    verbose: bool = False,
) -> dg.JobExecutionResult:
    """One partition of a job; ``RunFailed`` with one line per failed step or check."""
    result = launch(defs, instance, job_name, partition_key=partition_key, run_config=run_config, verbose=verbose)
    if not result.success:
        raise RunFailed(f"{job_name} [{partition_key}] failed (run {result.run_id}):\n{failure_summary(result)}")
    return result


def job_run_config(settings: Settings, job_name: str) -> dict | None:
    """The run config ``settings`` give ``job_name``: ``LOYALTY_CHURN_TRAINING_CONFIG`` for the monthly
    churn training; None (the assets' defaults) otherwise."""
    if job_name != "monthly_churn_training_job" or not settings.churn_training_config:
        return None
    return {"ops": {"churn_model_candidate": {"config": dict(settings.churn_training_config)}}}


def latest_failed_ingest(instance: dg.DagsterInstance, day: date) -> str | None:
    """The id of the latest ingest run of ``day`` if it failed (the drop was rejected), else None."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name="daily_ingest_job", tags={"dagster/partition": day.isoformat()}), limit=1
    )
    return runs[0].run_id if runs and runs[0].status == dg.DagsterRunStatus.FAILURE else None


@dataclass(frozen=True)
class CoarseStep:
    job_name: str
    partition: date
    note: str


def _has_drop(accepted: set[date], start: date, end: date) -> bool:
    return any(start <= day < end for day in accepted)


def coarse_steps(as_of: date, accepted: set[date], lake: ObjectStore) -> tuple[list[CoarseStep], list[str]]:
    """Segmentation and churn training for ``as_of``, and a line for each one left out.

    Normally the previous quarter and month. With no champion yet and no accepted drop in that
    window, the window containing ``as_of`` instead: a first run starts from one history extract.
    """
    steps, notes = [], []
    windows = (
        ("quarterly_segmentation_job", "segmentation", previous_quarter(as_of), quarter_start(as_of)),
        ("monthly_churn_training_job", "churn", previous_month(as_of), month_start(as_of)),
    )
    for job_name, kind, previous, current in windows:
        has_champion = lake.exists(lake_keys.asset_object_key(f"{kind}_model", None, lake_keys.MODEL_SUFFIX))
        if kind == "segmentation" and has_champion and lake.exists(
            lake_keys.asset_object_key("segmentation_model_candidate", previous.isoformat(), lake_keys.MODEL_SUFFIX)
        ):
            continue  # this quarter's segmentation is already fitted
        if _has_drop(accepted, previous, current):
            steps.append(CoarseStep(job_name, previous, ""))
        elif not has_champion and _has_drop(accepted, current, as_of + timedelta(days=1)):
            steps.append(
                CoarseStep(
                    job_name,
                    current,
                    f"no {kind} champion yet and no accepted drop dated {previous} .. {current - timedelta(days=1)}: "
                    f"training it on partition {current}, from the latest drop up to {as_of}",
                )
            )
        else:
            notes.append(
                f"no accepted drop dated {previous} .. {current - timedelta(days=1)}: the {kind} champion stays"
            )
    return steps, notes


def run_as_of(settings: Settings, as_of: date, echo: Callable[[str], None], verbose: bool = False) -> None:
    """Ingest the drops up to ``as_of``, fit what is due, and score the week of ``as_of``."""
    from loyalty_assets.definitions import build_defs

    defs = build_defs(settings)
    resources = defs.resources
    landing_dates = [day for day in landing_drop_dates(resources["landing"], settings) if day <= as_of]
    if as_of not in landing_dates:
        raise UserError(
            f"no drop dated {as_of} in {settings.landing_uri}: run `loyalty-assets sample-data --end {as_of}` "
            "or copy the day's files there"
        )
    lake = resources["lake"].store()
    instance = instance_for(settings)
    accepted = set(accepted_drop_dates(lake))
    for day in [day for day in landing_dates if day not in accepted and day != as_of] + [as_of]:
        rejected_run = latest_failed_ingest(instance, day) if day != as_of else None
        if rejected_run:
            echo(
                f"skipping the drop of {day}: rejected by its ingest run {rejected_run}; "
                f"re-land it fixed, then `loyalty-assets run --as-of {day}`"
            )
            continue
        echo(f"running daily_ingest_job for {day}")
        result = launch(defs, instance, "daily_ingest_job", partition_key=day.isoformat(), verbose=verbose)
        if result.success:
            accepted.add(day)
        elif day == as_of:
            raise RunFailed(f"daily_ingest_job [{day}] failed (run {result.run_id}):\n{failure_summary(result)}")
        else:
            first_failure = failure_summary(result).splitlines()[0]
            echo(f"skipping the drop of {day}: rejected by its ingest run {result.run_id}: {first_failure}")
    steps, notes = coarse_steps(as_of, accepted, lake)
    for note in notes:
        echo(note)
    for step in steps:
        if step.note:
            echo(step.note)
        echo(f"running {step.job_name} for {step.partition}")
        run_config = job_run_config(settings, step.job_name)
        result = execute_job(defs, instance, step.job_name, step.partition.isoformat(), run_config, verbose)
        _report_warnings(result, echo)
    week = week_start(as_of).isoformat()
    echo(f"running weekly_scoring_job for {week}")
    _report_warnings(execute_job(defs, instance, "weekly_scoring_job", week, verbose=verbose), echo)
    echo(f"done: lake {settings.lake_uri}, Dagster instance {settings.dagster_home}")


def _report_warnings(result: dg.JobExecutionResult, echo: Callable[[str], None]) -> None:
    for line in run_summary(result)[1]:
        echo(f"  {line}")


def demo_drop_dates(as_of: date) -> list[date]:
    """The week of drops ending on ``as_of``, plus the last drop of the previous month and quarter,
    which the monthly training and quarterly segmentation partitions of ``run --as-of`` read."""
    month_end = month_start(as_of) - timedelta(days=1)
    quarter_end = quarter_start(as_of) - timedelta(days=1)
    return sorted({month_end, quarter_end, *(as_of - timedelta(days=back) for back in range(7))})


def write_missing_sample_drops(
    settings: Settings, as_of: date, landing_dates: list[date], customers: int, echo: Callable[[str], None]
) -> None:
    """The demo's drops up to ``as_of`` that the landing zone does not hold yet (day two, day three...)."""
    from loyalty_assets.domain.sample_data import SampleConfig, write_drops

    missing = [day for day in demo_drop_dates(as_of) if day not in set(landing_dates)]
    if not missing:
        return
    write_drops(store_for_uri(settings.landing_uri, settings), missing, SampleConfig(customers=customers))
    echo(f"wrote sample drops for {', '.join(str(day) for day in missing)} to {settings.landing_uri}")


def print_summary(settings: Settings, as_of: date, echo: Callable[[str], None]) -> None:
    from loyalty_assets.domain.scoring import tier_segment_counts
    from loyalty_assets.domain.storage import parquet_bytes_to_dataframe

    lake = store_for_uri(settings.lake_uri, settings)
    week = week_start(as_of).isoformat()
    predictions = parquet_bytes_to_dataframe(lake.get_bytes(lake_keys.asset_object_key("churn_predictions", week, lake_keys.PARQUET_SUFFIX)))
    echo(f"\nweek {week}: {len(predictions)} members scored (rows: risk tier, columns: segment)")
    echo(tier_segment_counts(predictions).to_string())
    echo("\noutputs:")
    echo(f"  predictions CSV   {lake.url(lake_keys.predictions_export_key(week, 'csv'))}")
    echo(f"  lake              {settings.lake_uri}")
    echo(f"  warehouse DuckDB  {settings.warehouse_path} (analytics.redshift_churn_predictions)")
    echo(f"  dashboard DuckDB  {settings.home / 'dashboard.duckdb'}")
    echo(f"  CRM export        {settings.home / 'appflow'}")
    marketing_email = lake_keys.outbox_key(lake_keys.marketing_message_name(week))
    echo(f"  marketing e-mail  {settings.outbox_uri}/{marketing_email}")
    echo(f"  monitoring report {lake.url(lake_keys.monitoring_report_key(week))}")
    echo(f"  Dagster instance  {settings.dagster_home}  (make dev, then http://127.0.0.1:3000)")


def demo(
    settings: Settings, as_of: date, echo: Callable[[str], None], verbose: bool = False, customers: int = 15000
) -> None:
    """The sample drops the landing zone misses up to ``as_of``, the whole graph as of ``as_of``, a summary."""
    from loyalty_assets.environment import resources_for

    landing_dates = landing_drop_dates(resources_for(settings)["landing"], settings)
    write_missing_sample_drops(settings, as_of, landing_dates, customers, echo)
    run_as_of(settings, as_of, echo, verbose)
    print_summary(settings, as_of, echo)


CHAMPION_ASSETS = {"churn": "churn_model", "segmentation": "segmentation_model"}


def promote_model_version(
    settings: Settings,
    kind: str,
    version: str,
    *,
    reason: str | None,
    force: bool,
    echo: Callable[[str], None],
    verbose: bool = False,
) -> None:
    """Materialize the champion asset with a registered version, as a run of the code location."""
    from loyalty_assets.definitions import build_defs
    from loyalty_assets.domain import registry

    defs = build_defs(settings)
    reason = reason or "manual promotion"
    store = defs.resources["lake"].store()
    registry.check_promotable(store, kind, version, force=force, reason=reason)
    if registry.champion_version(store, kind) == version:
        echo(f"{kind} champion is already {version}: nothing changed")
        return
    asset_name = CHAMPION_ASSETS[kind]
    result = launch(
        defs,
        instance_for(settings),
        defs.resolve_implicit_global_asset_job_def().name,
        asset_selection={dg.AssetKey(asset_name)},
        run_config={"ops": {asset_name: {"config": {"version": version, "reason": reason, "force": force}}}},
        verbose=verbose,
    )
    if not result.success:
        raise RunFailed(f"promoting {kind} {version} failed (run {result.run_id}):\n{failure_summary(result)}")
    echo(f"{kind} champion is now {version} ({reason})")


def list_model_versions(settings: Settings, kind: str, echo: Callable[[str], None]) -> None:
    from loyalty_assets.domain import registry

    store = store_for_uri(settings.lake_uri, settings)
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
