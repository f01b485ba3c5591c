"""Alerts on failed runs and failed ERROR checks, and per-run metrics, for every job of this code location.

- ``run_failure_alert_sensor``: one alert per failed run, naming the assets or checks of the failed steps.
- ``failed_check_alert_sensor``: one alert per failed ERROR-severity check evaluation (gates, drift), once.
- ``run_metrics_sensor``: rows ingested and quarantined, members scored, run duration and drift share
  of each successful run, to the ``metrics_publisher`` (CloudWatch in aws, the log locally).

Every alert passes through ``redact`` before it leaves: whatever a step's error said, no password
or secret value reaches SNS, e-mail or the alerts file.

``build_sensors(settings)``: all three start RUNNING when ``settings.schedules_running`` is on (the
default in aws), like the schedules.
"""

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone

import dagster as dg
from dagster import DagsterEventType, DagsterRunStatus

from loyalty_assets.defs.orchestration.resources import AlertNotifier, MetricsPublisher
from loyalty_assets.domain.messaging import Alert
from loyalty_assets.domain.redaction import redact
from loyalty_assets.settings import Settings

PARTITION_TAG = "dagster/partition"
PARTITION_RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
FINISHED_RUN_EVENTS = (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED)
RUNS_PER_TICK = 100

# Run metric name -> (asset, materialization metadata key) pairs summed into it.
MATERIALIZATION_METRICS = {
    "ingested_rows": [("raw_loyalty_history", "dagster/row_count"), ("raw_flight_activity", "dagster/row_count")],
    "quarantined_rows": [("raw_quarantine", "quarantined_rows")],
    "scored_members": [("churn_predictions", "members_scored")],
}
DRIFT_SHARE_KEY = "drift_share"


def run_partition(run: dg.DagsterRun) -> str | None:
    """The run's partition, ``start...end`` for a partition range, None when unpartitioned."""
    if PARTITION_TAG in run.tags:
        return run.tags[PARTITION_TAG]
    start, end = (run.tags.get(tag) for tag in PARTITION_RANGE_TAGS)
    return f"{start}...{end}" if start and end else None


def root_error_message(error) -> str:
    """The message of the innermost cause of a step's (serializable) error."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _targets_of_steps(instance: dg.DagsterInstance, run_id: str, step_keys: set[str]) -> list[str]:
    """The assets the run planned in ``step_keys``, plus (as ``asset:check``) checks on other assets."""
    planned = instance.get_records_for_run(
        run_id,
        of_type={DagsterEventType.ASSET_MATERIALIZATION_PLANNED, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED},
    ).records
    events = [record.event_log_entry.dagster_event for record in planned]
    events = [event for event in events if event.step_key in step_keys]
    assets = {
        event.event_specific_data.asset_key.to_user_string()
        for event in events
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    }
    checks = {
        f"{event.event_specific_data.asset_key.to_user_string()}:{event.event_specific_data.check_name}"
        for event in events
        if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
        and event.event_specific_data.asset_key.to_user_string() not in assets
    }
    return sorted(assets) + sorted(checks)


def _interrupted_steps(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    """Steps of the run that started and never succeeded, failed or were skipped."""
    records = instance.get_records_for_run(
        run_id,
        of_type={
            DagsterEventType.STEP_START,
            DagsterEventType.STEP_SUCCESS,
            DagsterEventType.STEP_FAILURE,
            DagsterEventType.STEP_SKIPPED,
        },
    ).records
    events = [record.event_log_entry.dagster_event for record in records]
    started = {event.step_key for event in events if event.event_type == DagsterEventType.STEP_START}
    return started - {event.step_key for event in events if event.event_type != DagsterEventType.STEP_START}


def run_failure_alert(context: dg.RunFailureSensorContext, run_url: str) -> Alert:
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    failed_steps = {event.step_key for event in step_failures}
    targets = _targets_of_steps(context.instance, run.run_id, failed_steps) or sorted(failed_steps)
    reasons = []
    for event in step_failures:
        user_failure = event.step_failure_data.user_failure_data  # set when the step raised dg.Failure
        description = user_failure.description if user_failure else None
        reasons.append(f"{event.step_key}: {description or root_error_message(event.step_failure_data.error)}")
    if not step_failures:  # the run worker died (kill -9, OOM) or was failed by run monitoring
        interrupted = _interrupted_steps(context.instance, run.run_id)
        targets = _targets_of_steps(context.instance, run.run_id, interrupted) or sorted(interrupted)
        reasons = [f"{step}: interrupted, the step started and never finished" for step in sorted(interrupted)]
        reasons += [context.failure_event.message] if context.failure_event.message else []
    return Alert(
        title=f"run of {run.job_name} failed",
        job=run.job_name,
        asset_or_check=", ".join(targets) or "the run (no step failed)",
        partition=run_partition(run),
        ui_url=run_url,
        details="\n".join(reasons) or context.failure_event.message or "the run failed before any step",
        severity="error",
    )


def _metadata_lines(metadata: Mapping[str, dg.MetadataValue]) -> list[str]:
    return [f"{key}: {value.value}" for key, value in metadata.items() if isinstance(value.value, (int, float, str))]


def failed_check_alerts(
    instance: dg.DagsterInstance, run_ids: Iterable[str], run_url_for: Callable[[str], str]
) -> list[Alert]:
    """One alert per failed ERROR-severity check evaluation in the given runs."""
    alerts = []
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        evaluations = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
        for record in evaluations:
            evaluation = record.event_log_entry.dagster_event.event_specific_data
            if evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
                continue
            check = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            alerts.append(
                Alert(
                    title=f"check {check} failed",
                    job=run.job_name,
                    asset_or_check=check,
                    partition=evaluation.partition or run_partition(run),
                    ui_url=run_url_for(run_id),
                    details="\n".join(
                        [evaluation.description or "no description", *_metadata_lines(evaluation.metadata)]
                    ),
                    severity="error",
                )
            )
    return alerts


def _finished_runs_after(
    instance: dg.DagsterInstance, cursors: dict[str, str]
) -> tuple[list[dg.EventLogRecord], dict[str, str]]:
    """Run success/failure/cancel events after the per-event-type cursors, in event order, and the new cursors.

    A missing cursor starts at the newest event: a sensor switched on does not alert on history.
    """
    records, new_cursors = [], {}
    for event_type in FINISHED_RUN_EVENTS:
        cursor = cursors.get(event_type.value)
        if cursor is None:
            new_cursors[event_type.value] = instance.fetch_run_status_changes(event_type, limit=1).cursor
            continue
        result = instance.fetch_run_status_changes(event_type, limit=RUNS_PER_TICK, cursor=cursor, ascending=True)
        records.extend(result.records)
        new_cursors[event_type.value] = result.cursor
    return sorted(records, key=lambda record: record.storage_id), new_cursors


def collect_run_metrics(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """The metrics of one run (only those its assets and checks reported) plus its duration in seconds."""
    materializations = [
        record.event_log_entry.asset_materialization
        for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    ]
    metrics: dict[str, float] = {}
    for metric, sources in MATERIALIZATION_METRICS.items():
        values = [
            materialization.metadata[key].value
            for asset, key in sources
            for materialization in materializations
            if materialization.asset_key.to_user_string() == asset and key in materialization.metadata
        ]
        if values:
            metrics[metric] = float(sum(values))
    drift_shares = [
        record.event_log_entry.dagster_event.event_specific_data.metadata[DRIFT_SHARE_KEY].value
        for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
        if DRIFT_SHARE_KEY in record.event_log_entry.dagster_event.event_specific_data.metadata
    ]
    if drift_shares:
        metrics[DRIFT_SHARE_KEY] = float(max(drift_shares))  # the worst check of the run
    run_record = instance.get_run_record_by_id(run_id)
    metrics["run_duration_seconds"] = run_record.end_time - run_record.start_time
    return metrics


def notify_redacted(alert_notifier: AlertNotifier, alert: Alert, log: logging.Logger) -> None:
    """Send ``alert`` with every text field redacted (the last line of defence against a leaked secret)."""
    texts = {
        field.name: redact(value)
        for field in dataclasses.fields(alert)
        if isinstance(value := getattr(alert, field.name), str) and field.name != "severity"
    }
    alert_notifier.notify(dataclasses.replace(alert, **texts), log)


def build_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    status = dg.DefaultSensorStatus.RUNNING if settings.schedules_running else dg.DefaultSensorStatus.STOPPED

    @dg.run_failure_sensor(
        name="run_failure_alert_sensor",
        default_status=status,
        description="Alerts (alert_notifier) on every failed run of this code location: job, failed assets, "
        "partition, reason and a link to the run.",
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext, alert_notifier: AlertNotifier) -> None:
        alert = run_failure_alert(context, alert_notifier.run_url(context.dagster_run.run_id))
        notify_redacted(alert_notifier, alert, context.log)

    @dg.sensor(
        name="failed_check_alert_sensor",
        default_status=status,
        minimum_interval_seconds=60,
        description="Alerts (alert_notifier) once per failed ERROR-severity asset check (gates, drift), "
        "read from the runs that finished since the last tick.",
    )
    def failed_check_alert_sensor(
        context: dg.SensorEvaluationContext, alert_notifier: AlertNotifier
    ) -> dg.SensorResult:
        cursors = json.loads(context.cursor) if context.cursor else {}
        finished, new_cursors = _finished_runs_after(context.instance, cursors)
        job_names = set(context.repository_def.job_names)
        run_ids = [record.run_id for record in finished if record.event_log_entry.job_name in job_names]
        alerts = failed_check_alerts(context.instance, run_ids, alert_notifier.run_url)
        for alert in alerts:
            notify_redacted(alert_notifier, alert, context.log)
        return dg.SensorResult(
            skip_reason=f"{len(alerts)} failed checks alerted in {len(run_ids)} finished runs",
            cursor=json.dumps(new_cursors, sort_keys=True),
        )

    @dg.run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        name="run_metrics_sensor",
        default_status=status,
        description="Publishes (metrics_publisher) rows ingested and quarantined, members scored, run "
        "duration and drift share of every successful run, dimension Job.",
    )
    def run_metrics_sensor(context: dg.RunStatusSensorContext, metrics_publisher: MetricsPublisher) -> None:
        run = context.dagster_run
        finished_at = datetime.fromtimestamp(context.instance.get_run_record_by_id(run.run_id).end_time, timezone.utc)
        metrics = collect_run_metrics(context.instance, run.run_id)
        metrics_publisher.publish(run.job_name, metrics, finished_at, context.log)

    return [run_failure_alert_sensor, failed_check_alert_sensor, run_metrics_sensor]

