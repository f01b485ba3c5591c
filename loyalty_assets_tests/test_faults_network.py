"""Every network call has a bounded wait: a frozen endpoint fails the call within the configured bound,
and the error names the endpoint that did not answer.

A frozen endpoint is a loopback TCP socket that accepts connections and never answers a byte. The
bounds come from the LOYALTY_* network settings, through the resources ``environment.py`` builds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from botocore.exceptions import ReadTimeoutError

from loyalty_assets.domain.messaging import Alert, EmailDeliveryError
from loyalty_assets.domain.warehouse import connect_postgres
from loyalty_assets.environment import aws_resources, local_resources
from loyalty_assets.settings import (
    NETWORK_DEFAULTS,
    NetworkSettings,
    SettingsError,
    load_network_settings,
    load_settings,
)

READ_TIMEOUT = 1
CONNECT_TIMEOUT = 2  # libpq's smallest connect_timeout
MAX_ATTEMPTS = 2
# Two reads of READ_TIMEOUT each, plus botocore's back-off (below 1 s before the second try) and slack
# for client start-up on a busy machine. Without the bounds the same calls wait 5 x 60 s.
S3_BOUND_SECONDS = MAX_ATTEMPTS * READ_TIMEOUT + 6
RUN_START_UP_SECONDS = 8  # an in-process run's own start-up on top of the call's bound


class FrozenEndpoint:
    """A listening loopback socket whose accepted connections are held open and never written to."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.listener.getsockname()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # the listener was closed: the endpoint is stopped
                return
            self.held.append(connection)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        self.thread.join(timeout=5)
        for connection in self.held:
            connection.close()


@pytest.fixture
def frozen() -> Iterator[FrozenEndpoint]:
    endpoint = FrozenEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture
def bounded_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOYALTY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOYALTY_CONNECT_TIMEOUT_SECONDS", str(CONNECT_TIMEOUT))
    monkeypatch.setenv("LOYALTY_READ_TIMEOUT_SECONDS", str(READ_TIMEOUT))
    monkeypatch.setenv("LOYALTY_MAX_ATTEMPTS", str(MAX_ATTEMPTS))
    for name in ("LOYALTY_LAKE_URI", "LOYALTY_LANDING_URI", "LOYALTY_EMAIL_TRANSPORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def frozen_s3(frozen: FrozenEndpoint, bounded_env: None, monkeypatch: pytest.MonkeyPatch) -> FrozenEndpoint:
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{frozen.host}:{frozen.port}")
    return frozen


def timed(call) -> tuple[BaseException, float]:
    """The exception ``call`` raised and the seconds it took."""
    start = time.monotonic()
    with pytest.raises(Exception) as raised:
        call()
    return raised.value, time.monotonic() - start


def timed_failed_write(io_manager_key: str, resources: dict) -> tuple[str, str, float]:
    """Materialize a one-row asset through ``io_manager_key``; (error class, message, seconds) of its one failure."""

    @dg.asset(name="network_probe", io_manager_key=io_manager_key)
    def probe() -> pd.DataFrame:
        return pd.DataFrame({"x": [1]})

    start = time.monotonic()
    result = dg.materialize([probe], resources=resources, raise_on_error=False)
    seconds = time.monotonic() - start
    (failure,) = result.get_step_failure_events()
    cause = failure.step_failure_data.error.cause
    return cause.cls_name, cause.message, seconds


def assert_one_line_naming(error: BaseException, endpoint: str) -> None:
    message = str(error)
    assert endpoint in message, message
    assert "\n" not in message.strip(), message


# --- settings -------------------------------------------------------------------------------------


def test_network_settings_default_and_reject_non_positive_values(monkeypatch):
    for name in NETWORK_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    assert load_network_settings() == NetworkSettings(
        connect_timeout_seconds=10.0, read_timeout_seconds=60.0, max_attempts=3, statement_timeout_seconds=1800.0
    )
    monkeypatch.setenv("LOYALTY_STATEMENT_TIMEOUT_SECONDS", "2.5")
    assert load_network_settings().statement_timeout_seconds == 2.5
    for name, value in [
        ("LOYALTY_READ_TIMEOUT_SECONDS", "0"),
        ("LOYALTY_CONNECT_TIMEOUT_SECONDS", "soon"),
        ("LOYALTY_MAX_ATTEMPTS", "1.5"),
        ("LOYALTY_STATEMENT_TIMEOUT_SECONDS", "inf"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError, match=f"^{name}='{value}': use a positive"):
            load_network_settings()
        monkeypatch.delenv(name)


def test_every_client_of_both_environments_carries_the_settings(bounded_env, monkeypatch):
    monkeypatch.setenv("LOYALTY_STATEMENT_TIMEOUT_SECONDS", "30")
    monkeypatch.setenv("LOYALTY_EMAIL_TRANSPORT", "ses")
    local = local_resources(load_settings())
    aws = aws_resources(replace(load_settings(), env="aws"))
    bounded = [local["s3"], local["appflow"], local["marketing_mailer"], aws["s3"], aws["appflow"]]
    bounded += [aws["alert_notifier"], aws["metrics_publisher"], aws["marketing_mailer"]]
    for resource in bounded:
        assert (resource.connect_timeout, resource.read_timeout, resource.max_attempts) == (2, 1, 2), resource
    for resource in (aws["dashboard_database"], aws["warehouse_io_manager"]):
        assert (resource.connect_timeout, resource.statement_timeout) == (2, 30), resource


# --- S3 through the lake and landing resources ----------------------------------------------------


@pytest.mark.parametrize("resource", ["lake", "landing"])
def test_s3_on_a_frozen_endpoint_fails_within_the_bound_and_names_it(frozen_s3, monkeypatch, resource):
    monkeypatch.setenv("LOYALTY_LAKE_URI", "s3://loyalty-test/lake")
    monkeypatch.setenv("LOYALTY_LANDING_URI", "s3://loyalty-test/landing")
    resources = local_resources(load_settings())

    if resource == "lake":
        error, seconds = timed(lambda: resources["lake"].store().get_bytes("churn_model.joblib"))
    else:
        error, seconds = timed(lambda: resources["landing"].drop_files("loyalty_history", "2024-03-04"))

    assert isinstance(error, ReadTimeoutError)
    assert_one_line_naming(error, f"http://{frozen_s3.host}:{frozen_s3.port}/loyalty-test")
    assert READ_TIMEOUT <= seconds < S3_BOUND_SECONDS


def test_a_run_writing_to_a_frozen_lake_fails_within_the_bound_and_names_it(frozen_s3, monkeypatch):
    monkeypatch.setenv("LOYALTY_LAKE_URI", "s3://loyalty-test/lake")
    error_class, message, seconds = timed_failed_write("lake_io_manager", local_resources(load_settings()))

    assert error_class == "ReadTimeoutError"
    assert f"http://{frozen_s3.host}:{frozen_s3.port}/loyalty-test/lake/network_probe" in message
    assert seconds < S3_BOUND_SECONDS + RUN_START_UP_SECONDS


def test_sns_alert_to_a_frozen_endpoint_fails_within_the_bound_and_names_it(frozen_s3, monkeypatch):
    monkeypatch.setenv("LOYALTY_ALERT_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:loyalty-alerts")
    monkeypatch.setenv("LOYALTY_EMAIL_TRANSPORT", "outbox")
    monkeypatch.setenv("LOYALTY_EMAIL_SENDER", "alerts@airline.example")
    monkeypatch.setenv("LOYALTY_ALERT_RECIPIENTS", "oncall@airline.example")
    resources = aws_resources(replace(load_settings(), env="aws"))
    alert = Alert("run failed", "daily_ingest_job", "raw_loyalty_history", "2024-03-04", "http://ui", "x", "error")

    with dg.build_resources({"alert_notifier": resources["alert_notifier"]}) as built:
        error, seconds = timed(lambda: built.alert_notifier.notify(alert, dg.get_dagster_logger()))

    assert_one_line_naming(error, f"Read timeout on endpoint URL: \"http://{frozen_s3.host}:{frozen_s3.port}/\"")
    assert READ_TIMEOUT <= seconds < S3_BOUND_SECONDS


# --- PostgreSQL (RDS) and Redshift ----------------------------------------------------------------


@pytest.fixture
def frozen_databases(frozen: FrozenEndpoint, bounded_env: None, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The aws dashboard database and warehouse IO manager, both pointed at the frozen endpoint."""
    monkeypatch.setenv("LOYALTY_RDS_DSN", f"host={frozen.host} port={frozen.port} user=postgres dbname=test")
    monkeypatch.setenv("LOYALTY_REDSHIFT_HOST", frozen.host)
    monkeypatch.setenv("LOYALTY_REDSHIFT_PORT", str(frozen.port))
    monkeypatch.setenv("LOYALTY_REDSHIFT_USER", "loader")
    monkeypatch.setenv("LOYALTY_REDSHIFT_PASSWORD", "not-used")
    monkeypatch.setenv("LOYALTY_EMAIL_TRANSPORT", "outbox")
    resources = aws_resources(replace(load_settings(), env="aws"))
    return {key: resources[key] for key in ("dashboard_database", "warehouse_io_manager")}


def test_postgres_on_a_frozen_server_fails_within_the_connect_timeout_and_names_it(frozen, frozen_databases):
    week = pd.Timestamp("2024-03-04").date()
    frame = pd.DataFrame({"loyalty_number": [1], "week": [week]})
    with dg.build_resources({"db": frozen_databases["dashboard_database"]}) as built:
        error, seconds = timed(lambda: built.db.replace_week("churn_predictions", frame, week))

    assert isinstance(error, ConnectionError)
    assert_one_line_naming(error, f"could not connect to PostgreSQL {frozen.host}:{frozen.port}/test: ")
    assert str(error).endswith("timeout expired")
    assert CONNECT_TIMEOUT <= seconds < CONNECT_TIMEOUT + 3


def test_redshift_load_on_a_frozen_server_fails_within_the_connect_timeout_and_names_it(frozen, frozen_databases):
    error_class, message, seconds = timed_failed_write("warehouse_io_manager", frozen_databases)

    assert error_class == "ConnectionError"
    assert f"could not connect to PostgreSQL {frozen.host}:{frozen.port}/dev: " in message
    assert message.strip().endswith("timeout expired")
    assert seconds < CONNECT_TIMEOUT + RUN_START_UP_SECONDS


def test_statement_timeout_cancels_a_statement_that_runs_too_long(postgres_dsn):
    conn = connect_postgres(postgres_dsn.dsn, connect_timeout=5, statement_timeout=0.5)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone() == ("500ms",)
            start = time.monotonic()
            with pytest.raises(Exception, match="canceling statement due to statement timeout"):
                cursor.execute("SELECT pg_sleep(10)")
            assert time.monotonic() - start < 3
    finally:
        conn.close()


# --- SMTP -----------------------------------------------------------------------------------------


def test_smtp_on_a_frozen_server_fails_within_the_read_timeout_and_names_it(frozen, bounded_env, monkeypatch):
    monkeypatch.setenv("LOYALTY_EMAIL_TRANSPORT", "smtp")
    monkeypatch.setenv("LOYALTY_SMTP_HOST", frozen.host)
    monkeypatch.setenv("LOYALTY_SMTP_PORT", str(frozen.port))
    monkeypatch.setenv("LOYALTY_SMTP_SECURITY", "none")
    monkeypatch.delenv("LOYALTY_SMTP_USER", raising=False)
    mailer = local_resources(load_settings())["marketing_mailer"]
    assert mailer.timeout == READ_TIMEOUT
    message = EmailMessage()
    message["Subject"] = "never sent: the server's greeting never comes"

    with dg.build_resources({"mailer": mailer}) as built:
        error, seconds = timed(lambda: built.mailer.deliver(message, "marketing_2024-03-04"))

    assert isinstance(error, EmailDeliveryError)
    assert_one_line_naming(error, f"could not connect to SMTP server {frozen.host}:{frozen.port} (security=none)")
    assert READ_TIMEOUT <= seconds < READ_TIMEOUT + 3
