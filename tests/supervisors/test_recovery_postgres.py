"""Recovery through a real PostgreSQL database: restarts, statuses, and two supervisors on one log.

The same checks as tests/supervisors/test_recovery_sqlite.py where they are cheap: every test writes
sessions through a ``SessionSupervisor`` on ``PostgresStore``, then opens the same schema again, as a
new process would, or runs two supervisors on it at once, as two nodes would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import anyio
import pytest

from runtime import PostgresStore, SessionRef, SessionStopped, Status, VersionConflict
from supervisors import SessionSupervisor
from tests.apps.recovery_app import Added, Finish, Ledger, Named, Put, Read, Tally, fold
from tests.pg import PgTarget

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _clear_journal() -> Iterator[None]:
    Ledger.journal.clear()
    yield
    Ledger.journal.clear()


def store(pg: PgTarget) -> PostgresStore:
    return PostgresStore(pg.dsn, schema=pg.schema)


def added(*ns: int) -> tuple[Added, ...]:
    return tuple(Added(n) for n in ns)


async def read(ref: SessionRef) -> tuple[int, Tally]:
    version, state = cast("tuple[int, Tally]", await ref.call(Read()))
    return version, state


class TestRoundTrip:
    async def test_new_supervisor_reactivates_sessions_with_their_state(self, pg: PgTarget) -> None:
        """Sessions written by one supervisor come back, state and version, under the next one."""
        expected: dict[str, tuple[int, Tally]] = {}
        async with SessionSupervisor(store=store(pg)) as first:
            for i in range(3):
                ref = await first.start(Ledger, f"s{i}", {"start": i * 100}, metadata={"i": i})
                evs: list[object] = []
                for k in range(i * 7):  # 0, 7 and 14 events: before and after snapshots
                    ev: object = Added(k) if k % 3 else Named(f"n{k}")
                    evs.append(ev)
                    await ref.call(Put((ev,)))
                expected[ref.id] = (len(evs), fold(evs, Tally(total=i * 100)))
        async with SessionSupervisor(store=store(pg), session_types=[Ledger]) as second:
            assert sorted(r.id for r in await second.list()) == sorted(expected)
            for sid, want in expected.items():
                ref = await second.get(sid)
                assert ref.status is Status.PASSIVATED
                assert await ref.call(Read()) == want
            version, state = expected["s2"]
            s2 = second.ref("s2")
            assert await s2.call(Put(added(1000))) == (version + 1, fold([Added(1000)], state))

    async def test_terminal_and_paused_statuses_survive_a_restart(self, pg: PgTarget) -> None:
        """A completed session stays completed and a paused one paused, in a new process."""
        async with SessionSupervisor(store=store(pg)) as first:
            done = await first.start(Ledger, "done")
            await done.call(Put(added(5)))
            assert await done.call(Finish()) == "finished"
            paused = await first.start(Ledger, "paused")
            await paused.call(Put(added(6)))
            await paused.pause("maintenance")
        async with SessionSupervisor(store=store(pg), session_types=[Ledger]) as second:
            done = await second.get("done")
            assert done.status is Status.COMPLETED
            with pytest.raises(SessionStopped, match="'done'"):
                await done.call(Read())
            paused = await second.get("paused")
            assert paused.status is Status.PAUSED
            await paused.resume()
            assert await paused.call(Read()) == (3, Tally(total=6, count=1))


class TestTwoWriters:
    async def test_stale_copy_gets_version_conflict_then_reloads(self, pg: PgTarget) -> None:
        """The stale supervisor's record fails with VersionConflict; its next message reloads the log."""
        async with (
            SessionSupervisor(store=store(pg), session_types=[Ledger]) as a,
            SessionSupervisor(store=store(pg), session_types=[Ledger]) as b,
        ):
            in_a = await a.start(Ledger, "s")
            assert await in_a.call(Put(added(1))) == (1, fold(added(1)))
            in_b = await b.get("s")
            assert await in_b.call(Put(added(2))) == (2, fold(added(1, 2)))
            with pytest.raises(VersionConflict) as info:
                await in_a.call(Put(added(100)))
            assert (info.value.expected, info.value.actual) == (1, 2)
            assert await in_a.call(Read()) == (2, fold(added(1, 2)))  # reloaded, without 100
            assert await in_a.call(Put(added(3))) == (3, fold(added(1, 2, 3)))

    async def test_racing_writers_never_fork_the_log(self, pg: PgTarget) -> None:
        """Two supervisors appending to one session at once: one linear log of every acknowledged event."""
        acked: list[int] = []
        async with (
            SessionSupervisor(store=store(pg), session_types=[Ledger]) as a,
            SessionSupervisor(store=store(pg), session_types=[Ledger]) as b,
        ):
            await a.start(Ledger, "s")
            refs = [await a.get("s"), await b.get("s")]

            async def writer(ref: SessionRef, n: int) -> None:
                while True:
                    try:
                        await ref.call(Put(added(n)), timeout=30)
                    except VersionConflict:
                        continue
                    acked.append(n)
                    return

            async with anyio.create_task_group() as tg:
                for n in range(1, 31):
                    tg.start_soon(writer, refs[n % 2], n)
        check = store(pg)
        await check.open()
        try:
            stored = [int(e.data[5:-1]) for e in await check.read("s")]
            assert [e.version for e in await check.read("s")] == list(range(1, 31))
        finally:
            await check.aclose()
        assert sorted(stored) == sorted(acked) == list(range(1, 31))
