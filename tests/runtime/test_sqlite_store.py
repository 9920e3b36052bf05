"""What SQLiteStore adds to the store contract: WAL, group commit, durability, migrations, failures."""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from runtime import (
    AppendExtras,
    EventData,
    MemoryStore,
    Reminder,
    SessionExists,
    SessionNotFound,
    SessionRecord,
    Snapshot,
    Status,
    StoredEvent,
    StoreError,
    VersionConflict,
)
from runtime._stores import _rows, _sqlite_schema, _sqlite_writer
from runtime._stores._wakeup import run_in_thread
from runtime._stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

_real_commit = _sqlite_writer.commit


def ev(n: int) -> EventData:
    return EventData("Counted", 1, f'{{"n": {n}}}')


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "s.db")
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


class CommitGate:
    """Holds the writer thread inside its commits until opened; can make chosen commits fail."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self.failures: list[Exception | None] = []
        """What each commit in turn does: ``None`` commits, an exception is raised instead."""

    def commit(self, conn: sqlite3.Connection) -> None:
        self.entered.set()
        self._open.wait(10)  # a safety net: a broken test must not hang the writer forever
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        _real_commit(conn)

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.entered.clear()
        self._open.clear()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait_entered(self) -> None:
        assert await run_in_thread(self.entered.wait, 10)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[CommitGate]:
    g = CommitGate()
    monkeypatch.setattr(_sqlite_writer, "commit", g.commit)
    try:
        yield g
    finally:
        g.open()


class Outcomes:
    """Runs store calls as tasks, queued one after another, and keeps each result or error."""

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg
        self.results: dict[str, Any] = {}

    async def queue(self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> None:
        async def run() -> None:
            try:
                self.results[name] = await fn(*args, **kw)
            except Exception as exc:
                self.results[name] = exc

        self._tg.start_soon(run)
        # The task has queued its operation (and waits for it) before the next one starts.
        await anyio.wait_all_tasks_blocked()


async def hold_writer(tg: anyio.abc.TaskGroup, store: SQLiteStore, gate: CommitGate) -> None:
    """Close the gate and put the writer inside a commit (of a session "warmup"), held there."""
    gate.close()
    tg.start_soon(store.create, SessionRecord("warmup", "Game"))
    await gate.wait_entered()


class TestFile:
    @pytest.mark.parametrize(("level", "code"), [("FULL", 2), ("NORMAL", 1)])
    async def test_wal_and_synchronous(self, tmp_path: Path, level: Any, code: int) -> None:
        """The file is in WAL mode and the writer uses the synchronous level asked for."""
        store = SQLiteStore(tmp_path / "s.db", synchronous=level)
        await store.open()
        try:
            await store.create(SessionRecord("s", "Game"))  # the writer is idle afterwards
            writer_conn = store._writer._conn  # type: ignore[union-attr]
            assert writer_conn.execute("PRAGMA synchronous").fetchone()[0] == code
            assert writer_conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            await store.aclose()
        with sqlite3.connect(tmp_path / "s.db") as other:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert other.execute("PRAGMA page_size").fetchone()[0] == _sqlite_schema.PAGE_SIZE
            assert other.execute("PRAGMA user_version").fetchone()[0] == _sqlite_schema.SCHEMA_VERSION
        other.close()

    def test_bad_arguments(self, tmp_path: Path) -> None:
        """An unknown synchronous level, or no file at all, is refused at once."""
        with pytest.raises(ValueError, match="synchronous"):
            SQLiteStore(tmp_path / "s.db", synchronous="OFF")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="MemoryStore"):
            SQLiteStore(":memory:")

    async def test_survives_close_and_reopen(self, tmp_path: Path) -> None:
        """Everything acknowledged is there after aclose() and a new open()."""
        path = tmp_path / "s.db"
        store = SQLiteStore(path)
        await store.open()
        await store.create(SessionRecord("s", "Game", args={"seats": 2}, metadata={"user": "ann"}))
        await store.append("s", 0, [ev(1), ev(2)])
        await store.append("s", 2, [ev(3)], status=Status.PAUSED)
        await store.save_snapshot(Snapshot("s", 2, 1, '{"n": 2}', taken_at=5.0))
        before = await store.get("s")
        await store.aclose()

        again = SQLiteStore(path)
        await again.open()
        try:
            assert await again.get("s") == before
            assert [(e.version, e.data) for e in await again.read("s")] == [
                (1, '{"n": 1}'),
                (2, '{"n": 2}'),
                (3, '{"n": 3}'),
            ]
            assert await again.load_snapshot("s") == Snapshot("s", 2, 1, '{"n": 2}', taken_at=5.0)
            assert await again.append("s", 3, [ev(4)]) == 4
        finally:
            await again.aclose()

    async def test_lifecycle_errors(self, tmp_path: Path) -> None:
        """Calls before open() or after aclose() raise StoreError; aclose() is idempotent."""
        store = SQLiteStore(tmp_path / "s.db")
        with pytest.raises(StoreError, match="not open"):
            await store.append("s", 0, [ev(1)])
        await store.open()
        with pytest.raises(StoreError, match="opened before"):
            await store.open()
        await store.create(SessionRecord("s", "Game"))
        await store.aclose()
        await store.aclose()
        with pytest.raises(StoreError, match="closed") as info:
            await store.append("s", 0, [ev(1)])
        assert info.value.session_id == "s"
        with pytest.raises(StoreError, match="closed"):
            await store.read("s")
        with pytest.raises(StoreError, match="closed"):
            await store.list()

    async def test_aclose_commits_what_is_queued(self, tmp_path: Path, gate: CommitGate) -> None:
        """Operations queued when aclose() is called are committed and answered before it returns."""
        store = SQLiteStore(tmp_path / "s.db")
        await store.open()
        await store.create(SessionRecord("s", "Game"))
        gate.close()
        async with anyio.create_task_group() as tg:
            outcomes = Outcomes(tg)
            await outcomes.queue("first", store.append, "s", 0, [ev(1)])
            await gate.wait_entered()
            for n in range(2, 6):
                await outcomes.queue(f"e{n}", store.append, "s", n - 1, [ev(n)])
            tg.start_soon(store.aclose)
            await anyio.wait_all_tasks_blocked()
            gate.open()
        assert outcomes.results == {"first": 1, "e2": 2, "e3": 3, "e4": 4, "e5": 5}
        again = SQLiteStore(tmp_path / "s.db")
        await again.open()
        try:
            assert [e.version for e in await again.read("s")] == [1, 2, 3, 4, 5]
        finally:
            await again.aclose()


def remove_database(path: Path) -> None:
    """Delete the store's file and its -wal and -shm, as an operator (or a cleanup job) might."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class TestFileGoneOrForeign:
    """The file under a store is the one it opened, and a store opens only a store (issue 17)."""

    @pytest.mark.parametrize("how", ["deleted", "replaced"])
    async def test_appends_fail_once_the_file_is_gone(self, tmp_path: Path, how: str) -> None:
        """Deleted or replaced under a running store: the next commit is refused, and all after it."""
        path = tmp_path / "s.db"
        store = SQLiteStore(path)
        await store.open()
        try:
            await store.create(SessionRecord("s", "Game"))
            assert await store.append("s", 0, [ev(1)]) == 1
            if how == "deleted":
                remove_database(path)
            else:
                other = SQLiteStore(tmp_path / "other.db")
                await other.open()
                await other.aclose()
                (tmp_path / "other.db").replace(path)
            with pytest.raises(StoreError, match=rf"s\.db' was {how}") as info:
                await store.append("s", 1, [ev(2)])
            assert "open the file again" in str(info.value)
            for attempt in (
                store.append("s", 1, [ev(2)]),
                store.create(SessionRecord("t", "Game")),
                store.set_status("s", Status.PAUSED),
                store.get("s"),
                store.read("s"),
            ):
                with pytest.raises(StoreError, match=how):
                    await attempt
            stats = store.statistics()
            assert (stats.appends, stats.failed_commits) == (1, 4)  # the writes; reads fail before
        finally:
            await store.aclose()
        again = SQLiteStore(path)
        await again.open()
        try:
            assert await again.get("s") is None  # nothing was acknowledged into the lost file
        finally:
            await again.aclose()

    async def test_checked_once_per_commit(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The check is two stats of the path per transaction, however many appends it holds."""
        path = tmp_path / "s.db"
        store = SQLiteStore(path)
        await store.open()
        try:
            for n in range(50):
                await store.create(SessionRecord(f"s{n}", "Game"))
            stats: list[str] = []
            real_stat = os.stat

            def counting_stat(target: Any, *args: Any, **kwargs: Any) -> Any:
                stats.append(str(target))
                return real_stat(target, *args, **kwargs)

            monkeypatch.setattr(os, "stat", counting_stat)  # the writer's stat is os.stat
            before = store.statistics().commits
            async with anyio.create_task_group() as tg:
                for n in range(50):
                    tg.start_soon(store.append, f"s{n}", 0, [ev(1), ev(2)])
            commits = store.statistics().commits - before
            assert stats.count(str(path)) == 2 * commits
            assert commits < 50
        finally:
            await store.aclose()

    async def test_empty_file_is_refused_and_left_alone(self, tmp_path: Path) -> None:
        """A 0-byte file is not taken for a new store: StoreError, the file stays empty."""
        path = tmp_path / "s.db"
        path.touch()
        store = SQLiteStore(path)
        with pytest.raises(StoreError, match=r"s\.db' is an empty file \(0 bytes\)") as info:
            await store.open()
        assert "delete the empty file" in str(info.value)
        assert path.read_bytes() == b""
        assert sorted(os.listdir(tmp_path)) == ["s.db"]

    @pytest.mark.parametrize(
        "content",
        [b"not a database at all\n" * 50, b"SQLite format 3\x00" + b"\xff" * 4080, bytes(range(256)) * 16],
        ids=["text", "bad header", "binary"],
    )
    async def test_garbage_file_is_refused_and_left_alone(self, tmp_path: Path, content: bytes) -> None:
        """A file that is not an SQLite database: StoreError, its bytes untouched."""
        path = tmp_path / "s.db"
        path.write_bytes(content)
        with pytest.raises(StoreError, match=r"s\.db'"):
            await SQLiteStore(path).open()
        assert path.read_bytes() == content

    async def test_missing_file_is_a_new_store(self, tmp_path: Path) -> None:
        """Where no file exists, open() makes a new store (and a deleted store's path is new again)."""
        path = tmp_path / "s.db"
        for _ in range(2):
            store = SQLiteStore(path)
            await store.open()
            try:
                assert list(await store.list()) == []
                await store.create(SessionRecord("s", "Game"))
            finally:
                await store.aclose()
            remove_database(path)


class TestGroupCommit:
    async def test_concurrent_appends_share_transactions(self, store: SQLiteStore) -> None:
        """500 concurrent appends to 500 sessions take far fewer than 500 transactions."""
        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(store.create, SessionRecord(f"s{i}", "Game"))
        before = store.statistics()
        versions: list[int] = []

        async def append(i: int) -> None:
            versions.append(await store.append(f"s{i}", 0, [ev(i)]))

        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(append, i)
        after = store.statistics()
        assert versions == [1] * 500
        assert after.appends - before.appends == 500
        assert after.events == 500
        assert after.commits - before.commits <= 25
        assert after.largest_batch >= 20
        assert sum(after.batch_sizes.values()) == after.commits
        assert after.mean_batch > 1
        assert (await store.stats()).events == 500

    async def test_conflicts_fail_only_their_own_append(self, store: SQLiteStore, gate: CommitGate) -> None:
        """In one batch, each append is checked against the log as the appends before it left it."""
        await store.create(SessionRecord("a", "Game"))
        await store.create(SessionRecord("b", "Game"))
        async with anyio.create_task_group() as tg:
            await hold_writer(tg, store, gate)
            outcomes = Outcomes(tg)
            await outcomes.queue("a1", store.append, "a", 0, [ev(1)])
            await outcomes.queue("a1 again", store.append, "a", 0, [ev(99)])
            await outcomes.queue("ghost", store.append, "ghost", 0, [ev(1)])
            await outcomes.queue("b1-2", store.append, "b", 0, [ev(1), ev(2)])
            await outcomes.queue("a2", store.append, "a", 1, [ev(2)], status=Status.COMPLETED)
            await outcomes.queue("a stale", store.append, "a", 1, [ev(98)])
            await outcomes.queue("c exists", store.create, SessionRecord("a", "Game"))
            await outcomes.queue("c new", store.create, SessionRecord("c", "Chat"))
            await outcomes.queue("c1", store.append, "c", 0, [ev(1)])
            assert store.statistics().queued == 9
            gate.open()
        r = outcomes.results
        assert (r["a1"], r["b1-2"], r["a2"], r["c new"], r["c1"]) == (1, 2, 2, None, 1)
        assert isinstance(r["a1 again"], VersionConflict)
        assert (r["a1 again"].expected, r["a1 again"].actual) == (0, 1)
        assert isinstance(r["a stale"], VersionConflict)
        assert (r["a stale"].expected, r["a stale"].actual) == (1, 2)
        assert isinstance(r["ghost"], SessionNotFound)
        assert isinstance(r["c exists"], SessionExists)
        stats = store.statistics()
        assert stats.largest_batch == 9
        assert stats.rejected == 4
        assert [e.data for e in await store.read("a")] == ['{"n": 1}', '{"n": 2}']
        record = await store.get("a")
        assert record is not None
        assert (record.version, record.status) == (2, Status.COMPLETED)

    @pytest.mark.parametrize("update_from", [True, False], ids=["update-from", "one-per-row"])
    async def test_heads_of_one_batch(
        self, tmp_path: Path, gate: CommitGate, monkeypatch: pytest.MonkeyPatch, update_from: bool
    ) -> None:
        """The heads a batch moves are written in chunks of 128, 64 ... 1 sessions (UPDATE FROM), or
        one statement per session where SQLite is older than 3.33; the index holds each log's length
        either way, with the status of the append that set one."""
        monkeypatch.setattr(_sqlite_writer, "_UPDATE_FROM", update_from)
        path = tmp_path / "s.db"
        store = SQLiteStore(path)
        await store.open()
        sessions = 301  # 128 + 128 + 32 + 8 + 4 + 1: every chunk size but 64, 16 and 2
        try:
            for i in range(sessions):
                await store.create(SessionRecord(f"s{i}", "Game"))
            async with anyio.create_task_group() as tg:
                await hold_writer(tg, store, gate)
                for i in range(sessions):
                    # 1 to 3 events each; two appends for every tenth session, the second ending it.
                    tg.start_soon(store.append, f"s{i}", 0, [ev(n) for n in range(i % 3 + 1)])
                await anyio.wait_all_tasks_blocked()
                for i in range(0, sessions, 10):
                    tg.start_soon(partial(store.append, f"s{i}", i % 3 + 1, [ev(7)], status=Status.COMPLETED))
                await anyio.wait_all_tasks_blocked()
                gate.open()
            assert store.statistics().largest_batch >= sessions + sessions // 10
        finally:
            await store.aclose()
        reopened = SQLiteStore(path)  # the heads as the file holds them, not as a writer cached them
        await reopened.open()
        try:
            for i in range(sessions):
                record = await reopened.get(f"s{i}")
                assert record is not None
                ended = i % 10 == 0
                assert record.version == i % 3 + 1 + ended, i
                assert record.status is (Status.COMPLETED if ended else Status.RUNNING), i
                assert len(await reopened.read(f"s{i}")) == record.version
        finally:
            await reopened.aclose()

    async def test_same_expected_version_exactly_one_wins(self, store: SQLiteStore) -> None:
        """Of 50 concurrent appends at the same expected version, one succeeds, the rest conflict."""
        await store.create(SessionRecord("s", "Game"))
        results: list[int | VersionConflict] = []

        async def append(n: int) -> None:
            try:
                results.append(await store.append("s", 0, [ev(n)]))
            except VersionConflict as exc:
                results.append(exc)

        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(append, n)
        assert results.count(1) == 1
        conflicts = [r for r in results if isinstance(r, VersionConflict)]
        assert len(conflicts) == 49
        assert {(c.expected, c.actual) for c in conflicts} == {(0, 1)}
        assert len(await store.read("s")) == 1

    async def test_bad_data_fails_only_its_append(self, store: SQLiteStore, gate: CommitGate) -> None:
        """Data SQLite cannot take fails its own append; the batch is rerun without it."""
        for sid in "abc":
            await store.create(SessionRecord(sid, "Game"))
        async with anyio.create_task_group() as tg:
            await hold_writer(tg, store, gate)
            outcomes = Outcomes(tg)
            await outcomes.queue("a", store.append, "a", 0, [ev(1)])
            await outcomes.queue("b", store.append, "b", 0, [ev(1), EventData("Bad", 1, "\ud800")])
            await outcomes.queue("c", store.append, "c", 0, [ev(1)])
            await outcomes.queue("a2", store.append, "a", 1, [ev(2)])
            gate.open()
        r = outcomes.results
        assert (r["a"], r["c"], r["a2"]) == (1, 1, 2)
        assert isinstance(r["b"], StoreError)
        assert isinstance(r["b"].__cause__, UnicodeEncodeError)
        assert store.statistics().isolated_retries == 1
        assert list(await store.read("b")) == []
        assert await store.append("b", 0, [ev(1)]) == 1


class TestHeadCache:
    """The writer keeps sessions' current versions in memory, bounded, and reads one only when missing."""

    async def test_appends_read_no_head_while_cached(self, store: SQLiteStore) -> None:
        await store.create(SessionRecord("s", "Game"))
        for n in range(100):
            assert await store.append("s", n, [ev(n)]) == n + 1
        assert store.statistics().head_reads == 0
        assert store.statistics().cached_heads == 1

    async def test_bounded_oldest_dropped_and_read_again(self, tmp_path: Path) -> None:
        store = SQLiteStore(tmp_path / "s.db", max_cached_heads=8)
        await store.open()
        try:
            for i in range(50):
                await store.create(SessionRecord(f"s{i}", "Game"))
                assert await store.append(f"s{i}", 0, [ev(0)]) == 1
                # Sequential calls: one operation per transaction, so at most one over the bound.
                assert store.statistics().cached_heads <= 9
            assert store.statistics().head_reads == 0  # the newest were cached when created
            # s0 was dropped long ago: its next append reads its version from the index, once.
            with pytest.raises(VersionConflict) as conflict:
                await store.append("s0", 0, [ev(1)])
            assert conflict.value.actual == 1
            assert store.statistics().head_reads == 1
            assert await store.append("s0", 1, [ev(1)]) == 2
            assert await store.append("s0", 2, [ev(2)]) == 3
            assert store.statistics().head_reads == 1
            assert [e.version for e in await store.read("s0")] == [1, 2, 3]
        finally:
            await store.aclose()

    async def test_delete_forgets_the_session(self, store: SQLiteStore) -> None:
        for sid in "abc":
            await store.create(SessionRecord(sid, "Game"))
        await store.append("b", 0, [ev(1)])
        await store.delete("b")
        assert store.statistics().cached_heads == 2
        with pytest.raises(SessionNotFound):
            await store.append("b", 1, [ev(2)])
        assert store.statistics().cached_heads == 2

    async def test_a_new_store_reads_each_head_once(self, tmp_path: Path) -> None:
        first = SQLiteStore(tmp_path / "s.db")
        await first.open()
        await first.create(SessionRecord("s", "Game"))
        await first.append("s", 0, [ev(0)])
        await first.aclose()
        again = SQLiteStore(tmp_path / "s.db")
        await again.open()
        try:
            assert await again.append("s", 1, [ev(1)]) == 2
            assert await again.append("s", 2, [ev(2)]) == 3
            assert (again.statistics().head_reads, again.statistics().cached_heads) == (1, 1)
        finally:
            await again.aclose()

    @pytest.mark.parametrize("bad", [0, -1, True, 2.5])
    def test_bad_bound(self, tmp_path: Path, bad: object) -> None:
        with pytest.raises(ValueError, match="max_cached_heads"):
            SQLiteStore(tmp_path / "s.db", max_cached_heads=bad)  # type: ignore[arg-type]


class TestFailures:
    async def test_failed_commit_reaches_every_caller(self, store: SQLiteStore, gate: CommitGate) -> None:
        """A commit that fails fails every operation of its batch with StoreError; none is written."""
        await store.create(SessionRecord("a", "Game"))
        await store.create(SessionRecord("b", "Game"))
        await store.append("a", 0, [ev(1)])
        gate.failures = [None, sqlite3.OperationalError("disk I/O error")]
        async with anyio.create_task_group() as tg:
            await hold_writer(tg, store, gate)
            outcomes = Outcomes(tg)
            await outcomes.queue("a2", store.append, "a", 1, [ev(2)])
            await outcomes.queue("a stale", store.append, "a", 1, [ev(3)])
            await outcomes.queue("b1", store.append, "b", 0, [ev(1)], status=Status.COMPLETED)
            await outcomes.queue("c", store.create, SessionRecord("c", "Game"))
            await outcomes.queue("snap", store.save_snapshot, Snapshot("a", 1, 1, "{}"))
            await outcomes.queue("del", store.delete, "b")
            gate.open()
        assert set(outcomes.results) == {"a2", "a stale", "b1", "c", "snap", "del"}
        for name, result in outcomes.results.items():
            assert type(result) is StoreError, name
            assert isinstance(result.__cause__, sqlite3.OperationalError)
            assert "disk I/O error" in str(result)
        assert outcomes.results["a2"].session_id == "a"
        assert store.statistics().failed_commits == 1
        # Nothing of the batch is there, and the store carries on.
        assert [e.version for e in await store.read("a")] == [1]
        assert await store.get("c") is None
        assert await store.load_snapshot("a") is None
        b = await store.get("b")
        assert b is not None
        assert b.status is Status.RUNNING
        assert await store.append("a", 1, [ev(2)]) == 2
        assert await store.append("b", 0, [ev(1)]) == 1

    async def test_disk_full_fails_the_batch(self, store: SQLiteStore) -> None:
        """A real SQLite failure (database full) reaches the caller as StoreError, and passes."""
        await store.create(SessionRecord("s", "Game"))
        conn = store._writer._conn  # type: ignore[union-attr]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StoreError, match="full") as info:
            await store.append("s", 0, [EventData("Big", 1, "x" * 200_000)])
        assert info.value.session_id == "s"
        conn.execute("PRAGMA max_page_count = 1073741823")
        assert await store.append("s", 0, [ev(1)]) == 1


class TestMigrations:
    def _file_at(self, path: Path, version: int) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        _sqlite_schema.migrate(conn, path, _sqlite_schema.MIGRATIONS[:version])
        conn.close()

    async def test_older_file_is_migrated(self, tmp_path: Path) -> None:
        """A file at schema version 1 is brought to the current version, its data kept."""
        path = tmp_path / "old.db"
        self._file_at(path, 1)
        with sqlite3.connect(path) as conn:
            conn.execute(
                "INSERT INTO sessions VALUES (7, 's', 'Game', 'running', '{}', ?, 1.0, 1.0)", ('{"u": 1}',)
            )
            conn.execute("INSERT INTO events VALUES (NULL, 7, 1, 'Counted', 1, '{}', 2.0)")
        conn.close()
        store = SQLiteStore(path)
        await store.open()
        try:
            record = await store.get("s")
            assert record is not None
            assert (record.version, record.metadata, record.updated_at) == (1, {"u": 1}, 2.0)
            assert await store.append("s", 1, [ev(2)]) == 2
        finally:
            await store.aclose()
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == _sqlite_schema.SCHEMA_VERSION
            indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            assert {"sessions_by_age", "sessions_by_status", "sessions_by_type"} <= indexes
        conn.close()

    async def test_newer_file_is_refused(self, tmp_path: Path) -> None:
        """A file from a newer schema is not touched, and the error says what to do."""
        path = tmp_path / "new.db"
        self._file_at(path, _sqlite_schema.SCHEMA_VERSION)
        with sqlite3.connect(path) as conn:
            conn.execute(f"PRAGMA user_version = {_sqlite_schema.SCHEMA_VERSION + 1}")
        conn.close()
        store = SQLiteStore(path)
        with pytest.raises(StoreError, match="newer sessionvisor") as info:
            await store.open()
        assert "upgrade sessionvisor" in str(info.value)
        await store.aclose()

    async def test_file_of_the_current_release_is_migrated(self, tmp_path: Path) -> None:
        """A file written by sessionvisor 0.1.0.dev0 (schema 2, tests/runtime/data) opens and works.

        Its sessions get their creation time as deadline (each is looked at once by the reaper), a
        message count of 0 and no reminders; their logs, snapshots and statuses are untouched.
        """
        path = tmp_path / "release.db"
        shutil.copyfile(Path(__file__).parent / "data" / "store-schema2.db", path)
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        conn.close()
        store = SQLiteStore(path)
        await store.open()
        try:
            running = await store.get("room-running")
            assert running is not None
            assert (running.status, running.version, running.args, running.metadata) == (
                Status.RUNNING,
                2,
                {"size": 3},
                {"user": "ann"},
            )
            assert (running.deadline, running.handled) == (running.created_at, 0)
            assert [e.type for e in await store.read("room-running")] == ["Joined", "Moved"]
            done = await store.load_snapshot("room-done")
            assert done is not None
            assert done.data == '{"players":["bob"]}'
            due = await store.due_sessions(math.inf, limit=10)
            assert {r.id: r.status for r in due} == {
                "room-running": Status.RUNNING,
                "room-done": Status.COMPLETED,
                "chat-paused": Status.PAUSED,
            }
            assert list(await store.due_reminders(math.inf, limit=10)) == []
            await store.set_reminder(Reminder("room-running", "turn", 5.0, "{}"))
            extras = AppendExtras(fired=(Reminder("room-running", "turn", 5.0, "{}"),), handled=1)
            assert await store.append("room-running", 2, [ev(3)], extras=extras) == 3
            assert list(await store.reminders("room-running")) == []
        finally:
            await store.aclose()

    async def test_release_dump_gets_heads_and_reasons(self, tmp_path: Path) -> None:
        """A store dumped from the current release (schema 2, as SQL) gets the head its log has.

        The acknowledged head of each session is its log's last version, updated_at takes the
        last event's time, no session has a stored reason yet, and appends carry on from there.
        """
        path = tmp_path / "release.db"
        script = (Path(__file__).parent / "data" / "sqlite_schema_v2.sql").read_text(encoding="utf-8")
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.executescript(script)
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
            last_event = conn.execute("SELECT max(recorded_at) FROM events WHERE session = 1").fetchone()[0]
        store = SQLiteStore(path)
        await store.open()
        try:
            heads = {r.id: (r.status, r.version, r.status_reason, r.error_type) for r in await store.list()}
            assert heads == {
                "game-1": (Status.RUNNING, 3, None, None),
                "chat/2": (Status.COMPLETED, 1, None, None),
                "empty": (Status.FAILED, 0, None, None),
            }
            game = await store.get("game-1")
            assert game is not None
            assert (game.args, game.metadata, game.updated_at) == (
                {"mode": "duel"},
                {"channel": "c1"},
                last_event,
            )
            view = await store.load_session("game-1")
            assert view is not None
            assert view.snapshot is not None
            assert (view.snapshot.version, view.snapshot.data) == (2, '{"players":["ann","bob"]}')
            assert [(e.version, e.type) for e in view.events] == [(3, "Scored")]
            assert view.log_version == 3
            with pytest.raises(VersionConflict):
                await store.append("game-1", 2, [ev(9)])
            assert await store.append("game-1", 3, [ev(4)]) == 4
            await store.set_status("empty", Status.FAILED, reason="why", error_type="RecoveryFailed")
            empty = await store.get("empty")
            assert empty is not None
            assert (empty.status_reason, empty.error_type) == ("why", "RecoveryFailed")
        finally:
            await store.aclose()
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == _sqlite_schema.SCHEMA_VERSION

    def test_due_queries_use_their_indexes(self, tmp_path: Path) -> None:
        """The next due reminders and sessions come from range scans of indexes, never table scans."""
        path = tmp_path / "s.db"
        self._file_at(path, _sqlite_schema.SCHEMA_VERSION)
        conn = sqlite3.connect(path)
        try:
            plans = {
                "reminders_by_due": "SELECT s.id, r.name FROM reminders AS r JOIN sessions AS s "
                "ON s.key = r.session WHERE r.due_at <= 1.0 ORDER BY r.due_at LIMIT 10",
                "sessions_by_deadline": "SELECT id FROM sessions WHERE deadline <= 1.0 "
                "ORDER BY deadline LIMIT 10",
            }
            for index, sql in plans.items():
                plan = " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
                assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
                assert "SCAN r" not in plan, plan
                assert "SCAN sessions" not in plan, plan
        finally:
            conn.close()

    @pytest.mark.parametrize("pragma", ["application_id = 7", "user_version = 0"])
    async def test_foreign_file_is_refused(self, tmp_path: Path, pragma: str) -> None:
        """A database of another application is not written into."""
        path = tmp_path / "other.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE things (x)")
            conn.execute(f"PRAGMA {pragma}")
        conn.close()
        with pytest.raises(StoreError, match=r"another application|something else"):
            await SQLiteStore(path).open()

    def test_failed_migration_changes_nothing(self, tmp_path: Path) -> None:
        """A migration that raises leaves the file at the version it had."""
        path = tmp_path / "s.db"
        self._file_at(path, 1)

        def broken(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE half_done (x)")
            raise RuntimeError("boom")

        conn = sqlite3.connect(path, isolation_level=None)
        with pytest.raises(RuntimeError, match="boom"):
            _sqlite_schema.migrate(conn, path, (_sqlite_schema.MIGRATIONS[0], broken))
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0
        conn.close()


METADATA = [
    {"user": "ann", "level": 3, "vip": True, "tags": ["a", "b"], "geo": {"x": 1, "y": 2}},
    {"user": "bob", "level": 3.0, "vip": False, "tags": ["b"], "note": None},
    {"user": "cy", "level": "3", "odd.key": "v", 'q"uote': 1},
    {},
]

FILTERS: list[dict[str, Any]] = [
    {"user": "ann"},
    {"level": 3},
    {"level": "3"},
    {"vip": True},
    {"vip": 1},
    {"tags": ["a", "b"]},
    {"geo": {"y": 2, "x": 1}},
    {"geo": '{"x":1,"y":2}'},
    {"note": None},
    {"odd.key": "v"},
    {'q"uote': 1},
    {"user": "bob", "level": 3},
    {"missing": 0},
]


class TestIndexQueries:
    @pytest.mark.parametrize("query", FILTERS, ids=repr)
    async def test_metadata_filter_matches_memory_store(
        self, store: SQLiteStore, query: dict[str, Any]
    ) -> None:
        """list(metadata=...) in SQL selects what MemoryStore's dict comparison selects."""
        memory = MemoryStore()
        for i, metadata in enumerate(METADATA):
            for s in (store, memory):
                await s.create(SessionRecord(f"s{i}", "Game", metadata=metadata))
        expected = [r.id for r in await memory.list(metadata=query)]
        assert [r.id for r in await store.list(metadata=query)] == expected

    async def test_list_pages_oldest_first(self, store: SQLiteStore) -> None:
        """Oldest first, then by id; limit and offset page through the filtered entries."""
        for sid in ["c", "a", "b", "d"]:
            await store.create(SessionRecord(sid, "Game", metadata={"k": 1}))
        ids = [r.id for r in await store.list()]
        assert sorted(ids) == ["a", "b", "c", "d"]
        created = [r.created_at for r in await store.list()]
        assert created == sorted(created)
        assert [r.id for r in await store.list(metadata={"k": 1}, limit=2, offset=1)] == ids[1:3]
        assert [r.id for r in await store.list(offset=3)] == ids[3:]
        assert list(await store.list(limit=0)) == []

    async def test_bad_json_is_refused(self, store: SQLiteStore) -> None:
        """Index values that are not JSON raise StoreError instead of being stored half-way."""
        with pytest.raises(StoreError, match="JSON"):
            await store.create(SessionRecord("s", "Game", args={"f": object()}))
        with pytest.raises(StoreError, match="JSON"):
            await store.list(metadata={"f": object()})
        assert await store.get("s") is None

    async def test_version_and_times_follow_the_log(self, store: SQLiteStore) -> None:
        """get().version is the log's length and updated_at moves with appends and status changes."""
        await store.create(SessionRecord("s", "Game"))
        created = await store.get("s")
        assert created is not None
        assert created.version == 0
        assert created.created_at == created.updated_at
        await store.append("s", 0, [ev(1), ev(2)])
        appended = await store.get("s")
        assert appended is not None
        assert appended.version == 2
        assert appended.updated_at >= created.updated_at
        await store.set_status("s", Status.PASSIVATED)
        with pytest.raises(SessionNotFound):
            await store.set_status("ghost", Status.PAUSED)
        record = await store.get("s")
        assert record is not None
        assert (record.version, record.status) == (2, Status.PASSIVATED)
        assert [r.version for r in await store.list()] == [2]

    async def test_stats_follow_deletes(self, store: SQLiteStore) -> None:
        """stats() counts in SQL, and deleted sessions leave no events or snapshots behind."""
        for i in range(3):
            await store.create(SessionRecord(f"s{i}", "Game" if i else "Chat"))
            await store.append(f"s{i}", 0, [ev(n) for n in range(i + 1)])
            await store.save_snapshot(Snapshot(f"s{i}", 1, 1, "{}"))
        await store.save_snapshot(Snapshot("ghost", 1, 1, "{}"))  # ignored: no such session
        stats = await store.stats()
        assert (stats.sessions, stats.events, stats.snapshots) == (3, 6, 3)
        await store.delete("s2")
        stats = await store.stats()
        assert (stats.sessions, stats.events, stats.snapshots) == (2, 3, 2)
        assert dict(stats.by_type) == {"Chat": 1, "Game": 1}
        assert dict(stats.by_status) == {"running": 2}


class TestReads:
    async def test_reads_do_not_wait_for_the_writer(self, store: SQLiteStore, gate: CommitGate) -> None:
        """While the writer is stuck in a commit, reads still answer (with the committed state)."""
        await store.create(SessionRecord("s", "Game"))
        await store.append("s", 0, [ev(1)])
        gate.close()
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.append, "s", 1, [ev(2)])
            await gate.wait_entered()
            assert [e.version for e in await store.read("s")] == [1]
            record = await store.get("s")
            assert record is not None
            assert record.version == 1
            assert len(await store.list()) == 1
            assert (await store.stats()).events == 1
            assert not gate.is_open
            gate.open()
        assert [e.version for e in await store.read("s")] == [1, 2]

    async def test_long_log_and_ranges(self, store: SQLiteStore) -> None:
        """A 3,000-event log reads back whole, in order, and by inclusive ranges."""
        await store.create(SessionRecord("s", "Game"))
        version = 0
        for _ in range(3):
            version = await store.append("s", version, [ev(n) for n in range(version + 1, version + 1001)])
        events = await store.read("s")
        assert [e.version for e in events] == list(range(1, 3001))
        assert events[41].data == '{"n": 42}'
        assert all(e.session_id == "s" and e.recorded_at > 0 for e in events)
        assert [e.version for e in await store.read("s", 999, 1001)] == [999, 1000, 1001]
        assert list(await store.read("s", 3001)) == []
        assert list(await store.read("nobody")) == []

    def test_events_built_without_init_equal_init_ones(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Reads fill StoredEvent's slots directly; the events are those __init__ would make."""
        rows = [(1, "Joined", 1, '{"p": "ann"}', 1.5), (2, "Left", 2, "{}", 2.5)]
        assert _rows._SETTERS is not None
        fast = _rows.events("s", rows)
        monkeypatch.setattr(_rows, "_SETTERS", None)
        slow = _rows.events("s", rows)
        assert fast == slow == [StoredEvent("s", *row) for row in rows]
        assert [hash(e) for e in fast] == [hash(e) for e in slow]
        assert repr(fast[0]) == repr(slow[0])
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            fast[0].version = 3  # type: ignore[misc]


class TestWaiting:
    async def test_store_io_takes_no_virtual_time(
        self, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, anyio_backend_name: str
    ) -> None:
        """Waiting on the writer or a reader does not let trio's autojump clock race ahead."""

        def slow_commit(conn: sqlite3.Connection) -> None:
            time.sleep(0.02)
            _real_commit(conn)

        monkeypatch.setattr(_sqlite_writer, "commit", slow_commit)
        fired: list[float] = []

        async def timer() -> None:
            await anyio.sleep(30)
            fired.append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            tg.start_soon(timer)
            start = anyio.current_time()
            with anyio.fail_after(5):
                await store.create(SessionRecord("s", "Game"))
                await store.append("s", 0, [ev(1)])
                await store.read("s")
            assert fired == []
            if anyio_backend_name == "trio":
                import trio

                assert anyio.current_time() == start
                # The clock jumps again once nothing waits on a thread.
                assert trio.lowlevel.current_clock().autojump_threshold == 0  # type: ignore[attr-defined]
                await anyio.sleep(31)
                assert fired == [start + 30]
            tg.cancel_scope.cancel()

    async def test_cancelled_caller_waits_for_its_append(self, store: SQLiteStore, gate: CommitGate) -> None:
        """A cancelled append still finishes (durably) before the cancellation reaches its caller."""
        await store.create(SessionRecord("s", "Game"))
        gate.close()
        finished: list[str] = []
        scope = anyio.CancelScope()

        async def append() -> None:
            with scope:
                try:
                    await store.append("s", 0, [ev(1)])
                except anyio.get_cancelled_exc_class():
                    finished.append("cancelled")
                    raise

        async with anyio.create_task_group() as tg:
            tg.start_soon(append)
            await gate.wait_entered()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert finished == []  # still waiting for the commit, cancelled or not
            gate.open()
        assert finished == ["cancelled"]
        assert [e.version for e in await store.read("s")] == [1]
