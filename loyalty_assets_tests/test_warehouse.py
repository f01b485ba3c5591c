"""Partition replacement against the real local PostgreSQL, Redshift COPY SQL, CRM export, AppFlow."""

from __future__ import annotations

from contextlib import closing
from datetime import date

import boto3
import duckdb
import pandas as pd
import psycopg2
import pytest
from botocore.stub import Stubber

from loyalty_assets.domain.warehouse import (
    DuckDBQuoting,
    PartitionSlice,
    PostgresTableSink,
    PsycopgQuoting,
    RedshiftS3Staging,
    RedshiftTableSink,
    checked_identifier,
    connect_postgres,
    crm_export,
    open_duckdb_sink,
    redshift_copy_parquet_sql,
    start_appflow,
)


def weekly_predictions(week: str, risks: list[float], first_member: int = 100001) -> pd.DataFrame:
    members = len(risks)
    return pd.DataFrame(
        {
            "loyalty_number": pd.Series(range(first_member, first_member + members), dtype="int64"),
            "week": week,
            "churn_risk_pct": pd.Series(risks, dtype="float64"),
            "risk_tier": ["Critical" if risk >= 50 else "Low" for risk in risks],
            "segment": "Frequent flyers",
            "recommended_action": "call",
            "experiment_arm": "treatment",
            "salary": 55000.0,
            "city": "Toronto",
        }
    )


def replace_postgres_week(conn, table: str, frame: pd.DataFrame, week: str, **options) -> int:
    return PostgresTableSink(conn).replace_partition(table, frame, [PartitionSlice("week", (week,))], **options)


def replace_redshift_week(conn, table: str, frame: pd.DataFrame, week: str, staging=None, **options) -> int:
    sink = RedshiftTableSink(conn, staging)
    return sink.replace_partition(table, frame, [PartitionSlice("week", (week,))], **options)


def read_table(target, table: str) -> pd.DataFrame:
    """The table as another session sees it (committed rows only)."""
    with closing(psycopg2.connect(target.dsn)) as reader, reader.cursor() as cursor:
        cursor.execute(f'SELECT * FROM "{target.schema}"."{table}" ORDER BY week, loyalty_number')
        columns = [description.name for description in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=columns)


@pytest.fixture
def conn(postgres_dsn):
    connection = connect_postgres(postgres_dsn.dsn)
    yield connection
    connection.close()


@pytest.mark.parametrize(
    "name",
    ['churn"; DROP TABLE users; --', "1week", "", "a" * 64, "café", "schema.table", "x y", None],
)
def test_unsafe_identifiers_are_refused(name):
    with pytest.raises(ValueError, match="unsafe SQL identifier"):
        checked_identifier(name)


def test_identifiers_and_literals_are_quoted_by_the_engine_libraries(conn):
    for quoting in (PsycopgQuoting(conn), DuckDBQuoting()):
        assert quoting.identifier("churn_predictions") == '"churn_predictions"'
        assert quoting.identifier("_" + "a" * 62) == '"_' + "a" * 62 + '"'
        assert quoting.identifier("mart", "crm") == quoting.identifier(None, "mart", "crm") == '"mart"."crm"'
        assert quoting.literal("it's") == "'it''s'"
        with pytest.raises(ValueError, match="unsafe SQL identifier"):
            quoting.identifier("mart", 'crm" --')


def test_replace_partition_postgres_twice_keeps_one_copy_and_other_weeks(conn, postgres_dsn):
    schema = postgres_dsn.schema
    previous_week = weekly_predictions("2024-01-01", [10.0, 80.0])
    replace_postgres_week(conn, "crm", previous_week, "2024-01-01", schema=schema)

    week = weekly_predictions("2024-01-08", [5.0, 60.0, 95.5])
    assert replace_postgres_week(conn, "crm", week, "2024-01-08", schema=schema) == 3
    rerun = week.assign(churn_risk_pct=[6.0, 61.0, 96.5])
    assert replace_postgres_week(conn, "crm", rerun, "2024-01-08", schema=schema) == 3

    stored = read_table(postgres_dsn, "crm")
    assert stored.groupby("week").size().to_dict() == {"2024-01-01": 2, "2024-01-08": 3}
    assert stored.loc[stored["week"] == "2024-01-08", "churn_risk_pct"].tolist() == [6.0, 61.0, 96.5]
    assert stored.loc[stored["week"] == "2024-01-01", "churn_risk_pct"].tolist() == [10.0, 80.0]


def test_replace_partition_postgres_derives_column_types(conn, postgres_dsn):
    frame = pd.DataFrame(
        {
            "loyalty_number": pd.Series([1, 2], dtype="int64"),
            "cancelled_year": pd.Series([2018, None], dtype="Int64"),
            "risk": [0.25, None],
            "is_member": [True, False],
            "scored_at": pd.to_datetime(["2024-01-08 06:00", "2024-01-08 06:00"]),
            "week": ["2024-01-08", "2024-01-08"],
            "amount": [1.5, 2.25],
        }
    )
    replace_postgres_week(
        conn, "typed", frame, "2024-01-08", schema=postgres_dsn.schema, column_types={"amount": "numeric(10, 2)"}
    )
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = 'typed'",
            (postgres_dsn.schema,),
        )
        types = dict(cursor.fetchall())
        cursor.execute(f'SELECT cancelled_year, risk FROM "{postgres_dsn.schema}".typed ORDER BY loyalty_number')
        values = cursor.fetchall()
    conn.rollback()
    assert types == {
        "loyalty_number": "bigint",
        "cancelled_year": "bigint",
        "risk": "double precision",
        "is_member": "boolean",
        "scored_at": "timestamp without time zone",
        "week": "text",
        "amount": "numeric",
    }
    assert values == [(2018, 0.25), (None, None)]


def test_failed_insert_leaves_previous_rows_of_the_week(conn, postgres_dsn):
    schema = postgres_dsn.schema
    with conn.cursor() as cursor:
        cursor.execute(
            f'CREATE TABLE "{schema}".crm (loyalty_number bigint, week text, churn_risk_pct double precision '
            "CHECK (churn_risk_pct BETWEEN 0 AND 100), risk_tier text, segment text, recommended_action text, "
            "experiment_arm text, "
            "salary double precision, city text)"
        )
    conn.commit()
    good = weekly_predictions("2024-01-08", [5.0, 60.0, 95.5])
    replace_postgres_week(conn, "crm", good, "2024-01-08", schema=schema)

    with_bad_row = weekly_predictions("2024-01-08", [7.0, 130.0, 20.0, 40.0])
    with pytest.raises(psycopg2.errors.CheckViolation):
        replace_postgres_week(conn, "crm", with_bad_row, "2024-01-08", schema=schema)

    stored = read_table(postgres_dsn, "crm")
    assert stored["churn_risk_pct"].tolist() == [5.0, 60.0, 95.5]
    assert stored["loyalty_number"].tolist() == [100001, 100002, 100003]
    # The connection is usable again and the temporary staging table is gone.
    assert replace_postgres_week(conn, "crm", good, "2024-01-08", schema=schema) == 3


def test_frame_with_rows_of_another_week_is_refused(conn, postgres_dsn):
    schema = postgres_dsn.schema
    replace_postgres_week(conn, "crm", weekly_predictions("2024-01-01", [1.0]), "2024-01-01", schema=schema)
    mixed = pd.concat([weekly_predictions("2024-01-08", [2.0]), weekly_predictions("2024-01-01", [3.0], 200001)])
    with pytest.raises(ValueError, match="1 rows have week other than '2024-01-08'"):
        replace_postgres_week(conn, "crm", mixed, "2024-01-08", schema=schema)
    assert read_table(postgres_dsn, "crm")["churn_risk_pct"].tolist() == [1.0]


def test_replace_partition_refuses_injection_in_table_and_columns(conn):
    frame = weekly_predictions("2024-01-08", [1.0])
    with pytest.raises(ValueError, match="unsafe SQL identifier"):
        replace_postgres_week(conn, 'crm"; DROP SCHEMA public; --', frame, "2024-01-08")
    with pytest.raises(ValueError, match="unsafe SQL identifier"):
        replace_postgres_week(conn, "crm", frame.rename(columns={"city": "city) ; --"}), "2024-01-08")
    with pytest.raises(ValueError, match="unsafe SQL type"):
        replace_postgres_week(conn, "crm", frame, "2024-01-08", column_types={"city": "text); DROP"})


def test_replace_partition_refuses_a_connection_inside_a_transaction(conn):
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
    with pytest.raises(RuntimeError, match="open transaction"):
        replace_postgres_week(conn, "crm", weekly_predictions("2024-01-08", [1.0]), "2024-01-08")


def test_partition_swap_is_one_transaction_on_an_autocommit_connection(conn, postgres_dsn):
    conn.autocommit = True
    schema = postgres_dsn.schema
    replace_postgres_week(conn, "crm", weekly_predictions("2024-01-08", [1.0, 2.0]), "2024-01-08", schema=schema)
    mixed = pd.concat([weekly_predictions("2024-01-08", [3.0]), weekly_predictions("2024-01-15", [4.0])])
    with pytest.raises(ValueError, match="other than"):
        replace_postgres_week(conn, "crm", mixed, "2024-01-08", schema=schema)
    assert conn.autocommit is True
    assert read_table(postgres_dsn, "crm")["churn_risk_pct"].tolist() == [1.0, 2.0]


def test_connect_postgres_names_the_server_but_not_the_password():
    with pytest.raises(ConnectionError, match="PostgreSQL 127.0.0.1:1/test: ") as raised:
        connect_postgres("host=127.0.0.1 port=1 user=postgres dbname=test password=hunter2 connect_timeout=3")
    assert "hunter2" not in str(raised.value)


def test_redshift_copy_sql_quotes_literals_and_identifiers(conn):
    sql = redshift_copy_parquet_sql(
        "crm", "s3://lake/exports/crm/week=2024-01-08/it's.parquet", "arn:aws:iam::123456789012:role/Load", "mart"
    ).as_string(conn)
    assert sql == (
        """COPY "mart"."crm" FROM 's3://lake/exports/crm/week=2024-01-08/it''s.parquet' """
        """IAM_ROLE 'arn:aws:iam::123456789012:role/Load' FORMAT AS PARQUET"""
    )
    copy_into_crm = redshift_copy_parquet_sql("crm", "s3://b/k", "arn:aws:iam::1:role/r").as_string(conn)
    assert copy_into_crm.startswith('COPY "crm" FROM')


@pytest.mark.parametrize(
    ("table", "s3_uri", "iam_role", "message"),
    [
        ("crm", "https://lake.s3.amazonaws.com/x.parquet", "arn:aws:iam::1:role/r", "s3:// URI"),
        ("crm", "s3://", "arn:aws:iam::1:role/r", "s3:// URI"),
        ("crm", "s3://b/k", "role/r' CREDENTIALS 'x", "IAM role ARN"),
        ("crm", "s3://b/k\\' x", "arn:aws:iam::1:role/r", "backslash"),
        ('crm" FROM x; --', "s3://b/k", "arn:aws:iam::1:role/r", "unsafe SQL identifier"),
    ],
)
def test_redshift_copy_sql_rejects_unsafe_input(table, s3_uri, iam_role, message):
    with pytest.raises(ValueError, match=message):
        redshift_copy_parquet_sql(table, s3_uri, iam_role)


def test_redshift_stdin_fallback_replaces_the_partition_on_postgres(conn, postgres_dsn):
    schema = postgres_dsn.schema
    replace_redshift_week(conn, "crm", weekly_predictions("2024-01-01", [9.0]), "2024-01-01", schema=schema)
    week = weekly_predictions("2024-01-08", [5.0, 60.0])
    assert replace_redshift_week(conn, "crm", week, "2024-01-08", schema=schema) == 2
    assert replace_redshift_week(conn, "crm", week, "2024-01-08", schema=schema) == 2

    stored = read_table(postgres_dsn, "crm")
    assert stored.groupby("week").size().to_dict() == {"2024-01-01": 1, "2024-01-08": 2}
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT data_type, character_maximum_length FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'crm' AND column_name = 'segment'",
            (schema,),
        )
        assert cursor.fetchone() == ("character varying", 65535)
    conn.rollback()


def test_redshift_s3_copy_runs_in_the_swap_transaction(conn, postgres_dsn, s3_bucket):
    # PostgreSQL does not know IAM_ROLE: the statement reaches the server, fails, and nothing changes.
    schema = postgres_dsn.schema
    replace_redshift_week(conn, "crm", weekly_predictions("2024-01-08", [5.0]), "2024-01-08", schema=schema)
    s3 = boto3.client("s3")
    staging = RedshiftS3Staging(s3, f"s3://{s3_bucket}/redshift-staging", "arn:aws:iam::1:role/r")
    with pytest.raises(psycopg2.errors.SyntaxError, match="IAM_ROLE"):
        replace_redshift_week(
            conn, "crm", weekly_predictions("2024-01-08", [7.0]), "2024-01-08", staging, schema=schema
        )
    assert read_table(postgres_dsn, "crm")["churn_risk_pct"].tolist() == [5.0]
    assert s3.list_objects_v2(Bucket=s3_bucket, Prefix="redshift-staging/").get("KeyCount") == 0


def test_crm_export_keeps_only_the_crm_columns_and_gives_hold_outs_no_action():
    predictions = weekly_predictions("2024-01-08", [5.0, 60.0, 70.0]).assign(postal_code="M5V", clv=9000.0)
    predictions.loc[2, ["experiment_arm", "recommended_action"]] = ["control", "Hold out: no intervention"]
    exported = crm_export(predictions)
    assert list(exported.columns) == [
        "loyalty_number",
        "week",
        "churn_risk_pct",
        "risk_tier",
        "segment",
        "recommended_action",
        "experiment_arm",
    ]
    assert exported["loyalty_number"].tolist() == [100001, 100002, 100003]
    assert exported["recommended_action"].tolist() == ["call", "call", ""]
    with pytest.raises(ValueError, match="recommended_action"):
        crm_export(predictions.drop(columns="recommended_action"))


@pytest.fixture
def appflow_client():
    return boto3.client(
        "appflow", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def test_start_appflow_returns_the_execution_id(appflow_client):
    with Stubber(appflow_client) as stubber:
        stubber.add_response(
            "start_flow",
            {"flowArn": "arn:aws:appflow:us-east-1:1:flow/crm", "flowStatus": "Active", "executionId": "exec-42"},
            {"flowName": "crm-churn-to-salesforce", "clientToken": "week-2024-01-08"},
        )
        assert start_appflow(appflow_client, "crm-churn-to-salesforce", client_token="week-2024-01-08") == "exec-42"
        stubber.assert_no_pending_responses()


def test_start_appflow_without_execution_id_raises(appflow_client):
    with Stubber(appflow_client) as stubber:
        stubber.add_response("start_flow", {"flowStatus": "Active"}, {"flowName": "scheduled-flow"})
        with pytest.raises(RuntimeError, match="'scheduled-flow' but returned no executionId"):
            start_appflow(appflow_client, "scheduled-flow")


def test_a_table_of_an_earlier_release_gains_the_new_columns(conn, postgres_dsn):
    schema = postgres_dsn.schema
    with conn.cursor() as cursor:
        cursor.execute(
            f'CREATE TABLE "{schema}".crm (loyalty_number bigint, week text, churn_risk_pct double precision)'
        )
        cursor.execute(f"INSERT INTO \"{schema}\".crm VALUES (1, '2024-01-01', 3.5)")
    conn.commit()
    new_week = weekly_predictions("2024-01-08", [5.0, 60.0])
    replace_postgres_week(conn, "crm", new_week, "2024-01-08", schema=schema)

    stored = read_table(postgres_dsn, "crm").sort_values("loyalty_number")
    assert {"experiment_arm", "recommended_action", "salary"} <= set(stored.columns)
    assert stored["week"].tolist() == ["2024-01-01", "2024-01-08", "2024-01-08"]
    assert stored["experiment_arm"].isna().tolist() == [True, False, False]


def test_a_duckdb_table_of_an_earlier_release_gains_the_new_columns_and_the_key(tmp_path):
    path = str(tmp_path / "dashboard.duckdb")
    with duckdb.connect(path) as conn:
        conn.execute("CREATE TABLE crm (loyalty_number bigint, week date, churn_risk_pct double)")
        conn.execute("INSERT INTO crm VALUES (1, '2024-01-01', 3.5)")
    week = [PartitionSlice("week", (date(2024, 1, 8),))]
    options = {"column_types": {"week": "date"}, "primary_key": ["loyalty_number", "week"]}
    with open_duckdb_sink(path) as sink:
        assert sink.replace_partition("crm", weekly_predictions("2024-01-08", [5.0, 60.0]), week, **options) == 2
        with pytest.raises(ValueError, match="1 rows have week other than"):
            sink.replace_partition("crm", weekly_predictions("2024-01-15", [7.0]), week, **options)
    with duckdb.connect(path, read_only=True) as conn:
        stored = conn.execute("SELECT week, experiment_arm FROM crm ORDER BY loyalty_number, week").fetchall()
        (key,) = conn.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() "
            "WHERE table_name = 'crm' AND constraint_type = 'PRIMARY KEY'"
        ).fetchone()
    assert stored == [(date(2024, 1, 1), None), (date(2024, 1, 8), "treatment"), (date(2024, 1, 8), "treatment")]
    assert key == ["loyalty_number", "week"]
