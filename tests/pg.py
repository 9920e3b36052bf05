"""Reaching the PostgreSQL server that the PostgresStore tests run against.

The server is the one at ``SESSIONVISOR_PG_DSN`` (default: the local one CI starts). Without one the
tests skip with a message saying how to run them, except where ``SESSIONVISOR_REQUIRE_PG=1`` (CI) makes
them fail. Every test gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator

import attrs
import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@attrs.frozen
class PgTarget:
    """Where a test's store lives: a server and a schema of the test's own."""

    dsn: str
    schema: str


def dsn() -> str:
    return os.environ.get("SESSIONVISOR_PG_DSN", DEFAULT_DSN)


def required() -> bool:
    return os.environ.get("SESSIONVISOR_REQUIRE_PG") == "1"


@functools.cache
def unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or ``None`` when they can."""
    how = (
        "start PostgreSQL on 127.0.0.1:5432 (trust auth, a database 'test'), or point "
        "SESSIONVISOR_PG_DSN at a server, and install the extra: pip install -e '.[test]'"
    )
    try:
        import psycopg
    except ImportError:
        return f"psycopg is not installed; {how}"
    try:
        with psycopg.connect(dsn(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL server answers at {dsn()!r} ({exc}); {how}"
    return None


def require_server() -> None:
    """Skip the calling test (fail it under SESSIONVISOR_REQUIRE_PG=1) when no server answers."""
    reason = unavailable()
    if reason is None:
        return
    if required():
        pytest.fail(f"SESSIONVISOR_REQUIRE_PG=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def drop_schema(target: PgTarget) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(target.dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))


def own_schema() -> Iterator[PgTarget]:
    """A fresh schema name on the test server; the schema is dropped when the generator ends."""
    require_server()
    target = PgTarget(dsn(), f"svtest_{uuid.uuid4().hex[:16]}")
    try:
        yield target
    finally:
        drop_schema(target)
