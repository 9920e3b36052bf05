"""Every timeout reads the supervisor's clock, raises a named error with its figures, and bad ones are
refused before anything is sent."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import anyio
import pytest

from runtime import (
    CallTimeout,
    HandlerMisuse,
    InvalidTimeout,
    OperationTimeout,
    SessionNotEnded,
    Status,
    TypeNameTaken,
    UnknownSessionType,
)
from runtime.testing import ManualClock
from supervisors import SessionSupervisor
from tests.apps.counter import Add, Counter, Get
from tests.helpers import GRANULARITY, busy, fails_at

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sessions(clock: ManualClock) -> AsyncIterator[SessionSupervisor]:
    async with SessionSupervisor(clock=clock) as sessions:
        yield sessions


class TestOnTheInjectedClock:
    async def test_call_times_out_when_the_clock_says(
        self, sessions: SessionSupervisor, clock: ManualClock
    ) -> None:
        """0.5 s of the injected clock, not of the event loop's: at 0.49 pending, by 0.505 failed."""
        ref = await sessions.start(Counter, "c")
        gate = await busy(ref)
        at, error = await fails_at(clock, lambda: ref.call(Get(), timeout=0.5), [0.49, 0.015])
        assert 0.5 <= at <= 0.5 + GRANULARITY
        assert isinstance(error, CallTimeout)
        assert (error.session_id, error.timeout) == ("c", 0.5)
        gate.set()
        assert await ref.call(Get()) == 0  # the session carries on; the late reply was dropped

    @pytest.mark.parametrize("operation", ["stop", "pause"])
    async def test_stop_and_pause_time_out_on_the_clock(
        self, sessions: SessionSupervisor, clock: ManualClock, operation: str
    ) -> None:
        """stop/pause raise OperationTimeout (a CallTimeout) naming it; the request stays queued."""
        ref = await sessions.start(Counter, "c")
        gate = await busy(ref)
        action = getattr(ref, operation)
        at, error = await fails_at(clock, lambda: action(timeout=2.0), [1.99, 0.015])
        assert 2.0 <= at <= 2.0 + GRANULARITY
        assert isinstance(error, OperationTimeout)
        assert isinstance(error, CallTimeout)
        assert (error.session_id, error.operation, error.timeout) == ("c", operation, 2.0)
        gate.set()
        await anyio.wait_all_tasks_blocked()
        assert ref.status is (Status.STOPPED if operation == "stop" else Status.PAUSED)

    async def test_resume_times_out_on_the_clock(
        self, sessions: SessionSupervisor, clock: ManualClock
    ) -> None:
        ref = await sessions.start(Counter, "c")
        await ref.pause()
        await ref.resume()
        gate = await busy(ref)
        at, error = await fails_at(clock, lambda: ref.resume(timeout=1.0), [0.99, 0.015])
        assert 1.0 <= at <= 1.0 + GRANULARITY
        assert isinstance(error, OperationTimeout)
        assert error.operation == "resume"
        gate.set()

    async def test_drain_waits_on_the_clock(self, clock: ManualClock) -> None:
        """Leaving the supervisor lets a busy session finish for drain_timeout of its clock, then cancels."""
        left: list[float] = []

        async def run() -> None:
            async with SessionSupervisor(clock=clock, drain_timeout=3.0) as sessions:
                ref = await sessions.start(Counter, "c")
                await busy(ref)
            left.append(clock.now())

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await anyio.wait_all_tasks_blocked()
            await clock.advance(2.99)
            assert left == []
            await clock.advance(0.02)
        assert left == [3.0]


class TestRefusedBeforeSending:
    @pytest.mark.parametrize("timeout", [math.nan, math.inf, -1.0, -math.inf])
    async def test_call_with_a_bad_timeout(self, sessions: SessionSupervisor, timeout: float) -> None:
        """The handler never runs: nothing was queued."""
        ref = await sessions.start(Counter, "c")
        with pytest.raises(InvalidTimeout) as caught:
            await ref.call(Add(1), timeout=timeout)
        assert caught.value.session_id == "c"
        assert caught.value.operation == "call"
        assert caught.value.timeout is timeout
        assert isinstance(caught.value, ValueError)
        assert await ref.call(Get()) == 0

    @pytest.mark.parametrize("operation", ["stop", "pause", "resume"])
    async def test_control_with_a_bad_timeout(self, sessions: SessionSupervisor, operation: str) -> None:
        ref = await sessions.start(Counter, "c")
        with pytest.raises(InvalidTimeout):
            await getattr(ref, operation)(timeout=math.nan)
        assert ref.status is Status.RUNNING

    async def test_zero_is_a_timeout_that_has_passed(self, sessions: SessionSupervisor) -> None:
        ref = await sessions.start(Counter, "c")
        gate = await busy(ref)
        with anyio.fail_after(
            5
        ):  # the wheel's next bucket ends at once on a manual clock... after an advance
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    with pytest.raises(CallTimeout):
                        await ref.call(Get(), timeout=0)

                tg.start_soon(call)
                await anyio.wait_all_tasks_blocked()
                await sessions.clock.advance(GRANULARITY)  # type: ignore[attr-defined]
        gate.set()


class TestStopTwice:
    async def test_stop_is_idempotent(self, sessions: SessionSupervisor) -> None:
        ref = await sessions.start(Counter, "c")
        await ref.stop("first")
        await ref.stop("again")
        assert ref.status is Status.STOPPED
        record = await sessions.store.get("c")
        assert record is not None
        assert record.version == 1  # one StatusChanged, not two


class TestErrorsWithData:
    async def test_unknown_session_type(self, clock: ManualClock) -> None:
        async with SessionSupervisor(clock=clock) as first:
            await first.start(Counter, "c")
            store = first.store
        async with SessionSupervisor(clock=clock, store=store) as second:
            with pytest.raises(UnknownSessionType) as caught:
                await second.get("c")
        assert (caught.value.session_id, caught.value.type_name) == ("c", "Counter")

    async def test_type_name_taken(self, sessions: SessionSupervisor) -> None:
        class Other(Counter):
            type_name = "Counter"

        await sessions.start(Counter, "c")
        with pytest.raises(TypeNameTaken) as caught:
            await sessions.start(Other, "o")
        assert caught.value.type_name == "Counter"
        assert caught.value.registered == "Counter"
        assert caught.value.other.endswith("Other")
        assert sessions.cached("o") is None

    async def test_delete_a_live_session(self, sessions: SessionSupervisor) -> None:
        await sessions.start(Counter, "c")
        with pytest.raises(SessionNotEnded) as caught:
            await sessions.delete("c")
        assert (caught.value.session_id, caught.value.status) == ("c", Status.RUNNING)

    async def test_defer_reply_outside_handle_call(self, sessions: SessionSupervisor) -> None:
        ref = await sessions.start(Counter, "c")
        await ref.call(Get())
        cell = sessions.cached("c")
        assert cell is not None
        assert cell.instance is not None
        with pytest.raises(HandlerMisuse) as caught:
            cell.instance.defer_reply()
        assert (caught.value.session_id, caught.value.operation) == ("c", "defer_reply()")
