"""SessionSupervisor end to end: the GenServer semantics DESIGN.md promises, on both backends."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio
import pytest

from runtime import (
    AppendExtras,
    CallCycle,
    CallTimeout,
    EventData,
    InvalidSessionId,
    MailboxFull,
    MemoryStore,
    Session,
    SessionCrashed,
    SessionExists,
    SessionNotFound,
    SessionPaused,
    SessionStopped,
    ShuttingDown,
    Status,
    StoreError,
    UnknownSessionType,
)
from runtime.testing import ManualClock
from supervisors import Backoff, RestartPolicy, SessionSupervisor
from tests.apps.alarm import Alarm
from tests.apps.counter import (
    Add,
    AddMany,
    After,
    Boom,
    CallOther,
    Complete,
    Counter,
    Defer,
    Fail,
    Get,
    Release,
    Sleep,
    StopMe,
    WaitFor,
)
from tests.helpers import GRANULARITY, NO_BACKOFF, busy, fails_at

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sessions() -> AsyncIterator[SessionSupervisor]:
    async with SessionSupervisor(restarts=NO_BACKOFF) as s:
        yield s


class TestCalls:
    async def test_call_records_and_replies(self, sessions: SessionSupervisor) -> None:
        """A call's reply comes from the handler, after its events are applied."""
        c = await sessions.start(Counter, "c", {"start": 10})
        assert await c.call(Add(5)) == 15
        assert await c.call(AddMany((1, 2, 3))) == 21
        assert await c.call(Get()) == 21
        events = await sessions.store.read("c")
        assert [e.data for e in events] == ['{"n":5}', '{"n":1}', '{"n":2}', '{"n":3}']

    async def test_one_message_at_a_time_fifo_per_sender(self, sessions: SessionSupervisor) -> None:
        """Casts from one sender are handled in order, never two at once."""
        c = await sessions.start(Counter, "c")
        for i in range(1, 51):
            await c.cast(Add(i))
        assert await c.call(Get()) == sum(range(1, 51))
        assert [int(e.data[5:-1]) for e in await sessions.store.read("c")] == list(range(1, 51))

    async def test_concurrent_callers_are_serialised(self, sessions: SessionSupervisor) -> None:
        """Many concurrent callers each see a distinct running total."""
        c = await sessions.start(Counter, "c")
        seen: list[object] = []

        async def add() -> None:
            seen.append(await c.call(Add(1)))

        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(add)
        assert sorted(seen) == list(range(1, 101))  # type: ignore[type-var]

    async def test_reply_only_after_events_are_stored(self) -> None:
        """The reply is sent only once the store acknowledged the append."""
        order: list[str] = []
        store = MemoryStore()
        real_append = store.append

        async def slow_append(
            session_id: str,
            expected_version: int,
            events: Sequence[EventData],
            *,
            status: Status | None = None,
            extras: AppendExtras | None = None,
        ) -> int:
            await anyio.sleep(0.01)
            version = await real_append(session_id, expected_version, events, status=status, extras=extras)
            order.append("stored")
            return version

        store.append = slow_append  # type: ignore[method-assign]
        async with SessionSupervisor(store=store) as sessions:
            c = await sessions.start(Counter, "c")
            await c.call(Add(1))
            order.append("replied")
        assert order == ["stored", "replied"]

    async def test_unknown_id_fails_at_once(self, sessions: SessionSupervisor) -> None:
        """get() and a ref's first message raise SessionNotFound for an unknown id."""
        with pytest.raises(SessionNotFound, match="'ghost'"):
            await sessions.get("ghost")
        with pytest.raises(SessionNotFound):
            await sessions.ref("ghost").call(Get())
        with pytest.raises(SessionNotFound):
            sessions.ref("ghost").cast_nowait(Get())

    async def test_duplicate_id(self, sessions: SessionSupervisor) -> None:
        """Starting a known id raises SessionExists; the first session is untouched."""
        c = await sessions.start(Counter, "c", {"start": 1})
        with pytest.raises(SessionExists, match="'c'"):
            await sessions.start(Counter, "c", {"start": 2})
        assert await c.call(Get()) == 1

    async def test_generated_ids_are_unguessable(self, sessions: SessionSupervisor) -> None:
        """Generated ids are long, random and distinct."""
        refs = [await sessions.start(Counter) for _ in range(50)]
        ids = {r.id for r in refs}
        assert len(ids) == 50
        assert all(len(i) >= 20 for i in ids)

    async def test_ref_without_lookup(self, sessions: SessionSupervisor) -> None:
        """ref(id) does no look-up and works once the session exists."""
        ref = sessions.ref("later")
        await sessions.start(Counter, "later", {"start": 3})
        assert await ref.call(Get()) == 3
        assert ref == await sessions.get("later")


class TestCycles:
    async def test_self_call(self, sessions: SessionSupervisor) -> None:
        """A -> A fails at once with CallCycle instead of deadlocking."""
        a = await sessions.start(Counter, "a")
        with anyio.fail_after(1):
            with pytest.raises(SessionCrashed) as info:
                await a.call(CallOther(a, Get()))
        assert isinstance(info.value.__cause__, CallCycle)

    async def test_two_party_cycle(self, sessions: SessionSupervisor) -> None:
        """A -> B -> A fails at once with CallCycle naming the chain."""
        a = await sessions.start(Counter, "a")
        b = await sessions.start(Counter, "b")
        with anyio.fail_after(1):
            with pytest.raises(SessionCrashed) as info:
                await a.call(CallOther(b, CallOther(a, Get())))
        # b's handler raised CallCycle, crashing b; a's handler got SessionCrashed from b.
        cause = info.value.__cause__
        assert isinstance(cause, SessionCrashed)
        assert isinstance(cause.__cause__, CallCycle)
        assert "a -> b -> a" in str(cause.__cause__)

    async def test_chain_without_cycle(self, sessions: SessionSupervisor) -> None:
        """A -> B -> C is fine."""
        a = await sessions.start(Counter, "a", {"start": 1})
        b = await sessions.start(Counter, "b", {"start": 2})
        c = await sessions.start(Counter, "c", {"start": 3})
        assert await a.call(CallOther(b, CallOther(c, Get()))) == 3


class TestCrashes:
    async def test_crash_reaches_caller_and_state_is_rebuilt(self, sessions: SessionSupervisor) -> None:
        """The caller gets SessionCrashed with the cause; the next message sees the rebuilt state."""
        c = await sessions.start(Counter, "c")
        await c.call(Add(7))
        with pytest.raises(SessionCrashed, match="'c' crashed") as info:
            await c.call(Boom("kaput"))
        assert isinstance(info.value.__cause__, RuntimeError)
        assert str(info.value.__cause__) == "kaput"
        assert await c.call(Get()) == 7
        assert Counter.logs["c"] == [("start", 0), ("stop", "crashed"), ("start", 7)]
        assert (await sessions.inspect("c")).restarts == 1

    async def test_crash_is_logged_once_with_its_traceback(
        self, sessions: SessionSupervisor, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One ERROR record per crash: the session, the message, and the handler's exception."""
        c = await sessions.start(Counter, "c")
        with caplog.at_level(logging.ERROR, logger="runtime._actor"):
            with pytest.raises(SessionCrashed):
                await c.call(Boom("kaput"))
            assert await c.call(Get()) == 0
        (record,) = [r for r in caplog.records if r.name == "runtime._actor"]
        assert record.levelno == logging.ERROR
        assert "'c' crashed handling" in record.getMessage()
        assert "Boom" in record.getMessage()
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)
        assert str(record.exc_info[1]) == "kaput"

    async def test_mailbox_is_kept_across_a_crash(self, sessions: SessionSupervisor) -> None:
        """Messages queued behind the crashing one are handled by the next incarnation, in order."""
        c = await sessions.start(Counter, "c")
        await c.cast(Sleep(0.01))  # keep the actor busy while the others queue up
        await c.cast(Add(1))
        await c.cast(Boom())
        await c.cast(Add(2))
        await c.cast(Add(3))
        assert await c.call(Get()) == 6
        assert [e.data for e in await sessions.store.read("c")] == ['{"n":1}', '{"n":2}', '{"n":3}']

    async def test_crash_promptly_reaches_a_waiting_caller(self, sessions: SessionSupervisor) -> None:
        """The caller of the crashing message is answered at once, long before its timeout."""
        c = await sessions.start(Counter, "c")
        start = anyio.current_time()
        with pytest.raises(SessionCrashed):
            await c.call(Boom(), timeout=30)
        assert anyio.current_time() - start < 1

    async def test_budget_spent_quarantines_only_that_session(self) -> None:
        """More crashes than the budget: FAILED, SessionStopped afterwards; a sibling carries on."""
        policy = RestartPolicy(max_restarts=2, within=60.0, backoff=Backoff(initial=0))
        async with SessionSupervisor(restarts=policy) as sessions:
            bad = await sessions.start(Counter, "bad")
            good = await sessions.start(Counter, "good")
            for _ in range(3):
                with pytest.raises(SessionCrashed):
                    await bad.call(Boom())
                await good.call(Add(1))
            with pytest.raises(SessionStopped, match="failed") as info:
                await bad.call(Get())
            assert info.value.status is Status.FAILED
            assert bad.status is Status.FAILED
            assert await good.call(Get()) == 3
            record = await sessions.store.get("bad")
            assert record is not None
            assert record.status is Status.FAILED
            assert (await sessions.stats()).quarantined == 1
            quarantines = "sessionvisor_session_quarantines_total"
            assert sessions.registry.get_sample_value(quarantines, {"type": "Counter"}) == 1

    async def test_crashes_spread_out_do_not_spend_the_budget(self) -> None:
        """Crashes further apart than `within` never quarantine."""
        clock = ManualClock()
        policy = RestartPolicy(max_restarts=1, within=10.0, backoff=Backoff(initial=0))
        async with SessionSupervisor(restarts=policy, clock=clock) as sessions:
            c = await sessions.start(Counter, "c")
            for _ in range(5):
                with pytest.raises(SessionCrashed):
                    await c.call(Boom())
                assert await c.call(Get()) == 0
                await clock.advance(11)
            assert c.status is Status.RUNNING

    async def test_backoff_delays_the_restart(self) -> None:
        """The restart waits out the backoff on the runtime's clock; messages wait meanwhile."""
        clock = ManualClock()
        policy = RestartPolicy(
            max_restarts=5, within=60.0, backoff=Backoff(initial=2.0, multiplier=2.0, jitter=0)
        )
        async with SessionSupervisor(restarts=policy, clock=clock) as sessions:
            c = await sessions.start(Counter, "c")
            with pytest.raises(SessionCrashed):
                await c.call(Boom())
            got: list[object] = []

            async def get() -> None:
                got.append(await c.call(Get(), timeout=None))

            async with anyio.create_task_group() as tg:
                tg.start_soon(get)
                await clock.advance(1.9)
                assert got == []
                await clock.advance(0.2)
            assert got == [0]
            assert Counter.logs["c"][-1] == ("start", 0)

    async def test_crash_in_cast_is_contained(self, sessions: SessionSupervisor) -> None:
        """A cast that crashes the session has no caller to tell; the session restarts."""
        c = await sessions.start(Counter, "c")
        await c.cast(Boom())
        assert await c.call(Get()) == 0
        assert (await sessions.inspect("c")).restarts == 1


class TestTimeouts:
    """Timeouts in virtual time: the supervisor's ManualClock, on both backends."""

    async def test_call_timeout_leaves_handler_running(self) -> None:
        """CallTimeout at its deadline; the handler finishes and records; its late reply is dropped."""
        clock = ManualClock()
        async with SessionSupervisor(clock=clock) as sessions:
            c = await sessions.start(Counter, "c")
            gate = anyio.Event()
            at, error = await fails_at(
                clock, lambda: c.call(WaitFor(gate, then_add=4), timeout=0.05), [0.049, 0.006]
            )
            assert 0.05 <= at <= 0.05 + GRANULARITY
            assert isinstance(error, CallTimeout)
            assert isinstance(error, TimeoutError)
            assert (error.session_id, error.timeout) == ("c", 0.05)
            gate.set()
            assert await c.call(Get()) == 4

    async def test_timeout_while_waiting_for_room(self) -> None:
        """A call that cannot even get into a full mailbox times out too, and is never handled."""

        class Tiny(Counter):
            mailbox_size = 1

        clock = ManualClock()
        async with SessionSupervisor(clock=clock) as sessions:
            c = await sessions.start(Tiny, "tiny")
            gate = await busy(c)
            c.cast_nowait(Add(1))  # fills the mailbox
            at, error = await fails_at(clock, lambda: c.call(Add(100), timeout=0.05), [0.049, 0.006])
            assert 0.05 <= at <= 0.05 + GRANULARITY
            assert isinstance(error, CallTimeout)
            gate.set()
            assert await c.call(Get()) == 1

    async def test_many_timeouts_each_fire_once(self) -> None:
        """Concurrent calls with different timeouts: each times out once, on its own deadline."""
        clock = ManualClock()
        async with SessionSupervisor(clock=clock) as sessions:
            c = await sessions.start(Counter, "c")
            gate = await busy(c)
            outcomes: dict[float, list[float]] = {0.3: [], 0.1: [], 0.2: []}

            async def call(timeout: float) -> None:
                try:
                    await c.call(Get(), timeout=timeout)
                except CallTimeout:
                    outcomes[timeout].append(clock.now())

            async with anyio.create_task_group() as tg:
                for t in outcomes:
                    tg.start_soon(call, t)
                await anyio.wait_all_tasks_blocked()
                for _ in range(40):
                    await clock.advance(0.01)
            gate.set()
            for timeout, times in outcomes.items():
                assert len(times) == 1, (timeout, times)
                assert timeout <= times[0] <= timeout + GRANULARITY + 0.01
            assert await c.call(Get()) == 0

    async def test_deferred_reply(self, sessions: SessionSupervisor) -> None:
        """A handler can answer later through its Reply; other messages go on meanwhile."""
        c = await sessions.start(Counter, "c")
        got: list[object] = []

        async def wait_for_it() -> None:
            got.append(await c.call(Defer()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_it)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            assert await c.call(Release("later")) == "released"
        assert got == ["later"]

    async def test_deferred_reply_fails_when_the_session_crashes(self, sessions: SessionSupervisor) -> None:
        """A crash fails the calls the session had deferred, promptly."""
        c = await sessions.start(Counter, "c")
        errors: list[BaseException] = []

        async def wait_for_it() -> None:
            try:
                await c.call(Defer(), timeout=30)
            except SessionCrashed as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_it)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(SessionCrashed):
                await c.call(Boom())
        assert len(errors) == 1


class TestMailbox:
    async def test_cast_nowait_raises_mailbox_full(self) -> None:
        """cast_nowait on a full mailbox raises MailboxFull (an anyio.WouldBlock); nothing is lost."""

        class Tiny(Counter):
            mailbox_size = 2

        async with SessionSupervisor() as sessions:
            c = await sessions.start(Tiny, "tiny")
            await c.cast(Sleep(0.05))
            await anyio.wait_all_tasks_blocked()  # the sleeper is being handled, not queued
            c.cast_nowait(Add(1))
            c.cast_nowait(Add(2))
            with pytest.raises(MailboxFull, match="'tiny'") as info:
                c.cast_nowait(Add(4))
            assert isinstance(info.value, anyio.WouldBlock)
            assert (await sessions.inspect("tiny")).mailbox_depth == 2
            await c.cast(Add(3))  # waits for room instead
            assert await c.call(Get()) == 6


class TestLifecycle:
    async def test_complete_then_stopped(self, sessions: SessionSupervisor) -> None:
        """complete(): COMPLETED in the log and index; later messages get SessionStopped."""
        c = await sessions.start(Counter, "c")
        assert await c.call(Complete({"winner": "ann"})) == "completed"
        with pytest.raises(SessionStopped, match="completed") as info:
            await c.call(Get())
        assert info.value.status is Status.COMPLETED
        record = await sessions.store.get("c")
        assert record is not None
        assert record.status is Status.COMPLETED
        assert Counter.logs["c"] == [("start", 0), ("stop", "completed")]

    async def test_complete_in_on_start_ends_the_task(self, sessions: SessionSupervisor) -> None:
        """A session that completes in on_start stops at once: no task is left behind."""
        c = await sessions.start(Counter, "c", metadata={"complete_at_start": True})
        await anyio.wait_all_tasks_blocked()
        assert c.status is Status.COMPLETED
        assert sessions.active_count == 0
        assert Counter.logs["c"] == [("start", 0), ("stop", "completed")]

    async def test_fail_is_terminal(self, sessions: SessionSupervisor) -> None:
        """fail(reason): FAILED with the reason."""
        c = await sessions.start(Counter, "c")
        await c.call(Fail("out of moves"))
        with pytest.raises(SessionStopped, match="out of moves"):
            await c.cast(Add(1))

    async def test_stop_from_inside_and_outside(self, sessions: SessionSupervisor) -> None:
        """stop() inside a handler and ref.stop() both end in STOPPED with on_stop(reason)."""
        a = await sessions.start(Counter, "a")
        b = await sessions.start(Counter, "b")
        assert await a.call(StopMe("bored")) == "stopping"
        await b.stop("done")
        assert a.status is Status.STOPPED
        assert b.status is Status.STOPPED
        assert Counter.logs["a"][-1] == ("stop", "bored")
        assert Counter.logs["b"][-1] == ("stop", "done")
        with pytest.raises(SessionStopped):
            await b.call(Get())

    async def test_messages_queued_behind_a_stop_are_refused(self, sessions: SessionSupervisor) -> None:
        """Calls queued after the terminal one get SessionStopped, not silence."""
        c = await sessions.start(Counter, "c")
        results: list[object] = []

        async def get() -> None:
            try:
                results.append(await c.call(Get()))
            except SessionStopped as exc:
                results.append(exc.status)

        await c.cast(Sleep(0.01))
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.call, Complete())
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(get)
        assert results == [Status.COMPLETED]

    async def test_pause_and_resume(self, sessions: SessionSupervisor) -> None:
        """A paused session answers SessionPaused until resumed; both are in its log."""
        c = await sessions.start(Counter, "c")
        await c.pause("waiting for approval")
        with pytest.raises(SessionPaused, match="waiting for approval"):
            await c.call(Get())
        await c.resume()
        assert await c.call(Add(1)) == 1
        types = [e.type for e in await sessions.store.read("c")]
        assert types == ["sessionvisor.StatusChanged", "sessionvisor.StatusChanged", "test.Added"]

    async def test_timers_deliver_info(self) -> None:
        """send_after delivers to handle_info on the runtime's clock; cancel() stops it."""
        clock = ManualClock()
        async with SessionSupervisor(clock=clock) as sessions:
            c = await sessions.start(Counter, "c")
            await c.cast(After(5, Add(2)))
            assert await c.call(Get()) == 0  # the timer is set once the cast was handled
            await clock.advance(4)
            assert await c.call(Get()) == 0
            await clock.advance(1)
            assert await c.call(Get()) == 2
            assert ("info", Add(2)) in Counter.logs["c"]


class TestStoreFailures:
    async def test_failed_append_reaches_caller_and_changes_nothing(self) -> None:
        """A store failure: the caller gets StoreError, the state is unchanged, the session lives."""
        store = MemoryStore()
        real_append = store.append
        failing = [False]

        async def append(
            session_id: str,
            expected_version: int,
            events: Sequence[EventData],
            *,
            status: Status | None = None,
            extras: AppendExtras | None = None,
        ) -> int:
            if failing[0]:
                raise OSError("disk full")
            return await real_append(session_id, expected_version, events, status=status, extras=extras)

        store.append = append  # type: ignore[method-assign]
        async with SessionSupervisor(store=store) as sessions:
            c = await sessions.start(Counter, "c")
            await c.call(Add(1))
            failing[0] = True
            with pytest.raises(StoreError, match="disk full"):
                await c.call(Add(10))
            assert await c.call(Get()) == 1
            failing[0] = False
            assert await c.call(Add(2)) == 3
            assert (await sessions.inspect("c")).restarts == 0


class TestRecovery:
    async def test_new_supervisor_on_the_same_store(self) -> None:
        """A later supervisor knows every stored session; the first message reactivates it."""
        store = MemoryStore()
        async with SessionSupervisor(store=store) as first:
            c = await first.start(Counter, "c", {"start": 100})
            for i in range(12):
                await c.call(Add(i))
        async with SessionSupervisor(store=store, session_types=[Counter]) as second:
            ref = await second.get("c")
            assert ref.status is Status.PASSIVATED
            assert await ref.call(Get()) == 100 + sum(range(12))
            assert (await second.get("c")).status is Status.RUNNING
            snapshot = await store.load_snapshot("c")
            assert snapshot is not None
            assert snapshot.version == 12  # the final snapshot written at shutdown

    async def test_unknown_session_type(self) -> None:
        """A stored session of a class the supervisor was not told about: a clear error."""
        store = MemoryStore()
        async with SessionSupervisor(store=store) as first:
            await first.start(Counter, "c")
        async with SessionSupervisor(store=store) as second:
            with pytest.raises(UnknownSessionType, match="session_types") as info:
                await second.get("c")
            assert (info.value.session_id, info.value.type_name) == ("c", "Counter")


class TestShutdown:
    async def test_drain_then_on_stop_once_and_no_task_left(self) -> None:
        """Leaving the block: queued messages finish, on_stop('shutdown') runs once each."""
        async with SessionSupervisor(drain_timeout=30) as sessions:
            refs = [await sessions.start(Counter, f"s{i}") for i in range(3)]
            for r in refs:
                await r.cast(Sleep(0.01))
                await r.cast(Add(5))
            done = await sessions.start(Counter, "done")
            await done.call(Complete())
        for r in refs:
            assert Counter.logs[r.id] == [("start", 0), ("stop", "shutdown")]
            events = await sessions.store.read(r.id)
            assert [e.data for e in events] == ['{"n":5}']
        assert Counter.logs["done"] == [("start", 0), ("stop", "completed")]
        assert (await sessions.stats()).active == 0

    async def test_new_work_is_refused(self) -> None:
        """After shutdown, start and messages raise ShuttingDown."""
        async with SessionSupervisor() as sessions:
            c = await sessions.start(Counter, "c")
        with pytest.raises(ShuttingDown):
            await sessions.start(Counter, "d")
        with pytest.raises(ShuttingDown):
            await c.call(Get())

    async def test_drain_timeout_cancels_and_still_runs_on_stop(self) -> None:
        """A handler stuck past the drain timeout is cancelled; on_stop still runs."""
        async with SessionSupervisor(drain_timeout=0.05) as sessions:
            c = await sessions.start(Counter, "c")
            await c.cast(Sleep(1000))
            await c.cast(Add(1))
            start = anyio.current_time()
        assert anyio.current_time() - start < 10
        assert Counter.logs["c"] == [("start", 0), ("stop", "shutdown")]
        assert await sessions.store.read("c") == []
        assert (await sessions.stats()).dead_letters == 1


class TestInspect:
    async def test_inspect_reports_the_session(self, sessions: SessionSupervisor) -> None:
        """inspect() shows status, state, version, restarts and mailbox depth."""
        c = await sessions.start(Counter, "c", {"start": 2}, metadata={"user": "ann"})
        await c.call(Add(3))
        view = await sessions.inspect("c")
        assert (view.id, view.type, view.status, view.state, view.version) == (
            "c",
            "Counter",
            Status.RUNNING,
            5,
            1,
        )
        assert (view.restarts, view.mailbox_depth) == (0, 0)

    async def test_list_and_stats(self, sessions: SessionSupervisor) -> None:
        """list() filters by status, type and metadata; stats() counts."""
        await sessions.start(Counter, "a", metadata={"ch": "x"})
        b = await sessions.start(Counter, "b", metadata={"ch": "y"})
        await b.call(Complete())
        assert [r.id for r in await sessions.list(metadata={"ch": "y"})] == ["b"]
        assert [r.id for r in await sessions.list(status=Status.RUNNING)] == ["a"]
        stats = await sessions.stats()
        assert stats.starts == 2
        assert dict(stats.store.by_status) == {"running": 1, "completed": 1}

    async def test_order_and_outcomes(self) -> None:
        """list() sorts newest first and by last change; stats() carries the store's outcomes per type,
        durations from creation to the end on the store's clock."""
        clock = ManualClock()
        async with SessionSupervisor(store=MemoryStore(clock=clock.now), restarts=NO_BACKOFF) as sessions:
            for name in ("a", "b", "c"):  # created at 0, 1 and 2
                await sessions.start(Counter, name)
                clock.jump(1)
            clock.jump(2)
            await (await sessions.get("a")).call(Add(1))
            await (await sessions.get("a")).call(Complete())  # at 5: 5 s after its start
            clock.jump(2)
            await (await sessions.get("b")).call(Fail("no"))  # at 7: 6 s after its start
            assert [r.id for r in await sessions.list(descending=True)] == ["c", "b", "a"]
            assert next(r.id for r in await sessions.list(order_by="updated_at")) == "c"
            outcome = (await sessions.stats()).outcomes["Counter"]
        assert (outcome.ended, outcome.completed, outcome.success_rate) == (2, 1, 0.5)
        assert dict(outcome.by_status) == {"completed": 1, "failed": 1, "running": 1}
        assert outcome.events_mean == 1.5  # a: Added and its status change; b: its status change
        assert (outcome.duration_mean, outcome.duration_p50, outcome.duration_p95) == (5.5, 5.0, 6.0)


class Broken(Session[dict[str, Any]]):
    """initial_state raises: every incarnation fails to recover."""

    def initial_state(self, args: Mapping[str, Any]) -> dict[str, Any]:
        raise KeyError("missing")


async def test_start_with_bad_args_leaves_nothing(sessions: SessionSupervisor) -> None:
    """initial_state raising fails start() itself, and nothing is stored."""
    with pytest.raises(KeyError):
        await sessions.start(Broken, "b")
    assert await sessions.store.get("b") is None
    assert sessions.cached("b") is None


class TestSessionIds:
    @pytest.mark.parametrize(
        ("sid", "problem"),
        [("", "empty"), ("x" * 257, "257 bytes"), ("a\x00b", "NUL"), ("\ud800", "lone surrogate")],
        ids=ascii,
    )
    async def test_bad_ids_fail_start_ref_and_get(
        self, sessions: SessionSupervisor, sid: str, problem: str
    ) -> None:
        """start, ref and get apply the stores' session-id rule: InvalidSessionId, nothing kept."""
        with pytest.raises(InvalidSessionId, match=problem):
            await sessions.start(Counter, sid)
        with pytest.raises(InvalidSessionId, match=problem):
            sessions.ref(sid)
        with pytest.raises(InvalidSessionId, match=problem):
            await sessions.get(sid)
        assert list(await sessions.store.list()) == []
        assert sessions.cells() == []

    async def test_ids_at_the_bound_work(self, sessions: SessionSupervisor) -> None:
        """The longest id, and ids with slashes and other scripts, are sessions like any other."""
        for sid in ("x" * 256, "a/b", "\u00e9t\u00e9 \U0001f600"):
            ref = await sessions.start(Counter, sid)
            await ref.call(Add(2))
            assert await sessions.ref(sid).call(Get()) == 2


async def test_session_types_is_a_read_only_view_of_the_known_classes() -> None:
    """``session_types()``: the classes given to the supervisor and those started since, by name."""
    async with SessionSupervisor(session_types=[Counter]) as sessions:
        types = sessions.session_types()
        assert dict(types) == {"Counter": Counter}
        await sessions.start(Alarm, "a")
        assert dict(types) == {"Counter": Counter, "Alarm": Alarm}
        with pytest.raises(TypeError):
            types["x"] = Counter  # type: ignore[index]
