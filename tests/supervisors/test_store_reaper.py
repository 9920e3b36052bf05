"""The reaper over the whole store: stored deadlines, and sessions no process has loaded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime import MemoryStore, SessionRecord, SessionStopped, Status
from runtime.testing import ManualClock
from supervisors import ReaperPolicy, RemovalReason, SessionSupervisor
from supervisors._store_reaper import Due, next_deadline
from tests.apps.alarm import Alarm, Resumable

POLICY = ReaperPolicy(abandon_after=60, max_age=1000, paused_ttl=300, retention=86400)


@pytest.mark.parametrize(
    ("policy", "status", "expected"),
    [
        (POLICY, Status.RUNNING, Due(160.0, RemovalReason.ABANDONED)),
        (POLICY, Status.PASSIVATED, Due(160.0, RemovalReason.ABANDONED)),
        (ReaperPolicy(abandon_after=2000, max_age=1000), Status.RUNNING, Due(1010.0, RemovalReason.MAX_AGE)),
        (POLICY, Status.PAUSED, Due(350.0, RemovalReason.PAUSED_TOO_LONG)),
        (ReaperPolicy(max_age=100), Status.PAUSED, Due(110.0, RemovalReason.MAX_AGE)),
        (POLICY, Status.COMPLETED, Due(86450.0, RemovalReason.RETENTION)),
        (POLICY, Status.ABANDONED, Due(86450.0, RemovalReason.RETENTION)),
        (ReaperPolicy(abandon_after=60), Status.COMPLETED, None),
        (ReaperPolicy(retention=5), Status.RUNNING, None),
        (ReaperPolicy(), Status.RUNNING, None),
    ],
)
def test_next_deadline(policy: ReaperPolicy, status: Status, expected: Due | None) -> None:
    """The earliest deadline a policy sets for a status, from idle, creation and status times."""
    got = next_deadline(policy, status, idle_since=100.0, created_at=10.0, status_since=50.0)
    assert got == expected


# -- end to end, on an injected clock ------------------------------------------------------------------


def _supervisor(clock: ManualClock, store: MemoryStore, **policy: object) -> SessionSupervisor:
    return SessionSupervisor(
        store=store,
        clock=clock,
        wall_clock=lambda: 1_000_000.0 + clock.now(),
        session_types=[Alarm, Resumable],
        reaper=ReaperPolicy(**policy),  # type: ignore[arg-type]
    )


async def status(store: MemoryStore, session_id: str) -> Status | None:
    record = await store.get(session_id)
    return None if record is None else record.status


@pytest.fixture
def clock() -> ManualClock:
    Alarm.clock = c = ManualClock()
    return c


@pytest.fixture
def store(clock: ManualClock) -> MemoryStore:
    return MemoryStore(clock=lambda: 1_000_000.0 + clock.now())


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    Alarm.starts.clear()
    yield
    Alarm.clock = None
    Alarm.starts.clear()


@pytest.mark.anyio
class TestStoredSessions:
    async def test_left_running_is_abandoned_on_schedule_without_being_contacted(
        self, clock: ManualClock, store: MemoryStore
    ) -> None:
        """A session left running by a dead process is abandoned abandon_after after the restart,
        with its lifecycle event, never activated."""
        async with _supervisor(clock, store, abandon_after=10) as sessions:
            await sessions.start(Alarm, "left")
            await sessions.start(Alarm, "done")
            await (await sessions.get("done")).stop()
        # The process "dies": the store still says running.
        record = await store.get("left")
        assert record is not None
        assert record.status is Status.RUNNING
        await clock.advance(100)  # downtime does not count as inactivity
        Alarm.starts.clear()
        async with _supervisor(clock, store, abandon_after=10) as sessions:
            events = sessions.lifecycle()
            await sessions.ready()
            await clock.advance(9)
            assert (await store.get("left")).status is Status.RUNNING  # type: ignore[union-attr]
            await clock.advance(1.5)
            record = await store.get("left")
            assert record is not None
            assert record.status is Status.ABANDONED
            assert Alarm.starts == []  # never activated: no on_start ran
            seen = events._box.get_nowait()
            assert (seen.session_id, seen.status, seen.previous) == (
                "left",
                Status.ABANDONED,
                Status.PASSIVATED,
            )
            assert sessions.store_reaper.expired[RemovalReason.ABANDONED] == 1
            assert sessions.cached("left") is None

    async def test_max_age_and_retention_of_stored_sessions(
        self, clock: ManualClock, store: MemoryStore
    ) -> None:
        """max_age counts from creation across processes; retention deletes an ended stored session."""
        async with _supervisor(clock, store, max_age=60, retention=100) as sessions:
            await sessions.start(Alarm, "old")
            await sessions.start(Alarm, "ended")
            await (await sessions.get("ended")).stop()
        await clock.advance(50)
        async with _supervisor(clock, store, max_age=60, retention=100) as sessions:
            await clock.advance(5)  # the first pass: deadlines set from the records
            await clock.advance(6)
            assert (await store.get("old")).status is Status.TIMED_OUT  # type: ignore[union-attr]
            await clock.advance(40)
            assert await store.get("ended") is None
            assert await store.get("old") is not None

    async def test_pass_costs_what_is_due(self, clock: ManualClock, store: MemoryStore) -> None:
        """A reaper pass reads only the sessions whose stored deadline has come (O(due))."""
        for i in range(300):
            await store.create(SessionRecord(f"far{i}", "Alarm", deadline=1_000_000.0 + 10_000))
        for i in range(5):
            await store.create(SessionRecord(f"near{i}", "Alarm", deadline=1_000_000.0 + 1))
        async with _supervisor(clock, store, abandon_after=5) as sessions:
            await clock.advance(2)
            looked = sessions.store_reaper.looked_at
            assert looked == 5
            await clock.advance(10)
            assert [await status(store, f"near{i}") for i in range(5)] == [Status.ABANDONED] * 5
            assert sessions.store_reaper.looked_at == 10  # each near one looked at twice, no far one
            assert {await status(store, f"far{i}") for i in range(300)} == {Status.RUNNING}


@pytest.mark.anyio
class TestResume:
    async def test_running_sessions_are_resumed_at_start(
        self, clock: ManualClock, store: MemoryStore
    ) -> None:
        """resume_on_start sessions that were running come back with no message, resumed=True."""
        async with _supervisor(clock, store) as sessions:
            await sessions.start(Resumable, "r1")
            await sessions.start(Resumable, "r2")
            await sessions.start(Alarm, "plain")
            await (await sessions.get("r2")).stop()
        assert sorted(Alarm.starts) == [("plain", False), ("r1", False), ("r2", False)]
        Alarm.starts.clear()
        async with _supervisor(clock, store) as sessions:
            await sessions.ready()
            await clock.advance(0)
            assert Alarm.starts == [("r1", True)]
            assert sessions.resumed == 1
            assert (await sessions.get("r1")).status is Status.RUNNING
            assert sessions.active_count == 1

    async def test_resumption_is_paced(self, clock: ManualClock, store: MemoryStore) -> None:
        async with _supervisor(clock, store) as sessions:
            for i in range(10):
                await sessions.start(Resumable, f"r{i}")
        Alarm.starts.clear()
        async with _supervisor(clock, store, max_resumes_per_second=2) as sessions:
            await sessions.ready()
            await clock.advance(0)
            assert len(Alarm.starts) == 1
            await clock.advance(2)
            assert len(Alarm.starts) == 5
            await clock.advance(3)
            assert len(Alarm.starts) == 10
            assert all(resumed for _, resumed in Alarm.starts)


@pytest.mark.anyio
async def test_max_messages_survives_a_restart(clock: ManualClock, store: MemoryStore) -> None:
    """max_messages counts handled messages across processes: a restart does not reset it."""
    async with _supervisor(clock, store, max_messages=5) as sessions:
        a = await sessions.start(Alarm, "a")
        for _ in range(3):
            await a.call("state")
    record = await store.get("a")
    assert record is not None
    assert record.handled == 3
    async with _supervisor(clock, store, max_messages=5) as sessions:
        a = await sessions.get("a")
        await a.call("state")
        await a.call("state")
        assert (await store.get("a")).status is Status.TIMED_OUT  # type: ignore[union-attr]
        with pytest.raises(SessionStopped):
            await a.call("state")
