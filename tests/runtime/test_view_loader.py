"""A recovery is one store read (entry, snapshot, log and reminders), shared by the recoveries that run
at once: ``load_sessions`` on every store, and the host's ``ViewLoader`` that uses it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio.lowlevel
import pytest

from runtime import EventData, MemoryStore, Reminder, Session, SessionRecord, Snapshot, StoreError, event
from runtime.abc import EventStore
from runtime.testing import ManualClock
from supervisors import Backoff, RestartPolicy, SessionSupervisor
from tests.runtime.test_store_contract import ev

pytestmark = pytest.mark.anyio


class TestLoadSessions:
    async def test_reminders_come_with_the_view(self, store: EventStore) -> None:
        await store.create(SessionRecord("s", "T"))
        later, sooner = Reminder("s", "b", 20.0, '{"json": 2}'), Reminder("s", "a", 10.0, '{"json": 1}')
        await store.set_reminder(later)
        await store.set_reminder(sooner)
        view = await store.load_session("s")
        assert view is not None
        assert list(view.reminders or ()) == [sooner, later]

    async def test_same_as_one_by_one(self, store: EventStore) -> None:
        """Each view equals ``load_session``'s; an unknown id gives ``None`` in its place."""
        for sid in ("a", "b", "c"):
            await store.create(SessionRecord(sid, "T"))
        await store.append("a", 0, [ev(1), ev(2), ev(3)])
        await store.save_snapshot(Snapshot("a", 2, 1, '{"s": 2}', 5.0))
        await store.append("b", 0, [ev(1)])
        await store.set_reminder(Reminder("c", "r", 3.0, '{"json": 0}'))
        load_sessions = store.load_sessions  # type: ignore[attr-defined]
        for after_snapshot in (True, False):
            views = await load_sessions(["a", "ghost", "b", "c"], after_snapshot=after_snapshot)
            alone = [
                await store.load_session(sid, after_snapshot=after_snapshot)
                for sid in ("a", "ghost", "b", "c")
            ]
            assert views == alone
            assert views[1] is None
        assert await load_sessions([]) == []


@event(name="test.views.Added")
class Added:
    n: int


class Counter(Session[int]):
    type_name = "test.views.Counter"
    snapshot_every = None

    def initial_state(self, args: Mapping[str, Any]) -> int:
        return int(args.get("start", 0))

    def apply(self, state: int, event: object) -> int:
        assert isinstance(event, Added)
        return state + event.n

    async def handle_call(self, message: object) -> object:
        if isinstance(message, int):
            await self.record(Added(message))
        return self.state


class CountingStore:
    """A MemoryStore that counts its reads of whole sessions, and can fail them.

    Each read yields once, as a store's trip to its worker thread does: recoveries that come while a
    read is in flight wait for the next one (MemoryStore's own reads never yield, so each recovery
    reads at once itself).
    """

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.batches: list[int] = []
        self.single = 0
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def load_sessions(self, session_ids: Sequence[str], *, after_snapshot: bool = True) -> list[Any]:
        self.batches.append(len(session_ids))
        await anyio.lowlevel.checkpoint()
        if self.fail:
            raise StoreError(None, "load sessions", "the disk is on fire")
        return await self.inner.load_sessions(session_ids, after_snapshot=after_snapshot)

    async def load_session(self, session_id: str, **kw: Any) -> Any:
        self.single += 1  # only a recovery that was not batched
        await anyio.lowlevel.checkpoint()
        if self.fail:
            raise StoreError(session_id, "load the session", "the disk is on fire")
        return await self.inner.load_session(session_id, **kw)


class NoBatchStore(CountingStore):
    """A store that has only ``load_session`` (a custom store written before ``load_sessions``)."""

    def __getattribute__(self, name: str) -> Any:
        if name == "load_sessions":
            raise AttributeError(name)
        return super().__getattribute__(name)

    def __getattr__(self, name: str) -> Any:
        if name == "load_sessions":
            raise AttributeError(name)
        return super().__getattr__(name)


async def _stored(store: Any, n: int) -> list[str]:
    ids = [f"c{i}" for i in range(n)]
    for i, sid in enumerate(ids):
        await store.create(SessionRecord(sid, Counter.type_name, args={"start": i}))
        await store.append(sid, 0, [EventData("test.views.Added", 1, '{"n": 100}')])
    return ids


def _supervisor(store: Any) -> SessionSupervisor:
    return SessionSupervisor(
        store=store,
        clock=ManualClock(),
        session_types=[Counter],
        restarts=RestartPolicy(backoff=Backoff(initial=0), max_restarts=1),
    )


async def _call_all(sessions: SessionSupervisor, ids: list[str]) -> list[object]:
    import anyio

    results: dict[str, object] = {}

    async def one(sid: str) -> None:
        try:
            results[sid] = await (await sessions.get(sid)).call(0)
        except Exception as exc:
            results[sid] = exc

    async with anyio.create_task_group() as tg:
        for sid in ids:
            tg.start_soon(one, sid)
    return [results[sid] for sid in ids]


class TestViewLoader:
    async def test_recoveries_at_once_share_reads(self) -> None:
        store = CountingStore()
        await store.open()
        ids = await _stored(store, 40)
        async with _supervisor(store) as sessions:
            assert await _call_all(sessions, ids) == [i + 100 for i in range(40)]
            assert sum(store.batches) + store.single == 40
            assert len(store.batches) + store.single < 40  # several recoveries in one read
            assert store.batches  # and a recovery alone reads with load_session

    async def test_a_recovery_alone_reads_with_load_session(self) -> None:
        store = CountingStore()
        await store.open()
        ids = await _stored(store, 1)
        async with _supervisor(store) as sessions:
            assert await _call_all(sessions, ids) == [100]
            assert (store.batches, store.single) == ([], 1)

    async def test_store_without_load_sessions(self) -> None:
        store = NoBatchStore()
        await store.open()
        ids = await _stored(store, 5)
        async with _supervisor(store) as sessions:
            assert await _call_all(sessions, ids) == [i + 100 for i in range(5)]
            assert store.single == 5

    async def test_a_failed_read_reaches_each_recovery(self) -> None:
        """A read that fails (``load_sessions`` or, alone, ``load_session``) fails every recovery in it."""
        store = CountingStore()
        await store.open()
        ids = await _stored(store, 4)
        store.fail = True
        async with _supervisor(store) as sessions:
            failed = await _call_all(sessions, ids)
            assert all(isinstance(r, Exception) for r in failed), failed
            for sid in ids:
                record = await store.get(sid)
                assert record is not None
                assert "the disk is on fire" in (record.status_reason or ""), record
