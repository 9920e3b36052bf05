"""Transition history, inspection and declared state machines."""

from __future__ import annotations

import gc
import json
import time

import anyio
import pytest

from runtime import (
    Health,
    HealthThresholds,
    HistoryConfig,
    InvalidTransition,
    SessionCrashed,
    Status,
)
from runtime.testing import ManualClock
from supervisors import Backoff, ReaperPolicy, RestartPolicy, SessionSupervisor
from tests.apps.counter import Add, Boom, Counter, Get, WaitFor
from tests.apps.lobby import Finished, Game, Lobby, Scored, Started

pytestmark = pytest.mark.anyio


class TestHistory:
    async def test_records_each_message(self) -> None:
        """Every message leaves a TransitionRecord: kind, type, statuses, events, error."""
        policy = RestartPolicy(backoff=Backoff(initial=0))
        async with SessionSupervisor(restarts=policy) as sessions:
            c = await sessions.start(Counter, "c")
            window_start = time.perf_counter()
            await c.call(Add(1))
            await c.cast(Add(2))
            with pytest.raises(SessionCrashed):
                await c.call(Boom("bad"))
            await c.call(Get())
            window = time.perf_counter() - window_start
            view = await sessions.inspect("c")
            kinds = [(t.kind, t.message_type, t.events, t.error) for t in view.recent_transitions]
            assert kinds == [
                ("call", "Add", 1, None),
                ("cast", "Add", 1, None),
                ("call", "Boom", 0, "RuntimeError: bad"),
                ("call", "Get", 0, None),
            ]
            assert [t.sequence for t in view.recent_transitions] == [1, 2, 3, 4]
            assert all(t.status_before is Status.RUNNING for t in view.recent_transitions)
            # Real time spent in the handler (perf_counter), so each is within the window around them.
            assert all(0 < t.duration for t in view.recent_transitions)
            assert sum(t.duration for t in view.recent_transitions) <= window
            assert all(abs(t.wall_time - time.time()) < 60 for t in view.recent_transitions)
            walls = [t.wall_time for t in view.recent_transitions]
            assert walls == sorted(walls)
            exported = json.loads(await sessions.export_history("c"))
            assert exported["session_id"] == "c"
            assert [t["message_type"] for t in exported["transitions"]] == ["Add", "Add", "Boom", "Get"]

    async def test_kept_out_of_the_garbage_collectors_way(self) -> None:
        """A session keeps its history as tuples of strings and numbers, which the collector stops
        tracking: 50 per session, for every session, would otherwise be walked by each full pass."""
        async with SessionSupervisor() as sessions:
            c = await sessions.start(Counter, "c")
            await c.call(Add(1))
            await c.cast(Add(2))
            await c.call(Get())
            history = sessions.cached("c").history  # type: ignore[union-attr]
            assert history is not None
            assert len(history) == 3
            gc.collect()
            assert not any(gc.is_tracked(entry) for entry in history)

    async def test_ring_buffer_is_bounded(self) -> None:
        """Only the last max_transitions are kept."""
        async with SessionSupervisor(history=HistoryConfig(max_transitions=3)) as sessions:
            c = await sessions.start(Counter, "c")
            for i in range(10):
                await c.call(Add(i))
            view = await sessions.inspect("c")
            assert [t.sequence for t in view.recent_transitions] == [8, 9, 10]

    async def test_disabled(self) -> None:
        async with SessionSupervisor(history=HistoryConfig(enabled=False)) as sessions:
            c = await sessions.start(Counter, "c")
            await c.call(Add(1))
            assert (await sessions.inspect("c")).recent_transitions == ()


class TestStateMachine:
    async def test_allowed_path_and_labels(self) -> None:
        """Allowed events move the label; history shows label before and after."""
        async with SessionSupervisor() as sessions:
            g = await sessions.start(Lobby, "g")
            await g.call(Started())
            await g.call(Scored(3))
            assert await g.call(Finished()) == Game("finished", 3)
            view = await sessions.inspect("g")
            labels = [(t.label_before, t.label_after) for t in view.recent_transitions]
            assert labels == [("lobby", "playing"), ("playing", "playing"), ("playing", "finished")]
            assert view.possible_transitions == ()

    async def test_invalid_transition_reaches_caller_and_records_nothing(self) -> None:
        """A disallowed event: the caller gets InvalidTransition, nothing stored, no crash."""
        async with SessionSupervisor() as sessions:
            g = await sessions.start(Lobby, "g")
            with pytest.raises(InvalidTransition, match=r"'lobby.Scored' while 'lobby'") as info:
                await g.call(Scored(1))
            assert info.value.allowed == ("lobby.Started",)
            assert await sessions.store.read("g") == []
            view = await sessions.inspect("g")
            assert view.restarts == 0
            assert view.possible_transitions == ("lobby.Started",)
            assert await g.call(Started()) == Game("playing", 0)


class TestInspectAndFind:
    async def test_inspect_does_not_activate_a_passivated_session(self) -> None:
        """A passivated session's state is rebuilt read-only: no task, no on_start."""
        clock = ManualClock()
        async with SessionSupervisor(clock=clock, reaper=ReaperPolicy(idle_timeout=10)) as sessions:
            c = await sessions.start(Counter, "c")
            await c.call(Add(4))
            await clock.advance(11)
            view = await sessions.inspect("c")
            assert (view.status, view.active, view.state, view.version) == (
                Status.PASSIVATED,
                False,
                4,
                1,
            )
            assert sessions.active_count == 0

    async def test_health(self) -> None:
        """stale after stale_after idle, error-prone after restarts, stuck behind a long turn."""
        clock = ManualClock()
        thresholds = HealthThresholds(
            stale_after=100, stuck_after=10, error_prone_restarts=2, error_prone_within=60
        )
        policy = RestartPolicy(backoff=Backoff(initial=0))
        async with SessionSupervisor(clock=clock, health=thresholds, restarts=policy) as sessions:
            c = await sessions.start(Counter, "c")
            assert (await sessions.inspect("c")).health is Health.HEALTHY
            await clock.advance(101)
            assert (await sessions.inspect("c")).health is Health.STALE
            for _ in range(2):
                with pytest.raises(SessionCrashed):
                    await c.call(Boom())
            assert (await sessions.inspect("c")).health is Health.ERROR_PRONE
            await clock.advance(61)
            assert (await sessions.inspect("c")).health is Health.HEALTHY
            gate = anyio.Event()
            await c.cast(WaitFor(gate))
            await c.cast(Add(1))
            await anyio.wait_all_tasks_blocked()  # the long turn has begun
            await clock.advance(11)
            assert (await sessions.inspect("c")).health is Health.STUCK
            gate.set()
            assert await c.call(Get()) == 1
            assert (await sessions.inspect("c")).health is Health.HEALTHY

    async def test_find_and_debug_dump(self) -> None:
        async with SessionSupervisor() as sessions:
            a = await sessions.start(Lobby, "a")
            await sessions.start(Lobby, "b")
            await a.call(Started())
            await sessions.start(Counter, "c")
            await (await sessions.get("c")).stop()
            assert [r.id for r in sessions.find(label="playing")] == ["a"]
            assert [r.id for r in sessions.find(status=Status.STOPPED)] == ["c"]
            assert [r.id for r in sessions.find(where=lambda v: v.type == "Lobby")] == ["a", "b"]
            dump = await sessions.debug_dump()
            json.dumps(dump)  # JSON-able
            assert dump["sessions"]["by_status"] == {"running": 2, "stopped": 1}
            assert dump["sessions"]["by_type"] == {"Lobby": 2, "Counter": 1}
            assert dump["store"]["sessions"] == 3
            assert {s["id"] for s in dump["summaries"]} == {"a", "b", "c"}
