"""deploy/dagster.yaml against a real PostgreSQL: storages, run queue, telemetry, run monitoring and the ECS option."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config_schema
from dagster._core.storage.tags import MAX_RUNTIME_SECONDS_TAG
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster_aws.ecs import EcsRunLauncher
from dagster_postgres import (
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)

from loyalty_assets.defs.orchestration.resources import LocalAlertNotifier
from loyalty_assets.defs.orchestration.sensors import build_sensors
from loyalty_assets.settings import load_settings
from loyalty_assets_tests.postgres import temporary

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_CONFIG = REPO_ROOT / "deploy" / "dagster.yaml"
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
# Trust auth ignores the password; URL-reserved characters prove it is quoted into the URL.
PASSWORD_WITH_RESERVED_CHARACTERS = "p@ss:w/rd?#"


@pytest.fixture(scope="module")
def fresh_database() -> Iterator[str]:
    """Name of a new, empty database in the local PostgreSQL, dropped afterwards."""
    with temporary(ADMIN_DSN, "DATABASE", "dagster_test") as name:
        yield name


@pytest.fixture(scope="module")
def production_instance(fresh_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    """The instance a deployment gets: deploy/dagster.yaml in DAGSTER_HOME, connection values in env vars."""
    dagster_home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(DEPLOY_CONFIG, dagster_home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
        monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
        monkeypatch.setenv("DAGSTER_PG_PORT", "5432")
        monkeypatch.setenv("DAGSTER_PG_USER", "postgres")
        monkeypatch.setenv("DAGSTER_PG_PASSWORD", PASSWORD_WITH_RESERVED_CHARACTERS)
        monkeypatch.setenv("DAGSTER_PG_DB", fresh_database)
        instance = dg.DagsterInstance.get()
        try:
            yield instance
        finally:
            instance.dispose()


def test_storages_are_postgres_in_the_database_named_by_env_vars(
    production_instance: dg.DagsterInstance, fresh_database: str
) -> None:
    assert isinstance(production_instance.run_storage, PostgresRunStorage)
    assert isinstance(production_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(production_instance.schedule_storage, PostgresScheduleStorage)
    for storage in (
        production_instance.run_storage,
        production_instance.event_log_storage,
        production_instance.schedule_storage,
    ):
        assert storage.postgres_url.startswith("postgresql+psycopg2://postgres:")
        assert storage.postgres_url.endswith(f"@127.0.0.1:5432/{fresh_database}")
        assert PASSWORD_WITH_RESERVED_CHARACTERS not in storage.postgres_url


def test_runs_queue_with_a_concurrency_limit_and_telemetry_is_off(production_instance: dg.DagsterInstance) -> None:
    coordinator = production_instance.run_coordinator
    assert isinstance(coordinator, dg.QueuedRunCoordinator)
    assert coordinator.get_run_queue_config().max_concurrent_runs == 4
    assert production_instance.telemetry_enabled is False


def test_a_run_is_recorded_and_listed_in_postgres(production_instance: dg.DagsterInstance, fresh_database: str) -> None:
    @dg.asset
    def deployment_probe() -> int:
        return 1

    result = dg.materialize([deployment_probe], instance=production_instance)

    assert result.success
    listed = production_instance.get_runs(filters=dg.RunsFilter(run_ids=[result.run_id]))
    assert [(run.run_id, run.status) for run in listed] == [(result.run_id, dg.DagsterRunStatus.SUCCESS)]
    materialization = production_instance.get_latest_materialization_event(dg.AssetKey("deployment_probe"))
    assert materialization is not None and materialization.run_id == result.run_id
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={fresh_database}"
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchone() == (1,)


def _commented_ecs_option() -> dict:
    """The commented-out ECS block of deploy/dagster.yaml, uncommented and parsed."""
    lines = DEPLOY_CONFIG.read_text().splitlines()
    start = lines.index("# run_launcher:")
    block = [line.removeprefix("#").removeprefix(" ") for line in lines[start:] if line.startswith("#")]
    return yaml.safe_load("\n".join(block))


def test_the_commented_ecs_run_launcher_option_is_valid_config() -> None:
    ecs_option = _commented_ecs_option()
    assert ecs_option["run_launcher"]["module"] == "dagster_aws.ecs"
    assert ecs_option["run_launcher"]["class"] == EcsRunLauncher.__name__

    launcher_config = validate_config(EcsRunLauncher.config_type(), ecs_option["run_launcher"]["config"])
    whole_instance_config = validate_config(
        dagster_instance_config_schema(), {**yaml.safe_load(DEPLOY_CONFIG.read_text()), **ecs_option}
    )

    assert launcher_config.success, [error.message for error in launcher_config.errors]
    assert whole_instance_config.success, [error.message for error in whole_instance_config.errors]


def test_run_monitoring_is_on_in_the_daemon(production_instance: dg.DagsterInstance) -> None:
    assert production_instance.run_monitoring_enabled
    assert production_instance.run_monitoring_poll_interval_seconds == 60
    assert production_instance.run_monitoring_start_timeout_seconds == 300
    assert production_instance.run_monitoring_max_runtime_seconds == 6 * 3600
    assert "MONITORING" in production_instance.get_required_daemon_types()


# A run of one slow asset on the instance of DAGSTER_HOME; it prints its run id once it has started.
SLOW_RUN = """
import sys, time
import dagster as dg

@dg.asset
def slow_probe() -> int:
    print("started", flush=True)
    time.sleep(120)
    return 1

dg.materialize([slow_probe], instance=dg.DagsterInstance.get(), tags={sys.argv[1]: sys.argv[2]})
"""


def _started_run(instance: dg.DagsterInstance, known: set[str], timeout: float = 60) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [run for run in instance.get_runs(filters=dg.RunsFilter(job_name="__ephemeral_asset_job__"))]
        started = [run for run in runs if run.run_id not in known and run.status == dg.DagsterRunStatus.STARTED]
        if started:
            return started[0]
        time.sleep(0.5)
    raise AssertionError(f"no run reached STARTED within {timeout} s")


def test_a_run_killed_by_the_os_ends_failed_and_is_alerted(production_instance: dg.DagsterInstance, tmp_path) -> None:
    known = {run.run_id for run in production_instance.get_runs()}
    max_runtime = 3
    worker = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, MAX_RUNTIME_SECONDS_TAG, str(max_runtime)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        run = _started_run(production_instance, known)
        assert worker.stdout.readline() == b"started\n"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    time.sleep(max_runtime)
    assert production_instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # nobody reports

    # One tick of the daemon's run monitoring, as `dagster-daemon run` does every poll_interval_seconds.
    with WorkspaceProcessContext(production_instance, EmptyWorkspaceTarget()) as workspace:
        errors = [error for error in execute_run_monitoring_iteration(workspace, logging.getLogger("test")) if error]
    assert errors == []
    assert production_instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE

    (failure,) = production_instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    alerts_path = tmp_path / "alerts.jsonl"
    sensor = next(sensor for sensor in build_sensors(load_settings()) if sensor.name == "run_failure_alert_sensor")
    with dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=failure.dagster_event,
        dagster_instance=production_instance,
        dagster_run=production_instance.get_run_by_id(run.run_id),
        resources={"alert_notifier": LocalAlertNotifier(alerts_path=str(alerts_path))},
    ) as context:
        sensor(context)
    (alert,) = [json.loads(line) for line in alerts_path.read_text().splitlines()]
    assert alert["title"] == "run of __ephemeral_asset_job__ failed"
    assert alert["asset_or_check"] == "slow_probe"
    assert alert["details"].startswith("slow_probe: interrupted, the step started and never finished\n")
    assert alert["ui_url"].endswith(f"/runs/{run.run_id}")
