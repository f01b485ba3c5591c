"""The loyalty-assets command: sample data, configuration checks, one-line errors, and quick answers."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from loyalty_assets import cli
from loyalty_assets.domain.ingest import SourceFile, ingest_drop
from loyalty_assets.domain.storage import LocalStore

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOYALTY_HOME", str(tmp_path))
    monkeypatch.delenv("LOYALTY_LANDING_URI", raising=False)
    return tmp_path


def test_sample_data_writes_one_drop_per_day_in_the_landing_zone(home, capsys):
    assert (
        cli.main(["sample-data", "--customers", "300", "--end", "2026-11-27", "--days", "2", "--format", "csv.gz"]) == 0
    )
    landing = LocalStore(home / "landing")
    keys = landing.list_keys("")
    assert sorted({key.split("/")[1] for key in keys}) == ["dt=2026-11-26", "dt=2026-11-27"]
    assert all(key.endswith((".csv.gz", "/_manifest.json")) for key in keys)
    assert sum(key.endswith("/_manifest.json") for key in keys) == 4  # one per drop folder
    keys = [key for key in keys if key.endswith(".csv.gz")]
    loyalty = [
        SourceFile(key, landing.get_bytes(key)) for key in keys if key.startswith("loyalty_history/dt=2026-11-27")
    ]
    activity = [
        SourceFile(key, landing.get_bytes(key)) for key in keys if key.startswith("flight_activity/dt=2026-11-27")
    ]
    assert len(ingest_drop(loyalty, activity, drop_date="2026-11-27").loyalty) > 0
    assert "wrote 4 files for 2 drops" in capsys.readouterr().out


def test_run_without_a_drop_for_the_date_is_one_clear_line(home, capsys):
    assert cli.main(["run", "--as-of", "2026-11-27"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "no drop dated 2026-11-27" in error and "sample-data" in error


def test_a_missing_landing_bucket_is_one_line_naming_it(home, aws_env, monkeypatch, capsys):
    monkeypatch.setenv("LOYALTY_LANDING_URI", "s3://no-such-bucket/landing")
    assert cli.main(["run", "--as-of", "2026-11-27"]) == 2
    error = _one_line_error(capsys)
    assert error.startswith("loyalty-assets: cannot list the landing zone s3://no-such-bucket/landing:")
    assert "bucket 'no-such-bucket' does not exist" in error


def test_bad_environment_value_is_one_clear_line(home, monkeypatch, capsys):
    monkeypatch.setenv("LOYALTY_ENV", "staging")
    assert cli.main(["run", "--as-of", "2026-11-27"]) == 2
    assert capsys.readouterr().err.strip() == "loyalty-assets: LOYALTY_ENV='staging': use one of local, aws"


def test_malformed_date_is_rejected_by_the_parser(home, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--as-of", "2026-02-30"])
    assert exit_info.value.code == 2
    assert "'2026-02-30' is not a date (YYYY-MM-DD)" in capsys.readouterr().err


AWS_SETTINGS = {
    "LOYALTY_ENV": "aws",
    "LOYALTY_LANDING_URI": "s3://bucket/landing",
    "LOYALTY_LAKE_URI": "s3://bucket/lake",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "LOYALTY_RDS_DSN": "host=rds dbname=loyalty user=app password=x",
    "LOYALTY_REDSHIFT_HOST": "redshift",
    "LOYALTY_REDSHIFT_USER": "app",
    "LOYALTY_REDSHIFT_PASSWORD": "x",
    "LOYALTY_APPFLOW_SOURCE_URI": "s3://bucket/appflow",
    "LOYALTY_APPFLOW_FLOW_NAME": "churn-to-salesforce",
    "LOYALTY_EMAIL_SENDER": "churn@example.com",
    "LOYALTY_MARKETING_RECIPIENTS": "marketing@example.com",
    "LOYALTY_SMTP_HOST": "smtp.example.com",
    "LOYALTY_ALERT_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:alerts",
    "LOYALTY_ALERT_RECIPIENTS": "oncall@example.com",
}


def _one_line_error(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "Traceback" not in error, error
    return error


@pytest.fixture
def aws(home, monkeypatch):
    for name in [*AWS_SETTINGS, "LOYALTY_EMAIL_TRANSPORT", "LOYALTY_SMTP_USER", "AWS_CONFIG_FILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no_aws_config"))
    monkeypatch.setenv("LOYALTY_ENV", "aws")
    return home


def test_check_config_names_every_missing_aws_variable_and_touches_nothing(aws, capsys):
    assert cli.main(["check-config"]) == 2
    error = capsys.readouterr().err
    missing = [name for name in AWS_SETTINGS if name != "LOYALTY_ENV"]
    assert error.startswith(f"loyalty-assets: {len(missing)} settings are missing or invalid:")
    assert sorted(line.split()[0] for line in error.splitlines()[1:]) == sorted(missing)
    assert list(aws.iterdir()) == []


def test_a_complete_aws_configuration_is_one_ok_line(aws, monkeypatch, capsys):
    for name, value in AWS_SETTINGS.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("configuration OK (LOYALTY_ENV=aws): landing s3://bucket/landing")


def test_aws_never_falls_back_to_local_folders(aws, monkeypatch, capsys):
    for name, value in AWS_SETTINGS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LOYALTY_LAKE_URI", str(aws / "lake"))
    monkeypatch.setenv("LOYALTY_SMTP_PORT", "five")
    assert cli.main(["check-config"]) == 2
    assert capsys.readouterr().err.splitlines()[1:] == [
        f"  LOYALTY_LAKE_URI='{aws / 'lake'}': use s3://bucket/prefix in aws, not a local folder",
        "  LOYALTY_SMTP_PORT='five': use a whole number",
    ]


@pytest.mark.parametrize(
    "command", [["run", "--as-of", "2026-11-27"], ["demo", "--as-of", "2026-11-27"], ["model", "promote", "--version", "v1"]]
)
def test_commands_that_change_something_check_the_configuration_first(aws, command, capsys):
    assert cli.main(command) == 2
    assert "LOYALTY_RDS_DSN is not set" in capsys.readouterr().err
    assert list(aws.iterdir()) == []


def test_as_of_after_today_or_before_the_start_date_is_one_line(home, monkeypatch, capsys):
    monkeypatch.delenv("LOYALTY_TIMEZONE", raising=False)
    monkeypatch.setenv("LOYALTY_START_DATE", "2024-01-01")
    tomorrow = date.today() + timedelta(days=2)
    assert cli.main(["run", "--as-of", tomorrow.isoformat()]) == 2
    assert f"--as-of {tomorrow} is after today" in _one_line_error(capsys)
    assert cli.main(["run", "--as-of", "2023-12-31"]) == 2
    assert _one_line_error(capsys) == "loyalty-assets: --as-of 2023-12-31 is before LOYALTY_START_DATE=2024-01-01"


def test_demo_in_the_future_writes_nothing(home, capsys):
    assert cli.main(["demo", "--as-of", "2030-01-01"]) == 2
    assert "--as-of 2030-01-01 is after today" in _one_line_error(capsys)
    assert list(home.iterdir()) == []


@pytest.mark.parametrize(
    "arguments", [["--customers", "0"], ["--customers", "-5"], ["--days", "0"], ["--months", "0"]]
)
def test_sample_data_needs_positive_counts(home, arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sample-data", *arguments])
    assert exit_info.value.code == 2
    assert "is not a positive number" in _one_line_error(capsys)
    assert list(home.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LOYALTY_ENV", "prod", "LOYALTY_ENV='prod': use one of local, aws"),
        ("LOYALTY_START_DATE", "2024-13-01", "LOYALTY_START_DATE='2024-13-01': use YYYY-MM-DD"),
        ("LOYALTY_TIMEZONE", "Mars/Olympus", "LOYALTY_TIMEZONE='Mars/Olympus': use an IANA name"),
        ("LOYALTY_CHURN_TRAINING_CONFIG", "[50]", "LOYALTY_CHURN_TRAINING_CONFIG='[50]': use a JSON object"),
    ],
)
def test_bad_settings_are_one_line(home, monkeypatch, capsys, name, value, message):
    monkeypatch.setenv(name, value)
    assert cli.main(["run", "--as-of", "2026-11-27"]) == 2
    assert _one_line_error(capsys).startswith(f"loyalty-assets: {message}")


# Commands that must answer without Dagster; the probe prints whether anything imported it.
FAST_COMMANDS = [["--help"], ["run", "--help"], ["sample-data", "--days", "0"], ["run"], ["check-config"]]
PROBE = (
    "import sys\nfrom loyalty_assets import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    "print(sorted({name.split('.')[0] for name in sys.modules} & {'dagster', 'pandas', 'sklearn'}), file=sys.stderr)"
)


def _child_env(home) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("LOYALTY_")}
    return {**env, "LOYALTY_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}


@pytest.mark.parametrize("command", FAST_COMMANDS, ids=" ".join)
def test_the_cli_answers_in_under_a_second_without_importing_dagster(home, command):
    env = _child_env(home)
    probe = subprocess.run([sys.executable, "-c", PROBE, *command], env=env, capture_output=True, text=True)
    assert probe.stderr.strip().splitlines()[-1] == "[]", probe.stderr
    # CPU seconds of the child (user + system): the command's own cost, which is its wall time on an
    # idle machine; wall time on a shared CI machine also measures the neighbours.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "loyalty_assets.cli", *command], env=env, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 1.0, f"{cpu:.2f} s CPU ({wall:.2f} s wall)"


def test_a_domain_module_builds_no_definitions_and_imports_no_dagster(home):
    check = (
        "import sys, loyalty_assets.domain.features\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'dagster' "
        "or name == 'loyalty_assets.definitions'))"
    )
    result = subprocess.run([sys.executable, "-c", check], env=_child_env(home), capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
