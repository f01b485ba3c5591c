"""A Redshift IO manager for pandas DataFrames, on Dagster's database IO manager base.

dagster-aws has no Redshift IO manager (only a resource that runs queries), so this follows the
official DuckDB and Snowflake integrations: ``DbIOManager`` resolves the table and the partition
slice, a ``DbClient`` connects, a ``DbTypeHandler`` loads the frame.

One output is one partition swap of ``domain.warehouse.RedshiftTableSink``: a staging table filled
with ``COPY ... FORMAT AS PARQUET IAM_ROLE`` from an S3 staging object when ``s3_staging_uri`` and
``iam_role`` are set, otherwise with COPY FROM STDIN (which a PostgreSQL-protocol endpoint, and
PostgreSQL itself in tests, accepts); then, under the table's load lock, delete the partition and
insert, in one transaction. Partition bounds come from the partitions definition.
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import pandas as pd
import psycopg2.extensions
from dagster._core.storage.db_io_manager import (  # the one sanctioned private import, see the module docstring
    DbClient,
    DbIOManager,
    DbTypeHandler,
    TableSlice,
)
from dagster_aws.s3 import S3Resource
from pydantic import Field

from loyalty_assets.domain.warehouse import (
    DuckDBQuoting,
    PartitionSlice,
    PsycopgQuoting,
    RedshiftS3Staging,
    RedshiftTableSink,
    SqlQuoting,
    connect_postgres,
)
from loyalty_assets.settings import NetworkSettings

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


def table_partition(table_slice: TableSlice) -> list[PartitionSlice]:
    """The rows of the table slice: ``start <= column < end`` for a time window, else ``column IN (...)``;
    ``partition_expr`` must be a plain column name."""
    partition = []
    for dimension in table_slice.partition_dimensions or []:
        partitions = dimension.partitions
        if isinstance(partitions, dg.TimeWindow):
            window = (partitions.start.strftime(TIMESTAMP_FORMAT), partitions.end.strftime(TIMESTAMP_FORMAT))
            partition.append(PartitionSlice(dimension.partition_expr, window=window))
        else:
            partition.append(PartitionSlice(dimension.partition_expr, tuple(partitions or ())))
    return partition


def select_statement(table_slice: TableSlice, quoting: SqlQuoting) -> str:
    partition = table_partition(table_slice)
    return quoting.select(table_slice.table, partition, table_slice.schema, table_slice.columns or ())


class RedshiftDbClient(DbClient):
    """Connections in one transaction per output (committed on success), schemas, selects."""

    def __init__(self, dsn: str, connect_timeout: float, statement_timeout: float):
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout

    @contextmanager
    def connect(self, context: Any, table_slice: TableSlice) -> Iterator[psycopg2.extensions.connection]:
        conn = connect_postgres(
            self.dsn, connect_timeout=self.connect_timeout, statement_timeout=self.statement_timeout
        )
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    def ensure_schema_exists(self, context: Any, table_slice: TableSlice, connection: Any) -> None:
        """Create the schema, committed on its own: the partition swap runs in a transaction of its own."""
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {PsycopgQuoting(connection).identifier(table_slice.schema)}")
        connection.commit()

    def delete_table_slice(self, context: Any, table_slice: TableSlice, connection: Any) -> None:
        """Nothing here: the type handler's table sink deletes the slice inside its swap transaction,
        under the table's load lock, once the new rows are staged and checked."""

    def get_select_statement(self, table_slice: TableSlice) -> str:
        # Shown as metadata, without a connection (psycopg2 quotes only for one): DuckDB's quoting
        # of identifiers and string literals is the same standard SQL.
        return select_statement(table_slice, DuckDBQuoting())


class RedshiftPandasTypeHandler(DbTypeHandler[pd.DataFrame]):
    """Loads a DataFrame through a staging table into the (possibly new) target table."""

    def __init__(self, staging: RedshiftS3Staging | None):
        self.staging = staging

    def handle_output(
        self, context: dg.OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection: Any
    ) -> Mapping[str, Any]:
        written = RedshiftTableSink(connection, self.staging).replace_partition(
            table_slice.table, obj, table_partition(table_slice), schema=table_slice.schema
        )
        return {
            "dagster/partition_row_count" if context.has_partition_key else "dagster/row_count": written,
            "staging": "s3 parquet" if self.staging else "copy from stdin",
        }

    def load_input(self, context: dg.InputContext, table_slice: TableSlice, connection: Any) -> pd.DataFrame:
        with connection.cursor() as cursor:
            cursor.execute(select_statement(table_slice, PsycopgQuoting(connection)))
            return pd.DataFrame(cursor.fetchall(), columns=[column.name for column in cursor.description])

    @property
    def supported_types(self) -> Sequence[type]:
        return [pd.DataFrame]


class RedshiftPandasIOManager(dg.ConfigurableIOManagerFactory):
    """Stores DataFrame outputs in Redshift tables ``<schema>.<asset name>``, one partition at a time.

    Partitioned assets need ``metadata={"partition_expr": "<column>"}``: the column (a DATE or
    TIMESTAMP for time windows) whose slice a materialization replaces.
    """

    host: str = Field(description="Cluster or workgroup endpoint host.")
    port: int = 5439
    user: str
    password: str = Field(description="Read it through dg.EnvVar.")
    database: str
    schema_: str = Field(default="public", alias="schema", description="Schema of the tables (created when missing).")
    sslmode: str = Field(default="require", description="libpq sslmode.")
    connect_timeout: float = Field(default=NetworkSettings.connect_timeout_seconds, description="Seconds per connect.")
    statement_timeout: float = Field(
        default=NetworkSettings.statement_timeout_seconds, description="Seconds any statement may run."
    )
    s3_staging_uri: str | None = Field(default=None, description="s3:// prefix for staged Parquet objects.")
    iam_role: str | None = Field(default=None, description="IAM role ARN Redshift reads the staging objects with.")
    s3: S3Resource

    def dsn(self) -> str:
        return psycopg2.extensions.make_dsn(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.database,
            sslmode=self.sslmode,
        )

    def s3_staging(self) -> RedshiftS3Staging | None:
        """The S3 staging, or None for COPY FROM STDIN."""
        if (self.s3_staging_uri is None) != (self.iam_role is None):
            raise ValueError("s3_staging_uri and iam_role go together: give both for COPY FROM S3, or neither")
        if self.s3_staging_uri is None:
            return None
        return RedshiftS3Staging(self.s3.get_client(), self.s3_staging_uri, self.iam_role)

    def create_io_manager(self, context: dg.InitResourceContext) -> DbIOManager:
        return DbIOManager(
            type_handlers=[RedshiftPandasTypeHandler(self.s3_staging())],
            db_client=RedshiftDbClient(self.dsn(), self.connect_timeout, self.statement_timeout),
            database=self.database,
            schema=self.schema_,
            io_manager_name="RedshiftPandasIOManager",
            default_load_type=pd.DataFrame,
        )
