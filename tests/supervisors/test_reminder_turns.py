"""A reminder's turn keeps what it schedules in its own append: a periodic reminder costs one write.

The store side (``AppendExtras.scheduled``) is checked on MemoryStore, SQLite and PostgreSQL; the
runtime side on an injected clock, on both backends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from runtime import (
    AppendExtras,
    EventData,
    MemoryStore,
    Reminder,
    Session,
    SessionRecord,
    SQLiteStore,
    Status,
    VersionConflict,
    event,
)
from runtime.abc import EventStore
from runtime.testing import ManualClock
from supervisors import Backoff, RestartPolicy, SessionSupervisor

pytestmark = pytest.mark.anyio


# -- the store side --------------------------------------------------------------------------------


def _reminder(name: str, due_at: float, message: str = '{"json": 1}') -> Reminder:
    return Reminder("s", name, due_at, message)


class TestScheduledWithTheAppend:
    async def test_replaces_the_fired_one_of_the_same_name(self, store: EventStore) -> None:
        """The fired reminder goes and the re-scheduled one (even at the same due time) stays."""
        await store.create(SessionRecord("s", "T"))
        fired = _reminder("tick", 5.0)
        await store.set_reminder(fired)
        again = _reminder("tick", 5.0, '{"json": 2}')  # same due time: must not be removed as fired
        extras = AppendExtras(fired=(fired,), scheduled=(again,))
        assert await store.append("s", 0, [EventData("E", 1, "{}")], extras=extras) == 1
        assert list(await store.reminders("s")) == [again]
        assert list(await store.due_reminders(10.0, limit=10)) == [again]

    async def test_with_no_events_and_other_names(self, store: EventStore) -> None:
        await store.create(SessionRecord("s", "T"))
        fired = _reminder("tick", 5.0)
        other = _reminder("other", 1.0)
        await store.set_reminder(fired)
        await store.set_reminder(other)
        later = _reminder("later", 9.0)
        moved = _reminder("other", 7.0)
        extras = AppendExtras(fired=(fired,), scheduled=(later, moved))
        assert await store.append("s", 0, [], extras=extras) == 0
        assert list(await store.reminders("s")) == [moved, later]

    async def test_not_kept_when_the_append_is_refused(self, store: EventStore) -> None:
        await store.create(SessionRecord("s", "T"))
        fired = _reminder("tick", 5.0)
        await store.set_reminder(fired)
        extras = AppendExtras(fired=(fired,), scheduled=(_reminder("tick", 6.0),))
        with pytest.raises(VersionConflict):
            await store.append("s", 3, [EventData("E", 1, "{}")], extras=extras)
        assert list(await store.reminders("s")) == [fired]


# -- the runtime side ------------------------------------------------------------------------------


@event(name="test.turns.Ticked")
class Ticked:
    n: int


class Periodic(Session[int]):
    """Re-schedules ``tick`` every ``period`` while ``ticks`` lasts; records a ``Ticked`` unless
    ``quiet``; crashes once after scheduling when the tick number is in ``crash_after_schedule``."""

    type_name = "test.turns.Periodic"
    period: ClassVar[float] = 10.0
    quiet: ClassVar[bool] = False
    ticks: ClassVar[list[tuple[str, float]]] = []
    crash_after_schedule: ClassVar[set[int]] = set()
    clock: ClassVar[ManualClock | None] = None

    def initial_state(self, args: Mapping[str, Any]) -> int:
        return 0

    def apply(self, state: int, event: object) -> int:
        assert isinstance(event, Ticked)
        return event.n

    async def handle_call(self, message: object) -> object:
        if message == "go":
            await self.schedule("tick", self.period, 1)
            return None
        if message == "state":
            return self.state
        raise ValueError(message)

    async def handle_info(self, message: object) -> None:
        assert isinstance(message, int)
        assert Periodic.clock is not None
        Periodic.ticks.append((self.id, Periodic.clock.now()))
        await self.schedule("tick", self.period, message + 1)
        if message in Periodic.crash_after_schedule:
            Periodic.crash_after_schedule.discard(message)
            raise RuntimeError(f"crash after scheduling tick {message + 1}")
        if not Periodic.quiet:
            await self.record(Ticked(message))


class CountingStore:
    """A MemoryStore that counts the writes a reminder turn makes."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.set_reminders = 0
        self.appends: list[AppendExtras | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def set_reminder(self, reminder: Reminder) -> None:
        self.set_reminders += 1
        await self.inner.set_reminder(reminder)

    async def append(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[EventData],
        *,
        status: Status | None = None,
        extras: AppendExtras | None = None,
    ) -> int:
        self.appends.append(extras)
        return await self.inner.append(session_id, expected_version, events, status=status, extras=extras)


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    Periodic.ticks, Periodic.quiet, Periodic.crash_after_schedule = [], False, set()
    yield
    Periodic.clock = None


def _supervisor(clock: ManualClock, store: Any) -> SessionSupervisor:
    Periodic.clock = clock
    return SessionSupervisor(
        store=store,
        clock=clock,
        wall_clock=lambda: 1_000_000.0 + clock.now(),
        session_types=[Periodic],
        restarts=RestartPolicy(backoff=Backoff(initial=0)),
    )


class TestPeriodic:
    async def test_recording_turn_keeps_the_next_one_in_its_append(self) -> None:
        """Each fire costs exactly one write, the append of its events, which also replaces the
        fired reminder by the next one; the next one fires on time."""
        clock, store = ManualClock(), CountingStore()
        async with _supervisor(clock, store) as sessions:
            p = await sessions.start(Periodic, "p")
            await p.call("go")
            assert store.set_reminders == 1  # the first one, outside a reminder's turn
            store.appends.clear()
            for _ in range(3):
                await clock.advance(10)
            assert Periodic.ticks == [("p", 10.0), ("p", 20.0), ("p", 30.0)]
            assert store.set_reminders == 1
            assert [(len(e.fired), [r.name for r in e.scheduled]) for e in store.appends if e] == [
                (1, ["tick"])
            ] * 3
            assert len(store.appends) == 3
            assert await p.call("state") == 3
            (kept,) = await store.reminders("p")
            assert kept.due_at == 1_000_040.0
            assert await p.call("state") == 3

    async def test_quiet_turn_writes_the_next_one_alone(self) -> None:
        """A turn that records nothing: one upsert that replaces the fired reminder, no append."""
        clock, store = ManualClock(), CountingStore()
        Periodic.quiet = True
        async with _supervisor(clock, store) as sessions:
            p = await sessions.start(Periodic, "p")
            await p.call("go")
            store.appends.clear()
            for _ in range(3):
                await clock.advance(10)
            assert [t for _, t in Periodic.ticks] == [10.0, 20.0, 30.0]
            assert store.set_reminders == 4
            assert store.appends == []
            (kept,) = await store.reminders("p")
            assert (kept.due_at, kept.message) == (1_000_040.0, '{"json":4}')

    async def test_a_crash_after_scheduling_keeps_the_fired_one(self) -> None:
        """The turn crashed after ``schedule``: the new reminder was never kept, the fired one
        stays and fires again; the retried turn schedules the next one, once."""
        clock, store = ManualClock(), CountingStore()
        Periodic.crash_after_schedule = {1}
        async with _supervisor(clock, store) as sessions:
            p = await sessions.start(Periodic, "p")
            await p.call("go")
            await clock.advance(10)
            await clock.advance(0)
            # Fired twice at 10 (the crash, then the retry), which recorded once.
            assert [t for _, t in Periodic.ticks] == [10.0, 10.0]
            assert await p.call("state") == 1
            (kept,) = await store.reminders("p")
            assert (kept.due_at, kept.message) == (1_000_020.0, '{"json":2}')
            await clock.advance(10)
            assert [t for _, t in Periodic.ticks] == [10.0, 10.0, 20.0]
            assert await p.call("state") == 2

    async def test_crash_before_the_append_leaves_the_store_as_it_was(self) -> None:
        """Between the crash and the retry the store holds the fired reminder, not the new one."""
        clock, store = ManualClock(), CountingStore()
        Periodic.crash_after_schedule = {1}
        Periodic.period = 10.0
        seen: list[list[tuple[str, float]]] = []

        class Watch(Periodic):
            type_name = "test.turns.Watch"

            async def handle_info(self, message: object) -> None:
                seen.append([(r.name, r.due_at) for r in await store.reminders(self.id)])
                await super().handle_info(message)

        async with SessionSupervisor(
            store=store,
            clock=clock,
            wall_clock=lambda: 1_000_000.0 + clock.now(),
            session_types=[Watch],
            restarts=RestartPolicy(backoff=Backoff(initial=0)),
        ) as sessions:
            Periodic.clock = clock
            w = await sessions.start(Watch, "w")
            await w.call("go")
            await clock.advance(10)
            await clock.advance(0)
            # Both deliveries saw the fired reminder (due at 10) in the store.
            assert seen == [[("tick", 1_000_010.0)], [("tick", 1_000_010.0)]]
            assert [(r.name, r.due_at) for r in await store.reminders("w")] == [("tick", 1_000_020.0)]


async def test_periodic_on_sqlite_survives_a_restart(tmp_path: Path) -> None:
    """On a real store: the reminder kept with a turn's append is the one the next process fires
    (SQLite's writer is a real thread: waited for in real time)."""
    store_path = tmp_path / "p.db"
    clock = ManualClock()
    async with _supervisor(clock, SQLiteStore(store_path)) as sessions:
        p = await sessions.start(Periodic, "p")
        await p.call("go")
        await clock.advance(10)
        deadline = time.monotonic() + 30
        while await p.call("state") != 1 and time.monotonic() < deadline:
            await anyio.to_thread.run_sync(time.sleep, 0.01)
        assert await p.call("state") == 1
    async with _supervisor(clock, SQLiteStore(store_path)) as sessions:
        await sessions.ready()
        kept = list(await sessions.store.reminders("p"))
        assert [(r.name, r.due_at) for r in kept] == [("tick", 1_000_020.0)]
