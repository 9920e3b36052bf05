"""Exact restarts (issue 13): a restart rebuilds an equal state of the same types, or refuses loudly.

Every shape runs through a graceful stop and a new supervisor on the same SQLite file, and through
passivation. A shape whose snapshots round-trip comes back from its snapshot (checked: the snapshot
is there, and replaying from it alone gives the same state); one that cannot is refused snapshots
(one error naming the class and the path, counted in the metrics) and comes back from its log.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from runtime import (
    Session,
    SessionRef,
    Snapshot,
    SQLiteStore,
    Status,
    UnencodableValue,
    default_registry,
    replay,
)
from runtime._exact import first_difference
from runtime.testing import ManualClock
from supervisors import ReaperPolicy, SessionSupervisor
from tests.apps.shapes import (
    EXACT,
    REFUSED,
    Get,
    NeverSnapshots,
    Set,
    Step,
    UndeclaredEventList,
    Values,
)
from tests.realtime import wait_real

pytestmark = pytest.mark.anyio

STEPS = 3
SHAPES: list[Any] = [*EXACT, *REFUSED]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def refusals(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.ERROR, logger="runtime._exact"):
        yield caplog


def snapshot_rows(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM snapshots").fetchone()
    return int(count)


def inexact_count(sessions: SessionSupervisor) -> float:
    value = sessions.registry.get_sample_value("sessionvisor_snapshot_failures_total", {"stage": "inexact"})
    return value or 0.0


async def passivated(ref: SessionRef) -> None:
    """Wait until ``ref`` is passivated: its snapshot and index update go through the store's thread."""
    await wait_real(lambda: ref.status is Status.PASSIVATED, f"{ref.id} to passivate")


async def state_of(ref: Any) -> object:
    return await ref.call(Get())


async def fill(sessions: SessionSupervisor, cls: type[Session[Any]]) -> object:
    ref = await sessions.start(cls, "s")
    for n in range(1, STEPS + 1):
        await ref.call(Step(n))
    return await state_of(ref)


async def check_restart(
    cls: type[Session[Any]],
    before: object,
    after: object,
    store: SQLiteStore,
    refusals: pytest.LogCaptureFixture,
) -> None:
    assert first_difference(before, after) is None, (before, after)
    snapshot = await store.load_snapshot("s")
    record = await store.get("s")
    assert record is not None
    if cls in REFUSED:
        assert snapshot is None
        (logged,) = [r for r in refusals.records if "are refused" in r.getMessage()]
        assert f"snapshots of {cls.__name__} are refused" in logged.getMessage()
        assert f"at {REFUSED[cls]}:" in logged.getMessage()
    else:
        assert snapshot is not None
        assert snapshot.version == STEPS
        assert not refusals.records
        # The state really came back from the snapshot: replaying from it alone gives it too.
        done = await replay(store, record, cls(), default_registry, to_version=STEPS)
        assert (done.snapshot_version, done.replayed) == (STEPS, 0)
        assert first_difference(before, done.state) is None


class TestThroughANewSupervisor:
    @pytest.mark.parametrize("cls", SHAPES, ids=lambda c: c.__name__)
    async def test_graceful_stop_then_new_supervisor(
        self, cls: type[Session[Any]], db: Path, refusals: pytest.LogCaptureFixture
    ) -> None:
        async with SessionSupervisor(store=SQLiteStore(db), session_types=[cls]) as first:
            before = await fill(first, cls)
            refused_before = inexact_count(first)
        assert refused_before == 0  # nothing refused before the shutdown snapshot
        store = SQLiteStore(db)
        async with SessionSupervisor(store=store, session_types=[cls]) as second:
            after = await state_of(await second.get("s"))
            await check_restart(cls, before, after, store, refusals)


class TestThroughPassivation:
    @pytest.mark.parametrize("cls", SHAPES, ids=lambda c: c.__name__)
    async def test_passivate_then_reactivate(
        self, cls: type[Session[Any]], db: Path, refusals: pytest.LogCaptureFixture
    ) -> None:
        clock = ManualClock()
        store = SQLiteStore(db)
        policy = ReaperPolicy(idle_timeout=10)
        async with SessionSupervisor(
            store=store, session_types=[cls], clock=clock, reaper=policy
        ) as sessions:
            before = await fill(sessions, cls)
            ref = await sessions.get("s")
            await clock.advance(11)
            await passivated(ref)
            after = await state_of(ref)
            await check_restart(cls, before, after, store, refusals)
            assert inexact_count(sessions) == (1 if cls in REFUSED else 0)


class TestNeverSnapshot:
    """``snapshot_every = None`` means no snapshot row, ever: a later recovery replays the whole log."""

    async def test_no_snapshot_on_graceful_stop(self, db: Path) -> None:
        async with SessionSupervisor(store=SQLiteStore(db), session_types=[NeverSnapshots]) as first:
            before = await fill(first, NeverSnapshots)
        assert snapshot_rows(db) == 0
        store = SQLiteStore(db)
        async with SessionSupervisor(store=store, session_types=[NeverSnapshots]) as second:
            assert first_difference(before, await state_of(await second.get("s"))) is None
            record = await store.get("s")
            assert record is not None
            done = await replay(store, record, NeverSnapshots(), default_registry)
            assert (done.snapshot_version, done.replayed) == (0, STEPS)
        assert snapshot_rows(db) == 0

    async def test_no_snapshot_on_passivation(self, db: Path) -> None:
        clock = ManualClock()
        policy = ReaperPolicy(idle_timeout=10)
        store = SQLiteStore(db)
        async with SessionSupervisor(
            store=store, session_types=[NeverSnapshots], clock=clock, reaper=policy
        ) as sessions:
            before = await fill(sessions, NeverSnapshots)
            ref = await sessions.get("s")
            await clock.advance(11)
            await passivated(ref)
            assert snapshot_rows(db) == 0
            assert first_difference(before, await state_of(ref)) is None  # replayed on reactivation
            assert inexact_count(sessions) == 0  # not a failure: none was wanted


class TestRefusal:
    async def test_a_refused_class_ignores_snapshots_already_stored(self, db: Path) -> None:
        """Once refused, a class recovers from logs only: a snapshot from an earlier version is not used."""
        async with SessionSupervisor(store=SQLiteStore(db), session_types=[UndeclaredEventList]) as first:
            before = await fill(first, UndeclaredEventList)
        store = SQLiteStore(db)
        clock = ManualClock()
        policy = ReaperPolicy(idle_timeout=10)
        async with SessionSupervisor(
            store=store, session_types=[UndeclaredEventList], clock=clock, reaper=policy
        ) as second:
            # What an earlier version wrote for "s": its list of events as a list of dicts.
            await store.save_snapshot(Snapshot("s", STEPS, 1, '[{"player":"p1","points":1}]', 0.0))
            other = await second.start(UndeclaredEventList, "other")
            await other.call(Step(1))
            await clock.advance(11)  # "other" passivates: its snapshot is refused, so is the class
            await passivated(other)
            assert inexact_count(second) == 1
            after = await state_of(await second.get("s"))
        assert first_difference(before, after) is None

    @pytest.mark.parametrize("parser", ["orjson", "stdlib"])
    @pytest.mark.parametrize("value", [2**64 + 1, -(2**63) - 1, float("nan"), float("-inf")], ids=repr)
    async def test_unencodable_values_are_refused_and_nothing_recorded(
        self, db: Path, monkeypatch: pytest.MonkeyPatch, parser: str, value: float
    ) -> None:
        """Issue 17: refused by field at record time, with or without orjson; the session carries on."""
        import runtime._events as events_module

        if parser == "orjson":
            monkeypatch.setattr(events_module, "_loads", pytest.importorskip("orjson").loads)
        else:
            monkeypatch.setattr(events_module, "_loads", events_module._stdlib_loads)
        store = SQLiteStore(db)
        async with SessionSupervisor(store=store, session_types=[Values]) as sessions:
            ref = await sessions.start(Values, "s")
            await ref.call(Set("edge", 2**64 - 1))
            with pytest.raises(UnencodableValue, match=r"^session 's': shapes\.Set\.value = ") as info:
                await ref.call(Set("x", value))
            assert (info.value.path, info.value.session_id) == ("shapes.Set.value", "s")
            assert [e.version for e in await store.read("s")] == [1]
            assert await state_of(ref) == {"edge": 2**64 - 1}
            assert ref.status is Status.RUNNING
        async with SessionSupervisor(store=SQLiteStore(db), session_types=[Values]) as again:
            restored = await state_of(await again.get("s"))
            assert restored == {"edge": 2**64 - 1}  # the edge of the range comes back exactly
            assert first_difference({"edge": 2**64 - 1}, restored) is None

    @pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
    @pytest.mark.parametrize(
        ("args", "metadata", "path"),
        [
            ({"limit": float("nan")}, None, "args['limit']"),
            ({"big": [1, 2**64]}, None, "args['big'][1]"),
            (None, {"channel": float("inf")}, "metadata['channel']"),
        ],
        ids=["nan-arg", "big-int-arg", "inf-metadata"],
    )
    async def test_unencodable_start_arguments_are_refused_and_nothing_kept(
        self,
        db: Path,
        store_kind: str,
        args: dict[str, object] | None,
        metadata: dict[str, object] | None,
        path: str,
    ) -> None:
        """Issue 17: args and metadata are stored as standard JSON, so a start with NaN is refused."""
        store = SQLiteStore(db) if store_kind == "sqlite" else None
        async with SessionSupervisor(store=store, session_types=[Values]) as sessions:
            with pytest.raises(UnencodableValue, match=r"^session 's': ") as info:
                await sessions.start(Values, "s", args=args, metadata=metadata)
            assert (info.value.path, info.value.session_id) == (path, "s")
            assert await sessions.store.get("s") is None
            assert sessions.cached("s") is None
            await sessions.start(Values, "s")  # the id was not taken
