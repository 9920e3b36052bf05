"""Several SessionSupervisors sharing one PostgresStore as nodes, in one process (issue 15).

Each supervisor has a PostgresStore of its own, joined as its own node, exactly as separate processes
would; tests/supervisors/test_nodes_processes.py does the same with real processes, SIGKILL and
SIGSTOP. Leases are expired by moving them into the past with SQL, never by waiting.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from runtime import (
    MemoryStore,
    OwnedElsewhere,
    OwnershipLost,
    PostgresStore,
    SessionExists,
    SessionRecord,
    Status,
)
from supervisors import Node, SessionSupervisor
from tests.apps.alarm import Resumable
from tests.apps.counter import Add, Counter, Get
from tests.pg import PgTarget
from tests.realtime import wait_real

pytestmark = pytest.mark.anyio

TTL = 600.0
"""Long: no renewal or takeover round runs by itself during a test; the tests expire leases with SQL."""


@contextmanager
def sql(pg: PgTarget) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    from psycopg import sql as q

    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(q.SQL("SET search_path TO {}").format(q.Identifier(pg.schema)))
        yield conn


def expire(pg: PgTarget, node: str) -> None:
    with sql(pg) as conn:
        conn.execute("UPDATE leases SET expires = expires - 3600 WHERE node = %s", (node,))
        conn.execute("UPDATE nodes SET heartbeat = heartbeat - 3600 WHERE name = %s", (node,))


@asynccontextmanager
async def node(pg: PgTarget, name: str) -> AsyncIterator[SessionSupervisor]:
    store = PostgresStore(pg.dsn, schema=pg.schema)
    async with SessionSupervisor(
        store=store,
        node=Node(name, address=f"{name}.example:7000", lease_ttl=TTL),
        session_types=[Counter],
        registry=CollectorRegistry(),
    ) as sessions:
        yield sessions


def log(pg: PgTarget, sid: str) -> list[tuple[int, int]]:
    """(version, epoch) of every event of ``sid``."""
    with sql(pg) as conn:
        return conn.execute(
            "SELECT e.version, e.epoch FROM events AS e JOIN sessions AS s ON s.key = e.session "
            "WHERE s.id = %s ORDER BY e.version",
            (sid,),
        ).fetchall()


class TestOwnership:
    async def test_node_needs_a_shared_store(self) -> None:
        """node= with a store of one process is refused at once, saying what to use."""
        with pytest.raises(TypeError, match="PostgresStore"):
            SessionSupervisor(store=MemoryStore(), node=Node("a"))

    async def test_message_to_another_nodes_session(self, pg: PgTarget) -> None:
        """The owner serves it; the other node answers OwnedElsewhere with the owner's address."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            ref = await a.start(Counter, "s")
            assert await ref.call(Add(2)) == 2
            with pytest.raises(OwnedElsewhere) as info:
                await (await b.get("s")).call(Add(1))
            assert (info.value.node, info.value.address) == ("a", "a.example:7000")
            located = await b.locate("s")
            assert located is not None
            assert located.node == "a"
            assert await ref.call(Get()) == 2
        assert log(pg, "s") == [(1, 1)]

    async def test_racing_starts_get_one_owner(self, pg: PgTarget) -> None:
        """Two nodes starting the same session at once, 20 times: one owns it, the other is told where."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            for i in range(20):
                outcome: dict[str, object] = {}

                async def start(
                    name: str,
                    sessions: SessionSupervisor,
                    sid: str = f"r{i}",
                    outcome: dict[str, object] = outcome,
                ) -> None:
                    try:
                        ref = await sessions.start(Counter, sid)
                        outcome[name] = await ref.call(Add(1))
                    except OwnedElsewhere as exc:
                        outcome[name] = exc.node

                async with anyio.create_task_group() as tg:
                    tg.start_soon(start, "a", a)
                    tg.start_soon(start, "b", b)
                assert sorted(map(str, outcome.values())) in (["1", "a"], ["1", "b"])

    async def test_racing_starts_on_one_node_keep_the_winners_lease(self, pg: PgTarget) -> None:
        """Two starts of one id at once on one node (two players creating one room), 20 times: the
        loser gets SessionExists and leaves the winner's lease alone; nothing of it is refused."""
        async with node(pg, "a") as a:
            for i in range(20):
                sid = f"twice-{i}"
                outcomes: list[object] = []

                async def start(sid: str = sid, outcomes: list[object] = outcomes) -> None:
                    try:
                        outcomes.append(await a.start(Counter, sid))
                    except SessionExists as exc:
                        outcomes.append(exc)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(start)
                    tg.start_soon(start)
                assert sum(isinstance(o, SessionExists) for o in outcomes) == 1, outcomes
                assert await (await a.get(sid)).call(Add(1)) == 1
                located = await a.locate(sid)
                assert located is not None
                assert located.node == "a"
            stats = (await a.stats()).node
            assert stats is not None
            assert (stats.fencing_refusals, stats.lost) == (0, 0)

    async def test_shutdown_releases_and_another_node_carries_on(self, pg: PgTarget) -> None:
        """A node leaving releases its leases: the next message elsewhere continues from the log."""
        async with node(pg, "b") as b:
            async with node(pg, "a") as a:
                ref = await a.start(Counter, "s")
                await ref.call(Add(5))
            assert await b.locate("s") is None
            assert await (await b.get("s")).call(Add(1)) == 6
            located = await b.locate("s")
            assert located is not None
            assert located.node == "b"
        assert log(pg, "s") == [(1, 1), (2, 2)]


class TestTakeoverTiming:
    """In real time on both backends: lease expiries are the PostgreSQL server's clock."""

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    async def test_resumable_sessions_run_as_soon_as_the_dead_nodes_leases_lapse(self, pg: PgTarget) -> None:
        """A survivor takes a dead node's resumable sessions over when their leases lapse, not at its
        next round (every lease_ttl/3 = 10 s here), with no message, more than one round's claim too."""
        ids = [f"r{i}" for i in range(150)]  # more than one round claims (100)
        dead = PostgresStore(pg.dsn, schema=pg.schema)
        await dead.open()
        try:
            await dead.join("dead", lease_ttl=TTL)
            for sid in ids:
                await dead.create(SessionRecord(sid, "Resumable"))
                await dead.acquire(sid)
            with sql(pg) as conn:  # the node died with 1.5 s left on its leases
                conn.execute("UPDATE leases SET expires = extract(epoch FROM clock_timestamp()) + 1.5")
            lapses = time.monotonic() + 1.5
            async with SessionSupervisor(
                store=PostgresStore(pg.dsn, schema=pg.schema),
                node=Node("b", lease_ttl=30.0),
                session_types=[Resumable],
                registry=CollectorRegistry(),
            ) as b:

                def taken_over() -> bool:
                    with sql(pg) as conn:
                        query = "SELECT count(*) FROM leases WHERE node = 'b' AND epoch = 2"
                        row = conn.execute(query).fetchone()
                    return row is not None and row[0] == len(ids)

                # The round every lease_ttl/3 would come 10 s after the start.
                await wait_real(taken_over, "the survivor runs the dead node's sessions", timeout=9)
                late = time.monotonic() - lapses
                assert late < 2.0, f"all taken over {late:.2f} s after the leases lapsed"
                for sid in (ids[0], ids[-1]):  # and running here
                    assert await (await b.get(sid)).call("state") == []
        finally:
            await dead.aclose()


class TestFencing:
    async def test_stale_copy_stops_with_ownership_lost(self, pg: PgTarget) -> None:
        """After a takeover, the old owner's next append is refused: its caller gets OwnershipLost."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            in_a = await a.start(Counter, "s")
            assert await in_a.call(Add(1)) == 1
            expire(pg, "a")  # a was paused past its lease
            in_b = await b.get("s")
            assert await in_b.call(Add(10)) == 11
            with pytest.raises(OwnershipLost) as info:
                await in_a.call(Add(100))
            assert (info.value.node, info.value.epoch, info.value.owner) == ("a", 1, "b")
            # The stale copy is gone; a's next message is told where the session lives.
            with pytest.raises(OwnedElsewhere):
                await in_a.call(Add(1000))
            assert await in_b.call(Get()) == 11
            stats = await a.stats()
            assert stats.node is not None
            assert (stats.node.fencing_refusals, stats.node.leases_held) == (1, 0)
        assert log(pg, "s") == [(1, 1), (2, 2)]

    async def test_renewal_stops_a_copy_whose_lease_moved_on(self, pg: PgTarget) -> None:
        """The renewal round finds the lost lease and stops the copy before it takes another message."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            in_a = await a.start(Counter, "s")
            await in_a.call(Add(1))
            expire(pg, "a")
            await (await b.get("s")).call(Add(10))
            assert a.ownership is not None
            await a.ownership.renew_once(a.lease_lost, a.clock.now())
            for _ in range(3000):  # the copy stops in its own task
                if in_a.status is Status.PASSIVATED:
                    break
                await anyio.sleep(0.01)
            assert in_a.status is Status.PASSIVATED
            with pytest.raises(OwnedElsewhere):
                await in_a.call(Get())
        assert log(pg, "s") == [(1, 1), (2, 2)]


class TestVisibility:
    async def test_stats_and_metrics_show_nodes_and_leases(self, pg: PgTarget) -> None:
        """stats() lists the nodes and this node's leases; the registry exposes them."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            await (await a.start(Counter, "s1")).call(Add(1))
            await (await a.start(Counter, "s2")).call(Add(1))
            await (await b.start(Counter, "s3")).call(Add(1))
            stats = await a.stats()
            assert stats.node is not None
            assert (stats.node.node, stats.node.leases_held, stats.node.acquired) == ("a", 2, 2)
            assert {(n.name, n.alive, n.leases) for n in stats.nodes} == {("a", True, 2), ("b", True, 1)}
            assert a.registry.get_sample_value("sessionvisor_leases_held") == 2
            assert a.registry.get_sample_value("sessionvisor_leases_acquired_total") == 2


class TestOffline:
    async def test_an_inactive_session_is_ended_under_a_lease(self, pg: PgTarget) -> None:
        """expire() of a stored, inactive session takes the lease, records, and gives it back."""
        async with node(pg, "a") as a:
            ref = await a.start(Counter, "s")
            await ref.call(Add(1))
        async with node(pg, "b") as b:
            assert await b.expire("s", Status.ABANDONED, "everyone left")
            assert (await b.get("s")).status is Status.ABANDONED
            assert await b.locate("s") is None
        assert log(pg, "s")[-1][1] == 2  # the status event, under b's lease

    async def test_a_session_owned_elsewhere_is_left_to_its_owner(self, pg: PgTarget) -> None:
        """Another node's live session is not ended from here."""
        async with node(pg, "a") as a, node(pg, "b") as b:
            await (await a.start(Counter, "s")).call(Add(1))
            stored = await b.get("s")
            assert not await b.expire("s", Status.ABANDONED, "idle")
            assert stored.status is not Status.ABANDONED
            assert await (await a.get("s")).call(Get()) == 1
