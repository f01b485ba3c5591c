"""Loading weekly partitions into PostgreSQL (RDS), Redshift and DuckDB, and handing the CRM file to AppFlow.

One interface, ``TableSink``, loads a table the same way on every engine. ``replace_partition``
replaces one partition (the rows a ``PartitionSlice`` selects) in a single transaction: the frame
goes into a temporary staging table and is checked; the table is created when missing (with its
primary key) and gains the frame's new columns; then the partition's old rows are deleted and the
staged rows inserted. A rerun replaces, never duplicates; any failure rolls back and leaves the
previous rows in place. Loads of one table are serialized by a lock held until the transaction
ends (a transaction-level advisory lock on PostgreSQL, ``LOCK`` on Redshift, a process lock on
DuckDB, whose file lock keeps other processes out), so two loads of one partition at once also
leave one copy.

Identifiers (schema, table, column names) are validated, then quoted by the engine's library
(``psycopg2.sql.Identifier``, DuckDB's ``ColumnExpression``), as are literals (``psycopg2.sql.Literal``,
DuckDB's ``ConstantExpression``); frames travel through COPY or a registered DuckDB view.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import psycopg2
import psycopg2.extensions
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api import types as pdt
from psycopg2 import sql

from loyalty_assets.domain.redaction import mask_quoted, one_line, redact
from loyalty_assets.domain.storage import split_s3_uri

IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# A SQL type name such as ``bigint``, ``double precision``, ``numeric(5, 2)`` or ``varchar(65535)``.
SQL_TYPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]*(\(\s*\d+\s*(,\s*\d+\s*)?\))?$")
STAGING_TABLE = "loyalty_partition_staging"

CRM_COLUMNS = [
    "loyalty_number", "week", "churn_risk_pct", "risk_tier", "segment", "recommended_action", "experiment_arm",
]  # fmt: skip

# Type names valid in PostgreSQL, Redshift and DuckDB, except the string type: Redshift turns TEXT
# into VARCHAR(256), so it gets the widest VARCHAR instead.
POSTGRES_STRING_TYPE = "text"
REDSHIFT_STRING_TYPE = "varchar(65535)"

# DuckDB loads of this process take turns (see ``open_duckdb_sink``).
_DUCKDB_LOAD_LOCK = threading.Lock()


def checked_identifier(name: str) -> str:
    """``name`` unchanged, after checking it is a plain identifier (letters, digits, _; <= 63)."""
    if not isinstance(name, str) or not IDENTIFIER_PATTERN.fullmatch(name):
        raise ValueError(
            f"unsafe SQL identifier {name!r}: expected a letter or _ followed by up to 62 letters, digits or _"
        )
    return name


def postgres_target(dsn: str) -> str:
    """``host:port/dbname`` of a libpq connection string, for messages; a parse error is redacted."""
    try:
        parts = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as error:
        raise ValueError(f"invalid PostgreSQL connection string: {_libpq_message(error, dsn)}") from None
    return f"{parts.get('host', 'localhost')}:{parts.get('port', '5432')}/{parts.get('dbname', '')}"


def connect_postgres(
    dsn: str,
    *,
    connect_timeout: float | None = None,
    statement_timeout: float | None = None,
    **options: Any,
) -> psycopg2.extensions.connection:
    """A psycopg2 connection (autocommit off, no open transaction), bounded in time.

    ``connect_timeout`` bounds the whole connection set-up (libpq rounds up to whole seconds, at
    least 2); ``statement_timeout`` makes the server cancel any statement that runs longer (set
    with ``SET``, which PostgreSQL and Redshift both accept). Errors are one line naming
    host:port/dbname, with every password and secret value masked, and chain no libpq error.
    """
    target = postgres_target(dsn)
    if connect_timeout is not None:
        options["connect_timeout"] = max(2, math.ceil(connect_timeout))
    try:
        conn = psycopg2.connect(dsn, **options)
    except psycopg2.Error as error:
        raise ConnectionError(f"could not connect to PostgreSQL {target}: {_libpq_message(error, dsn)}") from None
    if statement_timeout is not None:
        with conn.cursor() as cursor:
            cursor.execute("SET statement_timeout TO %s", (max(1, math.ceil(statement_timeout * 1000)),))
        conn.commit()
    return conn


def _libpq_message(error: psycopg2.Error, dsn: str) -> str:
    """The libpq message on one line; quoted fragments of a DSN that did not parse, and secrets, masked."""
    message = one_line(str(error))
    if isinstance(error, psycopg2.ProgrammingError):  # a parse error quotes the fragment it choked on
        message = mask_quoted(message)
    return redact(message, [dsn])


def sql_column_types(
    frame: pd.DataFrame, overrides: Mapping[str, str] | None = None, string_type: str = POSTGRES_STRING_TYPE
) -> dict[str, str]:
    """SQL type per column from the pandas dtypes; ``overrides`` (column -> SQL type) take precedence."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(frame.columns))
    if unknown:
        raise ValueError(f"column type overrides for columns not in the frame: {unknown}")
    column_types = {}
    for column, dtype in frame.dtypes.items():
        checked_identifier(column)
        if column in overrides:
            if not SQL_TYPE_PATTERN.fullmatch(overrides[column]):
                raise ValueError(f"unsafe SQL type {overrides[column]!r} for column {column!r}")
            column_types[column] = overrides[column]
        else:
            column_types[column] = _sql_type_for_dtype(column, dtype, string_type)
    return column_types


def _sql_type_for_dtype(column: str, dtype: Any, string_type: str) -> str:
    if pdt.is_bool_dtype(dtype):
        return "boolean"
    if pdt.is_integer_dtype(dtype):
        return "bigint"
    if pdt.is_float_dtype(dtype):
        return "double precision"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "timestamptz"
    if pdt.is_datetime64_dtype(dtype):
        return "timestamp"
    if pdt.is_object_dtype(dtype) or pdt.is_string_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return string_type
    raise ValueError(f"no SQL type for column {column!r} of dtype {dtype}; pass one in column_types")


@dataclass(frozen=True)
class PartitionSlice:
    """The rows of one partition column a load replaces: ``column`` equal to one of ``values`` or,
    for a time window, ``window[0] <= column < window[1]``."""

    column: str
    values: tuple[Any, ...] = ()
    window: tuple[Any, Any] | None = None

    def __post_init__(self) -> None:
        checked_identifier(self.column)
        if any(value is None for value in self.values):
            raise ValueError(f"partition values of {self.column!r} must not be None")

    def outside(self) -> str:
        """What a row outside the slice has, for messages."""
        if self.window is not None:
            return f"{self.column} outside [{self.window[0]}, {self.window[1]})"
        if len(self.values) == 1:
            return f"{self.column} other than {self.values[0]!r}"
        return f"{self.column} not in {list(self.values)!r}"


class SqlQuoting(ABC):
    """Identifiers and literals as SQL text, quoted by the engine's library."""

    def identifier(self, *parts: str | None) -> str:
        """``"schema"."table"`` (a None part is left out), each part validated first."""
        return self._quote_identifier(*(checked_identifier(part) for part in parts if part is not None))

    def literal(self, value: Any) -> str:
        return self._quote_literal(value.item() if isinstance(value, np.generic) else value)

    def condition(self, partition: Sequence[PartitionSlice]) -> str:
        """The SQL condition selecting ``partition`` (every slice holds; no slice: every row)."""
        clauses = []
        for part in partition:
            column = self.identifier(part.column)
            if part.window is not None:
                start, end = (self.literal(bound) for bound in part.window)
                clauses.append(f"{column} >= {start} AND {column} < {end}")
            elif part.values:
                clauses.append(f"{column} IN ({', '.join(self.literal(value) for value in part.values)})")
            else:
                clauses.append("FALSE")
        return " AND ".join(clauses) or "TRUE"

    def select(
        self, table: str, partition: Sequence[PartitionSlice], schema: str | None = None, columns: Sequence[str] = ()
    ) -> str:
        """``SELECT`` the partition's rows (``columns``, or all of them)."""
        column_list = ", ".join(self.identifier(column) for column in columns) or "*"
        return f"SELECT {column_list} FROM {self.identifier(schema, table)} WHERE {self.condition(partition)}"

    @abstractmethod
    def _quote_identifier(self, *parts: str) -> str: ...

    @abstractmethod
    def _quote_literal(self, value: Any) -> str: ...


class PsycopgQuoting(SqlQuoting):
    """``psycopg2.sql``, rendered for one PostgreSQL or Redshift connection."""

    def __init__(self, conn: psycopg2.extensions.connection):
        self.conn = conn

    def _quote_identifier(self, *parts: str) -> str:
        return sql.Identifier(*parts).as_string(self.conn)

    def _quote_literal(self, value: Any) -> str:
        return sql.Literal(value).as_string(self.conn)


class DuckDBQuoting(SqlQuoting):
    """DuckDB's expression API; it needs no connection, so it also renders SQL shown to people."""

    def _quote_identifier(self, *parts: str) -> str:
        return str(duckdb.ColumnExpression(*parts))

    def _quote_literal(self, value: Any) -> str:
        return str(duckdb.ConstantExpression(value))


class TableSink(ABC):
    """Replaces partitions of tables in one engine; the engines differ only in the hooks below."""

    string_type = POSTGRES_STRING_TYPE
    quoting: SqlQuoting

    def replace_partition(
        self,
        table: str,
        frame: pd.DataFrame,
        partition: Sequence[PartitionSlice],
        *,
        schema: str | None = None,
        column_types: Mapping[str, str] | None = None,
        primary_key: Sequence[str] = (),
    ) -> int:
        """Replace the rows of ``partition`` in ``schema.table`` with ``frame``; returns the rows written.

        Creates the table when missing (types from the dtypes, ``column_types`` overrides per
        column, ``primary_key`` if given, also added to an existing table without one), adds the
        frame's columns a table of an earlier release lacks (older rows hold NULL), and refuses a
        frame with rows outside ``partition``. One transaction, committed at the end.
        """
        types = sql_column_types(frame, column_types, self.string_type)
        for part in partition:
            if part.column not in frame.columns:
                raise ValueError(f"partition column {part.column!r} is not in the frame: {list(frame.columns)}")
        quote = self.quoting.identifier
        target = quote(schema, table)
        staging = quote(STAGING_TABLE)
        definitions = ", ".join(f"{quote(column)} {sql_type}" for column, sql_type in types.items())
        columns = ", ".join(quote(column) for column in frame.columns)
        condition = self.quoting.condition(partition)
        with self.transaction():
            self.execute(f"CREATE TEMP TABLE {staging} ({definitions})")
            if not frame.empty:
                self.load_staging(frame, columns, schema, table)
            # CASE rather than FILTER / IS DISTINCT FROM, which Redshift lacks; NULL counts as outside.
            ((staged, outside),) = self.execute(
                f"SELECT count(*), coalesce(sum(CASE WHEN {condition} THEN 0 ELSE 1 END), 0) FROM {staging}"
            )
            if staged != len(frame):
                raise ValueError(f"staging for {target} holds {staged} rows, the frame has {len(frame)}")
            if outside:
                described = " or ".join(part.outside() for part in partition)
                raise ValueError(
                    f"{outside} rows have {described}; a load into {target} may only hold the partition it replaces"
                )
            key = ", ".join(quote(column) for column in primary_key)
            self.create_locked_table(schema, target, definitions, key)
            self._add_new_columns(schema, table, target, types)
            self.execute(f"DELETE FROM {target} WHERE {condition}")
            if key:
                self._ensure_primary_key(schema, table, target, key)
            self.execute(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {staging}")
            self.execute(f"DROP TABLE {staging}")
        return staged

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """One transaction, committed on success and rolled back on any error."""

    @abstractmethod
    def execute(self, statement: str | sql.Composable) -> list[tuple]:
        """Run one statement; its rows, or ``[]`` for a statement that returns none."""

    @abstractmethod
    def load_staging(self, frame: pd.DataFrame, columns: str, schema: str | None, table: str) -> None:
        """Fill the staging table (``columns`` quoted, in frame order) with ``frame``."""

    @abstractmethod
    def create_locked_table(self, schema: str | None, target: str, definitions: str, key: str) -> None:
        """Create ``target`` (columns ``definitions``, primary key ``key`` unless empty) when missing,
        and hold the table's load lock until the transaction ends."""

    def _catalog_filter(self, schema: str | None, table: str) -> str:
        table_schema = self.quoting.literal(schema) if schema else "current_schema()"
        return f"table_schema = {table_schema} AND table_name = {self.quoting.literal(table)}"

    def _add_new_columns(self, schema: str | None, table: str, target: str, types: Mapping[str, str]) -> None:
        rows = self.execute(
            f"SELECT column_name FROM information_schema.columns WHERE {self._catalog_filter(schema, table)}"
        )
        existing = {name for (name,) in rows}
        for column, sql_type in types.items():
            if column not in existing:
                self.execute(f"ALTER TABLE {target} ADD COLUMN {self.quoting.identifier(column)} {sql_type}")

    def _ensure_primary_key(self, schema: str | None, table: str, target: str, key: str) -> None:
        """Add the primary key to a table created before it existed; duplicates already there are named."""
        ((keys,),) = self.execute(
            "SELECT count(*) FROM information_schema.table_constraints "
            f"WHERE {self._catalog_filter(schema, table)} AND constraint_type = 'PRIMARY KEY'"
        )
        if keys:
            return
        ((duplicated,),) = self.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {target} GROUP BY {key} HAVING count(*) > 1) AS d"
        )
        if duplicated:
            raise ValueError(
                f"{target} holds {duplicated} duplicated ({key}) keys from earlier loads: delete the extra rows, "
                "then load again so the primary key can be added"
            )
        self.execute(f"ALTER TABLE {target} ADD PRIMARY KEY ({key})")


def with_primary_key(definitions: str, key: str) -> str:
    return f"{definitions}, PRIMARY KEY ({key})" if key else definitions


def table_lock_key(target: str) -> int:
    """The advisory-lock key of a qualified table name: 64 bits of its SHA-256, signed like a bigint."""
    return int.from_bytes(hashlib.sha256(target.encode()).digest()[:8], "big", signed=True)


class PostgresTableSink(TableSink):
    """PostgreSQL through psycopg2: COPY FROM STDIN into the staging table.

    Also the base of Redshift, and it detects a Redshift server: PostgreSQL takes a
    transaction-level advisory lock on a hash of the table name, which works before the table
    exists, so concurrent first loads do not race in CREATE TABLE (pg_type's unique index).
    Redshift has no advisory locks: ``LOCK`` (exclusive), which needs the table to exist.
    """

    def __init__(self, conn: psycopg2.extensions.connection):
        self.conn = conn
        self.quoting = PsycopgQuoting(conn)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            raise RuntimeError(
                "the connection has an open transaction; commit or roll it back first, "
                "the partition swap must run in a transaction of its own"
            )
        autocommit = self.conn.autocommit
        self.conn.autocommit = False
        try:
            yield
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        finally:
            self.conn.autocommit = autocommit

    def execute(self, statement: str | sql.Composable) -> list[tuple]:
        with self.conn.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def load_staging(self, frame: pd.DataFrame, columns: str, schema: str | None, table: str) -> None:
        """COPY ``frame`` as CSV; missing values (and empty strings) load as NULL."""
        staging = self.quoting.identifier(STAGING_TABLE)
        statement = f"COPY {staging} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER true)"
        with self.conn.cursor() as cursor:
            cursor.copy_expert(statement, io.StringIO(frame.to_csv(index=False, header=True)))

    def create_locked_table(self, schema: str | None, target: str, definitions: str, key: str) -> None:
        ((version,),) = self.execute("SELECT version()")
        redshift = "Redshift" in version
        if redshift and key:
            raise ValueError(f"Redshift does not enforce primary keys; {target} relies on the load lock alone")
        if not redshift:
            self.execute(f"SELECT pg_advisory_xact_lock({table_lock_key(target)})")
        self.execute(f"CREATE TABLE IF NOT EXISTS {target} ({with_primary_key(definitions, key)})")
        if redshift:
            self.execute(f"LOCK {target}")


class RedshiftTableSink(PostgresTableSink):
    """Redshift: the staging table is filled by ``COPY ... FORMAT AS PARQUET IAM_ROLE`` from an S3
    object when ``s3_staging`` is given, otherwise by COPY FROM STDIN, which a PostgreSQL-protocol
    endpoint without S3 access accepts (and PostgreSQL itself, in tests). No primary key: Redshift
    does not enforce one (and its planner trusts it), so the load lock keeps one copy per partition.
    """

    string_type = REDSHIFT_STRING_TYPE

    def __init__(self, conn: psycopg2.extensions.connection, s3_staging: RedshiftS3Staging | None = None):
        super().__init__(conn)
        self.s3_staging = s3_staging

    def load_staging(self, frame: pd.DataFrame, columns: str, schema: str | None, table: str) -> None:
        if self.s3_staging is None:
            super().load_staging(frame, columns, schema, table)
            return
        object_uri = self.s3_staging.object_uri(schema, table, uuid.uuid4().hex)
        self.s3_staging.upload(frame, object_uri)
        try:
            self.execute(self.s3_staging.copy_sql(object_uri))
        finally:
            self.s3_staging.delete(object_uri)


class DuckDBTableSink(TableSink):
    """A DuckDB database: the frame is registered as a view and inserted into the staging table by
    column name. Open it with ``open_duckdb_sink``, which holds the process's load lock."""

    quoting = DuckDBQuoting()

    def __init__(self, conn: duckdb.DuckDBPyConnection):
        self.conn = conn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN TRANSACTION")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def execute(self, statement: str | sql.Composable) -> list[tuple]:
        result = self.conn.execute(statement)
        return result.fetchall() if result.description else []

    def load_staging(self, frame: pd.DataFrame, columns: str, schema: str | None, table: str) -> None:
        view = f"{STAGING_TABLE}_frame"
        self.conn.register(view, frame)
        try:
            self.execute(f"INSERT INTO {self.quoting.identifier(STAGING_TABLE)} BY NAME SELECT * FROM {view}")
        finally:
            self.conn.unregister(view)

    def create_locked_table(self, schema: str | None, target: str, definitions: str, key: str) -> None:
        if schema:
            self.execute(f"CREATE SCHEMA IF NOT EXISTS {self.quoting.identifier(schema)}")
        self.execute(f"CREATE TABLE IF NOT EXISTS {target} ({with_primary_key(definitions, key)})")


@contextmanager
def open_duckdb_sink(path: str) -> Iterator[DuckDBTableSink]:
    """A sink on the DuckDB file (its folder created when missing), holding the process's load lock
    until it closes: threads share one DuckDB instance per file, and connecting while another
    thread loads fails. Another process fails on DuckDB's file lock while one writes."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with _DUCKDB_LOAD_LOCK, duckdb.connect(path) as conn:
        yield DuckDBTableSink(conn)


def redshift_copy_parquet_sql(table: str, s3_uri: str, iam_role: str, schema: str | None = None) -> sql.Composed:
    """``COPY "schema"."table" FROM 's3://...' IAM_ROLE 'arn:aws:iam::...' FORMAT AS PARQUET``."""
    if not isinstance(s3_uri, str) or not s3_uri.startswith("s3://") or len(s3_uri) <= len("s3://"):
        raise ValueError(f"Redshift COPY needs an s3:// URI, got {s3_uri!r}")
    if not isinstance(iam_role, str) or not iam_role.startswith("arn:aws:iam::"):
        raise ValueError(f"Redshift COPY needs an IAM role ARN (arn:aws:iam::...), got {iam_role!r}")
    if any(character in value for value in (s3_uri, iam_role) for character in "\\\x00"):
        # Redshift reads a backslash in a literal as an escape; no S3 key or ARN needs one.
        raise ValueError(f"refusing a SQL literal with a backslash or NUL: {s3_uri!r}, {iam_role!r}")
    parts = [checked_identifier(part) for part in (schema, table) if part is not None]
    return sql.SQL("COPY {} FROM {} IAM_ROLE {} FORMAT AS PARQUET").format(
        sql.Identifier(*parts), sql.Literal(s3_uri), sql.Literal(iam_role)
    )


class RedshiftS3Staging:
    """Stages a frame as one Parquet object under ``staging_uri`` for ``COPY ... FORMAT AS PARQUET``."""

    def __init__(self, s3_client: Any, staging_uri: str, iam_role: str):
        self.s3_client = s3_client
        self.bucket, self.prefix = split_s3_uri(staging_uri)
        self.iam_role = iam_role

    def object_uri(self, schema: str | None, table: str, token: str) -> str:
        key = "/".join(part for part in (self.prefix, schema, table, f"{token}.parquet") if part)
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

    def copy_sql(self, object_uri: str) -> sql.Composed:
        """The statement that fills the staging table from the object."""
        return redshift_copy_parquet_sql(STAGING_TABLE, object_uri, self.iam_role)

    def delete(self, object_uri: str) -> None:
        bucket, key = split_s3_uri(object_uri)
        self.s3_client.delete_object(Bucket=bucket, Key=key)


def crm_export(predictions: pd.DataFrame) -> pd.DataFrame:
    """Only the columns the CRM needs, in a fixed order (no salary, address or other attributes);
    experiment hold-outs carry an empty action."""
    missing = [column for column in CRM_COLUMNS if column not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack the CRM columns {missing}")
    export = predictions.loc[:, CRM_COLUMNS].reset_index(drop=True)
    # Hold-out members of the retention experiment get no action in the CRM.
    export.loc[export["experiment_arm"] == "control", "recommended_action"] = ""
    return export


def start_appflow(client: Any, flow_name: str, client_token: str | None = None) -> str:
    """Start an on-demand AppFlow flow (e.g. S3 -> Salesforce); returns the execution id.

    ``client_token`` makes a retried start idempotent (AppFlow runs the flow once per token).
    """
    request = {"flowName": flow_name}
    if client_token is not None:
        request["clientToken"] = client_token
    response = client.start_flow(**request)
    execution_id = response.get("executionId")
    if not execution_id:
        raise RuntimeError(
            f"AppFlow accepted flow {flow_name!r} but returned no executionId "
            f"(flowStatus={response.get('flowStatus')!r}); only on-demand flows return one"
        )
    return execution_id
