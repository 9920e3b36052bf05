"""On trio's MockClock: the runtime's default clock is anyio's, so virtual time drives it all."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from runtime import Health, HealthThresholds, Status
from supervisors import ReaperPolicy, SessionSupervisor
from tests.apps.counter import Add, Counter


@pytest.mark.trio
async def test_stale_on_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    """An hour of virtual time passes at once; the session is then stale, and a call heals it."""
    async with SessionSupervisor(health=HealthThresholds(stale_after=3600)) as sessions:
        c = await sessions.start(Counter, "c")
        await trio.sleep(3599)
        assert (await sessions.inspect("c")).health is Health.HEALTHY
        await trio.sleep(2)
        view = await sessions.inspect("c")
        assert view.health is Health.STALE
        assert view.idle_for == pytest.approx(3601)
        await c.call(Add(1))
        assert (await sessions.inspect("c")).health is Health.HEALTHY


@pytest.mark.trio
async def test_reaper_on_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    """The reaper on the default clock: passivation, then abandonment, at their exact times."""
    policy = ReaperPolicy(idle_timeout=300, abandon_after=3600)
    async with SessionSupervisor(reaper=policy) as sessions:
        events = sessions.lifecycle()
        start = trio.current_time()
        c = await sessions.start(Counter, "c")
        await c.call(Add(1))
        seen: list[tuple[Status, float]] = []
        async for e in events:
            seen.append((e.status, round(trio.current_time() - start, 3)))
            if e.status is Status.ABANDONED:
                break
        assert seen == [(Status.RUNNING, 0), (Status.PASSIVATED, 300), (Status.ABANDONED, 3600)]
        assert c.status is Status.ABANDONED
