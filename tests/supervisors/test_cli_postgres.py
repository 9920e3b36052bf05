"""The ``sessionvisor`` command on a PostgresStore (--dsn): nodes, owners in list, refusals.

Run as a real subprocess, as in tests/supervisors/test_cli.py.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import psycopg
import pytest
from psycopg import sql

from runtime import EventData, PostgresStore, SessionRecord, SQLiteStore
from tests.pg import PgTarget
from tests.supervisors.test_cli import fails, ok

pytestmark = pytest.mark.slow  # the command, as a subprocess


async def two_nodes(pg: PgTarget) -> None:
    """Node a (alive) owns g1; node b owned g2 but stopped renewing long ago."""
    stores = [PostgresStore(pg.dsn, schema=pg.schema) for _ in range(2)]
    for store, name in zip(stores, ("a", "b"), strict=True):
        await store.open()
        await store.join(name, address=f"10.0.0.{len(name)}:700{name == 'b':d}")
    a, b = stores
    try:
        for sid, owner in (("g1", a), ("g2", b)):
            await owner.create(SessionRecord(sid, "Game"))
            await owner.acquire(sid)
            await owner.append(sid, 0, [EventData("Moved", 1, "{}")])
        await a.create(SessionRecord("free", "Game"))
    finally:
        for store in stores:
            await store.aclose()
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg.schema)))
        conn.execute("UPDATE leases SET expires = expires - 3600 WHERE node = 'b'")
        conn.execute("UPDATE nodes SET heartbeat = heartbeat - 3600 WHERE name = 'b'")
        # Node a stays alive for an hour: on a busy machine the command line can take longer than
        # a lease's few seconds to start, and a's lease would lapse before it looks.
        conn.execute("UPDATE leases SET expires = expires + 3600 WHERE node = 'a'")
        conn.execute("UPDATE nodes SET heartbeat = heartbeat + 3600 WHERE name = 'a'")


def test_nodes_and_owners(pg: PgTarget) -> None:
    """nodes lists both nodes with their state; list names each session's live owner."""
    anyio.run(two_nodes, pg)
    table = ok("--dsn", pg.dsn, "--schema", pg.schema, "nodes")
    rows = [line.split() for line in table.splitlines()]
    assert rows[0][:4] == ["NODE", "ADDRESS", "STATE", "LEASES"]
    assert [r[:4] for r in rows[1:]] == [
        ["a", "10.0.0.1:7000", "alive", "1"],
        ["b", "10.0.0.1:7001", "dead", "0"],
    ]
    listing = ok("--dsn", pg.dsn, "--schema", pg.schema, "list")
    owners = {line.split()[0]: line.split()[-1] for line in listing.splitlines()[1:]}
    assert listing.splitlines()[0].split()[-1] == "NODE"
    assert owners == {"g1": "a", "g2": "-", "free": "-"}
    history = ok("--dsn", pg.dsn, "--schema", pg.schema, "history", "g1")
    assert '"type": "Moved"' in history


def test_missing_schema_is_refused(pg: PgTarget) -> None:
    """A schema without a store is refused, and nothing is created."""
    err = fails("--dsn", pg.dsn, "--schema", pg.schema, "list")
    assert "holds no sessionvisor store" in err
    with psycopg.connect(pg.dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (pg.schema,)).fetchone()
    assert row == (0,)


def test_nodes_needs_postgres(tmp_path: Path) -> None:
    """nodes on an SQLite store says why it cannot answer."""
    path = tmp_path / "s.db"
    anyio.run(_make_sqlite, path)
    assert "--dsn" in fails("--db", path, "nodes")


async def _make_sqlite(path: Path) -> None:
    store = SQLiteStore(path)
    await store.open()
    await store.aclose()
