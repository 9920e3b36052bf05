"""A reaper policy added (or tightened) later reaches the sessions stored before it: their stored
deadlines are brought in line at start (``SessionSupervisor.reschedule_stored``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import MemoryStore, SQLiteStore, Status
from runtime.abc import EventStore
from runtime.testing import ManualClock
from supervisors import ReaperPolicy, RemovalReason, SessionSupervisor
from tests.apps.alarm import Alarm

pytestmark = pytest.mark.anyio

EPOCH = 1_000_000.0


def _supervisor(clock: ManualClock, store: EventStore, **policy: object) -> SessionSupervisor:
    return SessionSupervisor(
        store=store,
        clock=clock,
        wall_clock=lambda: EPOCH + clock.now(),
        session_types=[Alarm],
        reaper=ReaperPolicy(**policy),  # type: ignore[arg-type]
    )


@pytest.fixture
def clock() -> ManualClock:
    Alarm.clock = c = ManualClock()
    return c


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    Alarm.starts.clear()
    yield
    Alarm.clock = None
    Alarm.starts.clear()


async def _status(store: EventStore, session_id: str) -> Status | None:
    record = await store.get(session_id)
    return None if record is None else record.status


async def test_policy_added_later_reaches_sessions_stored_without_deadline(clock: ManualClock) -> None:
    """Sessions left running by a process without a policy are abandoned by the next one's."""
    store = MemoryStore(clock=lambda: EPOCH + clock.now())
    async with _supervisor(clock, store) as sessions:
        for sid in ("a", "b", "c"):
            await sessions.start(Alarm, sid)
        await (await sessions.get("c")).stop()
    assert [r.deadline for r in await store.list(status=Status.RUNNING)] == [None, None]
    await clock.advance(100)
    Alarm.starts.clear()
    async with _supervisor(clock, store, abandon_after=10) as sessions:
        await sessions.ready()
        await clock.advance(0)
        assert sessions.store_reaper.rescheduled == 2  # a and b; c has ended
        deadlines = {r.id: r.deadline for r in await store.list(status=Status.RUNNING)}
        assert deadlines == {"a": EPOCH + 110.0, "b": EPOCH + 110.0}  # idle counts from this start
        await clock.advance(9)
        assert await _status(store, "a") is Status.RUNNING
        await clock.advance(1.5)
        assert await _status(store, "a") is Status.ABANDONED
        assert await _status(store, "b") is Status.ABANDONED
        assert Alarm.starts == []  # never activated
        assert sessions.store_reaper.expired[RemovalReason.ABANDONED] == 2


async def test_tightened_policy_brings_deadlines_forward_and_leaves_earlier_ones(clock: ManualClock) -> None:
    """At start only missing deadlines are set; ``reschedule_stored()`` brings later ones forward."""
    store = MemoryStore(clock=lambda: EPOCH + clock.now())
    async with _supervisor(clock, store, abandon_after=3600) as sessions:
        await sessions.start(Alarm, "a")
    async with _supervisor(clock, store, abandon_after=60) as sessions:
        await clock.advance(0)
        (record,) = await store.list()
        assert record.deadline == EPOCH + 3600.0  # it has one: left as it is at start
        assert await sessions.reschedule_stored() == 1
        (record,) = await store.list()
        assert record.deadline == EPOCH + 60.0
    async with _supervisor(clock, store, abandon_after=600) as sessions:
        await clock.advance(0)
        (record,) = await store.list()
        assert record.deadline == EPOCH + 60.0  # earlier than this policy's: the pass moves it
        assert sessions.store_reaper.rescheduled == 0


async def test_retention_for_ended_sessions_on_request(clock: ManualClock) -> None:
    """Ended sessions are not read at every start; ``reschedule_stored(ended=True)`` reaches them."""
    store = MemoryStore(clock=lambda: EPOCH + clock.now())
    async with _supervisor(clock, store) as sessions:
        await sessions.start(Alarm, "done")
        await (await sessions.get("done")).stop()
    async with _supervisor(clock, store, retention=50) as sessions:
        assert not sessions.store_reaper.sets_live_deadlines  # nothing read at start
        await clock.advance(0)  # the first pass is over
        await sessions.store.set_deadline("done", None)  # as a store from before retention was set
        assert await sessions.reschedule_stored() == 0  # live sessions only
        assert await sessions.reschedule_stored(ended=True) == 1
        (record,) = await sessions.store.list()
        assert record.deadline is not None
        assert record.deadline == record.updated_at + 50.0


async def test_on_sqlite(clock: ManualClock, tmp_path: Path) -> None:
    """The same on SQLite: stored without a deadline, given the new policy's at start."""
    path = tmp_path / "r.db"
    async with _supervisor(clock, SQLiteStore(path)) as sessions:
        await sessions.start(Alarm, "a")
    async with _supervisor(clock, SQLiteStore(path), max_age=3600) as sessions:
        assert await sessions.reschedule_stored() in (0, 1)  # 0 if the start's pass was first
        (record,) = await sessions.store.list()
        assert record.deadline == pytest.approx(record.created_at + 3600)


async def test_no_live_deadline_no_pass(clock: ManualClock) -> None:
    store = MemoryStore(clock=lambda: EPOCH + clock.now())
    async with _supervisor(clock, store) as sessions:
        await sessions.start(Alarm, "a")
    async with _supervisor(clock, store, retention=10) as sessions:
        await clock.advance(0)
        assert sessions.store_reaper.rescheduled == 0
        (record,) = await store.list()
        assert record.deadline is None
