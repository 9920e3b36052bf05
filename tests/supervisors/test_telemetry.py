"""Reaper and runtime telemetry in the supervisor's registry, read as Prometheus would."""

from __future__ import annotations

import time

import anyio
import pytest
from prometheus_client import generate_latest

from runtime.testing import ManualClock
from supervisors import ReaperPolicy, SessionSupervisor
from tests.apps.counter import Add, Counter

pytestmark = pytest.mark.anyio


def value(sessions: SessionSupervisor, name: str) -> float | None:
    return sessions.registry.get_sample_value(name)


class TestReaperTelemetry:
    async def test_passes_duration_deadlines_and_sizes(self) -> None:
        """Passes are counted and timed; deadlines, loaded sessions and the memory estimate are gauges."""
        clock = ManualClock()
        async with SessionSupervisor(clock=clock, reaper=ReaperPolicy(idle_timeout=60)) as sessions:
            for name in ("a", "b"):
                await (await sessions.start(Counter, name)).call(Add(1))
            assert value(sessions, "sessionvisor_reaper_passes_total") == 0
            assert value(sessions, "sessionvisor_reaper_deadlines") == 2  # one idle check each
            assert value(sessions, "sessionvisor_sessions_loaded") == 2
            assert value(sessions, "sessionvisor_reaper_estimated_memory_bytes") is None  # no limit
            await clock.advance(61)
            await anyio.wait_all_tasks_blocked()
            assert value(sessions, "sessionvisor_reaper_passes_total") == 1
            assert value(sessions, "sessionvisor_reaper_pass_duration_seconds_count") == 1
            assert value(sessions, "sessionvisor_reaper_errors_total") == 0
            assert value(sessions, "sessionvisor_reaper_deadlines") == 0  # both passivated
            await sessions.reap()
            assert value(sessions, "sessionvisor_reaper_passes_total") == 2
            assert value(sessions, "sessionvisor_reaper_pass_duration_seconds_count") == 2

    async def test_memory_estimate_of_the_last_check(self) -> None:
        """With max_memory_bytes, the gauge shows the estimate of the reaper's last memory check."""
        clock = ManualClock()
        policy = ReaperPolicy(max_memory_bytes=10**9, memory_check_interval=5)
        async with SessionSupervisor(clock=clock, reaper=policy) as sessions:
            await (await sessions.start(Counter, "a")).call(Add(1))
            assert value(sessions, "sessionvisor_reaper_estimated_memory_bytes") is None
            await clock.advance(6)
            await anyio.wait_all_tasks_blocked()
            memory = value(sessions, "sessionvisor_reaper_estimated_memory_bytes")
            assert memory == sessions.reaper.estimated_bytes()
            assert memory is not None
            assert memory > 0

    async def test_sessions_by_status_follow_every_change(self) -> None:
        """sessionvisor_sessions counts loaded sessions by status as they change, start to forget."""
        async with SessionSupervisor() as sessions:
            a = await sessions.start(Counter, "a")
            await sessions.start(Counter, "b")
            await a.pause("maintenance")

            def count(status: str) -> float | None:
                return sessions.registry.get_sample_value(
                    "sessionvisor_sessions", {"type": "Counter", "status": status}
                )

            assert (count("running"), count("paused")) == (1, 1)
            await a.stop()
            assert (count("running"), count("paused"), count("stopped")) == (1, None, 1)
            sessions.forget("a")
            assert count("stopped") is None
            assert value(sessions, "sessionvisor_sessions_loaded") == 1

    async def test_failed_checks_are_errors(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A check that raises is counted in sessionvisor_reaper_errors_total."""
        clock = ManualClock()
        async with SessionSupervisor(clock=clock, reaper=ReaperPolicy(idle_timeout=5)) as sessions:
            await sessions.start(Counter, "a")

            async def broken(*args: object) -> None:
                raise RuntimeError("injected")

            monkeypatch.setattr(sessions.reaper, "_check", broken)
            await clock.advance(6)
            await anyio.wait_all_tasks_blocked()
            assert value(sessions, "sessionvisor_reaper_errors_total") == 1
            assert value(sessions, "sessionvisor_reaper_passes_total") == 1

    async def test_overdue_grows_when_the_reaper_stops(self) -> None:
        """A working reaper is never overdue; one that stopped waking is, by the real time since."""
        async with SessionSupervisor(reaper=ReaperPolicy(idle_timeout=3600)) as sessions:
            await sessions.start(Counter, "a")
            await anyio.wait_all_tasks_blocked()
            assert value(sessions, "sessionvisor_reaper_overdue_seconds") == 0
            # As if its wake-up had been due 120 s ago and it never came (a hung or dead reaper).
            sessions.reaper.due_monotonic = time.monotonic() - 120
            overdue = value(sessions, "sessionvisor_reaper_overdue_seconds")
            assert overdue is not None
            assert 120 <= overdue < 180

    async def test_ready(self) -> None:
        """sessionvisor_ready is 1 once ready() returns, 0 before the supervisor starts and after it."""
        sessions = SessionSupervisor()
        assert value(sessions, "sessionvisor_ready") == 0
        async with sessions:
            await sessions.ready()  # reminders loaded, resumptions scheduled: a moment after entering
            assert value(sessions, "sessionvisor_ready") == 1
        assert value(sessions, "sessionvisor_ready") == 0

    async def test_stored_sessions_after_a_count(self) -> None:
        """sessionvisor_sessions_stored appears once sessions.stats() or count_stored() has counted."""
        async with SessionSupervisor() as sessions:
            await sessions.start(Counter, "a")
            assert value(sessions, "sessionvisor_sessions_stored") is None
            await sessions.stats()
            assert value(sessions, "sessionvisor_sessions_stored") == 1
            await sessions.start(Counter, "b")
            assert await sessions.count_stored() == 2
            assert value(sessions, "sessionvisor_sessions_stored") == 2

    async def test_exposition_has_no_created_series_for_reaper_counters(self) -> None:
        """The reaper's counters come without _created samples (they add nothing here)."""
        async with SessionSupervisor() as sessions:
            text = generate_latest(sessions.registry).decode()
        assert "sessionvisor_reaper_passes_total 0.0" in text
        assert "sessionvisor_reaper_passes_created" not in text
        assert "# TYPE sessionvisor_reaper_overdue_seconds gauge" in text
