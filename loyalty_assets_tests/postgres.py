"""The local PostgreSQL of the test machines: an autocommit admin connection (or a clear failure), and
schemas or databases that exist for one test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import psycopg2
import pytest
from psycopg2 import sql

DROP_WITH_CONTENTS = {"SCHEMA": "CASCADE", "DATABASE": "WITH (FORCE)"}


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


@contextmanager
def temporary(dsn: str, kind: Literal["SCHEMA", "DATABASE"], prefix: str) -> Iterator[str]:
    """The name of a new, empty schema or database, dropped with its contents afterwards."""
    admin = admin_connection(dsn)
    name = f"{prefix}_{uuid.uuid4().hex}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE {} {}").format(sql.SQL(kind), sql.Identifier(name)))
        yield name
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP {} {} {}").format(sql.SQL(kind), sql.Identifier(name), sql.SQL(DROP_WITH_CONTENTS[kind]))
            )
    finally:
        admin.close()
