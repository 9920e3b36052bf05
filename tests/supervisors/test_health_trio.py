"""Health classification on trio's MockClock: the runtime's default clock is anyio's."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from runtime import Health, HealthThresholds
from supervisors import SessionSupervisor
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
