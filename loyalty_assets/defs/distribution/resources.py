"""Destinations of the weekly churn predictions: the dashboard database and the AppFlow source.

PostgreSQL (RDS) in aws, `$LOYALTY_HOME/dashboard.duckdb` locally; ``environment.py`` wires them.
"""

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from dagster_aws.s3 import S3Resource
from pydantic import Field

from loyalty_assets.defs.clients import BoundedAwsClients
from loyalty_assets.defs.storage import store_at
from loyalty_assets.domain.storage import ObjectStore
from loyalty_assets.domain.warehouse import (
    PartitionSlice,
    PostgresTableSink,
    TableSink,
    connect_postgres,
    open_duckdb_sink,
    postgres_target,
)
from loyalty_assets.settings import NetworkSettings

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
