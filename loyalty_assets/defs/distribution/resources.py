"""Destinations of the weekly churn predictions: dashboard database, AppFlow source, marketing mailer.

Environment variables (secrets are read through ``dg.EnvVar`` at run time, never stored):

| variable | meaning | default |
|---|---|---|
| `LOYALTY_RDS_DSN` | aws: libpq connection string of the dashboard PostgreSQL (RDS), a secret | required in aws |
| `LOYALTY_RDS_SCHEMA` | aws: existing schema of the dashboard table `churn_predictions` | `public` |
| `LOYALTY_REDSHIFT_HOST`, `LOYALTY_REDSHIFT_USER`, `LOYALTY_REDSHIFT_PASSWORD` | aws: Redshift endpoint and login (the password is a secret) | required in aws |
| `LOYALTY_REDSHIFT_PORT`, `LOYALTY_REDSHIFT_DATABASE`, `LOYALTY_REDSHIFT_SCHEMA`, `LOYALTY_REDSHIFT_SSLMODE` | aws: Redshift port, database, schema, libpq sslmode | `5439`, `dev`, `analytics`, `require` |
| `LOYALTY_REDSHIFT_S3_STAGING_URI`, `LOYALTY_REDSHIFT_IAM_ROLE` | aws: `s3://` prefix for staged Parquet and the IAM role ARN Redshift reads it with; both or neither (neither: COPY FROM STDIN) | unset |
| `LOYALTY_APPFLOW_SOURCE_URI` | folder or `s3://` prefix the S3 -> Salesforce AppFlow flow reads | `$LOYALTY_HOME/appflow` locally, required in aws |
| `LOYALTY_APPFLOW_FLOW_NAME` | on-demand AppFlow flow started after each export | unset locally (file only), required in aws |
| `LOYALTY_EMAIL_TRANSPORT` | `outbox` (write `.eml` files), `smtp` or `ses` | `outbox` locally, `smtp` in aws |
| `LOYALTY_EMAIL_SENDER` | From address of the marketing e-mail | `churn-reports@localhost` locally, required in aws |
| `LOYALTY_MARKETING_RECIPIENTS` | comma-separated marketing addresses | `marketing@localhost` locally, required in aws |
| `LOYALTY_SMTP_HOST` | SMTP server (transport `smtp`) | required with `smtp` |
| `LOYALTY_SMTP_PORT`, `LOYALTY_SMTP_SECURITY` | SMTP port and `starttls`, `ssl` or `none` | `587`, `starttls` |
| `LOYALTY_SMTP_USER`, `LOYALTY_SMTP_PASSWORD` | SMTP login, only sent over TLS (the password is a secret) | unset: no login |

Locally the dashboard table lives in `$LOYALTY_HOME/dashboard.duckdb`, the warehouse table in
`$LOYALTY_HOME/warehouse.duckdb` (schema `analytics`) and the marketing e-mail in
`$LOYALTY_HOME/outbox/marketing_<week>.eml`. SES uses boto3's own region and endpoint settings
(`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`).
"""

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from datetime import date
from email.message import EmailMessage
from typing import Any

import dagster as dg
import pandas as pd
from dagster_aws.s3 import S3Resource
from dagster_duckdb_pandas import DuckDBPandasIOManager
from pydantic import Field

from loyalty_assets.defs.clients import BoundedAwsClients, client_bounds
from loyalty_assets.defs.distribution.redshift import RedshiftPandasIOManager
from loyalty_assets.defs.storage import store_at
from loyalty_assets.domain.lake_keys import outbox_key
from loyalty_assets.domain.messaging import send_ses, send_smtp, write_eml
from loyalty_assets.domain.storage import ObjectStore
from loyalty_assets.domain.warehouse import (
    PartitionSlice,
    PostgresTableSink,
    TableSink,
    connect_postgres,
    open_duckdb_sink,
    postgres_target,
)
from loyalty_assets.settings import NetworkSettings, Settings

WEEK_COLUMN = "week"
DASHBOARD_KEY = ("loyalty_number", WEEK_COLUMN)


class DashboardDatabase(dg.ConfigurableResource):
    """The database behind the dashboards. ``replace_week`` swaps one week of a table atomically."""

    db_schema: str

    def replace_week(self, table: str, frame: pd.DataFrame, week: date) -> int:
        """Replace the rows of ``week`` in ``table`` with ``frame`` in one transaction; returns rows written.

        ``frame`` has a ``week`` column (date, timestamp or ``YYYY-MM-DD`` text) equal to ``week`` on
        every row; the table stores it as DATE, is created from the frame's columns when missing and
        has the primary key ``(loyalty_number, week)``.
        """
        with self.table_sink() as sink:
            return sink.replace_partition(
                table,
                frame,
                [PartitionSlice(WEEK_COLUMN, (week,))],
                schema=self.db_schema,
                column_types={WEEK_COLUMN: "date"},
                primary_key=DASHBOARD_KEY,
            )

    @abstractmethod
    def table_sink(self) -> AbstractContextManager[TableSink]:
        """A sink on a new connection, closed when the context ends."""

    @abstractmethod
    def location(self) -> str:
        """Where the database is, for messages and metadata (never a password)."""

    def table_name(self, table: str) -> str:
        """The qualified name of ``table`` in this database."""
        return f"{self.db_schema}.{table}"


class PostgresDashboardDatabase(DashboardDatabase):
    """PostgreSQL (RDS): COPY into a staging table, then delete the week and insert, in one transaction."""

    dsn: str = Field(description="libpq connection string (key=value or postgresql:// URI).")
    db_schema: str = Field(default="public", description="Existing schema that holds the tables.")
    connect_timeout: float = Field(
        default=NetworkSettings.connect_timeout_seconds, description="Seconds to wait for the server."
    )
    statement_timeout: float = Field(
        default=NetworkSettings.statement_timeout_seconds, description="Seconds any statement may run."
    )

    @contextmanager
    def table_sink(self) -> Iterator[TableSink]:
        conn = connect_postgres(
            self.dsn, connect_timeout=self.connect_timeout, statement_timeout=self.statement_timeout
        )
        with closing(conn):
            yield PostgresTableSink(conn)

    def location(self) -> str:
        return f"postgresql {postgres_target(self.dsn)}"


class DuckDBDashboardDatabase(DashboardDatabase):
    """A local DuckDB file: delete the week and insert the frame in one DuckDB transaction.

    DuckDB lets one process write a file at a time (another one fails on the file lock); within
    the process, loads take turns on a lock.
    """

    path: str = Field(description="The DuckDB database file; its folder is created when missing.")
    db_schema: str = Field(default="main", description="Schema of the tables (created when missing).")

    def table_sink(self) -> AbstractContextManager[TableSink]:
        return open_duckdb_sink(self.path)

    def location(self) -> str:
        return f"duckdb {self.path}"


class AppFlowResource(BoundedAwsClients):
    """The S3 -> Salesforce AppFlow flow: the location it reads and the on-demand flow to start.

    Without ``flow_name`` the export is only written (the local environment).
    """

    source_uri: str = Field(description="Folder or s3://bucket/prefix the flow reads.")
    flow_name: str | None = Field(default=None, description="On-demand AppFlow flow; None: not configured.")
    s3: S3Resource

    def source_store(self) -> ObjectStore:
        return store_at(self.source_uri, self.s3)

    def client(self) -> Any:
        """A bounded boto3 AppFlow client (boto3 honours ``AWS_ENDPOINT_URL`` and the usual credentials)."""
        return self.aws_client("appflow")


class MarketingMailer(dg.ConfigurableResource):
    """Who sends the marketing e-mail to whom, and how it is delivered."""

    sender: str = Field(description="From address.")
    recipients: str = Field(description="Comma-separated recipient addresses.")

    def recipient_list(self) -> list[str]:
        addresses = [address.strip() for address in self.recipients.split(",") if address.strip()]
        if not addresses:
            raise ValueError(
                "no e-mail recipients configured (LOYALTY_MARKETING_RECIPIENTS or LOYALTY_ALERT_RECIPIENTS is empty)"
            )
        return addresses

    @abstractmethod
    def deliver(self, message: EmailMessage, name: str) -> str:
        """Deliver ``message``; ``name`` identifies it (e.g. ``marketing_2024-01-08``). Returns where it went."""


class SmtpMailer(MarketingMailer):
    """Delivery through an SMTP server; a refusal raises with the server's host:port."""

    host: str
    port: int = 587
    security: str = Field(default="starttls", description="starttls, ssl or none.")
    username: str | None = None
    password: str | None = None
    timeout: float = Field(default=NetworkSettings.read_timeout_seconds, description="Seconds per connect or reply.")

    def deliver(self, message: EmailMessage, name: str) -> str:
        send_smtp(
            message,
            self.host,
            self.port,
            security=self.security,
            username=self.username,
            password=self.password,
            timeout=self.timeout,
        )
        return f"smtp://{self.host}:{self.port}"


class SesMailer(MarketingMailer, BoundedAwsClients):
    """Delivery through Amazon SES (``send_raw_email``)."""

    def deliver(self, message: EmailMessage, name: str) -> str:
        message_id = send_ses(self.aws_client("ses"), message)
        return f"ses:{message_id}"


class OutboxMailer(MarketingMailer):
    """No delivery: the message is written as ``<outbox>/<name>.eml`` (the local environment)."""

    outbox_uri: str = Field(description="Folder or s3://bucket/prefix of the .eml files.")
    s3: S3Resource

    def deliver(self, message: EmailMessage, name: str) -> str:
        store = store_at(self.outbox_uri, self.s3)
        return write_eml(store, outbox_key(name), message)


def build_mailer(
    settings: Settings, s3: S3Resource, network: NetworkSettings, sender: Any, recipients: Any
) -> MarketingMailer:
    email = settings.email
    if email.transport == "outbox":
        return OutboxMailer(sender=sender, recipients=recipients, outbox_uri=settings.outbox_uri, s3=s3)
    if email.transport == "ses":
        return SesMailer(sender=sender, recipients=recipients, **client_bounds(network))
    return SmtpMailer(
        sender=sender,
        recipients=recipients,
        host=dg.EnvVar("LOYALTY_SMTP_HOST"),
        port=email.smtp_port,
        security=email.smtp_security,
        username=email.smtp_user,
        password=dg.EnvVar("LOYALTY_SMTP_PASSWORD") if email.smtp_user else None,
        timeout=network.read_timeout_seconds,
    )


def local_distribution_resources(settings: Settings, s3: S3Resource, network: NetworkSettings) -> dict[str, Any]:
    """Embedded destinations: DuckDB files, a folder for AppFlow, an outbox of .eml files."""
    return {
        "dashboard_database": DuckDBDashboardDatabase(path=str(settings.home / "dashboard.duckdb")),
        "warehouse_io_manager": DuckDBPandasIOManager(database=str(settings.warehouse_path), schema="analytics"),
        "appflow": AppFlowResource(
            source_uri=settings.crm.appflow_source_uri,
            flow_name=settings.crm.appflow_flow_name,
            s3=s3,
            **client_bounds(network),
        ),
        "marketing_mailer": build_mailer(
            settings, s3, network, settings.email.sender, settings.email.marketing_recipients
        ),
    }


def aws_distribution_resources(settings: Settings, s3: S3Resource, network: NetworkSettings) -> dict[str, Any]:
    """RDS PostgreSQL, Redshift, AppFlow from S3, and SMTP or SES."""
    redshift = settings.redshift
    return {
        "dashboard_database": PostgresDashboardDatabase(
            dsn=dg.EnvVar("LOYALTY_RDS_DSN"),
            db_schema=settings.rds.schema,
            connect_timeout=network.connect_timeout_seconds,
            statement_timeout=network.statement_timeout_seconds,
        ),
        "warehouse_io_manager": RedshiftPandasIOManager(
            host=dg.EnvVar("LOYALTY_REDSHIFT_HOST"),
            port=redshift.port,
            user=dg.EnvVar("LOYALTY_REDSHIFT_USER"),
            password=dg.EnvVar("LOYALTY_REDSHIFT_PASSWORD"),
            database=redshift.database,
            schema=redshift.schema,
            sslmode=redshift.sslmode,
            s3_staging_uri=redshift.s3_staging_uri,
            iam_role=redshift.iam_role,
            s3=s3,
            connect_timeout=network.connect_timeout_seconds,
            statement_timeout=network.statement_timeout_seconds,
        ),
        "appflow": AppFlowResource(
            source_uri=dg.EnvVar("LOYALTY_APPFLOW_SOURCE_URI"),
            flow_name=dg.EnvVar("LOYALTY_APPFLOW_FLOW_NAME"),
            s3=s3,
            **client_bounds(network),
        ),
        "marketing_mailer": build_mailer(
            settings, s3, network, dg.EnvVar("LOYALTY_EMAIL_SENDER"), dg.EnvVar("LOYALTY_MARKETING_RECIPIENTS")
        ),
    }
