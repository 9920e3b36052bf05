"""What PostgresStore adds to the store contract: many writers, group commit, migrations, failures."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import psycopg
import pytest

from runtime import EventData, SessionRecord, StoreError, VersionConflict
from runtime._stores import _postgres_writer
from runtime._stores._postgres_schema import SCHEMA_VERSION
from runtime._stores._wakeup import run_in_thread
from runtime._stores.postgres import PostgresStore
from tests.pg import PgTarget

pytestmark = pytest.mark.anyio


def ev(n: int) -> EventData:
    return EventData("Counted", 1, f'{{"n":{n}}}')


@contextmanager
def sql(pg: PgTarget) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A plain autocommit connection with the test's schema on its search path."""
    from psycopg import sql as q

    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(q.SQL("SET search_path TO {}").format(q.Identifier(pg.schema)))
        yield conn


@pytest.fixture
async def store(pg: PgTarget) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(pg.dsn, schema=pg.schema)
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


class TestManyWriters:
    async def test_second_store_sees_the_first_ones_appends(self, pg: PgTarget, store: PostgresStore) -> None:
        """Nothing is cached between transactions: another process's appends count at once."""
        other = PostgresStore(pg.dsn, schema=pg.schema)
        await other.open()
        try:
            await store.create(SessionRecord("s", "Game"))
            assert await store.append("s", 0, [ev(1)]) == 1
            assert await other.append("s", 1, [ev(2)]) == 2
            with pytest.raises(VersionConflict) as info:
                await store.append("s", 1, [ev(3)])
            assert (info.value.expected, info.value.actual) == (1, 2)
            assert [e.data for e in await store.read("s")] == ['{"n":1}', '{"n":2}']
        finally:
            await other.aclose()

    async def test_racing_stores_never_fork_a_log(self, pg: PgTarget, store: PostgresStore) -> None:
        """Two stores appending at one version: exactly one wins each round, the log stays linear."""
        other = PostgresStore(pg.dsn, schema=pg.schema)
        await other.open()
        try:
            await store.create(SessionRecord("s", "Game"))
            wins: list[str] = []
            for version in range(20):

                async def attempt(name: str, s: PostgresStore, v: int = version) -> None:
                    try:
                        await s.append("s", v, [ev(v)])
                    except VersionConflict:
                        return
                    wins.append(name)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(attempt, "a", store)
                    tg.start_soon(attempt, "b", other)
            assert len(wins) == 20
            assert [e.version for e in await other.read("s")] == list(range(1, 21))
        finally:
            await other.aclose()


class TestGroupCommit:
    async def test_concurrent_appends_share_transactions(self, store: PostgresStore) -> None:
        """200 appends at once to 200 sessions commit in far fewer transactions, each durable."""
        for i in range(200):
            await store.create(SessionRecord(f"s{i}", "Game"))
        before = store.statistics().commits
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(store.append, f"s{i}", 0, [ev(i), ev(i + 1)])
        stats = store.statistics()
        assert stats.appends == 200
        assert stats.events == 400
        assert stats.commits - before < 200
        assert (await store.stats()).events == 400

    async def test_chained_appends_in_one_batch(
        self, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Appends to one session queued together are checked one after the other, in queue order."""
        await store.create(SessionRecord("s", "Game"))
        await store.create(SessionRecord("busy", "Game"))
        gate = threading.Event()
        entered = threading.Event()

        def held_commit(conn: psycopg.Connection[tuple[object, ...]]) -> None:
            entered.set()
            gate.wait(10)  # a safety net: a broken test must not hang the writer forever
            real_commit(conn)

        real_commit = _postgres_writer.commit
        monkeypatch.setattr(_postgres_writer, "commit", held_commit)
        results: dict[int, object] = {}

        async def put(tag: int, expected: int) -> None:
            try:
                results[tag] = await store.append("s", expected, [ev(tag)])
            except VersionConflict as exc:
                results[tag] = (exc.expected, exc.actual)

        async with anyio.create_task_group() as tg:
            tg.start_soon(store.append, "busy", 0, [ev(0)])  # holds the writer in its commit
            await run_in_thread(entered.wait, 10)
            for tag, expected in enumerate((0, 1, 2, 2)):  # queued in this order for the next batch
                tg.start_soon(put, tag, expected)
                await anyio.wait_all_tasks_blocked()
            gate.set()
        assert results == {0: 1, 1: 2, 2: 3, 3: (2, 3)}
        assert [e.data for e in await store.read("s")] == [ev(0).data, ev(1).data, ev(2).data]
        assert store.statistics().largest_batch == 4


class TestFailures:
    async def test_bad_data_fails_only_its_own_append(self, store: PostgresStore) -> None:
        """Text PostgreSQL cannot hold (a NUL) fails that append alone; its batch mates are written."""
        for sid in ("good", "bad", "also"):
            await store.create(SessionRecord(sid, "Game"))
        outcome: dict[str, object] = {}

        async def put(sid: str, data: str) -> None:
            try:
                outcome[sid] = await store.append(sid, 0, [EventData("T", 1, data)])
            except StoreError as exc:
                outcome[sid] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(put, "good", "{}")
            tg.start_soon(put, "bad", '{"a":"\x00"}')
            tg.start_soon(put, "also", "[]")
        assert outcome["good"] == outcome["also"] == 1
        assert isinstance(outcome["bad"], StoreError)
        assert list(await store.read("bad")) == []
        assert [e.data for e in await store.read("also")] == ["[]"]

    async def test_writer_reconnects_after_losing_its_connection(
        self, pg: PgTarget, store: PostgresStore
    ) -> None:
        """A connection the server dropped is replaced; the append on it is not lost."""
        await store.create(SessionRecord("s", "Game"))
        with sql(pg) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                (f"sessionvisor:{pg.schema}",),
            ).fetchone()
        assert killed is not None
        assert killed[0] >= 1
        assert await store.append("s", 0, [ev(1)]) == 1
        assert [e.version for e in await store.read("s")] == [1]

    async def test_unreachable_server_is_a_store_error(self) -> None:
        """open() against a port nobody listens on fails with StoreError naming the server."""
        store = PostgresStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout=2)
        with pytest.raises(StoreError, match=r"127\.0\.0\.1:1\b"):
            await store.open()
        await store.aclose()

    async def test_operations_after_close_fail(self, store: PostgresStore) -> None:
        """A closed store refuses writes and reads with StoreError."""
        await store.aclose()
        with pytest.raises(StoreError, match="closed"):
            await store.create(SessionRecord("s", "Game"))
        with pytest.raises(StoreError, match="closed"):
            await store.get("s")


class TestSchema:
    async def test_reopening_keeps_everything(self, pg: PgTarget, store: PostgresStore) -> None:
        """A second open of a migrated schema migrates nothing and sees the rows."""
        await store.create(SessionRecord("s", "Game"))
        await store.append("s", 0, [ev(1)])
        again = PostgresStore(pg.dsn, schema=pg.schema)
        await again.open()
        try:
            got = await again.get("s")
            assert got is not None
            assert got.version == 1
        finally:
            await again.aclose()
        with sql(pg) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]

    async def test_newer_schema_is_refused(self, pg: PgTarget, store: PostgresStore) -> None:
        """A schema written by a newer sessionvisor is refused, not written into."""
        with sql(pg) as conn:
            conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
        newer = PostgresStore(pg.dsn, schema=pg.schema)
        with pytest.raises(StoreError, match="newer sessionvisor"):
            await newer.open()
        await newer.aclose()

    async def test_foreign_schema_is_refused(self, pg: PgTarget) -> None:
        """A schema holding someone else's tables is refused."""
        from psycopg import sql as q

        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute(q.SQL("CREATE SCHEMA {}").format(q.Identifier(pg.schema)))
            conn.execute(q.SQL("CREATE TABLE {}.accounts (id int)").format(q.Identifier(pg.schema)))
        store = PostgresStore(pg.dsn, schema=pg.schema)
        with pytest.raises(StoreError, match="belongs to something else"):
            await store.open()
        await store.aclose()

    async def test_stores_starting_at_once_migrate_once(self, pg: PgTarget) -> None:
        """Several processes opening a new schema at the same moment: one migrates, all open."""
        stores = [PostgresStore(pg.dsn, schema=pg.schema) for _ in range(4)]
        async with anyio.create_task_group() as tg:
            for s in stores:
                tg.start_soon(s.open)
        for s in stores:
            await s.aclose()
        with sql(pg) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]

    async def test_a_version_1_schema_is_migrated(self, pg: PgTarget) -> None:
        """A schema of version 1 (the first layout) is brought to the current one, rows kept."""
        from runtime._stores import _postgres_schema

        with psycopg.connect(pg.dsn) as conn:
            _postgres_schema.migrate(conn, pg.schema, _postgres_schema.MIGRATIONS[:1])
        with sql(pg) as conn:
            conn.execute(
                "INSERT INTO sessions (id, type, status, args, metadata, created_at, updated_at) "
                "VALUES ('old', 'Game', 'running', '{}', '{}', 1, 1)"
            )
        store = PostgresStore(pg.dsn, schema=pg.schema)
        await store.open()
        try:
            await store.append("old", 0, [ev(1)])
            got = await store.get("old")
            assert got is not None
            assert got.version == 1
        finally:
            await store.aclose()
        with sql(pg) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
            assert conn.execute(
                "SELECT count(*) FROM pg_constraint WHERE conname = 'events_session_fkey' "
                "AND connamespace = %s::regnamespace",
                (pg.schema,),
            ).fetchall() == [(0,)]
