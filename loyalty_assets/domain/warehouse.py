"""Loading weekly partitions into PostgreSQL (RDS) and Redshift, and handing the CRM file to AppFlow.

Every load replaces one partition (all rows whose ``partition_column`` equals ``partition_value``)
in a single transaction: the frame goes into a temporary staging table, is checked, then the
partition's old rows are deleted and the staged rows inserted. A rerun replaces, never duplicates;
any failure rolls back and leaves the previous rows in place. Loads of one table are serialized by
a lock held until the transaction ends (see ``create_locked_table``), so two loads of the same
partition at once also leave one copy; PostgreSQL tables can carry a primary key on top.

Identifiers (schema, table, column names) are validated and double-quoted, never formatted in from
data; values travel as bind parameters or through COPY.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import psycopg2.extensions
from pandas.api import types as pdt

from loyalty_assets.domain.redaction import mask_quoted, one_line, redact

IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# A SQL type name such as ``bigint``, ``double precision``, ``numeric(5, 2)`` or ``varchar(65535)``.
SQL_TYPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]*(\(\s*\d+\s*(,\s*\d+\s*)?\))?$")
STAGING_TABLE = "loyalty_partition_staging"

CRM_COLUMNS = [
    "loyalty_number", "week", "churn_risk_pct", "risk_tier", "segment", "recommended_action", "experiment_arm",
]  # fmt: skip

# Type names valid in both PostgreSQL and Redshift, except the string type: Redshift turns TEXT
# into VARCHAR(256), so it gets the widest VARCHAR instead.
POSTGRES_STRING_TYPE = "text"
REDSHIFT_STRING_TYPE = "varchar(65535)"


def quote_identifier(name: str) -> str:
    """``name`` double-quoted, after checking it is a plain identifier (letters, digits, _; <= 63)."""
    if not isinstance(name, str) or not IDENTIFIER_PATTERN.fullmatch(name):
        raise ValueError(
            f"unsafe SQL identifier {name!r}: expected a letter or _ followed by up to 62 letters, digits or _"
        )
    return f'"{name}"'


def qualified_table(table: str, schema: str | None = None) -> str:
    """``"schema"."table"`` or ``"table"``, each part validated."""
    return f"{quote_identifier(schema)}.{quote_identifier(table)}" if schema else quote_identifier(table)


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
        quote_identifier(column)
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
    raise ValueError(f"no SQL type for column {column!r} of dtype {dtype}; pass one in columns_sql")


def replace_partition_postgres(
    conn: psycopg2.extensions.connection,
    table: str,
    frame: pd.DataFrame,
    partition_column: str,
    partition_value: Any,
    schema: str | None = None,
    columns_sql: Mapping[str, str] | None = None,
    primary_key: Sequence[str] = (),
) -> int:
    """Replace one partition of ``schema.table`` with ``frame``; returns the rows written.

    Creates the table when missing (types from the dtypes, ``columns_sql`` overrides per column,
    ``primary_key`` if given, also added to an existing table without one), COPYs the frame into a
    temporary staging table, then deletes the partition and inserts the staged rows, all in one
    transaction that is committed on ``conn``.
    """
    column_types = sql_column_types(frame, columns_sql, POSTGRES_STRING_TYPE)

    def load_staging(cursor) -> None:
        _copy_frame_from_stdin(cursor, frame)

    return _replace_partition(
        conn, table, schema, frame, column_types, partition_column, partition_value, load_staging, primary_key
    )


def redshift_copy_parquet_sql(table: str, s3_uri: str, iam_role: str, schema: str | None = None) -> str:
    """``COPY "schema"."table" FROM 's3://...' IAM_ROLE 'arn:aws:iam::...' FORMAT AS PARQUET``."""
    if not isinstance(s3_uri, str) or not s3_uri.startswith("s3://") or len(s3_uri) <= len("s3://"):
        raise ValueError(f"Redshift COPY needs an s3:// URI, got {s3_uri!r}")
    if not isinstance(iam_role, str) or not iam_role.startswith("arn:aws:iam::"):
        raise ValueError(f"Redshift COPY needs an IAM role ARN (arn:aws:iam::...), got {iam_role!r}")
    return (
        f"COPY {qualified_table(table, schema)} FROM {_sql_string_literal(s3_uri)} "
        f"IAM_ROLE {_sql_string_literal(iam_role)} FORMAT AS PARQUET"
    )


def replace_partition_redshift(
    conn: psycopg2.extensions.connection,
    table: str,
    frame: pd.DataFrame,
    partition_column: str,
    partition_value: Any,
    *,
    s3_uri: str | None = None,
    iam_role: str | None = None,
    schema: str | None = None,
) -> int:
    """Replace one partition of a Redshift table with ``frame``; returns the rows written.

    With ``s3_uri`` and ``iam_role`` the staging table is filled by ``COPY ... FORMAT AS PARQUET``:
    the object at ``s3_uri`` must already hold ``frame`` as Parquet, columns in frame order (its row
    count is checked against ``len(frame)``). Without them the frame is sent with COPY FROM STDIN,
    which works on a PostgreSQL-protocol endpoint without S3 access (local tests).
    """
    if (s3_uri is None) != (iam_role is None):
        raise ValueError("s3_uri and iam_role go together: give both for COPY FROM S3, or neither")
    column_types = sql_column_types(frame, string_type=REDSHIFT_STRING_TYPE)

    def load_staging(cursor) -> None:
        if s3_uri is None:
            _copy_frame_from_stdin(cursor, frame)
        else:
            cursor.execute(redshift_copy_parquet_sql(STAGING_TABLE, s3_uri, iam_role))

    return _replace_partition(conn, table, schema, frame, column_types, partition_column, partition_value, load_staging)


def _replace_partition(
    conn: psycopg2.extensions.connection,
    table: str,
    schema: str | None,
    frame: pd.DataFrame,
    column_types: Mapping[str, str],
    partition_column: str,
    partition_value: Any,
    load_staging: Callable[[Any], None],
    primary_key: Sequence[str] = (),
) -> int:
    if partition_column not in frame.columns:
        raise ValueError(f"partition column {partition_column!r} is not in the frame: {list(frame.columns)}")
    if partition_value is None:
        raise ValueError("partition_value must not be None")
    if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        raise RuntimeError(
            "the connection has an open transaction; commit or roll it back first, "
            "the partition swap must run in a transaction of its own"
        )
    if isinstance(partition_value, np.generic):
        partition_value = partition_value.item()  # psycopg2 cannot adapt numpy scalars
    target = qualified_table(table, schema)
    staging = quote_identifier(STAGING_TABLE)
    column_definitions = ", ".join(
        f"{quote_identifier(column)} {sql_type}" for column, sql_type in column_types.items()
    )
    column_list = ", ".join(quote_identifier(column) for column in frame.columns)
    partition = quote_identifier(partition_column)

    autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE TEMP TABLE {staging} ({column_definitions})")
            load_staging(cursor)
            # CASE rather than FILTER / IS DISTINCT FROM, which Redshift lacks; NULL counts as foreign.
            cursor.execute(
                f"SELECT count(*), coalesce(sum(CASE WHEN {partition} = %s THEN 0 ELSE 1 END), 0) FROM {staging}",
                (partition_value,),
            )
            staged_rows, foreign_rows = cursor.fetchone()
            if staged_rows != len(frame):
                raise ValueError(f"staging for {target} holds {staged_rows} rows, the frame has {len(frame)}")
            if foreign_rows:
                raise ValueError(
                    f"{foreign_rows} rows have {partition_column} other than {partition_value!r}; "
                    f"a load into {target} may only hold the partition it replaces"
                )
            create_locked_table(cursor, target, column_definitions, primary_key)
            _add_new_columns(cursor, target, column_types)
            cursor.execute(f"DELETE FROM {target} WHERE {partition} = %s", (partition_value,))
            if primary_key:
                _ensure_primary_key(cursor, target, primary_key)
            cursor.execute(f"INSERT INTO {target} ({column_list}) SELECT {column_list} FROM {staging}")
            written = cursor.rowcount
            cursor.execute(f"DROP TABLE {staging}")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.autocommit = autocommit
    return written


def is_redshift(cursor) -> bool:
    cursor.execute("SELECT version()")
    return "Redshift" in cursor.fetchone()[0]


def table_lock_key(target: str) -> int:
    """The advisory-lock key of a qualified table name: 64 bits of its SHA-256, signed like a bigint."""
    return int.from_bytes(hashlib.sha256(target.encode()).digest()[:8], "big", signed=True)


def lock_table_for_load(cursor, target: str, redshift: bool) -> None:
    """Serialize loads of ``target`` until the transaction ends.

    PostgreSQL: a transaction-level advisory lock on a hash of the name, which works before the
    table exists, so concurrent first loads do not race in CREATE TABLE (pg_type's unique index).
    Redshift has no advisory locks: LOCK (exclusive), which needs the table to exist.
    """
    if redshift:
        cursor.execute(f"LOCK {target}")
    else:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (table_lock_key(target),))


def create_locked_table(cursor, target: str, column_definitions: str, primary_key: Sequence[str] = ()) -> None:
    """Create ``target`` when missing, holding the load lock of ``lock_table_for_load`` until the
    transaction ends. A primary key only on PostgreSQL: Redshift accepts one but does not enforce it."""
    redshift = is_redshift(cursor)
    if primary_key and redshift:
        raise ValueError(f"Redshift does not enforce primary keys; {target} relies on the load lock alone")
    key = f", PRIMARY KEY ({', '.join(quote_identifier(column) for column in primary_key)})" if primary_key else ""
    if not redshift:
        lock_table_for_load(cursor, target, redshift)
    cursor.execute(f"CREATE TABLE IF NOT EXISTS {target} ({column_definitions}{key})")
    if redshift:
        lock_table_for_load(cursor, target, redshift)


def _add_new_columns(cursor, target: str, column_types: Mapping[str, str]) -> None:
    """Columns the frame has and a table of an earlier release lacks are added (older rows hold NULL)."""
    cursor.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0", (target,))
    existing = {name for (name,) in cursor.fetchall()}
    for column, sql_type in column_types.items():
        if column not in existing:
            cursor.execute(f"ALTER TABLE {target} ADD COLUMN {quote_identifier(column)} {sql_type}")


def _ensure_primary_key(cursor, target: str, primary_key: Sequence[str]) -> None:
    """Add the primary key to a table created before it existed; duplicates already there are named."""
    cursor.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'", (target,))
    if cursor.fetchone()[0]:
        return
    columns = ", ".join(quote_identifier(column) for column in primary_key)
    cursor.execute(f"SELECT count(*) FROM (SELECT 1 FROM {target} GROUP BY {columns} HAVING count(*) > 1) AS d")
    (duplicated,) = cursor.fetchone()
    if duplicated:
        raise ValueError(
            f"{target} holds {duplicated} duplicated ({columns}) keys from earlier loads: delete the extra rows, "
            "then load again so the primary key can be added"
        )
    cursor.execute(f"ALTER TABLE {target} ADD PRIMARY KEY ({columns})")


def _copy_frame_from_stdin(cursor, frame: pd.DataFrame) -> None:
    """COPY ``frame`` into the staging table as CSV; missing values (and empty strings) load as NULL."""
    column_list = ", ".join(quote_identifier(column) for column in frame.columns)
    buffer = io.StringIO(frame.to_csv(index=False, header=True))
    cursor.copy_expert(
        f"COPY {quote_identifier(STAGING_TABLE)} ({column_list}) FROM STDIN WITH (FORMAT csv, HEADER true)", buffer
    )


def _sql_string_literal(value: str) -> str:
    if "\\" in value or "\x00" in value:
        raise ValueError(f"refusing a SQL literal with a backslash or NUL: {value!r}")
    return "'" + value.replace("'", "''") + "'"


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
