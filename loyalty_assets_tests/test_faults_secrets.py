"""No secret in any error: a marker secret planted in every secret variable never reaches stderr, the
Dagster instance (event log, compute logs) or the failure alert, whatever the connection error.

The errors are real: libpq parse errors of a mistyped key=value DSN and of a URI with a bad ``%``
escape, a refused login at the local PostgreSQL (it trusts local connections, so an unknown role is
what refuses the planted password), and an SMTP AUTH failure at aiosmtpd over STARTTLS. They run
through ``dagster.materialize`` with the aws resources ``environment.py`` builds from those variables.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
from aiosmtpd.smtp import AuthResult
from dagster_shared.serdes import serialize_value

from loyalty_assets.defs.distribution.assets import DISTRIBUTION_ASSETS
from loyalty_assets.domain.redaction import SECRET_ENVIRONMENT_VARIABLES
from loyalty_assets.environment import aws_resources, local_resources
from loyalty_assets.settings import load_settings
from loyalty_assets_tests.test_distribution_assets import UPSTREAM, Lake, loyalty_history, predictions
from loyalty_assets_tests.test_orchestration import evaluate_run_status_sensor, read_alerts
from loyalty_assets_tests.tls import write_self_signed_certificate

WEEK = "2024-03-11"
MARKER = f"Pw_SECRET_{uuid.uuid4().hex[:8]}"
UNKNOWN_ROLE = f"nobody_{uuid.uuid4().hex[:8]}"
rds_asset, redshift_asset, _, email_asset = DISTRIBUTION_ASSETS

DSNS = {
    "mistyped key=value": f"host=127.0.0.1 port=5432 dbname=test user=postgres password=Bad {MARKER}",
    "uri with a bad % escape": f"postgresql://postgres:{MARKER}%zz@127.0.0.1:5432/test",
    "uri with @ and / in the password": f"postgresql://postgres:{MARKER}@x/y@127.0.0.1:5432/test",
    "refused login": f"host=127.0.0.1 port=5432 dbname=test user={UNKNOWN_ROLE} password={MARKER}",
}
# What each DSN's failure says, so the test knows the intended error happened.
RDS_REASONS = {
    "mistyped key=value": 'invalid PostgreSQL connection string: invalid dsn: missing "***" after "***"',
    "uri with a bad % escape": 'invalid PostgreSQL connection string: invalid dsn: '
    'invalid percent-encoded token: "***"',
    "uri with @ and / in the password": 'could not connect to PostgreSQL x:5432/y@127.0.0.1:5432/test: could not '
    'translate host name "x"',
    "refused login": f'could not connect to PostgreSQL 127.0.0.1:5432/test: connection to server at "127.0.0.1", '
    f'port 5432 failed: FATAL: role "{UNKNOWN_ROLE}" does not exist',
}


@pytest.fixture
def smtp_with_login(make_smtp_server, tmp_path: Path) -> Iterator[tuple]:
    """An aiosmtpd server that requires STARTTLS and AUTH and refuses every login; yields (server, logins, cert)."""
    cert_path, key_path = write_self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    logins: list[tuple[str, str]] = []

    def refuse(server, session, envelope, mechanism, auth_data) -> AuthResult:
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535

    server = make_smtp_server(auth_required=True, authenticator=refuse, tls_context=context, require_starttls=True)
    yield server, logins, cert_path


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, smtp_with_login) -> None:
    """The marker in every secret variable; RDS, Redshift and SMTP variables pointing at local servers."""
    server, _, cert_path = smtp_with_login
    for name in SECRET_ENVIRONMENT_VARIABLES:
        monkeypatch.setenv(name, f"{MARKER}-{name.lower()}")
    environment = {
        "LOYALTY_HOME": str(tmp_path / "home"),
        "LOYALTY_REDSHIFT_HOST": "127.0.0.1",
        "LOYALTY_REDSHIFT_PORT": "5432",
        "LOYALTY_REDSHIFT_USER": UNKNOWN_ROLE,
        "LOYALTY_REDSHIFT_DATABASE": "test",
        "LOYALTY_REDSHIFT_SSLMODE": "disable",
        "LOYALTY_EMAIL_TRANSPORT": "smtp",
        "LOYALTY_EMAIL_SENDER": "churn-reports@airline.example",
        "LOYALTY_MARKETING_RECIPIENTS": "marketing@airline.example",
        "LOYALTY_SMTP_HOST": server.host,
        "LOYALTY_SMTP_PORT": str(server.port),
        "LOYALTY_SMTP_SECURITY": "starttls",
        "LOYALTY_SMTP_USER": "churn-bot",
        "SSL_CERT_FILE": str(cert_path),  # the SMTP client trusts the test certificate like a system CA
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for name in ("LOYALTY_LAKE_URI", "LOYALTY_REDSHIFT_S3_STAGING_URI", "LOYALTY_REDSHIFT_IAM_ROLE"):
        monkeypatch.delenv(name, raising=False)


def failure_text(failure) -> str:
    """What a step failure says: a dg.Failure's description, else the messages of the error and its causes."""
    if failure.user_failure_data is not None:
        return failure.user_failure_data.description
    error, messages = failure.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def files_containing(root: Path, marker: str) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and marker.encode() in path.read_bytes()]


@pytest.mark.parametrize("case", list(DSNS))
def test_no_secret_reaches_stderr_the_instance_or_the_alert(
    case, planted, smtp_with_login, monkeypatch, tmp_path, capfd
):
    monkeypatch.setenv("LOYALTY_RDS_DSN", DSNS[case])
    settings = load_settings()
    lake = Lake(Path(settings.lake_uri))
    lake.put_week(WEEK, predictions(WEEK, 24))
    lake.put("raw_loyalty_history", "2024-03-12", loyalty_history(24, clv=1000.0))
    aws = aws_resources(replace(settings, env="aws"))
    alerts = local_resources(settings)["alert_notifier"]
    resources = {
        **lake.resources(),
        **{key: aws[key] for key in ("dashboard_database", "warehouse_io_manager", "marketing_mailer")},
    }
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()

    with dg.DagsterInstance.local_temp(str(dagster_home)) as instance:
        result = dg.materialize(
            [*UPSTREAM, rds_asset, redshift_asset, email_asset],
            partition_key=WEEK,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        evaluate_run_status_sensor("run_failure_alert_sensor", instance, result, {"alert_notifier": alerts})
        events = [serialize_value(entry) for entry in instance.all_logs(result.run_id)]

    # The three intended failures happened: the planted secrets were really used.
    failures = {event.step_key: failure_text(event.step_failure_data) for event in result.get_step_failure_events()}
    assert sorted(failures) == ["marketing_email", "rds_churn_predictions", "redshift_churn_predictions"]
    assert RDS_REASONS[case] in failures["rds_churn_predictions"]
    assert f'role "{UNKNOWN_ROLE}" does not exist' in failures["redshift_churn_predictions"]
    assert "(535, b'5.7.8 Authentication credentials invalid')" in failures["marketing_email"]
    server, logins, _ = smtp_with_login
    assert set(logins) == {("churn-bot", f"{MARKER}-loyalty_smtp_password")}  # smtplib tries PLAIN, then LOGIN
    (alert,) = read_alerts(settings.home)
    assert "rds_churn_predictions" in alert["details"] and "marketing_email" in alert["details"]

    captured = capfd.readouterr()
    assert MARKER not in captured.err and MARKER not in captured.out
    assert [event for event in events if MARKER in event] == []
    assert files_containing(dagster_home, MARKER) == []
    assert files_containing(settings.home, MARKER) == []
    assert server.messages == []
