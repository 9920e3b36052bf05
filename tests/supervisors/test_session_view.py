"""``runtime.abc.SessionView``: the read-only face of a loaded session that the reapers read."""

from __future__ import annotations

import pytest

from runtime import HistoryConfig, Status
from runtime.abc import SessionView
from runtime.testing import ManualClock
from supervisors import SessionSupervisor
from tests.apps.counter import Add, Counter, Get

pytestmark = pytest.mark.anyio


async def test_a_loaded_session_is_a_session_view() -> None:
    """Every member the Protocol names is there on a real cell, with the values the reapers read."""
    clock = ManualClock()
    async with SessionSupervisor(clock=clock, history=HistoryConfig(max_transitions=2)) as sessions:
        c = await sessions.start(Counter, "c")
        cell = sessions.cached("c")
        assert cell is not None
        view: SessionView = cell  # mypy checks the cell against the Protocol's types
        assert isinstance(view, SessionView)
        assert (view.id, view.status, view.started_at, view.status_since) == ("c", Status.RUNNING, 0.0, 0.0)
        assert (view.transitions, view.mailbox_depth) == (0, 0)
        before = view.state_bytes

        await clock.advance(5)
        await c.call(Add(12345))
        assert view.active
        assert view.last_active == 5.0
        assert view.state_bytes > before  # the journal counts what each record adds
        assert view.transitions == 1
        await c.call(Get())
        await c.call(Get())
        assert view.transitions == 2  # the history's ring is full at max_transitions

        await clock.advance(5)
        await c.pause()
        assert (view.status, view.status_since) == (Status.PAUSED, 10.0)


async def test_without_history_there_are_no_transitions() -> None:
    async with SessionSupervisor(clock=ManualClock(), history=HistoryConfig(enabled=False)) as sessions:
        c = await sessions.start(Counter, "c")
        await c.call(Add(1))
        view: SessionView | None = sessions.cached("c")
        assert view is not None
        assert view.transitions == 0
