"""Durable reminders, on an injected clock and on trio's virtual clock."""

from __future__ import annotations

import math
from collections.abc import Iterator

import anyio
import pytest

from runtime import InvalidReminder, MemoryStore, SessionCrashed, Status
from runtime.testing import ManualClock
from supervisors import Backoff, ReaperPolicy, RestartPolicy, SessionSupervisor
from tests.apps.alarm import Alarm, Ping

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    Alarm.fired.clear()
    Alarm.crash_once.clear()
    Alarm.starts.clear()
    yield
    Alarm.clock = None
    Alarm.fired.clear()
    Alarm.crash_once.clear()
    Alarm.starts.clear()


@pytest.fixture
def clock() -> ManualClock:
    Alarm.clock = c = ManualClock()
    return c


def supervisor(clock: ManualClock, store: MemoryStore | None = None, **policy: object) -> SessionSupervisor:
    return SessionSupervisor(
        store=store or MemoryStore(),
        clock=clock,
        wall_clock=lambda: 1_000_000.0 + clock.now(),
        session_types=[Alarm],
        reaper=ReaperPolicy(**policy),  # type: ignore[arg-type]
        restarts=RestartPolicy(backoff=Backoff(initial=0)),
    )


class TestFiring:
    async def test_fires_at_its_due_time_once(self, clock: ManualClock) -> None:
        """Delivered to handle_info at exactly its due time, then gone from the store."""
        async with supervisor(clock) as sessions:
            a = await sessions.start(Alarm, "a")
            await a.call(("schedule", "turn", 10, "t1"))
            assert await sessions.store.reminders("a") != []
            assert await a.call("reminders") == {"turn": 10.0}
            await clock.advance(9.5)
            assert Alarm.fired == []
            assert await a.call("reminders") == {"turn": 0.5}
            await clock.advance(0.5)
            assert Alarm.fired == [("a", 10.0, "t1")]
            assert await a.call("state") == ["t1"]
            assert list(await sessions.store.reminders("a")) == []
            assert await a.call("reminders") == {}
            await clock.advance(100)
            assert len(Alarm.fired) == 1

    async def test_same_name_replaces(self, clock: ManualClock) -> None:
        """A second schedule under a name replaces the first; other names are independent."""
        async with supervisor(clock) as sessions:
            a = await sessions.start(Alarm, "a")
            await a.call(("schedule", "turn", 10, "first"))
            await a.call(("schedule", "other", 15, "other"))
            await clock.advance(5)
            await a.call(("schedule", "turn", 20, "second"))  # due at 25
            await clock.advance(30)
            assert Alarm.fired == [("a", 15.0, "other"), ("a", 25.0, "second")]

    async def test_unschedule(self, clock: ManualClock) -> None:
        async with supervisor(clock) as sessions:
            a = await sessions.start(Alarm, "a")
            await a.call(("schedule", "turn", 10, "t"))
            assert await a.call(("unschedule", "turn")) is True
            assert await a.call(("unschedule", "turn")) is False
            await clock.advance(20)
            assert Alarm.fired == []
            assert list(await sessions.store.reminders("a")) == []

    async def test_handler_that_records_nothing_still_removes_it(self, clock: ManualClock) -> None:
        async with supervisor(clock) as sessions:
            a = await sessions.start(Alarm, "a")
            await a.call(("schedule", "q", 1, "quiet"))
            await clock.advance(5)
            assert Alarm.fired == [("a", 1.0, "quiet")]
            assert list(await sessions.store.reminders("a")) == []
            assert await a.call("state") == []


class TestDurability:
    async def test_survives_passivation_and_activates(self, clock: ManualClock) -> None:
        """A passivated session is activated by its reminder at the due time."""
        async with supervisor(clock, idle_timeout=5) as sessions:
            a = await sessions.start(Alarm, "a")
            await a.call(("schedule", "turn", 30, "wake"))
            await clock.advance(10)
            assert a.status is Status.PASSIVATED
            assert sessions.active_count == 0
            await clock.advance(20)
            assert Alarm.fired == [("a", 30.0, "wake")]
            assert await a.call("state") == ["wake"]

    async def test_survives_a_crash_of_another_turn(self, clock: ManualClock) -> None:
        async with supervisor(clock) as sessions:
            a = await sessions.start(Alarm, "a")
            await a.call(("schedule", "turn", 10, "t"))
            with pytest.raises(SessionCrashed) as info:
                await a.call("crash")
            assert str(info.value.__cause__) == "asked to crash"
            await clock.advance(10)
            assert Alarm.fired == [("a", 10.0, "t")]

    async def test_fires_again_when_its_handler_crashed_before_recording(self, clock: ManualClock) -> None:
        """At least once: the crashed delivery comes back to the next incarnation, recorded once."""
        Alarm.crash_once.add("boom")
        async with supervisor(clock) as sessions:
            a = await sessions.start(Alarm, "a")
            await a.call(("schedule", "turn", 10, "boom"))
            await clock.advance(10)
            await clock.advance(1)
            assert [f[2] for f in Alarm.fired] == ["boom", "boom"]
            assert await a.call("state") == ["boom"]
            assert list(await sessions.store.reminders("a")) == []

    async def test_survives_the_process(self, clock: ManualClock) -> None:
        """A reminder kept by one supervisor fires in the next one on the same store, on time."""
        store = MemoryStore()
        async with supervisor(clock, store) as sessions:
            a = await sessions.start(Alarm, "a")
            await a.call(("schedule", "turn", 10, "later"))
            await a.call(("schedule", "soon", 2, "soon"))
        await clock.advance(5)  # no process runs: "soon" falls due meanwhile
        async with supervisor(clock, store) as sessions:
            await sessions.ready()
            await clock.advance(0)
            assert [(f[0], f[2]) for f in Alarm.fired] == [("a", "soon")]
            assert Alarm.fired[0][1] == 5.0
            await clock.advance(5)
            assert [f[2] for f in Alarm.fired] == ["soon", "later"]
            assert Alarm.fired[1][1] == 10.0
            assert await (await sessions.get("a")).call("state") == ["soon", "later"]


class TestBadInput:
    @pytest.mark.parametrize(
        ("name", "delay", "field"),
        [
            ("", 1, "name"),
            (5, 1, "name"),
            ("n", -1, "delay"),
            ("n", math.nan, "delay"),
            ("n", math.inf, "delay"),
        ],
    )
    async def test_name_and_delay(self, clock: ManualClock, name: object, delay: float, field: str) -> None:
        async with supervisor(clock) as sessions:
            a = await sessions.start(Alarm, "a")
            with pytest.raises(InvalidReminder) as info:
                await a.call(("schedule_raw", name, delay, "x"))
            assert info.value.field == field
            assert info.value.session_id == "a"
            assert list(await sessions.store.reminders("a")) == []

    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            ({1, 2}, "message"),
            (math.nan, "message"),
            ({"at": math.nan}, "message['at']"),
            (2**64 + 1, "message"),
            ({"moves": [1, 2**64 + 1]}, "message['moves'][1]"),
            ({"moves": [1, -(2**63) - 1]}, "message['moves'][1]"),
            ({"moves": [1, b"x"]}, "message"),  # the codec stores bytes, plain JSON has none
            (object(), "message"),
            (Ping(math.inf), "message.label"),  # type: ignore[arg-type]
        ],
    )
    async def test_message_the_codec_cannot_store(
        self, clock: ManualClock, payload: object, field: str
    ) -> None:
        async with supervisor(clock) as sessions:
            a = await sessions.start(Alarm, "a")
            with pytest.raises(InvalidReminder) as info:
                await a.call(("schedule_raw", "n", 1, payload))
            assert info.value.field == field
            assert list(await sessions.store.reminders("a")) == []

    async def test_plain_json_message(self, clock: ManualClock) -> None:
        async with supervisor(clock) as sessions:
            a = await sessions.start(Alarm, "a")
            await a.call(("schedule_raw", "n", 1, {"k": [1, "two", None]}))
            await clock.advance(1)
            assert Alarm.fired == [("a", 1.0, "{'k': [1, 'two', None]}")]


async def test_trio_virtual_clock(anyio_backend: object) -> None:
    """On trio's MockClock and the default clock: fired at the exact virtual time."""
    if anyio_backend == "asyncio":
        pytest.skip("virtual time: trio's MockClock")

    class Now:
        def now(self) -> float:
            return anyio.current_time()

    Alarm.clock = Now()  # type: ignore[assignment]
    async with SessionSupervisor(session_types=[Alarm]) as sessions:
        start = anyio.current_time()
        a = await sessions.start(Alarm, "a")
        await a.call(("schedule", "turn", 2.5, "t"))
        await anyio.sleep(5)
        assert [(f[1] - start, f[2]) for f in Alarm.fired] == [(2.5, "t")]
