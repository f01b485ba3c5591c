"""Destinations of the weekly churn predictions: the dashboard database and the AppFlow source.

PostgreSQL (RDS) in aws, `$LOYALTY_HOME/dashboard.duckdb` locally; ``environment.py`` wires them.
"""

import threading
from abc import abstractmethod
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
from dagster_aws.s3 import S3Resource
from pydantic import Field

from loyalty_assets.defs.clients import BoundedAwsClients
from loyalty_assets.defs.storage import store_at
from loyalty_assets.domain.storage import ObjectStore
from loyalty_assets.domain.warehouse import (
    connect_postgres,
    postgres_target,
    qualified_table,
    quote_identifier,
    replace_partition_postgres,
)
from loyalty_assets.settings import NetworkSettings

WEEK_COLUMN = "week"
DASHBOARD_KEY = ("loyalty_number", WEEK_COLUMN)
# Serializes DuckDB dashboard loads of this process (threads share one DuckDB instance per file).
_DUCKDB_LOAD_LOCK = threading.Lock()


class DashboardDatabase(dg.ConfigurableResource):
    """The database behind the dashboards. ``replace_week`` swaps one week of a table atomically."""

    @abstractmethod
    def replace_week(self, table: str, frame: pd.DataFrame, week: date) -> int:
        """Replace the rows of ``week`` in ``table`` with ``frame`` in one transaction; returns rows written.

        ``frame`` has a ``week`` column (date, timestamp or ``YYYY-MM-DD`` text) equal to ``week`` on
        every row; the table stores it as DATE and is created from the frame's columns when missing.
        """

    @abstractmethod
    def location(self) -> str:
        """Where the database is, for messages and metadata (never a password)."""

    @abstractmethod
    def table_name(self, table: str) -> str:
        """The qualified name of ``table`` in this database."""


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

    def replace_week(self, table: str, frame: pd.DataFrame, week: date) -> int:
        conn = connect_postgres(
            self.dsn, connect_timeout=self.connect_timeout, statement_timeout=self.statement_timeout
        )
        try:
            return replace_partition_postgres(
                conn,
                table,
                frame,
                WEEK_COLUMN,
                week,
                schema=self.db_schema,
                columns_sql={WEEK_COLUMN: "date"},
                primary_key=DASHBOARD_KEY,
            )
        finally:
            conn.close()

    def location(self) -> str:
        return f"postgresql {postgres_target(self.dsn)}"

    def table_name(self, table: str) -> str:
        return f"{self.db_schema}.{table}"


class DuckDBDashboardDatabase(DashboardDatabase):
    """A local DuckDB file: delete the week and insert the frame in one DuckDB transaction.

    The table's primary key is ``(loyalty_number, week)``. DuckDB lets one process write a file at
    a time (another one fails on the file lock); within the process, loads take turns on a lock.
    """

    path: str = Field(description="The DuckDB database file; its folder is created when missing.")
    db_schema: str = Field(default="main", description="Schema of the tables (created when missing).")

    def replace_week(self, table: str, frame: pd.DataFrame, week: date) -> int:
        target = qualified_table(table, self.db_schema)
        week_column = quote_identifier(WEEK_COLUMN)
        for column in frame.columns:  # the same identifier rules as the PostgreSQL variant
            quote_identifier(column)
        if WEEK_COLUMN not in frame.columns:
            raise ValueError(f"the frame has no {WEEK_COLUMN!r} column: {list(frame.columns)}")
        rows = f"SELECT * REPLACE (CAST({week_column} AS DATE) AS {week_column}) FROM incoming_week"
        key = ", ".join(quote_identifier(column) for column in DASHBOARD_KEY)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with _DUCKDB_LOAD_LOCK, duckdb.connect(self.path) as conn:
            conn.register("incoming_week", frame)
            conn.execute("BEGIN TRANSACTION")
            try:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(self.db_schema)}")
                conn.execute(f"CREATE TABLE IF NOT EXISTS {target} AS {rows} LIMIT 0")
                (foreign,) = conn.execute(
                    f"SELECT count(*) FROM incoming_week WHERE CAST({week_column} AS DATE) IS DISTINCT FROM ?", [week]
                ).fetchone()
                if foreign:
                    raise ValueError(f"{foreign} rows have a {WEEK_COLUMN} other than {week}; {target} takes one week")
                conn.execute(f"DELETE FROM {target} WHERE {week_column} = ?", [week])
                if not self._has_primary_key(conn, table):  # also on a table made before the key existed
                    conn.execute(f"ALTER TABLE {target} ADD PRIMARY KEY ({key})")
                (written,) = conn.execute(f"INSERT INTO {target} BY NAME {rows}").fetchone()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return written

    def _has_primary_key(self, conn: duckdb.DuckDBPyConnection, table: str) -> bool:
        (count,) = conn.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE schema_name = ? AND table_name = ? "
            "AND constraint_type = 'PRIMARY KEY'",
            [self.db_schema, table],
        ).fetchone()
        return count > 0

    def location(self) -> str:
        return f"duckdb {self.path}"

    def table_name(self, table: str) -> str:
        return f"{self.db_schema}.{table}"


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
