"""The local PostgreSQL of the test machines: an autocommit admin connection, or a clear failure."""

from __future__ import annotations

import psycopg2
import pytest


def admin_connection(dsn: str):
    """Autocommit connection; a test that cannot reach the server fails (never skips)."""
    try:
        connection = psycopg2.connect(dsn, connect_timeout=5)
    except psycopg2.OperationalError as error:
        pytest.fail(
            f"PostgreSQL is unreachable at {dsn!r}: {error}\n"
            "Start it with: pg_ctlcluster --skip-systemctl-redirect 15 main start",
            pytrace=False,
        )
    connection.autocommit = True
    return connection
