"""Calls a client may retry: ref.call(message, idempotency_key=...), on every store."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from runtime import (
    MemoryStore,
    Session,
    SessionCrashed,
    SQLiteStore,
    UnstorableReply,
    event,
)
from runtime._stores.postgres import PostgresStore
from runtime.abc import EventStore
from supervisors import SessionSupervisor
from tests.pg import PgTarget

pytestmark = pytest.mark.anyio


@event(name="idem.Added")
class Added:
    n: int


class Tally(Session[int]):
    type_name = "idem.Tally"
    runs: ClassVar[list[object]] = []
    idempotency_keys_kept = 3

    def initial_state(self, args: Mapping[str, Any]) -> int:
        return 0

    def apply(self, state: int, event: object) -> int:
        assert isinstance(event, Added)
        return state + event.n

    async def handle_call(self, message: object) -> object:
        Tally.runs.append(message)
        match message:
            case ("add", int(n)):
                await self.record(Added(n))
                await self.record(Added(n))
                return {"total": self.state, "seen": self.state}
            case ("add_then_crash", int(n)):
                await self.record(Added(n))
                raise RuntimeError("after recording")
            case "get":
                return self.state
            case ("unstorable", bad):
                await self.record(Added(1))
                return {"ok": [1], "bad": [0, bad]}
        raise ValueError(message)


def _reopen(request: pytest.FixtureRequest, tmp_path: Path, store: EventStore) -> EventStore:
    """A new store object on the same data (a new process would open one)."""
    if isinstance(store, MemoryStore):
        return store
    if isinstance(store, SQLiteStore):
        return SQLiteStore(tmp_path / "s.db")
    target: PgTarget = request.getfixturevalue("pg")
    return PostgresStore(target.dsn, schema=target.schema)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> EventStore:
    Tally.runs.clear()
    if request.param == "memory":
        return MemoryStore()
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "s.db")
    target: PgTarget = request.getfixturevalue("pg")  # skips (or fails under REQUIRE_PG) without one
    return PostgresStore(target.dsn, schema=target.schema)


async def test_same_key_returns_the_stored_reply(store: EventStore) -> None:
    """A second call with the key gets the first reply; the handler ran once, events kept once."""
    async with SessionSupervisor(store=store, session_types=[Tally]) as sessions:
        t = await sessions.start(Tally, "t")
        first = await t.call(("add", 5), idempotency_key="k1")
        assert first == {"total": 10, "seen": 10}
        assert await t.call(("add", 5), idempotency_key="k1") == first
        assert await t.call("get") == 10
        assert len(Tally.runs) == 2
        assert await t.call(("add", 1), idempotency_key="k2") == {"total": 12, "seen": 12}
        assert [e.type for e in await sessions.store.read("t")] == ["idem.Added"] * 4


async def test_survives_a_restart(store: EventStore, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The key and reply are durable: a new supervisor on the same store answers from them."""
    async with SessionSupervisor(store=store, session_types=[Tally]) as sessions:
        t = await sessions.start(Tally, "t")
        await t.call(("add", 2), idempotency_key="move-7")
    again = _reopen(request, tmp_path, store)
    Tally.runs.clear()
    async with SessionSupervisor(store=again, session_types=[Tally]) as sessions:
        t = await sessions.get("t")
        assert await t.call(("add", 2), idempotency_key="move-7") == {"total": 4, "seen": 4}
        assert Tally.runs == []
        assert await t.call("get") == 4


async def test_a_crash_keeps_nothing_of_the_call(store: EventStore) -> None:
    """Events recorded by an idempotent call that then raises are not kept; a retry runs again."""
    async with SessionSupervisor(store=store, session_types=[Tally]) as sessions:
        t = await sessions.start(Tally, "t")
        with pytest.raises(SessionCrashed):
            await t.call(("add_then_crash", 3), idempotency_key="k")
        assert await t.call("get") == 0
        assert list(await sessions.store.read("t")) == []
        assert await t.call(("add", 3), idempotency_key="k") == {"total": 6, "seen": 6}


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), 2**64 + 1, -(2**63) - 1])
async def test_unstorable_reply_is_named_and_keeps_nothing(store: EventStore, bad: object) -> None:
    """A reply the codec would not give back exactly is refused, naming the field; nothing kept."""
    async with SessionSupervisor(store=store, session_types=[Tally]) as sessions:
        t = await sessions.start(Tally, "t")
        with pytest.raises(UnstorableReply) as info:
            await t.call(("unstorable", bad), idempotency_key="k")
        assert info.value.field == "reply['bad'][1]"
        assert info.value.session_id == "t"
        assert await t.call("get") == 0
        assert list(await sessions.store.read("t")) == []
        assert await sessions.store.load_reply("t", "k") is None


async def test_reply_at_the_edges_of_the_exact_range(store: EventStore) -> None:
    """The largest integers the codec keeps exactly are stored and come back as they were."""
    async with SessionSupervisor(store=store, session_types=[Tally]) as sessions:
        t = await sessions.start(Tally, "t")
        edges = {"ok": [1], "bad": [0, 2**64 - 1]}
        assert await t.call(("unstorable", 2**64 - 1), idempotency_key="k") == edges
        assert await t.call(("unstorable", 0), idempotency_key="k") == edges
        assert await sessions.store.load_reply("t", "k") is not None


async def test_keys_expire_beyond_the_bound(store: EventStore) -> None:
    """Only the newest idempotency_keys_kept keys are kept: an older key runs the handler again."""
    async with SessionSupervisor(store=store, session_types=[Tally]) as sessions:
        t = await sessions.start(Tally, "t")
        for i in range(4):
            await t.call(("add", 1), idempotency_key=f"k{i}")
        assert await t.call(("add", 1), idempotency_key="k3") == {"total": 8, "seen": 8}
        assert await t.call(("add", 1), idempotency_key="k0") == {"total": 10, "seen": 10}


async def test_bad_key(store: EventStore) -> None:
    async with SessionSupervisor(store=store, session_types=[Tally]) as sessions:
        t = await sessions.start(Tally, "t")
        with pytest.raises(ValueError, match="idempotency_key"):
            await t.call("get", idempotency_key="")
