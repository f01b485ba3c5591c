"""A Redshift IO manager for pandas DataFrames, on Dagster's database IO manager base.

dagster-aws has no Redshift IO manager (only a resource that runs queries), so this follows the
official DuckDB and Snowflake integrations: ``DbIOManager`` resolves the table and the partition
slice, a ``DbClient`` connects and deletes the slice, a ``DbTypeHandler`` loads the frame.

One output is one transaction: lock the table's loads, delete the partition's rows, create a
temporary staging table, fill it, check it, insert it into the target table, commit. Any failure
rolls back and the previous rows stay; two loads of one table at once run one after the other.
No primary key is declared: Redshift does not enforce one (and its planner trusts it), so the load
lock is what keeps one copy per partition. The staging table is filled with ``COPY ... FORMAT AS PARQUET IAM_ROLE`` from
an S3 staging object when ``s3_staging_uri`` and ``iam_role`` are set, otherwise with COPY FROM
STDIN, which a PostgreSQL-protocol endpoint (and PostgreSQL itself, in tests) accepts.

Identifiers are validated and quoted; partition bounds come from the partitions definition.
"""

import io
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import pandas as pd
import psycopg2.extensions
import pyarrow as pa
import pyarrow.parquet as pq
from dagster._core.storage.db_io_manager import (  # the one sanctioned private import, see the module docstring
    DbClient,
    DbIOManager,
    DbTypeHandler,
    TablePartitionDimension,
    TableSlice,
)
from dagster_aws.s3 import S3Resource
from pydantic import Field

from loyalty_assets.domain.storage import split_s3_uri
from loyalty_assets.domain.warehouse import (
    REDSHIFT_STRING_TYPE,
    STAGING_TABLE,
    connect_postgres,
    create_locked_table,
    is_redshift,
    lock_table_for_load,
    qualified_table,
    quote_identifier,
    redshift_copy_parquet_sql,
    sql_column_types,
)
from loyalty_assets.settings import NetworkSettings

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


def _literal(value: str) -> str:
    if "\\" in value or "\x00" in value:
        raise ValueError(f"refusing a partition key with a backslash or NUL: {value!r}")
    return "'" + value.replace("'", "''") + "'"


def slice_condition(dimensions: Sequence[TablePartitionDimension] | None) -> str:
    """SQL condition selecting the partition slice; ``partition_expr`` must be a plain column name.

    A time window selects ``start <= column < end``, static partitions ``column IN (...)``.
    """
    clauses = []
    for dimension in dimensions or []:
        column = quote_identifier(dimension.partition_expr)
        partitions = dimension.partitions
        if isinstance(partitions, dg.TimeWindow):
            start = _literal(partitions.start.strftime(TIMESTAMP_FORMAT))
            end = _literal(partitions.end.strftime(TIMESTAMP_FORMAT))
            clauses.append(f"{column} >= {start} AND {column} < {end}")
        elif partitions:
            clauses.append(f"{column} IN ({', '.join(_literal(key) for key in partitions)})")
        else:
            clauses.append("FALSE")
    return " AND ".join(clauses) or "TRUE"


def delete_slice(cursor: Any, table_slice: TableSlice) -> None:
    cursor.execute(
        f"DELETE FROM {qualified_table(table_slice.table, table_slice.schema)} "
        f"WHERE {slice_condition(table_slice.partition_dimensions)}"
    )


def select_statement(table_slice: TableSlice) -> str:
    columns = ", ".join(quote_identifier(column) for column in table_slice.columns or []) or "*"
    return (
        f"SELECT {columns} FROM {qualified_table(table_slice.table, table_slice.schema)} "
        f"WHERE {slice_condition(table_slice.partition_dimensions)}"
    )


class RedshiftS3Staging:
    """Stages a frame as one Parquet object under ``staging_uri`` for ``COPY ... FORMAT AS PARQUET``."""

    def __init__(self, s3_client: Any, staging_uri: str, iam_role: str):
        self.s3_client = s3_client
        self.bucket, self.prefix = split_s3_uri(staging_uri)
        self.iam_role = iam_role

    def object_uri(self, table_slice: TableSlice, token: str) -> str:
        key = "/".join(
            part for part in (self.prefix, table_slice.schema, table_slice.table, f"{token}.parquet") if part
        )
        return f"s3://{self.bucket}/{key}"

    def upload(self, frame: pd.DataFrame, object_uri: str) -> None:
        """Write ``frame`` as Parquet, columns in frame order (COPY maps them by position)."""
        buffer = io.BytesIO()
        # Redshift reads Parquet timestamps in micro- or milliseconds, not pandas' nanoseconds.
        pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False),
            buffer,
            coerce_timestamps="us",
            allow_truncated_timestamps=True,
        )
        bucket, key = split_s3_uri(object_uri)
        self.s3_client.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())

    def copy_sql(self, object_uri: str) -> str:
        """The statement that fills the staging table from the object."""
        return redshift_copy_parquet_sql(STAGING_TABLE, object_uri, self.iam_role)

    def delete(self, object_uri: str) -> None:
        bucket, key = split_s3_uri(object_uri)
        self.s3_client.delete_object(Bucket=bucket, Key=key)


class RedshiftDbClient(DbClient):
    """Connections in one transaction per output (committed on success), slice deletes, selects."""

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
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(table_slice.schema)}")

    def delete_table_slice(self, context: Any, table_slice: TableSlice, connection: Any) -> None:
        """Take the table's load lock (on Redshift only once the table exists), then delete the slice."""
        with connection.cursor() as cursor:
            redshift = is_redshift(cursor)
            target = qualified_table(table_slice.table, table_slice.schema)
            if not redshift:
                lock_table_for_load(cursor, target, redshift)
            cursor.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                (table_slice.schema, table_slice.table),
            )
            (exists,) = cursor.fetchone()
            if exists:
                if redshift:
                    lock_table_for_load(cursor, target, redshift)
                delete_slice(cursor, table_slice)

    def get_select_statement(self, table_slice: TableSlice) -> str:
        return select_statement(table_slice)


class RedshiftPandasTypeHandler(DbTypeHandler[pd.DataFrame]):
    """Loads a DataFrame through a staging table into the (possibly new) target table."""

    def __init__(self, staging: RedshiftS3Staging | None):
        self.staging = staging

    def handle_output(
        self, context: dg.OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection: Any
    ) -> Mapping[str, Any]:
        column_types = sql_column_types(obj, string_type=REDSHIFT_STRING_TYPE)
        target = qualified_table(table_slice.table, table_slice.schema)
        staging = quote_identifier(STAGING_TABLE)
        definitions = ", ".join(f"{quote_identifier(column)} {sql_type}" for column, sql_type in column_types.items())
        columns = ", ".join(quote_identifier(column) for column in obj.columns)
        with connection.cursor() as cursor:
            create_locked_table(cursor, target, definitions)
            # Again under the lock: on Redshift a concurrent run may have created and loaded the
            # table after delete_table_slice found none.
            delete_slice(cursor, table_slice)
            cursor.execute(f"CREATE TEMP TABLE {staging} ({definitions})")
            if not obj.empty:
                self._fill_staging(context, table_slice, obj, cursor)
            condition = slice_condition(table_slice.partition_dimensions)
            # CASE rather than FILTER, which Redshift lacks; NULL partition values count as outside.
            cursor.execute(f"SELECT count(*), coalesce(sum(CASE WHEN {condition} THEN 0 ELSE 1 END), 0) FROM {staging}")
            staged, outside = cursor.fetchone()
            if staged != len(obj):
                raise ValueError(f"staging for {target} holds {staged} rows, the frame has {len(obj)}")
            if outside:
                raise ValueError(f"{outside} rows of the output for {target} fall outside its partition ({condition})")
            cursor.execute(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {staging}")
            written = cursor.rowcount
            cursor.execute(f"DROP TABLE {staging}")
        return {
            "dagster/partition_row_count" if context.has_partition_key else "dagster/row_count": written,
            "staging": "s3 parquet" if self.staging else "copy from stdin",
        }

    def _fill_staging(self, context: dg.OutputContext, table_slice: TableSlice, obj: pd.DataFrame, cursor: Any) -> None:
        if self.staging is None:
            columns = ", ".join(quote_identifier(column) for column in obj.columns)
            cursor.copy_expert(
                f"COPY {quote_identifier(STAGING_TABLE)} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER true)",
                io.StringIO(obj.to_csv(index=False, header=True)),
            )
            return
        object_uri = self.staging.object_uri(table_slice, f"{context.run_id}-{uuid.uuid4().hex[:8]}")
        self.staging.upload(obj, object_uri)
        try:
            cursor.execute(self.staging.copy_sql(object_uri))
        finally:
            self.staging.delete(object_uri)

    def load_input(self, context: dg.InputContext, table_slice: TableSlice, connection: Any) -> pd.DataFrame:
        with connection.cursor() as cursor:
            cursor.execute(select_statement(table_slice))
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
