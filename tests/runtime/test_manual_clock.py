"""``runtime.testing.ManualClock``: time moves only when told, sleepers wake in deadline order at
their own deadline, and ``advance`` returns once the woken tasks are blocked again."""

from __future__ import annotations

import math

import anyio
import pytest

from runtime.testing import ManualClock

pytestmark = pytest.mark.anyio


def test_starts_where_told_and_stands_still() -> None:
    clock = ManualClock(start=100.0)
    assert clock.now() == clock.now() == 100.0
    clock.jump(2.5)
    assert clock.now() == 102.5


@pytest.mark.parametrize("seconds", [-0.001, -5.0, math.nan])
async def test_time_only_moves_forward(seconds: float) -> None:
    clock = ManualClock(start=1.0)
    with pytest.raises(ValueError, match="time only moves forward"):
        await clock.advance(seconds)
    with pytest.raises(ValueError, match="time only moves forward"):
        clock.jump(seconds)
    assert clock.now() == 1.0


async def test_sleepers_wake_in_deadline_order_each_at_its_deadline() -> None:
    clock = ManualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke.append((name, clock.now()))

    async with anyio.create_task_group() as tg:
        for name, deadline in (("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0)):
            tg.start_soon(sleeper, name, deadline)
        await anyio.wait_all_tasks_blocked()
        await clock.advance(0.5)
        assert woke == []
        assert repr(clock) == "ManualClock(now=0.5, sleepers=4)"
        await clock.advance(2.0)  # to 2.5: a and a2 (in the order they slept, which trio may shuffle), then b
        assert sorted(woke[:2]) == [("a", 1.0), ("a2", 1.0)]
        assert woke[2:] == [("b", 2.0)]
        assert clock.now() == 2.5
        await clock.advance(10.0)
    assert woke[-1] == ("c", 3.0)
    assert clock.now() == 12.5


async def test_a_deadline_already_passed_returns_at_once() -> None:
    clock = ManualClock(start=5.0)
    with anyio.fail_after(5):  # the backend's clock: this must not wait for an advance
        await clock.sleep_until(5.0)
        await clock.sleep_until(1.0)
    assert clock.now() == 5.0


async def test_a_sleep_taken_while_advancing_is_honoured_within_the_same_advance() -> None:
    """A woken task that sleeps again, to a deadline before the target, wakes at that deadline."""
    clock = ManualClock()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await clock.sleep_until(clock.now() + 1.0)
            ticks.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await clock.advance(3.5)
        assert ticks == [1.0, 2.0, 3.0]
        tg.cancel_scope.cancel()


async def test_advance_returns_once_the_woken_tasks_are_blocked() -> None:
    """What a woken task does after waking (several checkpoints of it) is done when advance returns."""
    clock = ManualClock()
    done: list[int] = []

    async def worker() -> None:
        await clock.sleep_until(1.0)
        for i in range(5):
            await anyio.lowlevel.checkpoint()
            done.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await clock.advance(1.0)
        assert done == [0, 1, 2, 3, 4]


async def test_jump_wakes_nobody_until_the_next_advance() -> None:
    clock = ManualClock()
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep_until(1.0)
        woke.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await anyio.wait_all_tasks_blocked()
        clock.jump(5.0)
        await anyio.wait_all_tasks_blocked()
        assert woke == []
        await clock.advance(0)
    assert woke == [5.0]  # it wakes at the time the clock shows by then
