"""Fault suite: two loads of the same week at once, against the real local PostgreSQL and DuckDB.

Before the per-table load lock, two concurrent loads of one week into PostgreSQL left twice the
rows (delete, then insert, with no key), and on a table that did not exist yet one of them failed
on ``pg_type_typname_nsp_index``. Each trial here starts both loads behind a barrier.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import duckdb
import psycopg2
import pytest

from loyalty_assets.defs.distribution.resources import DuckDBDashboardDatabase, PostgresDashboardDatabase
from loyalty_assets.domain.warehouse import connect_postgres
from loyalty_assets_tests.test_warehouse import replace_postgres_week, replace_redshift_week, weekly_predictions

WEEK = "2026-11-30"
TRIALS = 5
# Enough rows that COPY takes a while, so the two loads overlap.
MEMBERS = 20000
DASHBOARD_OPTIONS = {"column_types": {"week": "date"}, "primary_key": ["loyalty_number", "week"]}


def _week_frame(shift: float):
    return weekly_predictions(WEEK, [(member * 7 + shift) % 100 for member in range(MEMBERS)])


def _at_once(*loads) -> list:
    """Run the loads in parallel threads released together; re-raise the first error."""
    barrier = threading.Barrier(len(loads))

    def run(load):
        barrier.wait()
        return load()

    with ThreadPoolExecutor(len(loads)) as pool:
        return [future.result() for future in [pool.submit(run, load) for load in loads]]


def _postgres_rows(target, table: str) -> tuple[int, int]:
    """(rows, distinct members) of ``table``, as another session sees it."""
    with closing(psycopg2.connect(target.dsn)) as reader, reader.cursor() as cursor:
        cursor.execute(f'SELECT count(*), count(DISTINCT loyalty_number) FROM "{target.schema}"."{table}"')
        return cursor.fetchone()


def _postgres_primary_key(target, table: str) -> list[str]:
    with closing(psycopg2.connect(target.dsn)) as reader, reader.cursor() as cursor:
        cursor.execute(
            "SELECT a.attname FROM pg_constraint c JOIN pg_attribute a "
            "ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) "
            "WHERE c.conrelid = %s::regclass AND c.contype = 'p' ORDER BY array_position(c.conkey, a.attnum)",
            (f'"{target.schema}"."{table}"',),
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.parametrize("table_exists", [True, False], ids=["existing-table", "new-table"])
def test_two_dashboard_loads_of_one_week_at_once_leave_one_copy(postgres_dsn, table_exists):
    dashboard = PostgresDashboardDatabase(dsn=postgres_dsn.dsn, db_schema=postgres_dsn.schema)
    first, second = _week_frame(0.0), _week_frame(3.0)
    for trial in range(TRIALS):
        table = "churn_predictions" if table_exists else f"churn_predictions_{trial}"
        if table_exists and trial == 0:
            dashboard.replace_week(table, first, WEEK)
        written = _at_once(
            lambda: dashboard.replace_week(table, first, WEEK), lambda: dashboard.replace_week(table, second, WEEK)
        )
        assert written == [MEMBERS, MEMBERS]
        assert _postgres_rows(postgres_dsn, table) == (MEMBERS, MEMBERS), f"trial {trial}"
        assert _postgres_primary_key(postgres_dsn, table) == ["loyalty_number", "week"]


@pytest.mark.parametrize("table_exists", [True, False], ids=["existing-table", "new-table"])
def test_two_warehouse_loads_without_a_key_are_serialized_by_the_lock(postgres_dsn, table_exists):
    """The Redshift load path declares no key (Redshift would not enforce it): the lock alone keeps one copy."""

    def load(table, frame):
        with closing(connect_postgres(postgres_dsn.dsn)) as conn:
            return replace_redshift_week(conn, table, frame, WEEK, schema=postgres_dsn.schema)

    first, second = _week_frame(0.0), _week_frame(3.0)
    for trial in range(TRIALS):
        table = "warehouse_predictions" if table_exists else f"warehouse_predictions_{trial}"
        if table_exists and trial == 0:
            load(table, first)
        assert _at_once(lambda: load(table, first), lambda: load(table, second)) == [MEMBERS, MEMBERS]
        assert _postgres_rows(postgres_dsn, table) == (MEMBERS, MEMBERS), f"trial {trial}"
        assert _postgres_primary_key(postgres_dsn, table) == []


def test_a_dashboard_table_made_before_the_key_gets_it_or_names_its_duplicates(postgres_dsn):
    target = f'"{postgres_dsn.schema}"."churn_predictions"'
    with closing(psycopg2.connect(postgres_dsn.dsn)) as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {target} (loyalty_number bigint, week date, churn_risk_pct double precision)")
        cursor.execute(f"INSERT INTO {target} VALUES (1, '2026-11-23', 5), (1, '2026-11-23', 5), (2, '2026-11-16', 9)")
        admin.commit()
    frame = weekly_predictions(WEEK, [10.0, 20.0]).loc[:, ["loyalty_number", "week", "churn_risk_pct"]]
    with closing(connect_postgres(postgres_dsn.dsn)) as conn:
        with pytest.raises(ValueError, match=r"holds 1 duplicated \(\"loyalty_number\", \"week\"\) keys"):
            replace_postgres_week(
                conn, "churn_predictions", frame, WEEK, schema=postgres_dsn.schema, **DASHBOARD_OPTIONS
            )
        assert _postgres_rows(postgres_dsn, "churn_predictions") == (3, 2)  # rolled back, nothing half-written
        with conn.cursor() as cursor:
            cursor.execute(f"DELETE FROM {target} WHERE week = '2026-11-23'")
        conn.commit()
        replace_postgres_week(conn, "churn_predictions", frame, WEEK, schema=postgres_dsn.schema, **DASHBOARD_OPTIONS)
    assert _postgres_primary_key(postgres_dsn, "churn_predictions") == ["loyalty_number", "week"]
    assert _postgres_rows(postgres_dsn, "churn_predictions") == (3, 3)


def test_two_duckdb_dashboard_loads_of_one_week_at_once_leave_one_copy(tmp_path):
    dashboard = DuckDBDashboardDatabase(path=str(tmp_path / "dashboard.duckdb"))
    first, second = _week_frame(0.0), _week_frame(3.0)
    for _ in range(TRIALS):
        written = _at_once(
            lambda: dashboard.replace_week("churn_predictions", first, WEEK),
            lambda: dashboard.replace_week("churn_predictions", second, WEEK),
        )
        assert written == [MEMBERS, MEMBERS]
    with duckdb.connect(str(tmp_path / "dashboard.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT loyalty_number) FROM churn_predictions").fetchone() == (
            MEMBERS,
            MEMBERS,
        )
        (key,) = conn.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() "
            "WHERE table_name = 'churn_predictions' AND constraint_type = 'PRIMARY KEY'"
        ).fetchone()
    assert key == ["loyalty_number", "week"]
