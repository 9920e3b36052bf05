"""How often the reminder scheduler reads the store's due reminders: by the horizon, never once per fire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from runtime import MemoryStore, Reminder, SessionRecord
from runtime._reminders import Delivery, ReminderScheduler
from runtime.testing import ManualClock

pytestmark = pytest.mark.anyio

EPOCH = 1_000_000.0


class CountingStore:
    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.due_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def due_reminders(self, until: float, *, limit: int) -> Any:
        self.due_reads += 1
        return await self.inner.due_reminders(until, limit=limit)


class Harness:
    """A scheduler on a ManualClock; ``deliver`` notes each fire and does what ``then`` says."""

    def __init__(self, batch: int = 1000) -> None:
        self.clock = ManualClock()
        self.store = CountingStore()
        self.fired: list[tuple[str, float]] = []
        self.then = "remove"
        self.period = 1.0
        self.scheduler = ReminderScheduler(
            self.store,
            self.clock,
            self.wall,
            self.deliver,
            batch=batch,
        )

    def wall(self) -> float:
        return EPOCH + self.clock.now()

    async def deliver(self, reminder: Reminder) -> Delivery:
        self.fired.append((reminder.session_id, self.clock.now()))
        if self.then == "hold":
            return Delivery.QUEUED  # its session has not handled it yet
        await self.store.remove_reminder(reminder.session_id, reminder.name)
        self.scheduler.settled(reminder)
        if self.then == "again":  # periodic: the handler schedules the next one
            nxt = Reminder(
                reminder.session_id, reminder.name, reminder.due_at + self.period, reminder.message
            )
            await self.store.set_reminder(nxt)
            self.scheduler.add(nxt)
        return Delivery.QUEUED


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    await h.store.open()
    async with anyio.create_task_group() as tg:
        await tg.start(h.scheduler.run)
        await h.clock.advance(0)
        yield h
        tg.cancel_scope.cancel()


async def test_idle_reads_once_per_half_horizon(harness: Harness) -> None:
    for _ in range(10):
        await harness.clock.advance(10)
    # 100 s with a 30 s horizon: at 0, 15, 30, ... 90.
    assert harness.store.due_reads == 7


async def test_a_periodic_reminder_costs_no_read_per_fire(harness: Harness) -> None:
    """Each fire empties the heap and the next one joins it directly: reads stay by the horizon."""
    await harness.store.create(SessionRecord("p", "T"))
    first = Reminder("p", "tick", EPOCH + 1.0, "{}")
    await harness.store.set_reminder(first)
    harness.scheduler.add(first)
    harness.then = "again"
    for _ in range(60):
        await harness.clock.advance(1)
    assert [t for _, t in harness.fired] == [float(n) for n in range(1, 61)]
    assert harness.store.due_reads <= 5  # 0, 15, 30, 45, 60 (it was one per fire)


async def test_more_due_than_a_batch_all_fire_at_once() -> None:
    h = Harness(batch=5)
    await h.store.open()
    for i in range(12):
        await h.store.create(SessionRecord(f"s{i:02d}", "T"))
        await h.store.set_reminder(Reminder(f"s{i:02d}", "r", EPOCH - 10 + i / 100, "{}"))
    async with anyio.create_task_group() as tg:
        await tg.start(h.scheduler.run)
        await h.clock.advance(0)
        assert [sid for sid, _ in h.fired] == [f"s{i:02d}" for i in range(12)]
        assert {t for _, t in h.fired} == {0.0}
        assert h.store.due_reads == 3  # 5 + 5 + 2: the third finds fewer than a batch
        tg.cancel_scope.cancel()


async def test_in_flight_backlog_is_not_read_in_a_loop() -> None:
    """Due reminders whose sessions are busy stay in the store: a full batch of them read again
    brings nothing new, so the next read waits (it read them again and again before)."""
    h = Harness(batch=5)
    h.then = "hold"
    await h.store.open()
    for i in range(8):
        await h.store.create(SessionRecord(f"s{i}", "T"))
        await h.store.set_reminder(Reminder(f"s{i}", "r", EPOCH - 1, "{}"))
    async with anyio.create_task_group() as tg:
        await tg.start(h.scheduler.run)
        await h.clock.advance(0)
        assert len(h.fired) == 5
        reads = h.store.due_reads
        await h.clock.advance(1)
        assert h.store.due_reads - reads <= 11  # at most one read per 0.1 s while nothing moves
        assert len(h.fired) == 5  # each handed over once
        tg.cancel_scope.cancel()
