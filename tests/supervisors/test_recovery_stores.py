"""Recovery through a real store, the same checks on each: SQLite files and PostgreSQL schemas.

Every test writes sessions through a ``SessionSupervisor``, then opens the same data again, as a new
process would, or runs two supervisors on it at once, as two nodes would. The PostgreSQL cases skip
(saying how to run them) without a server, and fail instead under ``SESSIONVISOR_REQUIRE_PG=1``. What
only SQLite can show (a file edited by hand, a failed commit) is in test_recovery_sqlite.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from runtime import (
    PostgresStore,
    SessionRef,
    SessionStopped,
    SQLiteStore,
    Status,
    StoredEvent,
    VersionConflict,
)
from runtime.abc import EventStore
from supervisors import SessionSupervisor
from tests.apps.recovery_app import Added, Finish, Ledger, Named, Put, Read, Tally, fold
from tests.pg import PgTarget

pytestmark = pytest.mark.anyio

StoreFactory = Callable[[], EventStore]
"""A new store on the same data each call: what a new process, or another node, would open."""


@pytest.fixture(params=["sqlite", "postgres"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    if request.param == "sqlite":
        path = tmp_path / "s.db"
        return lambda: SQLiteStore(path)
    pg: PgTarget = request.getfixturevalue("pg")  # skips (or fails, if required) without a server
    return lambda: PostgresStore(pg.dsn, schema=pg.schema)


async def stored(new_store: StoreFactory, sid: str) -> list[StoredEvent]:
    """Session ``sid``'s log, read through a store of its own after the supervisors have closed."""
    store = new_store()
    await store.open()
    try:
        return list(await store.read(sid))
    finally:
        await store.aclose()


def added(*ns: int) -> tuple[Added, ...]:
    return tuple(Added(n) for n in ns)


async def read(ref: SessionRef) -> tuple[int, Tally]:
    """The ledger's (version, state)."""
    answer = await ref.call(Read())
    assert isinstance(answer, tuple)
    version, state = answer
    return version, state


class TestRoundTrip:
    async def test_new_supervisor_reactivates_sessions_with_their_state(
        self, new_store: StoreFactory
    ) -> None:
        """Sessions written by one supervisor come back, state and version, under the next one."""
        expected: dict[str, tuple[int, Tally]] = {}
        async with SessionSupervisor(store=new_store()) as first:
            for i in range(4):
                ref = await first.start(Ledger, f"s{i}", {"start": i * 100}, metadata={"i": i})
                evs: list[object] = []
                for k in range(i * 7):  # 0, 7, 14 and 21 events: before and after snapshots
                    ev: object = Added(k) if k % 3 else Named(f"n{k}")
                    evs.append(ev)
                    await ref.call(Put((ev,)))
                expected[ref.id] = (len(evs), fold(evs, Tally(total=i * 100)))
                assert await ref.call(Read()) == expected[ref.id]
        async with SessionSupervisor(store=new_store(), session_types=[Ledger]) as second:
            assert sorted(r.id for r in await second.list()) == sorted(expected)
            for sid, want in expected.items():
                ref = await second.get(sid)
                assert ref.status is Status.PASSIVATED
                assert await ref.call(Read()) == want
                assert (await second.get(sid)).status is Status.RUNNING
            # The reactivated sessions carry on from there.
            s3 = second.ref("s3")
            version, state = expected["s3"]
            assert await s3.call(Put(added(1000))) == (version + 1, fold([Added(1000)], state))
            assert (await second.stats()).restarts == 0
        assert [e.version for e in await stored(new_store, "s3")] == list(range(1, version + 2))

    async def test_terminal_and_paused_statuses_survive_a_restart(self, new_store: StoreFactory) -> None:
        """A completed session stays completed and a paused one paused, in a new process."""
        async with SessionSupervisor(store=new_store()) as first:
            done = await first.start(Ledger, "done")
            await done.call(Put(added(5)))
            assert await done.call(Finish()) == "finished"
            paused = await first.start(Ledger, "paused")
            await paused.call(Put(added(6)))
            await paused.pause("maintenance")
        async with SessionSupervisor(store=new_store(), session_types=[Ledger]) as second:
            done = await second.get("done")
            assert done.status is Status.COMPLETED
            with pytest.raises(SessionStopped, match="'done'"):
                await done.call(Read())
            paused = await second.get("paused")
            assert paused.status is Status.PAUSED
            await paused.resume()
            assert await paused.call(Read()) == (3, Tally(total=6, count=1))


class TestTwoWriters:
    async def test_stale_copy_gets_version_conflict_then_reloads(self, new_store: StoreFactory) -> None:
        """The stale supervisor's record fails with VersionConflict; its next message reloads the log."""
        async with (
            SessionSupervisor(store=new_store(), session_types=[Ledger]) as a,
            SessionSupervisor(store=new_store(), session_types=[Ledger]) as b,
        ):
            in_a = await a.start(Ledger, "s")
            assert await in_a.call(Put(added(1))) == (1, fold(added(1)))
            in_b = await b.get("s")
            assert await in_b.call(Put(added(2))) == (2, fold(added(1, 2)))

            with pytest.raises(VersionConflict, match="'s'") as info:
                await in_a.call(Put(added(100)))
            assert (info.value.session_id, info.value.expected, info.value.actual) == ("s", 1, 2)
            assert await in_a.call(Read()) == (2, fold(added(1, 2)))  # reloaded, without 100
            assert await in_a.call(Put(added(3))) == (3, fold(added(1, 2, 3)))

            with pytest.raises(VersionConflict):
                await in_b.call(Put(added(200)))
            assert await in_b.call(Read()) == (3, fold(added(1, 2, 3)))
            for sessions in (a, b):
                stats = await sessions.stats()
                assert (stats.restarts, stats.quarantined) == (0, 0)
            assert in_a.status is in_b.status is Status.RUNNING
        log = await stored(new_store, "s")
        assert [(e.version, e.data) for e in log] == [(1, '{"n":1}'), (2, '{"n":2}'), (3, '{"n":3}')]

    async def test_racing_writers_never_fork_the_log(self, new_store: StoreFactory) -> None:
        """Two supervisors appending to one session at once: one linear log of every acknowledged event."""
        acked: list[int] = []
        conflicts = 0
        async with (
            SessionSupervisor(store=new_store(), session_types=[Ledger]) as a,
            SessionSupervisor(store=new_store(), session_types=[Ledger]) as b,
        ):
            await a.start(Ledger, "s")
            refs = [await a.get("s"), await b.get("s")]

            async def writer(ref: SessionRef, n: int) -> None:
                nonlocal conflicts
                while True:
                    try:
                        await ref.call(Put(added(n)), timeout=30)
                    except VersionConflict:
                        conflicts += 1
                        continue
                    acked.append(n)
                    return

            async with anyio.create_task_group() as tg:
                for n in range(1, 41):
                    tg.start_soon(writer, refs[n % 2], n)
            for ref in refs:
                version, state = await read(ref)
                if version < 40:  # this copy is stale: its next record would fail, then reload
                    with pytest.raises(VersionConflict):
                        await ref.call(Put(added(0)))
                    version, state = await read(ref)
                assert version == 40
                assert state.total == sum(range(1, 41))
        assert conflicts > 0
        log = await stored(new_store, "s")
        assert [e.version for e in log] == list(range(1, 41))
        assert sorted(int(e.data[5:-1]) for e in log) == sorted(acked) == list(range(1, 41))

    async def test_stale_incarnation_is_stopped_before_the_reload(self, new_store: StoreFactory) -> None:
        """The stale copy's on_stop runs once, before the reloaded incarnation's on_start."""
        async with (
            SessionSupervisor(store=new_store(), session_types=[Ledger]) as a,
            SessionSupervisor(store=new_store(), session_types=[Ledger]) as b,
        ):
            in_a = await a.start(Ledger, "s")
            await in_a.call(Put(added(1)))
            await (await b.get("s")).call(Put(added(2)))
            with pytest.raises(VersionConflict):
                await in_a.call(Put(added(3)))
            await in_a.call(Read())
            journal = [(what, detail) for sid, what, detail in Ledger.journal if sid == "s"]
            # a starts, b starts, a's stale copy stops, a's reloaded copy starts
            assert [what for what, _ in journal] == ["start", "start", "stop", "start"]
