"""Transition history, inspection and declared state machines."""

from __future__ import annotations

import json

import pytest

from runtime import HistoryConfig, InvalidTransition, SessionCrashed, Status
from supervisors import Backoff, RestartPolicy, SessionSupervisor
from tests.apps.counter import Add, Boom, Counter, Get
from tests.apps.lobby import Finished, Game, Lobby, Scored, Started

pytestmark = pytest.mark.anyio


class TestHistory:
    async def test_records_each_message(self) -> None:
        """Every message leaves a TransitionRecord: kind, type, statuses, events, error."""
        policy = RestartPolicy(backoff=Backoff(initial=0))
        async with SessionSupervisor(restarts=policy) as sessions:
            c = await sessions.start(Counter, "c")
            await c.call(Add(1))
            await c.cast(Add(2))
            with pytest.raises(SessionCrashed):
                await c.call(Boom("bad"))
            await c.call(Get())
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
            assert all(t.duration >= 0 for t in view.recent_transitions)
            exported = json.loads(await sessions.export_history("c"))
            assert exported["session_id"] == "c"
            assert [t["message_type"] for t in exported["transitions"]] == ["Add", "Add", "Boom", "Get"]

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
