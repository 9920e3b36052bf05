"""The EventStore protocol, checked the same way against every store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from runtime import (
    EventData,
    MemoryStore,
    SessionExists,
    SessionNotFound,
    SessionRecord,
    Snapshot,
    Status,
    VersionConflict,
)
from runtime._stores.sqlite import SQLiteStore
from runtime.abc import EventStore

pytestmark = pytest.mark.anyio

StoreFactory = Callable[[Path], EventStore]

STORES: dict[str, StoreFactory] = {
    "memory": lambda _path: MemoryStore(),
    "sqlite": lambda path: SQLiteStore(path / "s.db"),
}


@pytest.fixture(params=sorted(STORES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    factory = STORES[request.param]
    s = factory(tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


def ev(n: int) -> EventData:
    return EventData("Counted", 1, f'{{"n": {n}}}')


class TestIndex:
    async def test_create_then_get(self, store: EventStore) -> None:
        """create() adds an index entry that get() returns with version 0 and times set."""
        await store.create(SessionRecord("s1", "Game", args={"a": 1}, metadata={"user": "ann"}))
        got = await store.get("s1")
        assert got is not None
        assert (got.id, got.type, got.status, got.version) == ("s1", "Game", Status.RUNNING, 0)
        assert got.args == {"a": 1}
        assert got.metadata == {"user": "ann"}
        assert got.created_at > 0
        assert await store.get("nope") is None

    async def test_duplicate_create(self, store: EventStore) -> None:
        """A second create() of the same id raises SessionExists and changes nothing."""
        await store.create(SessionRecord("s1", "Game", metadata={"v": 1}))
        with pytest.raises(SessionExists):
            await store.create(SessionRecord("s1", "Other", metadata={"v": 2}))
        got = await store.get("s1")
        assert got is not None
        assert got.type == "Game"

    async def test_list_filters_and_pages(self, store: EventStore) -> None:
        """list() filters by status, type and metadata, oldest first, with limit/offset."""
        for i in range(6):
            await store.create(SessionRecord(f"s{i}", "Game" if i % 2 else "Chat", metadata={"ch": i % 3}))
        await store.set_status("s1", Status.PAUSED)
        assert [r.id for r in await store.list()] == [f"s{i}" for i in range(6)]
        assert [r.id for r in await store.list(type="Game")] == ["s1", "s3", "s5"]
        assert [r.id for r in await store.list(status=Status.PAUSED)] == ["s1"]
        assert [r.id for r in await store.list(metadata={"ch": 0})] == ["s0", "s3"]
        assert [r.id for r in await store.list(type="Game", metadata={"ch": 2})] == ["s5"]
        assert [r.id for r in await store.list(limit=2, offset=3)] == ["s3", "s4"]

    async def test_stats(self, store: EventStore) -> None:
        """stats() counts sessions by status and type, events and snapshots."""
        await store.create(SessionRecord("a", "Game"))
        await store.create(SessionRecord("b", "Chat"))
        await store.append("a", 0, [ev(1), ev(2)], status=Status.COMPLETED)
        await store.save_snapshot(Snapshot("a", 2, 1, "{}"))
        stats = await store.stats()
        assert stats.sessions == 2
        assert stats.events == 2
        assert stats.snapshots == 1
        assert dict(stats.by_status) == {"completed": 1, "running": 1}
        assert dict(stats.by_type) == {"Game": 1, "Chat": 1}


class TestLog:
    async def test_append_and_read(self, store: EventStore) -> None:
        """Appends get consecutive versions; read() slices them inclusively."""
        await store.create(SessionRecord("s", "Game"))
        assert await store.append("s", 0, [ev(1), ev(2)]) == 2
        assert await store.append("s", 2, [ev(3)]) == 3
        events = await store.read("s")
        assert [(e.version, e.data) for e in events] == [
            (1, '{"n": 1}'),
            (2, '{"n": 2}'),
            (3, '{"n": 3}'),
        ]
        assert all(e.session_id == "s" and e.type == "Counted" for e in events)
        assert [e.version for e in await store.read("s", 2)] == [2, 3]
        assert [e.version for e in await store.read("s", 1, 2)] == [1, 2]
        assert list(await store.read("s", 4)) == []
        record = await store.get("s")
        assert record is not None
        assert record.version == 3

    async def test_stale_writer_conflicts(self, store: EventStore) -> None:
        """An append with a stale expected version raises VersionConflict and writes nothing."""
        await store.create(SessionRecord("s", "Game"))
        await store.append("s", 0, [ev(1)])
        with pytest.raises(VersionConflict) as info:
            await store.append("s", 0, [ev(9)])
        assert (info.value.expected, info.value.actual) == (0, 1)
        assert [e.data for e in await store.read("s")] == ['{"n": 1}']

    async def test_append_to_unknown_session(self, store: EventStore) -> None:
        """Appending to a session that was never created raises SessionNotFound."""
        with pytest.raises(SessionNotFound):
            await store.append("ghost", 0, [ev(1)])

    async def test_status_travels_with_append(self, store: EventStore) -> None:
        """append(status=...) updates the index together with the events."""
        await store.create(SessionRecord("s", "Game"))
        await store.append("s", 0, [ev(1)], status=Status.COMPLETED)
        record = await store.get("s")
        assert record is not None
        assert record.status is Status.COMPLETED

    async def test_snapshots(self, store: EventStore) -> None:
        """The latest saved snapshot is the one loaded."""
        await store.create(SessionRecord("s", "Game"))
        assert await store.load_snapshot("s") is None
        await store.save_snapshot(Snapshot("s", 2, 1, '{"a": 1}'))
        await store.save_snapshot(Snapshot("s", 4, 1, '{"a": 2}'))
        snap = await store.load_snapshot("s")
        assert snap is not None
        assert (snap.version, snap.state_version, snap.data) == (4, 1, '{"a": 2}')

    async def test_delete(self, store: EventStore) -> None:
        """delete() removes the entry, the log and the snapshots; unknown ids are ignored."""
        await store.create(SessionRecord("s", "Game"))
        await store.append("s", 0, [ev(1)])
        await store.save_snapshot(Snapshot("s", 1, 1, "{}"))
        await store.delete("s")
        await store.delete("never")
        assert await store.get("s") is None
        assert list(await store.read("s")) == []
        assert await store.load_snapshot("s") is None
        await store.create(SessionRecord("s", "Game"))
        assert await store.append("s", 0, [ev(5)]) == 1
