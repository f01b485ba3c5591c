"""Every environment variable the project reads, documented and validated in this one place.

``VARIABLES`` documents each variable; the README's table is ``environment_table_markdown()``.
``load_settings()`` returns typed settings, nested per concern, or raises ``SettingsError`` naming
every missing or invalid variable at once. Secrets (DSN, passwords, the alert topic and recipients)
are only checked for presence here: the resources read them through ``dagster.EnvVar`` at run time.
This module imports no Dagster, so ``loyalty-assets check-config`` answers at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ENVIRONMENTS = ("local", "aws")
DEFAULT_START_DATE = "2024-01-01"
EMAIL_TRANSPORTS = ("outbox", "smtp", "ses")
SMTP_SECURITY = ("starttls", "ssl", "none")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_UI_URL = "http://127.0.0.1:3000"
DEFAULT_METRICS_NAMESPACE = "LoyaltyAssets"


@dataclass(frozen=True)
class Variable:
    name: str
    meaning: str
    default: str


VARIABLES = (
    Variable(
        "LOYALTY_ENV", "`local` (folders + DuckDB) or `aws` (S3, Redshift, RDS, SNS, AppFlow, SES/SMTP)", "`local`"
    ),
    Variable("LOYALTY_HOME", "base folder of the local environment", "`.loyalty` under the working directory"),
    Variable(
        "LOYALTY_LANDING_URI",
        "landing root, a folder or `s3://bucket/prefix`",
        "`$LOYALTY_HOME/landing`; required (`s3://`) in aws",
    ),
    Variable(
        "LOYALTY_LAKE_URI",
        "where assets are persisted, a folder or `s3://bucket/prefix`",
        "`$LOYALTY_HOME/lake`; required (`s3://`) in aws",
    ),
    Variable("LOYALTY_START_DATE", "first partition date, `YYYY-MM-DD`", f"`{DEFAULT_START_DATE}`"),
    Variable("LOYALTY_TIMEZONE", "timezone of partitions and schedules", "`UTC`"),
    Variable("LOYALTY_SCHEDULES_RUNNING", "schedules and sensors on by default", "`true` in aws, `false` locally"),
    Variable("DAGSTER_HOME", "Dagster instance folder", "`$LOYALTY_HOME/dagster_home` for the CLI and `make dev`"),
    Variable("AWS_ENDPOINT_URL", "boto3's own: an S3-compatible endpoint", "unset (real AWS)"),
    Variable("AWS_DEFAULT_REGION", "boto3's own: the region (or a region in the AWS config file)", "required in aws"),
    Variable(
        "LOYALTY_RDS_DSN", "aws: libpq connection string of the dashboard PostgreSQL, a secret", "required in aws"
    ),
    Variable("LOYALTY_RDS_SCHEMA", "aws: existing schema of the dashboard table", "`public`"),
    Variable("LOYALTY_REDSHIFT_HOST", "aws: Redshift endpoint", "required in aws"),
    Variable("LOYALTY_REDSHIFT_USER", "aws: Redshift login", "required in aws"),
    Variable("LOYALTY_REDSHIFT_PASSWORD", "aws: Redshift password, a secret", "required in aws"),
    Variable("LOYALTY_REDSHIFT_PORT", "aws: Redshift port", "`5439`"),
    Variable("LOYALTY_REDSHIFT_DATABASE", "aws: Redshift database", "`dev`"),
    Variable("LOYALTY_REDSHIFT_SCHEMA", "aws: Redshift schema", "`analytics`"),
    Variable("LOYALTY_REDSHIFT_SSLMODE", f"aws: libpq sslmode of Redshift, one of {', '.join(SSL_MODES)}", "`require`"),
    Variable(
        "LOYALTY_REDSHIFT_S3_STAGING_URI",
        "aws: `s3://` prefix of the staged Parquet Redshift's `COPY` reads (set with the IAM role, or neither)",
        "unset: `COPY FROM STDIN`",
    ),
    Variable(
        "LOYALTY_REDSHIFT_IAM_ROLE",
        "aws: the IAM role ARN Redshift's `COPY` reads the staged Parquet with",
        "unset: `COPY FROM STDIN`",
    ),
    Variable(
        "LOYALTY_APPFLOW_SOURCE_URI",
        "folder or `s3://` prefix the S3 → Salesforce AppFlow flow reads",
        "`$LOYALTY_HOME/appflow` locally, required (`s3://`) in aws",
    ),
    Variable(
        "LOYALTY_APPFLOW_FLOW_NAME",
        "on-demand AppFlow flow started after each export",
        "unset locally (file only), required in aws",
    ),
    Variable(
        "LOYALTY_EMAIL_TRANSPORT",
        "how the marketing and alert e-mails go out: `outbox` (`.eml` files), `smtp` or `ses`",
        "`outbox` locally, `smtp` in aws",
    ),
    Variable(
        "LOYALTY_EMAIL_SENDER", "From address of the e-mails", "`churn-reports@localhost` locally, required in aws"
    ),
    Variable(
        "LOYALTY_MARKETING_RECIPIENTS",
        "comma-separated marketing addresses",
        "`marketing@localhost` locally, required in aws",
    ),
    Variable("LOYALTY_SMTP_HOST", "SMTP server", "required with transport `smtp`"),
    Variable("LOYALTY_SMTP_PORT", "SMTP port", "`587`"),
    Variable("LOYALTY_SMTP_SECURITY", f"SMTP security, one of {', '.join(SMTP_SECURITY)}", "`starttls`"),
    Variable("LOYALTY_SMTP_USER", "SMTP login, only sent over TLS", "unset: no login"),
    Variable("LOYALTY_SMTP_PASSWORD", "password of the SMTP login, a secret", "required with `LOYALTY_SMTP_USER`"),
    Variable("LOYALTY_UI_URL", "base URL of the Dagster UI, for the links in alerts", f"`{DEFAULT_UI_URL}`"),
    Variable("LOYALTY_ALERT_TOPIC_ARN", "aws: SNS topic for failure and gate alerts", "required in aws"),
    Variable(
        "LOYALTY_ALERT_RECIPIENTS",
        "aws: comma-separated addresses for alert e-mails (same transport as the marketing e-mail)",
        "required in aws",
    ),
    Variable(
        "LOYALTY_METRICS_NAMESPACE", "aws: CloudWatch namespace of the run metrics", f"`{DEFAULT_METRICS_NAMESPACE}`"
    ),
    Variable(
        "LOYALTY_CONNECT_TIMEOUT_SECONDS",
        "seconds to wait for a connection to S3, SNS, AppFlow, CloudWatch, SES, PostgreSQL, Redshift or SMTP "
        "(libpq rounds up to whole seconds, at least 2)",
        "`10`",
    ),
    Variable(
        "LOYALTY_READ_TIMEOUT_SECONDS", "seconds to wait for each answer of an AWS service or the SMTP server", "`60`"
    ),
    Variable(
        "LOYALTY_MAX_ATTEMPTS",
        "tries per AWS call, the first included (botocore `standard` retries, which retry timeouts)",
        "`3`",
    ),
    Variable(
        "LOYALTY_STATEMENT_TIMEOUT_SECONDS",
        "PostgreSQL and Redshift cancel any statement that runs longer (`statement_timeout`)",
        "`1800`",
    ),
    Variable(
        "LOYALTY_CHURN_TRAINING_CONFIG",
        "JSON object of `churn_model_candidate` run-config fields that the monthly training of `run`, `demo` "
        'and `simulate-experiment` uses, e.g. `{"n_estimators": 50, "backtest_windows": 1}` for a quicker fit',
        "unset: the asset's defaults",
    ),
    Variable("LOYALTY_API_KEYS", "online API: comma-separated API keys, a secret", "required by `serve`"),
    Variable(
        "LOYALTY_API_RELOAD_SECONDS", "online API: how often the registry and the latest scored week are read", "`30`"
    ),
    Variable("LOYALTY_API_MAX_BODY_BYTES", "online API: largest accepted request body (larger gets 413)", "`65536`"),
)
VARIABLE_NAMES = frozenset(variable.name for variable in VARIABLES)


def environment_table_markdown() -> str:
    """The README's table of environment variables."""
    rows = [f"| `{v.name}` | {v.meaning} | {v.default} |" for v in VARIABLES]
    return "\n".join(["| variable | meaning | default |", "|---|---|---|", *rows])


def _environ_value(environ: Mapping[str, str], name: str) -> str:
    """The stripped value of a documented variable ("" when unset)."""
    if name not in VARIABLE_NAMES:
        raise KeyError(f"{name} is read but not documented in settings.VARIABLES")
    return environ.get(name, "").strip()


class SettingsError(ValueError):
    """Environment variables the project cannot use; ``problems`` has one line per variable."""

    def __init__(self, problems: list[str] | str):
        problems = [problems] if isinstance(problems, str) else problems
        self.problems = problems
        super().__init__(
            problems[0]
            if len(problems) == 1
            else f"{len(problems)} settings are missing or invalid:\n  " + "\n  ".join(problems)
        )


@dataclass(frozen=True)
class StorageSettings:
    landing_uri: str
    lake_uri: str


@dataclass(frozen=True)
class RdsSettings:
    """The dashboard PostgreSQL; its DSN is a secret (``LOYALTY_RDS_DSN``)."""

    schema: str


@dataclass(frozen=True)
class RedshiftSettings:
    """The warehouse; host, user and password are read through ``dagster.EnvVar``."""

    port: int
    database: str
    schema: str
    sslmode: str
    s3_staging_uri: str | None
    iam_role: str | None


@dataclass(frozen=True)
class CrmSettings:
    """The S3 -> Salesforce AppFlow hand-off."""

    appflow_source_uri: str
    appflow_flow_name: str | None


@dataclass(frozen=True)
class EmailSettings:
    """The marketing e-mail (and, in aws, the alert e-mails); the SMTP password is a secret."""

    transport: str
    sender: str
    marketing_recipients: str
    smtp_port: int
    smtp_security: str
    smtp_user: str | None


@dataclass(frozen=True)
class AlertSettings:
    """Run and gate alerts and run metrics; the SNS topic and alert recipients are read through EnvVar."""

    ui_url: str
    metrics_namespace: str


# --- Network bounds: every call to S3, SNS, AppFlow, CloudWatch, SES, PostgreSQL, Redshift and SMTP ---
NETWORK_DEFAULTS = {
    "LOYALTY_CONNECT_TIMEOUT_SECONDS": 10.0,
    "LOYALTY_READ_TIMEOUT_SECONDS": 60.0,
    "LOYALTY_MAX_ATTEMPTS": 3,
    "LOYALTY_STATEMENT_TIMEOUT_SECONDS": 1800.0,
}


@dataclass(frozen=True)
class NetworkSettings:
    """How long a network call may wait, and how often botocore tries it (the first try included)."""

    connect_timeout_seconds: float = NETWORK_DEFAULTS["LOYALTY_CONNECT_TIMEOUT_SECONDS"]
    read_timeout_seconds: float = NETWORK_DEFAULTS["LOYALTY_READ_TIMEOUT_SECONDS"]
    max_attempts: int = NETWORK_DEFAULTS["LOYALTY_MAX_ATTEMPTS"]
    statement_timeout_seconds: float = NETWORK_DEFAULTS["LOYALTY_STATEMENT_TIMEOUT_SECONDS"]


def _positive(name: str, default: float | int, kind: type) -> float | int:
    """A positive finite number from ``name``, ``default`` when it is unset."""
    value = _environ_value(os.environ, name)
    if not value:
        return default
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if not 0 < number < float("inf"):
        raise SettingsError(f"{name}={value!r}: use a positive {'whole ' if kind is int else ''}number")
    return number


def load_network_settings() -> NetworkSettings:
    return NetworkSettings(
        connect_timeout_seconds=_positive("LOYALTY_CONNECT_TIMEOUT_SECONDS", NETWORK_DEFAULTS["LOYALTY_CONNECT_TIMEOUT_SECONDS"], float),
        read_timeout_seconds=_positive("LOYALTY_READ_TIMEOUT_SECONDS", NETWORK_DEFAULTS["LOYALTY_READ_TIMEOUT_SECONDS"], float),
        max_attempts=_positive("LOYALTY_MAX_ATTEMPTS", NETWORK_DEFAULTS["LOYALTY_MAX_ATTEMPTS"], int),
        statement_timeout_seconds=_positive("LOYALTY_STATEMENT_TIMEOUT_SECONDS", NETWORK_DEFAULTS["LOYALTY_STATEMENT_TIMEOUT_SECONDS"], float),
    )


@dataclass(frozen=True)
class Settings:
    env: str
    home: Path
    start_date: str
    timezone: str
    schedules_running: bool
    storage: StorageSettings
    rds: RdsSettings
    redshift: RedshiftSettings
    crm: CrmSettings
    email: EmailSettings
    alerts: AlertSettings
    network: NetworkSettings
    churn_training_config: Mapping[str, object] = field(default_factory=dict)

    @property
    def landing_uri(self) -> str:
        return self.storage.landing_uri

    @property
    def lake_uri(self) -> str:
        return self.storage.lake_uri

    @property
    def dagster_home(self) -> Path:
        return Path(_environ_value(os.environ, "DAGSTER_HOME") or self.home / "dagster_home")

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def outbox_uri(self) -> str:
        return str(self.home / "outbox")


class _Reader:
    """Reads variables and collects every problem instead of stopping at the first one."""

    def __init__(self, environ: dict[str, str]):
        self.environ = environ
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str | None:
        return _environ_value(self.environ, name) or default

    def required(self, name: str, what: str) -> str:
        value = self.text(name)
        if value is None:
            self.problems.append(f"{name} is not set: {what}")
        return value or ""

    def secret(self, name: str, what: str) -> None:
        """Presence only: the value is read through ``dagster.EnvVar`` and never kept here."""
        self.required(name, what)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = (self.text(name) or default).lower()
        if value not in choices:
            self.problems.append(f"{name}={value!r}: use one of {', '.join(choices)}")
            return default
        return value

    def integer(self, name: str, default: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            self.problems.append(f"{name}={value!r}: use a whole number")
            return default

    def flag(self, name: str, default: bool) -> bool:
        value = (self.text(name) or "").lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        if value:
            self.problems.append(f"{name}={value!r}: use true or false")
        return default

    def json_object(self, name: str) -> dict:
        value = self.text(name)
        if value is None:
            return {}
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            self.problems.append(f"{name}={value!r}: use a JSON object such as {{\"n_estimators\": 50}}")
            return {}
        return parsed

    def uri(self, name: str, default: str | None, aws: bool, what: str) -> str:
        """A folder or ``s3://`` prefix; in aws it must be set and on S3 (never a local folder)."""
        value = self.text(name)
        if not aws:
            return value or default or ""
        if value is None:
            self.problems.append(f"{name} is not set: {what} (s3://bucket/prefix)")
        elif not value.startswith("s3://"):
            self.problems.append(f"{name}={value!r}: use s3://bucket/prefix in aws, not a local folder")
        return value or ""


def _read_storage(read: _Reader, home: Path, aws: bool) -> StorageSettings:
    return StorageSettings(
        landing_uri=read.uri("LOYALTY_LANDING_URI", str(home / "landing"), aws, "the landing root"),
        lake_uri=read.uri("LOYALTY_LAKE_URI", str(home / "lake"), aws, "where assets are persisted"),
    )


def _read_rds(read: _Reader, aws: bool) -> RdsSettings:
    if aws:
        read.secret("LOYALTY_RDS_DSN", "libpq connection string of the dashboard PostgreSQL")
    return RdsSettings(schema=read.text("LOYALTY_RDS_SCHEMA", "public"))


def _read_redshift(read: _Reader, aws: bool) -> RedshiftSettings:
    staging_uri = read.text("LOYALTY_REDSHIFT_S3_STAGING_URI")
    iam_role = read.text("LOYALTY_REDSHIFT_IAM_ROLE")
    if aws:
        read.secret("LOYALTY_REDSHIFT_HOST", "Redshift endpoint")
        read.secret("LOYALTY_REDSHIFT_USER", "Redshift login")
        read.secret("LOYALTY_REDSHIFT_PASSWORD", "Redshift password")
        if (staging_uri is None) != (iam_role is None):
            read.problems.append(
                "LOYALTY_REDSHIFT_S3_STAGING_URI and LOYALTY_REDSHIFT_IAM_ROLE: set both, or neither"
            )
        if staging_uri is not None and not staging_uri.startswith("s3://"):
            read.problems.append(f"LOYALTY_REDSHIFT_S3_STAGING_URI={staging_uri!r}: use s3://bucket/prefix")
    return RedshiftSettings(
        port=read.integer("LOYALTY_REDSHIFT_PORT", 5439),
        database=read.text("LOYALTY_REDSHIFT_DATABASE", "dev"),
        schema=read.text("LOYALTY_REDSHIFT_SCHEMA", "analytics"),
        sslmode=read.choice("LOYALTY_REDSHIFT_SSLMODE", SSL_MODES, "require"),
        s3_staging_uri=staging_uri,
        iam_role=iam_role,
    )


def _read_crm(read: _Reader, home: Path, aws: bool) -> CrmSettings:
    source_uri = read.uri("LOYALTY_APPFLOW_SOURCE_URI", str(home / "appflow"), aws, "the AppFlow source")
    if aws:
        flow_name = read.required("LOYALTY_APPFLOW_FLOW_NAME", "the S3 -> Salesforce AppFlow flow")
    else:
        flow_name = read.text("LOYALTY_APPFLOW_FLOW_NAME")
    return CrmSettings(appflow_source_uri=source_uri, appflow_flow_name=flow_name)


def _read_email(read: _Reader, aws: bool) -> EmailSettings:
    transport = read.choice("LOYALTY_EMAIL_TRANSPORT", EMAIL_TRANSPORTS, "smtp" if aws else "outbox")
    if aws:
        sender = read.required("LOYALTY_EMAIL_SENDER", "From address of the e-mails")
        recipients = read.required("LOYALTY_MARKETING_RECIPIENTS", "comma-separated marketing addresses")
    else:
        sender = read.text("LOYALTY_EMAIL_SENDER", "churn-reports@localhost")
        recipients = read.text("LOYALTY_MARKETING_RECIPIENTS", "marketing@localhost")
    smtp_user = read.text("LOYALTY_SMTP_USER")
    if transport == "smtp":
        read.required("LOYALTY_SMTP_HOST", "the SMTP server (LOYALTY_EMAIL_TRANSPORT=smtp)")
        if smtp_user:
            read.secret("LOYALTY_SMTP_PASSWORD", "the password of LOYALTY_SMTP_USER")
    return EmailSettings(
        transport=transport,
        sender=sender,
        marketing_recipients=recipients,
        smtp_port=read.integer("LOYALTY_SMTP_PORT", 587),
        smtp_security=read.choice("LOYALTY_SMTP_SECURITY", SMTP_SECURITY, "starttls"),
        smtp_user=smtp_user,
    )


def _read_alerts(read: _Reader, aws: bool) -> AlertSettings:
    if aws:
        read.secret("LOYALTY_ALERT_TOPIC_ARN", "SNS topic of failure and gate alerts")
        read.secret("LOYALTY_ALERT_RECIPIENTS", "comma-separated addresses of alert e-mails")
    ui_url = read.text("LOYALTY_UI_URL", DEFAULT_UI_URL)
    if not ui_url.startswith(("http://", "https://")):
        read.problems.append(f"LOYALTY_UI_URL={ui_url!r}: use an http:// or https:// URL")
    return AlertSettings(ui_url=ui_url, metrics_namespace=read.text("LOYALTY_METRICS_NAMESPACE", DEFAULT_METRICS_NAMESPACE))


def _read_start_date(read: _Reader) -> str:
    start_date = read.text("LOYALTY_START_DATE", DEFAULT_START_DATE)
    try:
        date.fromisoformat(start_date)
    except ValueError:
        read.problems.append(f"LOYALTY_START_DATE={start_date!r}: use YYYY-MM-DD")
        return DEFAULT_START_DATE
    return start_date


def _read_timezone(read: _Reader) -> str:
    timezone = read.text("LOYALTY_TIMEZONE", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        read.problems.append(f"LOYALTY_TIMEZONE={timezone!r}: use an IANA name such as UTC or Europe/Paris")
        return "UTC"
    return timezone


def _read_network(read: _Reader) -> NetworkSettings:
    try:
        return load_network_settings()
    except SettingsError as error:
        read.problems.extend(error.problems)
        return NetworkSettings()


def _check_aws_region(read: _Reader) -> None:
    import botocore.session  # resolves the region as boto3 will: environment, then the config file

    if not botocore.session.Session().get_config_variable("region"):
        read.problems.append("AWS_DEFAULT_REGION is not set (nor a region in the AWS config file)")


def load_settings() -> Settings:
    """The settings of the environment; ``SettingsError`` lists every problem."""
    read = _Reader(dict(os.environ))
    env = (read.text("LOYALTY_ENV", "local") or "local").lower()
    if env not in ENVIRONMENTS:
        raise SettingsError([f"LOYALTY_ENV={env!r}: use one of {', '.join(ENVIRONMENTS)}"])
    aws = env == "aws"
    home = Path(read.text("LOYALTY_HOME") or Path.cwd() / ".loyalty").expanduser().resolve()
    settings = Settings(
        env=env,
        home=home,
        start_date=_read_start_date(read),
        timezone=_read_timezone(read),
        schedules_running=read.flag("LOYALTY_SCHEDULES_RUNNING", default=aws),
        storage=_read_storage(read, home, aws),
        rds=_read_rds(read, aws),
        redshift=_read_redshift(read, aws),
        crm=_read_crm(read, home, aws),
        email=_read_email(read, aws),
        alerts=_read_alerts(read, aws),
        network=_read_network(read),
        churn_training_config=read.json_object("LOYALTY_CHURN_TRAINING_CONFIG"),
    )
    if aws:
        _check_aws_region(read)
    if read.problems:
        raise SettingsError(read.problems)
    return settings


@dataclass(frozen=True)
class ApiSettings:
    """The online scoring API (``loyalty-assets serve``)."""

    api_keys: tuple[str, ...]
    reload_seconds: float
    max_body_bytes: int


def load_api_settings() -> ApiSettings:
    """``LOYALTY_API_KEYS`` (comma-separated secret, required), ``LOYALTY_API_RELOAD_SECONDS``,
    ``LOYALTY_API_MAX_BODY_BYTES``."""
    keys = tuple(key.strip() for key in _environ_value(os.environ, "LOYALTY_API_KEYS").split(",") if key.strip())
    if not keys:
        raise SettingsError("LOYALTY_API_KEYS is not set: give the API at least one key (comma-separated)")
    return ApiSettings(
        api_keys=keys,
        reload_seconds=_positive("LOYALTY_API_RELOAD_SECONDS", 30.0, float),
        max_body_bytes=_positive("LOYALTY_API_MAX_BODY_BYTES", 65536, int),
    )
