"""The weekly distribution assets materialized against real servers: PostgreSQL, moto S3, aiosmtpd.

churn_predictions and committed drops of raw_loyalty_history are written straight into a lake
folder and declared as asset specs, so only the distribution assets run.
"""

import io
import socket
from contextlib import closing
from email import policy
from email.parser import BytesParser
from pathlib import Path

import boto3
import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import psycopg2
import pytest
from botocore.stub import ANY, Stubber
from dagster_aws.s3 import S3Resource

from loyalty_assets.defs.distribution.assets import DISTRIBUTION_ASSETS
from loyalty_assets.defs.partitions import daily_partitions, monthly_partitions, weekly_partitions
from loyalty_assets.defs.resources.destinations import (
    AppFlowResource,
    DuckDBDashboardDatabase,
    PostgresDashboardDatabase,
)
from loyalty_assets.defs.resources.mailer import SmtpMailer
from loyalty_assets.defs.resources.redshift import RedshiftPandasIOManager
from loyalty_assets.domain import registry
from loyalty_assets.domain.lake_keys import appflow_source_key, predictions_export_key
from loyalty_assets.domain.warehouse import CRM_COLUMNS
from loyalty_assets.environment import local_resources
from loyalty_assets.settings import load_settings
from loyalty_assets_tests.drop_files import put_committed_drop
from loyalty_assets_tests.lake_folder import LakeFolder

WEEK_1 = "2024-03-04"
WEEK_2 = "2024-03-11"
TIERS = ["Low", "Medium", "High", "Critical"]
SEGMENTS = ["Road Warriors", "Loyal Regulars", "Dabblers"]
IAM_ROLE = "arn:aws:iam::123456789012:role/loyalty-redshift-copy"
FLOW = "loyalty-churn-to-salesforce"
SENDER = "churn-reports@airline.example"
RECIPIENTS = ["marketing@airline.example", "crm-team@airline.example"]

UPSTREAM = [
    dg.AssetSpec("churn_predictions", partitions_def=weekly_partitions).with_io_manager_key("lake_io_manager"),
    dg.AssetSpec("raw_loyalty_history", partitions_def=daily_partitions).with_io_manager_key("lake_io_manager"),
    dg.AssetSpec("retention_experiment_results", partitions_def=monthly_partitions).with_io_manager_key(
        "lake_io_manager"
    ),
]
rds_asset, redshift_asset, salesforce_asset, email_asset = DISTRIBUTION_ASSETS


SEGMENTATION_VERSION = "2024-01.def"
SEGMENT_PROFILE = [
    {
        "segment": name,
        "members": 8,
        "share": 1 / 3,
        "median_flights_12m": flights,
        "median_distance_per_flight_12m": 900.0,
        "median_active_months_12m": 6.0,
        "churn_rate": None,
    }
    for name, flights in zip(SEGMENTS, [120.0, 30.0, 2.0])
]


def predictions(week: str, members: int, first_member: int = 100001) -> pd.DataFrame:
    position = np.arange(members)
    risk = np.round(np.linspace(2.0, 98.0, members), 1)
    return pd.DataFrame(
        {
            "loyalty_number": np.arange(first_member, first_member + members, dtype="int64"),
            "week": week,
            "snapshot_month": pd.Timestamp(week).to_period("M").to_timestamp() - pd.DateOffset(months=1),
            "churn_risk_pct": risk,
            "risk_vs_average": np.round(risk / risk.mean(), 2),
            "risk_tier": pd.cut(risk, [0, 25, 50, 75, 100], labels=TIERS).astype(str),
            "segment": np.array(SEGMENTS)[position % 3],
            "recommended_action": "call within a week",
            "experiment_arm": "treatment",
            "top_reasons": "fewer flights; points unredeemed",
            "churn_model_version": "churn-2024-02-01-abc",
            "segmentation_model_version": SEGMENTATION_VERSION,
        }
    )


def loyalty_history(members: int, clv: float, first_member: int = 100001) -> pd.DataFrame:
    numbers = np.arange(first_member, first_member + members, dtype="int64")
    return pd.DataFrame({"loyalty_number": numbers, "clv": clv + (numbers - first_member) * 10.0})


class Lake(LakeFolder):
    def put_week(self, week: str, frame: pd.DataFrame) -> None:
        """The week's predictions, their export file and the segmentation version that scored them."""
        registry.register(self.store, "segmentation", SEGMENTATION_VERSION, {}, {"segment_profile": SEGMENT_PROFILE})
        self.put_table("churn_predictions", week, frame)
        self.store.put_bytes(predictions_export_key(week, "csv"), frame.to_csv(index=False).encode())


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def materialize(assets, week: str, resources: dict, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return dg.materialize([*UPSTREAM, *assets], partition_key=week, resources=resources, raise_on_error=raise_on_error)


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [event for event in result.get_asset_materialization_events() if event.asset_key == dg.AssetKey(asset)]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def rows_per_week(dsn: str, schema: str, table: str) -> dict[str, tuple[int, int]]:
    """week -> (rows, distinct members), as another session sees the table."""
    with closing(psycopg2.connect(dsn)) as reader, reader.cursor() as cursor:
        cursor.execute(
            f'SELECT "week"::date::text, count(*), count(DISTINCT loyalty_number) FROM "{schema}"."{table}" GROUP BY 1'
        )
        return {week: (rows, members) for week, rows, members in cursor.fetchall()}


def warehouse_manager(postgres_dsn, **options) -> RedshiftPandasIOManager:
    """The Redshift IO manager pointed at the local PostgreSQL (fallback COPY FROM STDIN unless options)."""
    return RedshiftPandasIOManager(
        host="127.0.0.1",
        port=5432,
        user="postgres",
        password="",
        database="test",
        schema=postgres_dsn.schema,
        sslmode="disable",
        s3=S3Resource(),
        **options,
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_rds_replaces_the_week_in_postgres_and_leaves_other_weeks(postgres_dsn, lake):
    lake.put_week(WEEK_1, predictions(WEEK_1, 24))
    lake.put_week(WEEK_2, predictions(WEEK_2, 24))
    resources = {
        **lake.resources(),
        "dashboard_database": PostgresDashboardDatabase(dsn=postgres_dsn.dsn, db_schema=postgres_dsn.schema),
    }
    materialize([rds_asset], WEEK_1, resources)
    materialize([rds_asset], WEEK_2, resources)
    lake.put_week(WEEK_2, predictions(WEEK_2, 20, first_member=200001))
    result = materialize([rds_asset], WEEK_2, resources)

    assert rows_per_week(postgres_dsn.dsn, postgres_dsn.schema, "churn_predictions") == {
        WEEK_1: (24, 24),
        WEEK_2: (20, 20),
    }
    metadata = metadata_of(result, "rds_churn_predictions")
    assert metadata["rows_written"] == 20
    assert metadata["dagster/table_name"] == f"{postgres_dsn.schema}.churn_predictions"
    with closing(psycopg2.connect(postgres_dsn.dsn)) as reader, reader.cursor() as cursor:
        cursor.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = %s AND column_name = 'week'",
            (postgres_dsn.schema,),
        )
        assert cursor.fetchone() == ("date",)
        cursor.execute(
            f'SELECT min(loyalty_number) FROM "{postgres_dsn.schema}".churn_predictions WHERE week = %s', (WEEK_2,)
        )
        assert cursor.fetchone() == (200001,)


def test_redshift_io_manager_replaces_the_week_through_copy_from_stdin(postgres_dsn, lake):
    lake.put_week(WEEK_1, predictions(WEEK_1, 24))
    lake.put_week(WEEK_2, predictions(WEEK_2, 24))
    resources = {**lake.resources(), "warehouse_io_manager": warehouse_manager(postgres_dsn)}
    materialize([redshift_asset], WEEK_1, resources)
    materialize([redshift_asset], WEEK_2, resources)
    result = materialize([redshift_asset], WEEK_2, resources)

    assert rows_per_week(postgres_dsn.dsn, postgres_dsn.schema, "redshift_churn_predictions") == {
        WEEK_1: (24, 24),
        WEEK_2: (24, 24),
    }
    metadata = metadata_of(result, "redshift_churn_predictions")
    assert metadata["rows_written"] == metadata["dagster/partition_row_count"] == 24
    assert metadata["staging"] == "copy from stdin"
    assert f"\"week\" >= '{WEEK_2} 00:00:00' AND \"week\" < '2024-03-18 00:00:00'" in metadata["Query"]

    definitions = dg.Definitions(assets=[*UPSTREAM, redshift_asset], resources=resources)
    loaded = definitions.load_asset_value("redshift_churn_predictions", partition_key=WEEK_2)
    assert len(loaded) == 24
    assert set(loaded["week"]) == {pd.Timestamp(WEEK_2)}
    assert (
        loaded.sort_values("loyalty_number")["churn_risk_pct"].tolist()
        == predictions(WEEK_2, 24)["churn_risk_pct"].tolist()
    )


def test_redshift_s3_staging_builds_copy_parquet_and_rolls_back_a_failed_copy(postgres_dsn, lake, s3_bucket):
    staging_uri = f"s3://{s3_bucket}/redshift-staging"
    manager = warehouse_manager(postgres_dsn, s3_staging_uri=staging_uri, iam_role=IAM_ROLE)
    staging = manager.s3_staging()
    with pytest.raises(ValueError, match="go together"):
        warehouse_manager(postgres_dsn, s3_staging_uri=staging_uri).s3_staging()
    object_uri = staging.object_uri("analytics", "redshift_churn_predictions", "run-1")
    assert object_uri == f"{staging_uri}/analytics/redshift_churn_predictions/run-1.parquet"
    with closing(psycopg2.connect(postgres_dsn.dsn)) as conn:
        copy_sql = staging.copy_sql(object_uri).as_string(conn)
    assert copy_sql == (
        f"COPY \"loyalty_partition_staging\" FROM '{object_uri}' IAM_ROLE '{IAM_ROLE}' FORMAT AS PARQUET"
    )
    frame = predictions(WEEK_1, 5).assign(week=pd.Timestamp(WEEK_1))
    staging.upload(frame, object_uri)
    s3 = boto3.client("s3")
    body = s3.get_object(Bucket=s3_bucket, Key=object_uri.split("/", 3)[3])["Body"].read()
    staged = pd.read_parquet(io.BytesIO(body))
    assert list(staged.columns) == list(frame.columns)
    assert (staged["week"] == pd.Timestamp(WEEK_1)).all()

    # PostgreSQL rejects Redshift's COPY FROM S3: the week loaded before must survive, the object must go.
    lake.put_week(WEEK_1, predictions(WEEK_1, 24))
    materialize([redshift_asset], WEEK_1, {**lake.resources(), "warehouse_io_manager": warehouse_manager(postgres_dsn)})
    staging.delete(object_uri)
    result = materialize([redshift_asset], WEEK_1, {**lake.resources(), "warehouse_io_manager": manager}, False)

    (failure,) = result.get_step_failure_events()
    assert "IAM_ROLE" in failure.step_failure_data.error.to_string()
    assert rows_per_week(postgres_dsn.dsn, postgres_dsn.schema, "redshift_churn_predictions") == {WEEK_1: (24, 24)}
    assert s3.list_objects_v2(Bucket=s3_bucket, Prefix="redshift-staging/").get("KeyCount") == 0


def test_salesforce_sync_writes_crm_csv_to_s3_and_starts_the_flow(lake, s3_bucket):
    lake.put_week(WEEK_2, predictions(WEEK_2, 24))
    appflow_client = boto3.client("appflow", region_name="us-east-1")
    stubber = Stubber(appflow_client)
    stubber.add_response(
        "start_flow",
        {
            "flowArn": f"arn:aws:appflow:us-east-1:123456789012:flow/{FLOW}",
            "flowStatus": "Active",
            "executionId": "exec-42",
        },
        {"flowName": FLOW, "clientToken": ANY},
    )

    class StubbedAppFlow(AppFlowResource):
        def client(self):
            return appflow_client

    appflow = StubbedAppFlow(source_uri=f"s3://{s3_bucket}/appflow", flow_name=FLOW, s3=S3Resource())
    with stubber:
        result = materialize([salesforce_asset], WEEK_2, {**lake.resources(), "appflow": appflow})
    stubber.assert_no_pending_responses()

    key = f"appflow/{appflow_source_key(WEEK_2)}"
    body = boto3.client("s3").get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    exported = pd.read_csv(io.BytesIO(body))
    assert list(exported.columns) == CRM_COLUMNS
    assert len(exported) == 24 and exported["loyalty_number"].is_unique
    metadata = metadata_of(result, "salesforce_churn_sync")
    assert metadata["appflow_execution_id"] == "exec-42"
    assert metadata["rows_written"] == 24
    assert metadata["source_file"] == f"s3://{s3_bucket}/{key}"


def test_marketing_email_goes_through_smtp_with_counts_change_and_file(lake, smtp_server):
    lake.put_week(WEEK_1, predictions(WEEK_1, 24))
    lake.put_week(WEEK_2, predictions(WEEK_2, 20))
    put_committed_drop(lake.store, "2024-03-12", loyalty_history(24, clv=1000.0))
    put_committed_drop(lake.store, "2024-03-14", loyalty_history(24, clv=5000.0))
    mailer = SmtpMailer(
        sender=SENDER, recipients=", ".join(RECIPIENTS), host=smtp_server.host, port=smtp_server.port, security="none"
    )
    result = materialize([email_asset], WEEK_2, {**lake.resources(), "marketing_mailer": mailer})

    (mail,) = smtp_server.messages
    week_2 = predictions(WEEK_2, 20)
    critical = week_2[week_2["risk_tier"] == "Critical"]
    assert mail.rcpt_tos == RECIPIENTS
    assert mail.message["Subject"] == f"Loyalty churn week {WEEK_2}: {len(critical)} Critical members"
    body = mail.message.get_body(("plain",)).get_content()
    assert f"{len(critical)} Critical members of 20 scored" in body
    change = body.split("Change from last week:")[1].split("Top Critical")[0]
    assert change.strip().splitlines()[-1].split()[-1] == "-4"  # Total x Total: 20 members against 24
    # Value from the latest drop of the week (2024-03-14): the riskiest, most valuable member is the last.
    top_line = body.split("expected loss (risk x member value):")[1].strip().splitlines()[1].split()
    expected_loss = critical["churn_risk_pct"].iloc[-1] / 100 * (5000.0 + 19 * 10.0)
    assert top_line[0] == str(critical["loyalty_number"].iloc[-1])
    assert float(top_line[-1]) == pytest.approx(expected_loss, abs=0.01)
    full_file = lake.store.url(predictions_export_key(WEEK_2, "csv"))
    assert f"Full file: {full_file}" in body
    # The segmentation version that scored the week describes its segments; its churn rate was not recorded.
    profile = body.split("Segments:")[1].split("\n\n")[0]
    assert [line.split()[1:] for line in profile.splitlines() if line.startswith("Dabblers ")] == [
        ["8", "33.3%", "2.0", "900.0", "6.0"]
    ]
    assert "Churn rate: not available" in profile
    assert "call within a week. Why: fewer flights; points unredeemed" in body
    metadata = metadata_of(result, "marketing_email")
    assert metadata["previous_week"] == WEEK_1
    assert metadata["member_value_drop"] == "2024-03-14"
    assert metadata["delivered"] == f"smtp://{smtp_server.host}:{smtp_server.port}"


def test_local_environment_writes_duckdb_files_appflow_folder_and_outbox(tmp_path, monkeypatch):
    for name in (
        "LOYALTY_LAKE_URI",
        "LOYALTY_APPFLOW_SOURCE_URI",
        "LOYALTY_APPFLOW_FLOW_NAME",
        "LOYALTY_EMAIL_TRANSPORT",
        "LOYALTY_EMAIL_SENDER",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOYALTY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOYALTY_MARKETING_RECIPIENTS", ", ".join(RECIPIENTS))
    settings = load_settings()
    lake = Lake(Path(settings.lake_uri))
    lake.put_week(WEEK_1, predictions(WEEK_1, 24))
    put_committed_drop(lake.store, "2024-03-05", loyalty_history(24, clv=1000.0))
    resources = local_resources(settings)
    assert isinstance(resources["dashboard_database"], DuckDBDashboardDatabase)

    materialize(DISTRIBUTION_ASSETS, WEEK_1, resources)
    result = materialize(DISTRIBUTION_ASSETS, WEEK_1, resources)

    with duckdb.connect(str(settings.home / "dashboard.duckdb"), read_only=True) as dashboard:
        assert dashboard.execute(
            "SELECT CAST(week AS VARCHAR), count(*), count(DISTINCT loyalty_number) FROM churn_predictions GROUP BY 1"
        ).fetchall() == [(WEEK_1, 24, 24)]
        assert dashboard.execute("SELECT typeof(week) FROM churn_predictions LIMIT 1").fetchone() == ("DATE",)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as warehouse:
        assert warehouse.execute("SELECT count(*) FROM analytics.redshift_churn_predictions").fetchone() == (24,)
    exported = pd.read_csv(settings.home / "appflow" / appflow_source_key(WEEK_1))
    assert list(exported.columns) == CRM_COLUMNS and len(exported) == 24
    assert metadata_of(result, "salesforce_churn_sync")["appflow"] == "not configured"
    eml = settings.home / "outbox" / f"marketing_{WEEK_1}.eml"
    message = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    assert message["To"] == ", ".join(RECIPIENTS)
    assert message["From"] == "churn-reports@localhost"
    body = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Change from last week:\nfirst week" in body
    assert metadata_of(result, "marketing_email")["delivered"] == str(eml)


def test_an_unreachable_database_fails_only_its_asset_and_a_rerun_repairs_it(postgres_dsn, lake, smtp_server, tmp_path):
    lake.put_week(WEEK_2, predictions(WEEK_2, 24))
    put_committed_drop(lake.store, "2024-03-12", loyalty_history(24, clv=1000.0))
    port = closed_port()
    resources = {
        **lake.resources(),
        "dashboard_database": PostgresDashboardDatabase(
            dsn=f"host=127.0.0.1 port={port} user=postgres dbname=test", db_schema=postgres_dsn.schema
        ),
        "warehouse_io_manager": warehouse_manager(postgres_dsn),
        "appflow": AppFlowResource(source_uri=str(tmp_path / "appflow"), s3=S3Resource()),
        "marketing_mailer": SmtpMailer(
            sender=SENDER, recipients=RECIPIENTS[0], host=smtp_server.host, port=smtp_server.port, security="none"
        ),
    }
    result = materialize(DISTRIBUTION_ASSETS, WEEK_2, resources, raise_on_error=False)

    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "rds_churn_predictions"
    assert f"127.0.0.1:{port}/test is unreachable" in failure.step_failure_data.user_failure_data.description
    assert {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()} == {
        "redshift_churn_predictions",
        "salesforce_churn_sync",
        "marketing_email",
    }
    assert len(smtp_server.messages) == 1

    resources["dashboard_database"] = PostgresDashboardDatabase(dsn=postgres_dsn.dsn, db_schema=postgres_dsn.schema)
    assert materialize(DISTRIBUTION_ASSETS, WEEK_2, resources).success
    for table in ("churn_predictions", "redshift_churn_predictions"):
        assert rows_per_week(postgres_dsn.dsn, postgres_dsn.schema, table) == {WEEK_2: (24, 24)}
