"""One place wires the environment: a dictionary of resources per ``LOYALTY_ENV``, built from ``Settings``.

``local`` is the embedded default (folders under ``LOYALTY_HOME``, DuckDB files, e-mails to an outbox
folder, alerts to a JSON-lines file, metrics to the log); ``aws`` uses S3 through dagster-aws
``S3Resource``, RDS PostgreSQL, Redshift, AppFlow, SMTP or SES, SNS and CloudWatch. Secrets are read
through ``dg.EnvVar`` only. Every network client is bounded by ``settings.network``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_duckdb_pandas import DuckDBPandasIOManager

from loyalty_assets.defs.clients import bounded_s3, client_bounds
from loyalty_assets.defs.distribution.redshift import RedshiftPandasIOManager
from loyalty_assets.defs.distribution.resources import (
    AppFlowResource,
    DuckDBDashboardDatabase,
    PostgresDashboardDatabase,
)
from loyalty_assets.defs.orchestration.resources import (
    AwsAlertNotifier,
    CloudWatchMetricsPublisher,
    LocalAlertNotifier,
    LogMetricsPublisher,
)
from loyalty_assets.defs.resources.mailer import Mailer, OutboxMailer, SesMailer, SmtpMailer
from loyalty_assets.defs.storage import (
    LakeModelIOManager,
    LakeParquetIOManager,
    LakeResource,
    LandingResource,
)
from loyalty_assets.settings import Settings


def _storage_resources(settings: Settings, s3: S3Resource) -> dict[str, Any]:
    lake = LakeResource(uri=settings.lake_uri, s3=s3)
    return {
        "s3": s3,
        "landing": LandingResource(uri=settings.landing_uri, s3=s3),
        "lake": lake,
        "lake_io_manager": LakeParquetIOManager(lake=lake),
        "model_io_manager": LakeModelIOManager(lake=lake),
    }


def mailer_for(settings: Settings, s3: S3Resource, sender: Any, recipients: Any) -> Mailer:
    """The mailer of ``LOYALTY_EMAIL_TRANSPORT`` from ``sender`` to ``recipients`` (text or ``dg.EnvVar``)."""
    email = settings.email
    if email.transport == "outbox":
        return OutboxMailer(sender=sender, recipients=recipients, outbox_uri=settings.outbox_uri, s3=s3)
    if email.transport == "ses":
        return SesMailer(sender=sender, recipients=recipients, **client_bounds(settings.network))
    return SmtpMailer(
        sender=sender,
        recipients=recipients,
        host=dg.EnvVar("LOYALTY_SMTP_HOST"),
        port=email.smtp_port,
        security=email.smtp_security,
        username=email.smtp_user,
        password=dg.EnvVar("LOYALTY_SMTP_PASSWORD") if email.smtp_user else None,
        timeout=settings.network.read_timeout_seconds,
    )


def local_resources(settings: Settings) -> dict[str, Any]:
    """Folders, DuckDB files, a folder for AppFlow, an outbox of .eml files, alerts to a file."""
    # boto3 itself honours AWS_ENDPOINT_URL and AWS_DEFAULT_REGION when these are left unset.
    s3 = bounded_s3(settings.network)
    return {
        **_storage_resources(settings, s3),
        "dashboard_database": DuckDBDashboardDatabase(path=str(settings.home / "dashboard.duckdb")),
        "warehouse_io_manager": DuckDBPandasIOManager(database=str(settings.warehouse_path), schema="analytics"),
        "appflow": AppFlowResource(
            source_uri=settings.crm.appflow_source_uri,
            flow_name=settings.crm.appflow_flow_name,
            s3=s3,
            **client_bounds(settings.network),
        ),
        "marketing_mailer": mailer_for(settings, s3, settings.email.sender, settings.email.marketing_recipients),
        "alert_notifier": LocalAlertNotifier(
            ui_url=settings.alerts.ui_url, alerts_path=str(settings.home / "alerts.jsonl")
        ),
        "metrics_publisher": LogMetricsPublisher(),
    }


def aws_resources(settings: Settings) -> dict[str, Any]:
    """S3, RDS PostgreSQL, Redshift, AppFlow from S3, SMTP or SES, SNS and CloudWatch."""
    network, redshift = settings.network, settings.redshift
    s3 = bounded_s3(network)
    sender = dg.EnvVar("LOYALTY_EMAIL_SENDER")
    return {
        **_storage_resources(settings, s3),
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
        "marketing_mailer": mailer_for(settings, s3, sender, dg.EnvVar("LOYALTY_MARKETING_RECIPIENTS")),
        "alert_notifier": AwsAlertNotifier(
            ui_url=settings.alerts.ui_url,
            topic_arn=dg.EnvVar("LOYALTY_ALERT_TOPIC_ARN"),
            mailer=mailer_for(settings, s3, sender, dg.EnvVar("LOYALTY_ALERT_RECIPIENTS")),
            **client_bounds(network),
        ),
        "metrics_publisher": CloudWatchMetricsPublisher(
            namespace=settings.alerts.metrics_namespace, **client_bounds(network)
        ),
    }


RESOURCES_BY_ENV: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "local": local_resources,
    "aws": aws_resources,
}


def resources_for(settings: Settings) -> dict[str, Any]:
    return RESOURCES_BY_ENV[settings.env](settings)
