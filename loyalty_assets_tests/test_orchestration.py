"""Schedules tick on the partition that just ended (also across DST); alerts and run metrics of real runs
in a real Dagster instance reach SNS (moto), an SMTP server, CloudWatch (moto) and the local alerts file."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import boto3
import dagster as dg
import pytest

from loyalty_assets import defs
from loyalty_assets.defs.ingestion.assets import raw_loyalty_tables
from loyalty_assets.defs.orchestration.jobs import daily_ingest_job
from loyalty_assets.defs.orchestration.schedules import build_schedules
from loyalty_assets.defs.orchestration.sensors import build_sensors, collect_run_metrics
from loyalty_assets.domain.storage import LocalStore
from loyalty_assets.environment import resources_for
from loyalty_assets.settings import StorageSettings, load_settings
from loyalty_assets_tests.dagster_helpers import local_test_resources
from loyalty_assets_tests.drop_files import activity_row, member_row, small_drop, write_drop

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
BAD_DAY, GOOD_DAY, WEEK = "2024-11-04", "2024-11-05", "2024-11-04"
SCHEDULES = build_schedules(load_settings())
SENSORS = build_sensors(load_settings())
SENSOR = {sensor.name: sensor for sensor in SENSORS}


# --- schedules ------------------------------------------------------------------------------------


def _tick(schedule: dg.ScheduleDefinition, when: datetime) -> dg.RunRequest:
    context = dg.build_schedule_context(
        instance=dg.DagsterInstance.ephemeral(),
        scheduled_execution_time=when,
        repository_def=defs.get_repository_def(),
    )
    # evaluate_tick also checks the key against the job's partitions definition.
    (request,) = schedule.evaluate_tick(context).run_requests
    return request


TICKS = [
    ("daily_ingest_schedule", datetime(2026, 3, 1, 2, tzinfo=UTC), "2026-02-28"),
    ("daily_ingest_schedule", datetime(2024, 3, 1, 2, tzinfo=UTC), "2024-02-29"),
    ("daily_ingest_schedule", datetime(2026, 1, 1, 2, tzinfo=UTC), "2025-12-31"),
    ("weekly_scoring_schedule", datetime(2026, 3, 2, 2, tzinfo=UTC), "2026-02-23"),
    ("weekly_scoring_schedule", datetime(2025, 1, 6, 2, tzinfo=UTC), "2024-12-30"),
    ("monthly_churn_training_schedule", datetime(2026, 1, 1, 2, tzinfo=UTC), "2025-12-01"),
    ("monthly_churn_training_schedule", datetime(2024, 3, 1, 2, tzinfo=UTC), "2024-02-01"),
    ("quarterly_segmentation_schedule", datetime(2026, 1, 1, 2, tzinfo=UTC), "2025-10-01"),
    ("quarterly_segmentation_schedule", datetime(2026, 4, 1, 2, tzinfo=UTC), "2026-01-01"),
    ("quarterly_segmentation_schedule", datetime(2026, 7, 1, 2, tzinfo=UTC), "2026-04-01"),
    ("quarterly_segmentation_schedule", datetime(2026, 10, 1, 2, tzinfo=UTC), "2026-07-01"),
]


def test_every_schedule_has_tick_cases():
    assert {name for name, _, _ in TICKS} == {schedule.name for schedule in SCHEDULES}


@pytest.mark.parametrize("name, when, partition", TICKS)
def test_each_tick_targets_the_period_that_just_ended(name, when, partition):
    schedule = next(schedule for schedule in SCHEDULES if schedule.name == name)
    if name == "weekly_scoring_schedule":
        assert when.weekday() == 0, "weekly ticks are Mondays"
    request = _tick(schedule, when)
    assert request.partition_key == partition
    assert request.run_key == f"{name}:{partition}"
    assert request.tags["dagster/partition"] == partition


@pytest.fixture(scope="module")
def schedules_in():
    def build(timezone_name: str) -> dict[str, dg.ScheduleDefinition]:
        settings = replace(load_settings(), timezone=timezone_name)
        return {schedule.name: schedule for schedule in build_schedules(settings)}

    return build


@pytest.mark.parametrize(
    "name, when, partition",
    [
        # 02:00 does not exist on 2026-03-29 (clocks jump to 03:00 CEST); zoneinfo reads it as 03:00 CEST.
        ("daily_ingest_schedule", datetime(2026, 3, 29, 2, tzinfo=BERLIN), "2026-03-28"),
        ("daily_ingest_schedule", datetime(2026, 3, 29, 3, tzinfo=BERLIN), "2026-03-28"),
        # 02:00 happens twice on 2026-10-25: both the CEST and the CET one target the same day.
        ("daily_ingest_schedule", datetime(2026, 10, 25, 2, fold=0, tzinfo=BERLIN), "2026-10-24"),
        ("daily_ingest_schedule", datetime(2026, 10, 25, 2, fold=1, tzinfo=BERLIN), "2026-10-24"),
        ("weekly_scoring_schedule", datetime(2026, 3, 30, 2, tzinfo=BERLIN), "2026-03-23"),
        ("weekly_scoring_schedule", datetime(2026, 10, 26, 2, tzinfo=BERLIN), "2026-10-19"),
    ],
)
def test_berlin_ticks_on_dst_change_days(schedules_in, name, when, partition):
    schedule = schedules_in("Europe/Berlin")[name]
    assert schedule.execution_timezone == "Europe/Berlin"
    assert _tick(schedule, when).partition_key == partition
    # The same instant handed over in UTC targets the same partition.
    assert _tick(schedule, when.astimezone(UTC)).partition_key == partition


def test_tick_given_in_utc_is_read_in_the_schedule_timezone(schedules_in):
    # 02:00 in Tokyo on 1 March is still 28 February in UTC.
    tick = datetime(2026, 3, 1, 2, tzinfo=ZoneInfo("Asia/Tokyo")).astimezone(UTC)
    assert _tick(schedules_in("Asia/Tokyo")["daily_ingest_schedule"], tick).partition_key == "2026-02-28"


# --- real runs in a real instance ------------------------------------------------------------------


@pytest.fixture(scope="module")
def instance():
    """One persistent (run-sharded SQLite) instance, the storage of a local `dagster dev`."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


def quarantining_drop(store: LocalStore, drop_date: str) -> None:
    """20 members with 6 clean months each, plus 5 rows with month 13: 5 of 145 rows (3.4%) quarantined."""
    members = [member_row(100000 + index) for index in range(20)]
    activity = [activity_row(100000 + index, 2024, month) for index in range(20) for month in range(5, 11)]
    write_drop(store, drop_date, members, activity + [activity_row(100000 + index, 2024, 13) for index in range(5)])


@dg.asset(key="churn_predictions", partitions_def=dg.WeeklyPartitionsDefinition("2024-01-01", day_offset=1))
def scoring_stand_in() -> dg.MaterializeResult:
    """Stands in for a weekly scoring run: the metadata keys the metrics sensor reads."""
    return dg.MaterializeResult(metadata={"members_scored": 7, "dagster/row_count": 7})


@dg.asset_check(asset=scoring_stand_in, name="score_drift")
def score_drift() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"drift_share": 0.4})


scoring_stand_in_job = dg.define_asset_job("scoring_stand_in_job", selection=["churn_predictions"])


def definitions_with(resources: dict) -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_loyalty_tables, scoring_stand_in],
        asset_checks=[score_drift],
        jobs=[daily_ingest_job, scoring_stand_in_job],
        sensors=SENSORS,
        resources=resources,
    )


def run_job(definitions: dg.Definitions, instance, job: str, partition: str) -> dg.ExecuteInProcessResult:
    return definitions.resolve_job_def(job).execute_in_process(
        instance=instance, partition_key=partition, raise_on_error=False
    )


def evaluate_run_status_sensor(name: str, instance, result: dg.ExecuteInProcessResult, resources: dict) -> None:
    """Evaluate a run-status sensor on a finished run, as the daemon would, with the resource it needs."""
    resource_key = {"run_failure_alert_sensor": "alert_notifier", "run_metrics_sensor": "metrics_publisher"}[name]
    event = result.get_run_success_event() if result.success else result.get_run_failure_event()
    with dg.build_run_status_sensor_context(
        sensor_name=name,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={resource_key: resources[resource_key]},
    ) as context:
        SENSOR[name](context)


def read_alerts(home) -> list[dict]:
    path = home / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_failed_run_is_alerted_to_the_local_alerts_file(tmp_path, instance, monkeypatch):
    monkeypatch.setenv("LOYALTY_UI_URL", "https://dagster.example.com/")
    resources = local_test_resources(tmp_path)
    definitions = definitions_with(resources)
    quarantining_drop(LocalStore(tmp_path / "landing"), BAD_DAY)
    result = run_job(definitions, instance, "daily_ingest_job", BAD_DAY)
    assert not result.success

    evaluate_run_status_sensor("run_failure_alert_sensor", instance, result, resources)

    (alert,) = read_alerts(tmp_path)
    assert alert["job"] == "daily_ingest_job"
    assert alert["partition"] == BAD_DAY
    assert alert["ui_url"] == f"https://dagster.example.com/runs/{result.run_id}"
    assert alert["asset_or_check"] == "raw_flight_activity, raw_loyalty_history, raw_quarantine"
    assert "quarantine_share_within_limit" in alert["details"] and "above the limit" in alert["details"]
    assert alert["subject"].startswith("[ERROR] daily_ingest_job / raw_flight_activity")


def test_failed_error_check_is_alerted_once_and_passed_or_warn_checks_never(tmp_path, instance):
    resources = local_test_resources(tmp_path)
    definitions = definitions_with(resources)
    landing = LocalStore(tmp_path / "landing")
    sensor = SENSOR["failed_check_alert_sensor"]

    def tick(cursor: str | None):
        """One evaluation as the daemon does it; returns the tick's data (cursor, skip message)."""
        with dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            definitions=definitions,
            resources={"alert_notifier": resources["alert_notifier"]},
        ) as context:
            return sensor.evaluate_tick(context)

    first = tick(None)  # a sensor switched on starts after the runs that already finished
    quarantining_drop(landing, BAD_DAY)
    small_drop(landing, GOOD_DAY)
    assert not run_job(definitions, instance, "daily_ingest_job", BAD_DAY).success
    assert run_job(definitions, instance, "daily_ingest_job", GOOD_DAY).success
    assert run_job(definitions, instance, "scoring_stand_in_job", WEEK).success

    second = tick(first.cursor)
    (alert,) = read_alerts(tmp_path)
    assert alert["asset_or_check"] == "raw_quarantine:quarantine_share_within_limit"
    assert alert["job"] == "daily_ingest_job" and alert["partition"] == BAD_DAY
    assert "quarantine_share: 0.034" in alert["details"]
    assert alert["ui_url"].startswith("http://127.0.0.1:3000/runs/")
    assert second.skip_message == "1 failed checks alerted in 3 finished runs"

    third = tick(second.cursor)
    assert len(read_alerts(tmp_path)) == 1
    assert third.skip_message == "0 failed checks alerted in 0 finished runs"


@pytest.fixture
def alert_topic(aws_env):
    """An SNS topic with an SQS queue subscribed to it; yields (topic ARN, queue URL)."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic_arn = sns.create_topic(Name="loyalty-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="alert-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return topic_arn, queue_url


@pytest.fixture
def aws_resources(tmp_path, aws_env, smtp_server, alert_topic, monkeypatch) -> dict:
    for name, value in {
        "LOYALTY_ALERT_TOPIC_ARN": alert_topic[0],
        "LOYALTY_ALERT_RECIPIENTS": "oncall@example.com, data-team@example.com",
        "LOYALTY_EMAIL_SENDER": "dagster@example.com",
        "LOYALTY_EMAIL_TRANSPORT": "smtp",
        "LOYALTY_SMTP_HOST": smtp_server.host,
        "LOYALTY_SMTP_PORT": str(smtp_server.port),
        "LOYALTY_SMTP_SECURITY": "none",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    return resources_for(
        replace(
            settings,
            env="aws",
            home=tmp_path,
            storage=StorageSettings(landing_uri=str(tmp_path / "landing"), lake_uri=str(tmp_path / "lake")),
        )
    )


def test_failed_run_reaches_sns_and_smtp_in_aws(tmp_path, instance, aws_resources, alert_topic, smtp_server):
    definitions = definitions_with(local_test_resources(tmp_path))
    quarantining_drop(LocalStore(tmp_path / "landing"), BAD_DAY)
    result = run_job(definitions, instance, "daily_ingest_job", BAD_DAY)

    evaluate_run_status_sensor("run_failure_alert_sensor", instance, result, aws_resources)

    messages = boto3.client("sqs").receive_message(QueueUrl=alert_topic[1], MaxNumberOfMessages=10)["Messages"]
    (notification,) = [json.loads(message["Body"]) for message in messages]
    assert notification["Subject"].startswith("[ERROR] daily_ingest_job / raw_flight_activity")
    assert f"Partition:    {BAD_DAY}" in notification["Message"]
    assert f"http://127.0.0.1:3000/runs/{result.run_id}" in notification["Message"]
    (mail,) = smtp_server.messages
    assert mail.mail_from == "dagster@example.com"
    assert mail.rcpt_tos == ["oncall@example.com", "data-team@example.com"]
    assert mail.message["Subject"] == notification["Subject"]
    assert f"/runs/{result.run_id}" in mail.message.get_content()
    assert not (tmp_path / "alerts.jsonl").exists()


def test_successful_ingest_run_metrics_reach_cloudwatch(tmp_path, instance, aws_resources):
    definitions = definitions_with(local_test_resources(tmp_path))
    small_drop(LocalStore(tmp_path / "landing"), GOOD_DAY)
    result = run_job(definitions, instance, "daily_ingest_job", GOOD_DAY)
    assert result.success
    evaluate_run_status_sensor("run_metrics_sensor", instance, result, aws_resources)

    cloudwatch = boto3.client("cloudwatch")
    listed = cloudwatch.list_metrics(Namespace="LoyaltyAssets")["Metrics"]
    assert {metric["MetricName"] for metric in listed} == {"ingested_rows", "quarantined_rows", "run_duration_seconds"}
    assert all(metric["Dimensions"] == [{"Name": "Job", "Value": "daily_ingest_job"}] for metric in listed)
    now = datetime.now(timezone.utc)

    def total(name: str) -> tuple[float, str]:
        (point,) = cloudwatch.get_metric_statistics(
            Namespace="LoyaltyAssets",
            MetricName=name,
            Dimensions=[{"Name": "Job", "Value": "daily_ingest_job"}],
            StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(hours=1),
            Period=3600,
            Statistics=["Sum"],
        )["Datapoints"]
        return point["Sum"], point["Unit"]

    assert total("ingested_rows") == (20 + 20 * 6, "Count")
    assert total("quarantined_rows") == (0, "Count")
    duration, unit = total("run_duration_seconds")
    assert unit == "Seconds" and 0 < duration < 120


def test_scoring_run_metrics_with_drift_share_go_to_the_log_locally(tmp_path, instance, capfd):
    resources = local_test_resources(tmp_path)
    result = run_job(definitions_with(resources), instance, "scoring_stand_in_job", WEEK)
    assert result.success  # its drift check failed with WARN severity, which does not fail the run

    evaluate_run_status_sensor("run_metrics_sensor", instance, result, resources)

    # The sensor's logger writes to the console (and to the tick's captured logs under the daemon).
    (line,) = [line for line in capfd.readouterr().err.splitlines() if "run metrics of scoring_stand_in_job" in line]
    metrics = json.loads(line[line.index("{") :])
    assert set(metrics) == {"scored_members", "drift_share", "run_duration_seconds"}
    assert metrics["scored_members"] == 7.0 and metrics["drift_share"] == 0.4
    assert metrics == collect_run_metrics(instance, result.run_id)
