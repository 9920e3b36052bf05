"""Pipelined persistence (issue 14): ``pipeline_depth`` lets a session take the next message while the
events of up to that many earlier ones are being committed, and still answers no caller before its
own events are durable, in order.

Each test runs on both backends and on every store (MemoryStore, SQLiteStore, PostgresStore when a
server answers), through ``HeldStore``, which
holds appends at its door until the test lets them through (a commit held open) and can make them
fail. Calls use ``timeout=None``: a held commit takes no time, and trio's virtual clock would
otherwise jump to the calls' deadlines while everything waits for the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from runtime import (
    MemoryStore,
    SessionCrashed,
    SessionRef,
    SQLiteStore,
    Status,
    StoreError,
)
from runtime._stores import _sqlite_writer
from runtime._stores.postgres import PostgresStore
from runtime.abc import EventStore
from runtime.testing import ManualClock
from supervisors import ReaperPolicy, SessionSupervisor
from tests.apps.held_store import HeldStore
from tests.apps.tagged import Crash, Later, Read, Tag, Tags, tagger, tags_of
from tests.helpers import no_backoff, status_of
from tests.pg import PgTarget
from tests.runtime.test_sqlite_store import CommitGate

pytestmark = pytest.mark.anyio

CRASH_TOLERANT = no_backoff(max_restarts=100)


def _postgres(request: pytest.FixtureRequest, _path: Path) -> EventStore:
    target: PgTarget = request.getfixturevalue("pg")  # a schema of this test's own
    return PostgresStore(target.dsn, schema=target.schema)


STORES: dict[str, Callable[[pytest.FixtureRequest, Path], EventStore]] = {
    "memory": lambda _request, _path: MemoryStore(),
    "sqlite": lambda _request, path: SQLiteStore(path / "s.db"),
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(STORES))
def held(request: pytest.FixtureRequest, tmp_path: Path) -> HeldStore:
    return HeldStore(STORES[request.param](request, tmp_path))


@pytest.fixture
async def sessions(held: HeldStore) -> AsyncIterator[SessionSupervisor]:
    async with SessionSupervisor(store=held, restarts=CRASH_TOLERANT) as s:
        yield s


class Calls:
    """Calls made from tasks, each queued in the session's mailbox before the next one starts.

    ``results[i]`` is the reply of the ``i``-th call or the exception it raised; ``durable[i]`` says
    whether, when that reply arrived, the store had acknowledged the version it names.
    """

    def __init__(self, tg: anyio.abc.TaskGroup, ref: SessionRef, store: HeldStore) -> None:
        self._tg = tg
        self._ref = ref
        self._store = store
        self.results: dict[int, Any] = {}
        self.durable: dict[int, bool] = {}
        self._done: list[anyio.Event] = []

    async def start(self, message: object) -> int:
        index = len(self._done)
        done = anyio.Event()
        self._done.append(done)

        async def run() -> None:
            try:
                result = await self._ref.call(message, timeout=None)
            except Exception as exc:
                result = exc
            else:
                if isinstance(result, int):  # a version: its events must be durable by now
                    self.durable[index] = self._store.durable.get(self._ref.id, 0) >= result
            self.results[index] = result
            done.set()

        self._tg.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        return index

    async def wait(self, *indexes: int) -> None:
        for index in indexes or range(len(self._done)):
            with anyio.fail_after(10):
                await self._done[index].wait()

    @property
    def finished(self) -> set[int]:
        return set(self.results)


async def stored_tags(store: HeldStore, sid: str) -> tuple[int, ...]:
    return tags_of(await store.inner.read(sid))


class TestOrderAndDurability:
    async def test_replies_wait_for_their_own_events_in_order(
        self, sessions: SessionSupervisor, held: HeldStore
    ) -> None:
        """No reply before its events are durable, replies in order; what the messages recorded
        while an append was in flight goes as one append once it is confirmed."""
        ref = await sessions.start(tagger(8), "s")
        held.hold()
        async with anyio.create_task_group() as tg:
            calls = Calls(tg, ref, held)
            for message in (Tag(1), Tag(2), Tags((3, 4)), Tag(5), Read()):
                await calls.start(message)
            assert calls.finished == set()
            # One append in flight; the depth is not full, so the rest wait to join the next one
            # rather than take a commit of their own behind it.
            assert held.waiting == 1
            held.release()
            await calls.wait(0)
            await anyio.wait_all_tasks_blocked()
            assert calls.finished == {0}
            assert await stored_tags(held, "s") == (1,)
            assert held.waiting == 1  # the next four messages' events, in one append
            held.release()
            await calls.wait()
        assert calls.results == {0: 1, 1: 2, 2: 4, 3: 5, 4: (5, (1, 2, 3, 4, 5))}
        assert calls.durable == {0: True, 1: True, 2: True, 3: True}
        assert held.appends == [("s", 0, 1), ("s", 1, 4)]
        assert await stored_tags(held, "s") == (1, 2, 3, 4, 5)

    async def test_a_full_depth_queues_the_next_append_behind_the_one_in_flight(
        self, sessions: SessionSupervisor, held: HeldStore
    ) -> None:
        """Once the depth is full the actor can add nothing more: what it holds goes to the store
        at once, queued behind the append in flight, and the replies still come in order."""
        ref = await sessions.start(tagger(4), "s")
        held.hold()
        async with anyio.create_task_group() as tg:
            calls = Calls(tg, ref, held)
            for tag in range(1, 7):
                await calls.start(Tag(tag))
            assert held.waiting == 2  # Tag(1) in flight; Tag(2..4) queued behind it
            assert (await sessions.inspect("s")).mailbox_depth == 2
            held.release()
            await calls.wait(0)
            await anyio.wait_all_tasks_blocked()
            assert calls.finished == {0}
            held.release_all()
            await calls.wait()
        assert calls.results == {i: i + 1 for i in range(6)}
        assert all(calls.durable.values())
        # (recorded once answered: two appends answered together may resume in either order)
        appends = sorted(held.appends)
        assert appends[:2] == [("s", 0, 1), ("s", 1, 3)]
        assert sum(events for _sid, _version, events in appends) == 6
        assert await stored_tags(held, "s") == (1, 2, 3, 4, 5, 6)

    async def test_no_reply_while_the_sqlite_commit_is_held_open(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The SQLite writer held inside COMMIT: the events are written, not durable, and no caller
        has its reply; once the commit returns, every caller has it."""
        gate = CommitGate()
        monkeypatch.setattr(_sqlite_writer, "commit", gate.commit)
        store = HeldStore(SQLiteStore(tmp_path / "s.db"))
        try:
            async with SessionSupervisor(store=store, restarts=CRASH_TOLERANT) as sessions:
                ref = await sessions.start(tagger(8), "s")
                gate.close()
                async with anyio.create_task_group() as tg:
                    calls = Calls(tg, ref, store)
                    for tag in (1, 2, 3):
                        await calls.start(Tag(tag))
                    await gate.wait_entered()
                    await anyio.wait_all_tasks_blocked()
                    assert calls.finished == set()
                    gate.open()
                    await calls.wait()
                assert calls.results == {0: 1, 1: 2, 2: 3}
                assert all(calls.durable.values())
        finally:
            gate.open()

    @pytest.mark.parametrize("depth", [1, 3])
    async def test_depth_bounds_the_messages_taken(
        self, sessions: SessionSupervisor, held: HeldStore, depth: int
    ) -> None:
        """With N unconfirmed messages the session takes no more: the rest stay in the mailbox."""
        ref = await sessions.start(tagger(depth), "s")
        held.hold()
        async with anyio.create_task_group() as tg:
            calls = Calls(tg, ref, held)
            for tag in range(1, 7):
                await calls.start(Tag(tag))
            assert (await sessions.inspect("s")).mailbox_depth == 6 - depth
            held.release_all()
            await calls.wait()
        assert calls.results == {i: i + 1 for i in range(6)}
        assert all(calls.durable.values())
        assert await stored_tags(held, "s") == (1, 2, 3, 4, 5, 6)

    async def test_handlers_see_events_not_yet_durable(
        self, sessions: SessionSupervisor, held: HeldStore
    ) -> None:
        """A handler sees the state with the earlier messages' events, durable or not."""
        ref = await sessions.start(tagger(8), "s")
        held.hold()
        async with anyio.create_task_group() as tg:
            calls = Calls(tg, ref, held)
            await calls.start(Tag(1))
            await calls.start(Tag(2))
            read = await calls.start(Read())
            assert calls.finished == set()  # the read answers after the events it saw are durable
            held.release_all()
            await calls.wait()
        assert calls.results[read] == (2, (1, 2))

    async def test_casts_and_timers_take_part_in_the_same_order(
        self, sessions: SessionSupervisor, held: HeldStore
    ) -> None:
        """A cast's and a timer's events are committed in order with the calls around them."""
        ref = await sessions.start(tagger(8), "s")
        held.hold()
        async with anyio.create_task_group() as tg:
            calls = Calls(tg, ref, held)
            await ref.cast(Tag(1))
            await calls.start(Later(0, Tag(2)))
            await calls.start(Tag(3))
            held.release_all()
            await calls.wait()
            await anyio.wait_all_tasks_blocked()
        assert await ref.call(Read(), timeout=None) == (3, (1, 2, 3))
        assert await stored_tags(held, "s") == (1, 2, 3)
        assert calls.results == {0: None, 1: 3}


class TestFailures:
    async def test_append_failure_fails_exactly_the_unconfirmed_callers(
        self, sessions: SessionSupervisor, held: HeldStore
    ) -> None:
        """Every caller whose events were not durable gets SessionCrashed; queued messages stay."""
        ref = await sessions.start(tagger(4), "s")
        assert await ref.call(Tag(1), timeout=None) == 1
        held.hold()
        async with anyio.create_task_group() as tg:
            calls = Calls(tg, ref, held)
            unconfirmed = [await calls.start(m) for m in (Tag(2), Tags((3, 4, 5)), Tag(6), Read())]
            queued = [await calls.start(Tag(7)), await calls.start(Tag(8))]
            assert (await sessions.inspect("s")).mailbox_depth == 2
            held.fail(OSError("disk on fire"))
            held.release()  # the first append fails
            await calls.wait(*unconfirmed)
            held.release_all()  # the second, sent behind it, conflicts and writes nothing
            await calls.wait()
        for index in unconfirmed:
            error = calls.results[index]
            assert isinstance(error, SessionCrashed), (index, error)
            assert isinstance(error.__cause__, StoreError)
            assert "disk on fire" in str(error.__cause__)
        # The restarted session took the queued messages, on the state rebuilt from the log.
        assert [calls.results[i] for i in queued] == [2, 3]
        assert all(calls.durable.values())
        assert await stored_tags(held, "s") == (1, 7, 8)
        assert await ref.call(Read(), timeout=None) == (3, (1, 7, 8))

    async def test_depth_one_keeps_the_session_on_a_failed_append(
        self, sessions: SessionSupervisor, held: HeldStore
    ) -> None:
        """At depth 1 the caller gets the store's error and the session carries on (as before)."""
        ref = await sessions.start(tagger(1), "s")
        held.fail(OSError("disk on fire"))
        with pytest.raises(StoreError, match="disk on fire"):
            await ref.call(Tag(1), timeout=None)
        assert await ref.call(Tag(2), timeout=None) == 1
        assert await ref.call(Read(), timeout=None) == (1, (2,))

    async def test_crash_mid_pipeline_answers_the_earlier_callers_once_durable(
        self, sessions: SessionSupervisor, held: HeldStore
    ) -> None:
        """A handler crash fails its caller; the earlier messages' events still commit and answer."""
        ref = await sessions.start(tagger(4), "s")
        held.hold()
        async with anyio.create_task_group() as tg:
            calls = Calls(tg, ref, held)
            before = await calls.start(Tag(1))
            crash = await calls.start(Crash((2,)))
            after = await calls.start(Tag(3))
            held.release_all()
            await calls.wait()
        assert calls.results[before] == 1
        assert isinstance(calls.results[crash], SessionCrashed)
        # The crashing handler's own event is in the log or not, as at depth 1: the state is its fold.
        stored = await stored_tags(held, "s")
        assert stored in ((1, 3), (1, 2, 3))
        assert calls.results[after] == len(stored)
        assert await ref.call(Read(), timeout=None) == (len(stored), stored)


class TestWaitsForCommits:
    @pytest.mark.parametrize("how", ["stop", "pause"])
    async def test_stop_and_pause_wait_for_in_flight_commits(
        self, sessions: SessionSupervisor, held: HeldStore, how: str
    ) -> None:
        """The status change is recorded after the events in flight, and answers once they are."""
        ref = await sessions.start(tagger(8), "s")
        held.hold()
        async with anyio.create_task_group() as tg:
            calls = Calls(tg, ref, held)
            await calls.start(Tag(1))
            await calls.start(Tag(2))
            tg.start_soon(ref.stop if how == "stop" else ref.pause)
            await anyio.wait_all_tasks_blocked()
            assert calls.finished == set()
            held.release_all()
            await calls.wait()
        assert calls.results == {0: 1, 1: 2}
        stored = await held.inner.read("s")
        assert [e.type for e in stored] == ["pipe.Tagged", "pipe.Tagged", "sessionvisor.StatusChanged"]
        assert ref.status is (Status.STOPPED if how == "stop" else Status.PAUSED)

    async def test_shutdown_waits_for_in_flight_commits(self, held: HeldStore) -> None:
        """Leaving the supervisor answers every caller whose events were in flight."""
        finished_while_held: set[int] = set()
        async with anyio.create_task_group() as tg:
            sessions = SessionSupervisor(store=held, restarts=CRASH_TOLERANT)
            await sessions.__aenter__()
            try:
                ref = await sessions.start(tagger(8), "s")
                held.hold()
                calls = Calls(tg, ref, held)
                for tag in (1, 2, 3):
                    await calls.start(Tag(tag))

                async def release_once_blocked() -> None:
                    await anyio.wait_all_tasks_blocked()  # the shutdown waits on the commits
                    finished_while_held.update(calls.finished)
                    held.release_all()

                tg.start_soon(release_once_blocked)
            finally:
                await sessions.__aexit__(None, None, None)
        assert finished_while_held == set(), calls.results
        assert calls.results == {0: 1, 1: 2, 2: 3}
        assert all(calls.durable.values())
        assert [(snap.version, snap.data) for snap in held.snapshots] == [(3, "[1,2,3]")]

    async def test_snapshots_are_taken_only_of_durable_state(
        self, sessions: SessionSupervisor, held: HeldStore
    ) -> None:
        """With commits held, no snapshot is written of a state the log does not have yet."""
        ref = await sessions.start(tagger(8, snapshot_every=2), "s")
        held.hold()
        async with anyio.create_task_group() as tg:
            calls = Calls(tg, ref, held)
            for tag in range(1, 6):
                await calls.start(Tag(tag))
            assert await held.inner.load_snapshot("s") is None
            held.release_all()
            await calls.wait()
        assert await ref.call(Read(), timeout=None) == (5, (1, 2, 3, 4, 5))
        snapshot = await held.inner.load_snapshot("s")
        if snapshot is not None:  # saved in the background: if it is there, it is of durable events
            stored = await stored_tags(held, "s")
            assert snapshot.data == "[" + ",".join(map(str, stored[: snapshot.version])) + "]"

    async def test_reaper_never_passivates_a_session_with_unconfirmed_events(self, held: HeldStore) -> None:
        """Idle past its timeout with a commit in flight: it stays until the events are durable."""
        clock = ManualClock()
        async with SessionSupervisor(
            store=held,
            clock=clock,
            reaper=ReaperPolicy(idle_timeout=10),
        ) as sessions:
            ref = await sessions.start(tagger(8), "s")
            held.hold()
            await ref.cast(Tag(1))
            await anyio.wait_all_tasks_blocked()
            await clock.advance(30)
            assert status_of(ref) is Status.RUNNING
            held.release_all()
            for _ in range(200):  # the append may finish in the store's thread
                if held.durable.get("s") == 1:
                    break
                await anyio.sleep(0.01)
            await clock.advance(30)
            await anyio.wait_all_tasks_blocked()
            with anyio.fail_after(10):
                while status_of(ref) is not Status.PASSIVATED:
                    await clock.advance(10)
                    await anyio.sleep(0.01)
            snapshot = await held.inner.load_snapshot("s")
            assert snapshot is not None
            assert (snapshot.version, snapshot.data) == (1, "[1]")
            assert await ref.call(Read(), timeout=None) == (1, (1,))
