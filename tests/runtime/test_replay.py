"""``replay``: a session's state rebuilt from a store (snapshot, then the log's tail), checked as it goes.

Driven on a ``MemoryStore`` filled by hand, so that each case writes exactly the log it is about.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs
import pytest

from runtime import (
    CorruptEventLog,
    MemoryStore,
    RecoveryFailed,
    SessionRecord,
    Snapshot,
    default_registry,
    replay,
)
from tests.apps.recovery_app import Added, Ledger, Named, Tally, fold

pytestmark = pytest.mark.anyio


class LedgerV2(Ledger):
    """The same session type with a new state version: snapshots of the old one are not used."""

    state_version = 2


class Refusing(Ledger):
    """A ledger whose ``initial_state`` cannot be made."""

    def initial_state(self, args: Mapping[str, Any]) -> Tally:
        raise KeyError("start")


async def store_with(*events: object, args: Mapping[str, Any] | None = None) -> MemoryStore:
    """A store holding session ``s`` (a Ledger) whose log is ``events``."""
    store = MemoryStore()
    await store.open()
    await store.create(SessionRecord(id="s", type="Ledger", args=args or {}))
    if events:
        await store.append("s", 0, [default_registry.encode(e) for e in events])
    return store


async def snapshot(store: MemoryStore, version: int, state: Tally, state_version: int = 1) -> None:
    data = json.dumps(attrs.asdict(state))
    await store.save_snapshot(Snapshot("s", version, state_version, data))


async def record(store: MemoryStore) -> SessionRecord:
    got = await store.get("s")
    assert got is not None
    return got


EVENTS = (Added(1), Named("a"), Added(2), Added(3), Named("b"))


class TestFold:
    async def test_whole_log(self) -> None:
        store = await store_with(*EVENTS, args={"start": 100})
        done = await replay(store, await record(store), Ledger(), default_registry)
        assert done.state == fold(EVENTS, Tally(total=100))
        assert (done.version, done.replayed, done.snapshot_version, done.snapshot_rejected) == (5, 5, 0, None)
        assert done.record == await record(store)

    async def test_empty_log_is_the_initial_state(self) -> None:
        store = await store_with(args={"start": 7})
        done = await replay(store, await record(store), Ledger(), default_registry)
        assert (done.state, done.version, done.replayed) == (Tally(total=7), 0, 0)

    async def test_snapshot_then_tail(self) -> None:
        """The snapshot's state is taken as it is (a marked one shows it), then the events after it."""
        store = await store_with(*EVENTS)
        marked = attrs.evolve(fold(EVENTS[:3]), total=1000)
        await snapshot(store, 3, marked)
        done = await replay(store, await record(store), Ledger(), default_registry)
        assert done.state == fold(EVENTS[3:], marked)
        assert (done.version, done.replayed, done.snapshot_version) == (5, 2, 3)

    async def test_without_the_snapshot_reads_everything(self) -> None:
        store = await store_with(*EVENTS)
        await snapshot(store, 3, fold(EVENTS[:3]))
        done = await replay(store, await record(store), Ledger(), default_registry, use_snapshot=False)
        assert (done.state, done.replayed, done.snapshot_version) == (fold(EVENTS), 5, 0)

    @pytest.mark.parametrize("to_version", [0, 2, 3, 4, 5])
    async def test_to_version_stops_there(self, to_version: int) -> None:
        """``to_version`` folds exactly that prefix; a snapshot beyond it is not used."""
        store = await store_with(*EVENTS)
        await snapshot(store, 3, fold(EVENTS[:3]))
        done = await replay(store, await record(store), Ledger(), default_registry, to_version=to_version)
        assert (done.state, done.version) == (fold(EVENTS[:to_version]), to_version)
        assert done.snapshot_version == (3 if to_version >= 3 else 0)


class TestSnapshotNotUsed:
    async def test_other_state_version(self) -> None:
        store = await store_with(*EVENTS)
        await snapshot(store, 3, Tally(total=999), state_version=1)
        done = await replay(store, await record(store), LedgerV2(), default_registry)
        assert (done.state, done.replayed, done.snapshot_rejected) == (fold(EVENTS), 5, "state_version")

    async def test_undecodable(self) -> None:
        store = await store_with(*EVENTS)
        await store.save_snapshot(Snapshot("s", 3, 1, '{"total": "not a number"'))
        done = await replay(store, await record(store), Ledger(), default_registry)
        assert (done.state, done.replayed, done.snapshot_rejected) == (fold(EVENTS), 5, "decode")


class TestRefused:
    async def test_not_in_the_index(self) -> None:
        store = await store_with(*EVENTS)
        gone = await record(store)
        await store.delete("s")
        with pytest.raises(CorruptEventLog, match="no longer in the store's index") as info:
            await replay(store, gone, Ledger(), default_registry)
        assert (info.value.session_id, info.value.version) == ("s", 0)

    async def test_initial_state_raises(self) -> None:
        store = await store_with(*EVENTS)
        with pytest.raises(RecoveryFailed) as info:
            await replay(store, await record(store), Refusing(), default_registry)
        assert (info.value.session_id, info.value.version) == ("s", 0)
        assert isinstance(info.value.__cause__, KeyError)

    async def test_apply_raises_at_its_version(self) -> None:
        """``Ledger.apply`` refuses a negative amount: the error names the event's version."""
        store = await store_with(Added(1), Added(-5), Added(2))
        with pytest.raises(RecoveryFailed) as info:
            await replay(store, await record(store), Ledger(), default_registry)
        assert (info.value.session_id, info.value.version) == ("s", 2)
        assert isinstance(info.value.__cause__, ValueError)

    async def test_snapshot_beyond_the_log(self) -> None:
        store = await store_with(*EVENTS)
        await snapshot(store, 9, fold(EVENTS))
        with pytest.raises(CorruptEventLog, match=r"snapshot is at version 9, beyond the last event \(5\)"):
            await replay(store, await record(store), Ledger(), default_registry)
