"""PostgresStore's leases (runtime.abc.LeaseStore): one owner per session, fencing, renewal, takeover.

Each store joins as a node of its own, as separate processes would; the real-process tests of nodes
live with the supervisor. Leases are expired by moving their expiry into the past with SQL rather than
by waiting, so that nothing here depends on timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import psycopg
import pytest

from runtime import (
    EventData,
    Lease,
    NodeInfo,
    OwnedElsewhere,
    Ownership,
    OwnershipLost,
    PostgresStore,
    Reminder,
    Renewal,
    SessionRecord,
    Snapshot,
    Status,
    StoreError,
    VersionConflict,
)
from runtime.abc import LeaseStore
from runtime.testing import ManualClock
from tests.pg import PgTarget

pytestmark = pytest.mark.anyio


def ev(n: int) -> EventData:
    return EventData("Counted", 1, f'{{"n":{n}}}')


@contextmanager
def sql(pg: PgTarget) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    from psycopg import sql as q

    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(q.SQL("SET search_path TO {}").format(q.Identifier(pg.schema)))
        yield conn


def expire(pg: PgTarget, node: str) -> None:
    """As if ``node`` had stopped renewing long ago: its leases and heartbeat are in the past."""
    with sql(pg) as conn:
        conn.execute("UPDATE leases SET expires = expires - 3600 WHERE node = %s", (node,))
        conn.execute("UPDATE nodes SET heartbeat = heartbeat - 3600 WHERE name = %s", (node,))


@asynccontextmanager
async def node(pg: PgTarget, name: str, address: str | None = None) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg.dsn, schema=pg.schema)
    await store.open()
    try:
        await store.join(name, address=address, lease_ttl=10.0)
        yield store
    finally:
        await store.aclose()


class TestLeases:
    async def test_store_is_a_lease_store(self, pg: PgTarget) -> None:
        """PostgresStore implements the LeaseStore protocol."""
        async with node(pg, "a") as a:
            assert isinstance(a, LeaseStore)

    async def test_one_owner_and_where_it_is(self, pg: PgTarget) -> None:
        """The first node to acquire owns the session; the other gets OwnedElsewhere with its address."""
        async with node(pg, "a", "10.0.0.1:7000") as a, node(pg, "b") as b:
            lease = await a.acquire("s")
            assert (lease.node, lease.epoch) == ("a", 1)
            with pytest.raises(OwnedElsewhere) as info:
                await b.acquire("s")
            assert (info.value.node, info.value.address) == ("a", "10.0.0.1:7000")
            located = await b.locate("s")
            assert located is not None
            assert (located.node, located.address, located.epoch) == ("a", "10.0.0.1:7000", 1)
            assert await b.locate("nobody") is None

    async def test_release_lets_another_node_in_with_a_new_epoch(self, pg: PgTarget) -> None:
        """A released lease is free at once; the next owner's epoch is higher."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            await a.acquire("s")
            await a.release("s")
            assert await a.locate("s") is None
            lease = await b.acquire("s")
            assert (lease.node, lease.epoch) == ("b", 2)

    async def test_expired_lease_is_taken_over(self, pg: PgTarget) -> None:
        """A lease not renewed in time goes to the next node that asks."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            await a.acquire("s")
            expire(pg, "a")
            assert await b.locate("s") is None
            assert (await b.acquire("s")).epoch == 2

    async def test_racing_nodes_get_one_owner(self, pg: PgTarget) -> None:
        """Two nodes acquiring the same free session at once: exactly one owns it, 50 times over."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            for i in range(50):
                won: list[str] = []
                refused: list[str] = []

                async def grab(
                    store: PostgresStore,
                    sid: str = f"s{i}",
                    won: list[str] = won,
                    refused: list[str] = refused,
                ) -> None:
                    try:
                        won.append((await store.acquire(sid)).node)
                    except OwnedElsewhere as exc:
                        refused.append(exc.node)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(grab, a)
                    tg.start_soon(grab, b)
                assert len(won) == 1
                assert refused == won


class TestFencing:
    async def test_appends_carry_the_epoch(self, pg: PgTarget) -> None:
        """Events record the epoch of the lease they were appended under."""
        async with node(pg, "a") as a:
            await a.create(SessionRecord("s", "Game"))
            await a.acquire("s")
            await a.append("s", 0, [ev(1)])
            with sql(pg) as conn:
                assert conn.execute("SELECT version, epoch FROM events").fetchall() == [(1, 1)]

    async def test_append_without_a_lease_is_refused(self, pg: PgTarget) -> None:
        """A joined store never writes a session it does not lease."""
        async with node(pg, "a") as a:
            await a.create(SessionRecord("s", "Game"))
            with pytest.raises(OwnershipLost, match="holds no lease"):
                await a.append("s", 0, [ev(1)])
            assert list(await a.read("s")) == []

    async def test_stale_owner_is_fenced_after_a_takeover(self, pg: PgTarget) -> None:
        """After a takeover the old owner's append is refused in the transaction: no fork, no stale event."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            await a.create(SessionRecord("s", "Game"))
            await a.acquire("s")
            assert await a.append("s", 0, [ev(1)]) == 1
            expire(pg, "a")  # a was paused: its lease ran out
            await b.acquire("s")
            assert await b.append("s", 1, [ev(2)]) == 2
            with pytest.raises(OwnershipLost) as info:
                await a.append("s", 2, [ev(99)])  # even at the right version
            assert (info.value.node, info.value.epoch, info.value.owner) == ("a", 1, "b")
            events = await b.read("s")
            assert [e.data for e in events] == [ev(1).data, ev(2).data]
            with sql(pg) as conn:
                assert conn.execute("SELECT version, epoch FROM events ORDER BY version").fetchall() == [
                    (1, 1),
                    (2, 2),
                ]

    async def test_a_stale_copy_writes_no_status_snapshot_reminder_or_deadline(self, pg: PgTarget) -> None:
        """After a takeover, every other write of the old owner is refused as its appends are (in the
        same transaction, against the same lease); the new owner's go through."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            await a.create(SessionRecord("s", "Game"))
            await a.acquire("s")
            await a.append("s", 0, [ev(1)])
            await a.set_reminder(Reminder("s", "kept", 1e9, "{}"))
            expire(pg, "a")
            await b.acquire("s")
            stale_writes = [
                a.set_status("s", Status.FAILED, reason="stale"),
                a.save_snapshot(Snapshot("s", 1, 1, '{"stale":true}')),
                a.set_reminder(Reminder("s", "stale", 1e9, "{}")),
                a.remove_reminder("s", "kept"),
                a.set_deadline("s", 123.0),
            ]
            for write in stale_writes:
                with pytest.raises(OwnershipLost) as info:
                    await write
                assert (info.value.node, info.value.epoch, info.value.owner) == ("a", 1, "b")
            record = await b.get("s")
            assert record is not None
            assert (record.status, record.deadline) == (Status.RUNNING, None)
            assert await b.load_snapshot("s") is None
            assert [r.name for r in await b.reminders("s")] == ["kept"]
            await b.set_status("s", Status.PAUSED, reason="new owner")  # fenced by b's own lease
            await b.save_snapshot(Snapshot("s", 1, 1, "{}"))
            record = await b.get("s")
            assert record is not None
            assert record.status is Status.PAUSED
            assert await b.load_snapshot("s") is not None

    async def test_a_write_racing_its_own_release_lands(self, pg: PgTarget) -> None:
        """A copy's last write (a reminder removed as its session ends) may reach the writer after
        the node released the lease: nobody took it since (same epoch), so it lands."""
        async with node(pg, "a") as a:
            await a.create(SessionRecord("s", "Game"))
            await a.acquire("s")
            await a.set_reminder(Reminder("s", "turn", 1e9, "{}"))
            with sql(pg) as conn:  # what a.release("s") does in the store, before a forgets its fence
                conn.execute("UPDATE leases SET node = NULL, expires = 0 WHERE session_id = 's'")
            await a.remove_reminder("s", "turn")
            await a.set_status("s", Status.COMPLETED)
            assert await a.reminders("s") == []
            record = await a.get("s")
            assert record is not None
            assert record.status is Status.COMPLETED

    async def test_fencing_holds_inside_a_batch(self, pg: PgTarget) -> None:
        """In one batch, the fenced append fails alone: the other sessions' appends are written."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            for sid in ("lost", "kept"):
                await a.create(SessionRecord(sid, "Game"))
                await a.acquire(sid)
            expire(pg, "a")
            await b.acquire("lost")
            await a.renew()  # "kept" is a's again (nobody took it); "lost" is not
            outcome: dict[str, object] = {}

            async def put(sid: str) -> None:
                try:
                    outcome[sid] = await a.append(sid, 0, [ev(1)])
                except OwnershipLost as exc:
                    outcome[sid] = exc

            async with anyio.create_task_group() as tg:
                tg.start_soon(put, "lost")
                tg.start_soon(put, "kept")
            assert outcome["kept"] == 1
            assert isinstance(outcome["lost"], OwnershipLost)
            assert list(await a.read("lost")) == []

    async def test_version_conflict_still_applies_to_the_owner(self, pg: PgTarget) -> None:
        """Fencing adds to the version check; it does not replace it."""
        async with node(pg, "a") as a:
            await a.create(SessionRecord("s", "Game"))
            await a.acquire("s")
            await a.append("s", 0, [ev(1)])
            with pytest.raises(VersionConflict):
                await a.append("s", 0, [ev(2)])


class TestRenewal:
    async def test_renew_keeps_leases_and_reports_the_lost(self, pg: PgTarget) -> None:
        """One renewal extends every held lease and names those taken over meanwhile."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            for i in range(5):
                await a.acquire(f"s{i}")
            before = await a.locate("s0")
            expire(pg, "a")
            await b.acquire("s3")
            renewal = await a.renew()
            assert renewal.renewed == 4
            assert [(lease.session_id, lease.epoch) for lease in renewal.lost] == [("s3", 1)]
            after = await a.locate("s0")
            assert before is not None
            assert after is not None
            assert after.expires >= before.expires - 1  # renewed out of the past
            assert (after.node, after.epoch) == ("a", 1)

    async def test_nodes_show_membership_and_liveness(self, pg: PgTarget) -> None:
        """nodes() lists every joined node, its address, whether it is alive and its lease count."""
        async with node(pg, "a", "h1:1") as a, node(pg, "b", "h2:2") as b:
            await a.acquire("s1")
            await a.acquire("s2")
            await b.acquire("s3")
            expire(pg, "b")
            got = {n.name: (n.address, n.alive, n.leases) for n in await a.nodes()}
            assert got == {"a": ("h1:1", True, 2), "b": ("h2:2", False, 0)}
            await b.renew()
            assert {n.name: n.alive for n in await a.nodes()} == {"a": True, "b": True}
            await b.leave()
            assert [n.name for n in await a.nodes()] == ["a"]
            assert await a.locate("s3") is None


class TestTakeover:
    async def test_survivors_claim_what_must_run_and_spread_it(self, pg: PgTarget) -> None:
        """Orphans with a due reminder or of a resumable running type are claimed once, by some survivor."""
        async with node(pg, "dead") as dead, node(pg, "b") as b, node(pg, "c") as c:
            for i in range(20):
                sid = f"r{i}"  # resumable and running
                await dead.create(SessionRecord(sid, "Room"))
                await dead.acquire(sid)
            await dead.create(SessionRecord("timer", "Chat"))
            await dead.acquire("timer")
            await dead.set_reminder(Reminder("timer", "tick", 0.0, "{}"))
            await dead.create(SessionRecord("idle", "Chat"))  # neither: moves on its next message
            await dead.acquire("idle")
            await dead.create(SessionRecord("done", "Room", status=Status.COMPLETED))
            await dead.acquire("done")
            assert await b.claim_orphans(types=["Room"], limit=100) == []  # still alive
            expire(pg, "dead")
            claimed: dict[str, list[str]] = {"b": [], "c": []}

            async def claim(name: str, store: PostgresStore) -> None:
                while True:
                    got = await store.claim_orphans(types=["Room"], limit=3)
                    if not got:
                        return
                    claimed[name] += [lease.session_id for lease in got]

            async with anyio.create_task_group() as tg:
                tg.start_soon(claim, "b", b)
                tg.start_soon(claim, "c", c)
            everything = claimed["b"] + claimed["c"]
            assert sorted(everything) == sorted([f"r{i}" for i in range(20)] + ["timer"])
            assert len(set(everything)) == len(everything)
            located = await b.locate("r0")
            assert located is not None
            assert located.node in ("b", "c")
            assert located.epoch == 2
            assert await b.locate("idle") is None


class TestNextExpiry:
    async def test_soonest_live_lease_of_another_node(self, pg: PgTarget) -> None:
        """Seconds until another node's soonest live lease lapses; its own, expired and released ones
        do not count."""
        async with node(pg, "a") as a, node(pg, "b") as b, node(pg, "c") as c:
            assert await b.next_expiry() is None  # nobody holds anything
            for sid in ("x", "y", "z", "mine"):
                await a.create(SessionRecord(sid, "Room"))
            await a.acquire("x")
            await c.acquire("y")
            await b.acquire("mine")
            with sql(pg) as conn:  # x lapses in 2 s, y in 5 s (the ttl is 10 s)
                conn.execute("UPDATE leases SET expires = expires - 8 WHERE session_id = 'x'")
                conn.execute("UPDATE leases SET expires = expires - 5 WHERE session_id = 'y'")
            soonest = await b.next_expiry()
            assert soonest is not None
            assert 1.0 < soonest <= 2.0
            with sql(pg) as conn:  # x expired: y is next
                conn.execute("UPDATE leases SET expires = expires - 60 WHERE session_id = 'x'")
            soonest = await b.next_expiry()
            assert soonest is not None
            assert 4.0 < soonest <= 5.0
            await c.release("y")
            assert await b.next_expiry() is None  # b's own lease never counts
            assert await a.next_expiry() is not None  # ... but it does for the others


class FailingLeases:
    """A lease store whose renewals fail from a given moment (the server became unreachable)."""

    def __init__(self, inner: PostgresStore) -> None:
        self.inner = inner
        self.cut = False
        self.hang = False
        """Renewals wait forever instead of failing (a link that holds packets)."""

    async def join(self, node: str, *, address: str | None = None, lease_ttl: float = 10.0) -> None:
        await self.inner.join(node, address=address, lease_ttl=lease_ttl)

    async def leave(self) -> None:
        await self.inner.leave()

    async def acquire(self, session_id: str) -> Lease:
        return await self.inner.acquire(session_id)

    async def release(self, session_id: str) -> None:
        await self.inner.release(session_id)

    async def renew(self) -> Renewal:
        if self.hang:
            await anyio.sleep_forever()
        if self.cut:
            raise StoreError(None, "renew leases", "connection refused")
        return await self.inner.renew()

    async def locate(self, session_id: str) -> Lease | None:
        return await self.inner.locate(session_id)

    async def nodes(self) -> Sequence[NodeInfo]:
        return await self.inner.nodes()

    async def claim_orphans(self, *, types: Sequence[str], limit: int) -> Sequence[Lease]:
        return await self.inner.claim_orphans(types=types, limit=limit)

    async def next_expiry(self) -> float | None:
        return await self.inner.next_expiry()


class TestOwnership:
    async def test_renewal_loop_reports_a_takeover(self, pg: PgTarget) -> None:
        """The loop renews every lease_ttl/3 and calls on_lost for a lease another node took."""
        clock = ManualClock()
        async with node(pg, "b") as b:
            a_store = PostgresStore(pg.dsn, schema=pg.schema)
            await a_store.open()
            try:
                a = Ownership(a_store, node="a", lease_ttl=9.0, clock=clock)
                await a.join()
                await a.acquire("s1")
                await a.acquire("s2")
                lost: list[tuple[str, int]] = []
                async with anyio.create_task_group() as tg:
                    tg.start_soon(a.run, lambda lease: lost.append((lease.session_id, lease.epoch)))
                    await anyio.wait_all_tasks_blocked()
                    expire(pg, "a")
                    await b.acquire("s2")
                    await advance_until(clock, 3.0, lambda: bool(lost))
                    tg.cancel_scope.cancel()
                assert lost == [("s2", 1)]
                stats = a.statistics()
                assert (stats.leases_held, stats.lost, stats.renewals) == (1, 1, 1)
                assert a.holds("s1")
                assert not a.holds("s2")
            finally:
                await a_store.aclose()

    async def test_cut_off_node_drops_its_leases_after_lease_ttl(self, pg: PgTarget) -> None:
        """A node that cannot renew for lease_ttl stops trusting every lease it holds."""
        clock = ManualClock()
        inner = PostgresStore(pg.dsn, schema=pg.schema)
        await inner.open()
        try:
            leases = FailingLeases(inner)
            own = Ownership(leases, node="a", lease_ttl=9.0, clock=clock)
            await own.join()
            await own.acquire("s1")
            lost: list[str] = []
            leases.cut = True
            async with anyio.create_task_group() as tg:
                tg.start_soon(own.run, lambda lease: lost.append(lease.session_id))
                await anyio.wait_all_tasks_blocked()
                await advance_until(clock, 3.0, lambda: own.statistics().renewal_failures == 1)
                await advance_until(clock, 3.0, lambda: own.statistics().renewal_failures == 2)
                assert lost == []  # 6 s without renewal: within lease_ttl, the leases still hold
                await advance_until(clock, 3.0, lambda: own.statistics().renewal_failures == 3)
                tg.cancel_scope.cancel()
            assert lost == ["s1"]
            assert own.statistics().leases_held == 0
        finally:
            await inner.aclose()

    async def test_hung_renewal_gives_the_leases_up_after_lease_ttl(self, pg: PgTarget) -> None:
        """A renewal that never answers does not hold the loop: lease_ttl after the last renewal that
        answered, every lease is given up; a later round that answers renews again."""
        clock = ManualClock()
        inner = PostgresStore(pg.dsn, schema=pg.schema)
        await inner.open()
        try:
            leases = FailingLeases(inner)
            own = Ownership(leases, node="a", lease_ttl=9.0, clock=clock)
            await own.join()
            await own.acquire("s1")
            lost: list[str] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(own.run, lambda lease: lost.append(lease.session_id))
                await anyio.wait_all_tasks_blocked()
                await advance_until(clock, 3.0, lambda: own.statistics().renewals == 1)  # t=3: renewed
                leases.hang = True
                await clock.advance(3.0)  # t=6: this round hangs
                await clock.advance(3.0)  # t=9: and so does the next
                await anyio.wait_all_tasks_blocked()
                assert lost == []  # 9 s since t=0, 6 s since the last renewal: the lease holds
                await clock.advance(3.0)  # t=12: lease_ttl since t=3
                await anyio.wait_all_tasks_blocked()
                assert lost == ["s1"]
                assert own.statistics().leases_held == 0
                leases.hang = False
                await own.acquire("s2")
                await advance_until(clock, 3.0, lambda: own.statistics().renewals == 2)  # t=15
                tg.cancel_scope.cancel()
            assert own.holds("s2")
        finally:
            await inner.aclose()


async def advance_until(clock: ManualClock, step: float, done: Callable[[], bool]) -> None:
    """Advance one renewal interval, then wait until ``done()`` (the store answers from a thread)."""
    await clock.advance(step)
    for _ in range(1000):
        if done():
            return
        await anyio.sleep(0.01)
    raise AssertionError("the renewal round did not finish")
