"""``SessionRef``: identity, the status it reports, staying valid across passivation, and how its
calls and controls wait (no timeout, a timeout on the injected clock, a full mailbox)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from runtime import SessionNotFound, SessionRef, Status
from runtime.testing import ManualClock
from supervisors import ReaperPolicy, SessionSupervisor
from tests.apps.counter import Add, Counter, Get, WaitFor
from tests.helpers import busy, status_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sessions(clock: ManualClock) -> AsyncIterator[SessionSupervisor]:
    async with SessionSupervisor(clock=clock) as sessions:
        yield sessions


class TestIdentity:
    async def test_equal_by_id_within_one_supervisor(self, sessions: SessionSupervisor) -> None:
        started = await sessions.start(Counter, "c")
        looked_up, named = await sessions.get("c"), sessions.ref("c")
        assert started == looked_up == named
        assert len({started, looked_up, named}) == 1
        assert started != sessions.ref("d")
        assert started != "c"
        assert repr(started) == "SessionRef('c')"

    async def test_not_equal_across_supervisors(self, sessions: SessionSupervisor) -> None:
        async with SessionSupervisor() as other:
            assert sessions.ref("c") != other.ref("c")


class TestStatus:
    async def test_none_until_looked_up_then_the_sessions_own(self, sessions: SessionSupervisor) -> None:
        ref = sessions.ref("c")
        assert status_of(ref) is None  # nothing loaded under that id yet
        await sessions.start(Counter, "c")
        assert status_of(ref) is Status.RUNNING
        await ref.pause()
        assert status_of(ref) is Status.PAUSED
        await ref.resume()
        await ref.stop("done")
        assert status_of(ref) is Status.STOPPED

    async def test_valid_across_passivation(self, clock: ManualClock) -> None:
        """A ref held through passivation reactivates the session with its state on its next call."""
        async with SessionSupervisor(clock=clock, reaper=ReaperPolicy(idle_timeout=10)) as sessions:
            ref = await sessions.start(Counter, "c")
            assert await ref.call(Add(5)) == 5
            await clock.advance(11)  # idle_timeout=10: passivated
            assert ref.status is Status.PASSIVATED
            assert sessions.active_count == 0
            assert await ref.call(Add(1)) == 6
            assert status_of(ref) is Status.RUNNING
            assert sessions.active_count == 1


class TestWaiting:
    async def test_no_timeout_waits_as_long_as_it_takes(
        self, sessions: SessionSupervisor, clock: ManualClock
    ) -> None:
        ref = await sessions.start(Counter, "c")
        gate = anyio.Event()
        answers: list[object] = []

        async def caller() -> None:
            answers.append(await ref.call(WaitFor(gate, then_add=3), timeout=None))

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await clock.advance(60)
            assert answers == []
            gate.set()
        assert answers == [3]

    async def test_controls_without_timeout_wait_their_turn(
        self, sessions: SessionSupervisor, clock: ManualClock
    ) -> None:
        """pause(timeout=None) behind a busy turn: done once the turn ends, however long it takes."""
        ref = await sessions.start(Counter, "c")
        gate = await busy(ref)
        paused: list[Status | None] = []

        async def pause() -> None:
            await ref.pause("later", timeout=None)
            paused.append(ref.status)

        async with anyio.create_task_group() as tg:
            tg.start_soon(pause)
            await clock.advance(60)
            assert paused == []
            gate.set()
        assert paused == [Status.PAUSED]

    async def test_room_before_the_deadline_delivers_the_call(self, clock: ManualClock) -> None:
        """A call waiting for room in a full mailbox goes in when room appears within its timeout."""

        class Tiny(Counter):
            mailbox_size = 1

        async with SessionSupervisor(clock=clock) as sessions:
            ref = await sessions.start(Tiny, "tiny")
            gate = await busy(ref)
            ref.cast_nowait(Add(1))  # the mailbox is full
            answers: list[object] = []

            async def caller() -> None:
                answers.append(await ref.call(Add(10), timeout=5.0))

            async with anyio.create_task_group() as tg:
                tg.start_soon(caller)
                await clock.advance(4.0)
                assert answers == []
                gate.set()  # room, 1 s before the deadline
            assert answers == [11]
            assert await ref.call(Get()) == 11


class TestRefused:
    @pytest.mark.parametrize("key", ["", 5])
    async def test_bad_idempotency_key_sends_nothing(self, sessions: SessionSupervisor, key: object) -> None:
        ref = await sessions.start(Counter, "c")
        with pytest.raises(ValueError, match="idempotency_key must be a non-empty str"):
            await ref.call(Add(1), idempotency_key=key)  # type: ignore[arg-type]
        assert await ref.call(Get()) == 0

    async def test_cast_nowait_needs_the_session_loaded(self, sessions: SessionSupervisor) -> None:
        ref: SessionRef = sessions.ref("nobody")
        with pytest.raises(SessionNotFound, match="'nobody'"):
            ref.cast_nowait(Add(1))
