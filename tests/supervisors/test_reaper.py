"""The reaper and the session lifecycle, on an injected clock (deterministic on both backends)."""

from __future__ import annotations

import functools
import json
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from runtime import (
    MemoryStore,
    RateLimited,
    SessionPaused,
    SessionStopped,
    Snapshot,
    Status,
    TooManySessions,
)
from runtime.testing import ManualClock
from supervisors import ReaperPolicy, RemovalReason, SessionSupervisor, export_file_name
from supervisors import _reaper as reaper_module
from tests.apps.counter import Add, After, Counter, Defer, Get, Release, WaitFor
from tests.helpers import status_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def supervisor(clock: ManualClock, **policy: object) -> SessionSupervisor:
    return SessionSupervisor(clock=clock, reaper=ReaperPolicy(**policy))  # type: ignore[arg-type]


async def wait_deleted(sessions: SessionSupervisor, session_id: str, *, seconds: float = 20.0) -> None:
    """Wait, in real time, until the reaper's export (a worker thread) and the deletion are done.

    Polled with real sleeps: under trio's autojumping MockClock, ``anyio.sleep`` would let a
    thousand virtual polls pass in a few milliseconds while the thread is still writing (issue 13).
    """
    deadline = time.monotonic() + seconds
    while await sessions.store.get(session_id) is not None:
        assert time.monotonic() < deadline, f"{session_id!r} was not deleted within {seconds}s"
        await anyio.to_thread.run_sync(time.sleep, 0.01)


async def wait_failed_exports(sessions: SessionSupervisor, count: int, *, seconds: float = 20.0) -> None:
    """Wait, in real time (as ``wait_deleted``), until the reaper has seen ``count`` exports fail."""
    deadline = time.monotonic() + seconds
    while sessions.reaper.export_failures < count:
        assert time.monotonic() < deadline, f"no {count} failed exports within {seconds}s"
        await anyio.to_thread.run_sync(time.sleep, 0.01)


class TestPassivation:
    async def test_idle_session_is_passivated_and_comes_back(self, clock: ManualClock) -> None:
        """After idle_timeout: snapshot, task stopped, PASSIVATED; the next call brings it back."""
        async with supervisor(clock, idle_timeout=60) as sessions:
            c = await sessions.start(Counter, "c")
            await c.call(Add(5))
            await clock.advance(59)
            assert (await sessions.reap()).total == 0
            await clock.advance(2)
            await anyio.wait_all_tasks_blocked()
            assert status_of(c) is Status.PASSIVATED
            assert sessions.active_count == 0
            record = await sessions.store.get("c")
            assert record is not None
            assert record.status is Status.PASSIVATED
            snap = await sessions.store.load_snapshot("c")
            assert snap is not None
            assert (snap.version, snap.data) == (1, "5")
            assert Counter.logs["c"] == [("start", 0), ("stop", "passivated")]
            assert await c.call(Get()) == 5
            assert status_of(c) is Status.RUNNING
            assert Counter.logs["c"][-1] == ("start", 5)
            assert sessions.reaper.totals[RemovalReason.IDLE] == 1

    async def test_activity_postpones_passivation(self, clock: ManualClock) -> None:
        """A call from outside restarts the idle clock."""
        async with supervisor(clock, idle_timeout=60) as sessions:
            c = await sessions.start(Counter, "c")
            for _ in range(5):
                await clock.advance(40)
                await c.call(Get())
            assert status_of(c) is Status.RUNNING
            await clock.advance(61)
            assert status_of(c) is Status.PASSIVATED

    async def test_own_timers_do_not_count_as_activity(self, clock: ManualClock) -> None:
        """A session kept busy only by its own timers is still idle (by default)."""
        async with supervisor(clock, idle_timeout=60) as sessions:
            c = await sessions.start(Counter, "c")
            for i in range(1, 4):
                await c.cast(After(20 * i, Add(1)))
            await c.call(Get())
            await clock.advance(61)
            assert status_of(c) is Status.PASSIVATED

    async def test_own_timers_count_when_configured(self, clock: ManualClock) -> None:
        async with supervisor(clock, idle_timeout=60, idle_counts_self_sends=True) as sessions:
            c = await sessions.start(Counter, "c")
            await c.cast(After(50, Add(1)))
            await c.call(Get())
            await clock.advance(61)
            assert status_of(c) is Status.RUNNING
            await clock.advance(60)
            assert status_of(c) is Status.PASSIVATED

    async def test_messages_during_passivation_reach_the_next_incarnation(self, clock: ManualClock) -> None:
        """Messages sent while the snapshot is being written are handled, in order, afterwards."""
        gate = anyio.Event()
        store = MemoryStore()
        real_save = store.save_snapshot

        async def slow_save(snapshot: Snapshot) -> None:
            await gate.wait()
            await real_save(snapshot)

        store.save_snapshot = slow_save  # type: ignore[method-assign]
        async with SessionSupervisor(
            store=store, clock=clock, reaper=ReaperPolicy(idle_timeout=10)
        ) as sessions:
            c = await sessions.start(Counter, "c")
            await c.call(Add(1))
            await clock.advance(11)  # the passivation is now waiting on the snapshot
            for n in (2, 3, 4):
                c.cast_nowait(Add(n))
            gate.set()
            assert await c.call(Get()) == 10
            assert [e.data for e in await store.read("c")] == ['{"n":1}', '{"n":2}', '{"n":3}', '{"n":4}']
            assert status_of(c) is Status.RUNNING

    async def test_never_mid_turn(self, clock: ManualClock) -> None:
        """A session inside a handler finishes its turn first, then passivates."""
        async with supervisor(clock, idle_timeout=10) as sessions:
            c = await sessions.start(Counter, "c")
            gate = anyio.Event()
            await c.cast(WaitFor(gate, then_add=7))
            await clock.advance(11)
            assert status_of(c) is Status.RUNNING
            assert Counter.logs["c"] == [("start", 0)]
            gate.set()
            await anyio.wait_all_tasks_blocked()
            assert status_of(c) is Status.PASSIVATED
            assert await c.call(Get()) == 7

    async def test_not_while_a_deferred_reply_is_pending(self, clock: ManualClock) -> None:
        """A session that owes a caller an answer is not idle."""
        async with supervisor(clock, idle_timeout=10) as sessions:
            c = await sessions.start(Counter, "c")
            async with anyio.create_task_group() as tg:
                # Call timeouts read the same clock: this one must outlast the 11 s below.
                tg.start_soon(functools.partial(c.call, Defer(), timeout=60))
                await anyio.wait_all_tasks_blocked()
                await clock.advance(11)
                assert status_of(c) is Status.RUNNING
                await c.call(Release("ok"))
            await clock.advance(11)
            assert status_of(c) is Status.PASSIVATED


class TestExpiry:
    async def test_abandoned_then_revived(self, clock: ManualClock) -> None:
        """abandon_after: ABANDONED in the log and to subscribers; revive() brings it back."""
        async with supervisor(clock, abandon_after=300) as sessions:
            events = sessions.lifecycle()
            c = await sessions.start(Counter, "c")
            await c.call(Add(2))
            await clock.advance(301)
            assert status_of(c) is Status.ABANDONED
            with pytest.raises(SessionStopped, match="abandoned"):
                await c.call(Get())
            revived = await sessions.revive("c")
            assert await revived.call(Get()) == 2
            log = [(e.type, json.loads(e.data).get("status")) for e in await sessions.store.read("c")]
            assert log == [
                ("test.Added", None),
                ("sessionvisor.StatusChanged", "abandoned"),
                ("sessionvisor.StatusChanged", "running"),
            ]
            seen = []
            while True:
                with anyio.move_on_after(0) as scope:
                    seen.append((await events.__anext__()).status)
                if scope.cancelled_caught:
                    break
            assert seen == [Status.RUNNING, Status.ABANDONED, Status.PASSIVATED, Status.RUNNING]
            events.close()

    async def test_passivated_session_is_abandoned_without_activation(self, clock: ManualClock) -> None:
        """An inactive session is ended from outside: no recovery, no task."""
        async with supervisor(clock, idle_timeout=10, abandon_after=100) as sessions:
            c = await sessions.start(Counter, "c")
            await c.call(Add(1))
            await clock.advance(11)
            assert status_of(c) is Status.PASSIVATED
            await clock.advance(100)
            assert status_of(c) is Status.ABANDONED
            assert Counter.logs["c"] == [("start", 0), ("stop", "passivated")]

    async def test_max_age(self, clock: ManualClock) -> None:
        """Older than max_age: TIMED_OUT, however busy."""
        async with supervisor(clock, max_age=100) as sessions:
            c = await sessions.start(Counter, "c")
            for _ in range(3):
                await clock.advance(30)
                await c.call(Add(1))
            assert status_of(c) is Status.RUNNING
            await clock.advance(11)
            assert status_of(c) is Status.TIMED_OUT
            assert Counter.logs["c"][-1] == ("stop", "older than max_age 100s")

    async def test_max_messages(self, clock: ManualClock) -> None:
        """After max_messages handled: TIMED_OUT; the last one still got its answer."""
        async with supervisor(clock, max_messages=3) as sessions:
            c = await sessions.start(Counter, "c")
            assert await c.call(Add(1)) == 1
            assert await c.call(Add(1)) == 2
            assert await c.call(Add(1)) == 3
            with pytest.raises(SessionStopped, match="max_messages"):
                await c.call(Get())
            assert status_of(c) is Status.TIMED_OUT
            revived = await sessions.revive("c")
            assert await revived.call(Get()) == 3

    async def test_paused_ttl(self, clock: ManualClock) -> None:
        """Paused longer than paused_ttl: ABANDONED."""
        async with supervisor(clock, paused_ttl=50) as sessions:
            c = await sessions.start(Counter, "c")
            await c.pause("approval")
            with pytest.raises(SessionPaused):
                await c.call(Get())
            await clock.advance(51)
            assert status_of(c) is Status.ABANDONED

    async def test_revive_refuses_completed(self, clock: ManualClock) -> None:
        async with supervisor(clock) as sessions:
            c = await sessions.start(Counter, "c")
            await c.stop()
            with pytest.raises(SessionStopped, match="only abandoned or timed-out"):
                await sessions.revive("c")


class TestEndedSessions:
    async def test_terminal_ttl_drops_from_memory_only(self, clock: ManualClock) -> None:
        async with supervisor(clock, terminal_ttl=10) as sessions:
            c = await sessions.start(Counter, "c")
            await c.stop()
            await clock.advance(11)
            assert sessions.cached("c") is None
            again = await sessions.get("c")
            assert status_of(again) is Status.STOPPED

    async def test_retention_exports_then_deletes(self, clock: ManualClock, tmp_path: Path) -> None:
        """After retention: the log goes to a JSON-lines file, then out of the store."""
        export = tmp_path / "export"
        async with supervisor(clock, retention=100, export_dir=str(export)) as sessions:
            c = await sessions.start(Counter, "weird/id")
            await c.call(Add(4))
            await c.stop("done")
            await clock.advance(101)
            await wait_deleted(sessions, "weird/id")
            assert os.listdir(export) == [export_file_name("weird/id")]
            lines = (export / export_file_name("weird/id")).read_text().splitlines()
            rows = [json.loads(line) for line in lines]
            assert [r["version"] for r in rows] == [1, 2]
            assert rows[0]["data"] == {"n": 4}
            assert rows[1]["data"]["status"] == "stopped"

    async def test_exports_of_similar_ids_do_not_collide(self, clock: ManualClock, tmp_path: Path) -> None:
        """Ids a file name would fold together each get their own export, holding their own id."""
        export = tmp_path / "export"
        ids = ["a/b", "a_b", "a?b", "A_B", "a\\b", "..", "\u00e9t\u00e9"]
        async with supervisor(clock, retention=100, export_dir=str(export)) as sessions:
            for n, sid in enumerate(ids, start=1):
                ref = await sessions.start(Counter, sid)
                await ref.call(Add(n))
                await ref.stop("done")
            await clock.advance(101)
            for sid in ids:
                await wait_deleted(sessions, sid)
        assert sorted(os.listdir(export)) == sorted(export_file_name(sid) for sid in ids)
        for n, sid in enumerate(ids, start=1):
            rows = [json.loads(line) for line in (export / export_file_name(sid)).read_text().splitlines()]
            assert {r["session_id"] for r in rows} == {sid}
            assert rows[0]["data"] == {"n": n}

    async def test_failed_export_keeps_the_log_and_retries(self, clock: ManualClock, tmp_path: Path) -> None:
        """An export that cannot be written deletes nothing; it is tried again later."""
        export = tmp_path / "export"
        export.write_text("a file where the directory should be")
        async with supervisor(clock, retention=100, export_dir=str(export)) as sessions:
            ref = await sessions.start(Counter, "kept")
            await ref.call(Add(3))
            await ref.stop("done")
            await clock.advance(101)
            await wait_failed_exports(sessions, 1)
            assert sessions.reaper.export_failures == 1
            assert [e.version for e in await sessions.store.read("kept")] == [1, 2]
            export.unlink()
            await clock.advance(reaper_module._EXPORT_RETRY + 1)
            await wait_deleted(sessions, "kept")
        assert os.listdir(export) == [export_file_name("kept")]

    async def test_export_reaches_the_disk_before_the_log_goes(
        self, clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The file is fsynced, renamed into place and its directory fsynced, then the log deleted."""
        export = tmp_path / "export"
        steps: list[str] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            steps.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
            real_fsync(fd)

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            steps.append("rename")
            real_replace(src, dst)

        monkeypatch.setattr(os, "fsync", fsync)  # the reaper's are os.fsync and os.replace
        monkeypatch.setattr(os, "replace", replace)
        async with supervisor(clock, retention=100, export_dir=str(export)) as sessions:
            real_delete = sessions.store.delete

            async def delete(session_id: str) -> None:
                steps.append("delete")
                await real_delete(session_id)

            monkeypatch.setattr(sessions.store, "delete", delete)
            ref = await sessions.start(Counter, "s")
            await ref.stop("done")
            await clock.advance(101)
            await wait_deleted(sessions, "s")
        assert steps == ["fsync file", "rename", "fsync dir", "delete"]


class TestExportFileName:
    def test_names_are_distinct_and_tame(self) -> None:
        """Different ids, different names: readable, bounded, never hidden or a path."""
        ids = ["a/b", "a_b", "a?b", "A_B", "a_B", "..", ".hidden", "x" * 256, "/" * 10, "\u00e9t\u00e9"]
        names = [export_file_name(sid) for sid in ids]
        assert len(set(names)) == len(ids)
        assert len({n.lower() for n in names}) == len(ids)  # case-insensitive file systems too
        for name in names:
            assert name.endswith(".jsonl")
            assert not name.startswith(".")
            assert "/" not in name
            assert "\\" not in name
            assert len(name.encode()) <= 100
            assert name.isascii()
        assert export_file_name("game-42").startswith("game-42-")
        assert export_file_name("a/b") == export_file_name("a/b")

    async def test_retention_of_sessions_ended_by_an_earlier_process(self, clock: ManualClock) -> None:
        # The earlier process ran under the same policy: stored deadlines are set by the policy in
        # force when a session ends or is looked at (no start-up scan of every ended session).
        store = MemoryStore()
        async with SessionSupervisor(store=store, reaper=ReaperPolicy(retention=10)) as first:
            c = await first.start(Counter, "old")
            await c.stop()
        async with SessionSupervisor(store=store, clock=clock, reaper=ReaperPolicy(retention=10)) as second:
            await clock.advance(11)
            assert await second.store.get("old") is None


class TestLimits:
    async def test_max_sessions_reject_leaves_nothing(self, clock: ManualClock) -> None:
        async with supervisor(clock, max_sessions=2) as sessions:
            await sessions.start(Counter, "a")
            await sessions.start(Counter, "b")
            with pytest.raises(TooManySessions, match="limit of 2"):
                await sessions.start(Counter, "c")
            assert sessions.cached("c") is None
            assert await sessions.store.get("c") is None

    async def test_evict_idle_passivates_the_least_recently_used(self, clock: ManualClock) -> None:
        async with supervisor(clock, max_sessions=2, on_limit="evict_idle") as sessions:
            a = await sessions.start(Counter, "a")
            await clock.advance(1)
            b = await sessions.start(Counter, "b")
            await clock.advance(1)
            await a.call(Get())  # a is now the more recently used
            await sessions.start(Counter, "c")
            assert status_of(b) is Status.PASSIVATED
            assert status_of(a) is Status.RUNNING
            assert sessions.active_count == 2
            assert await b.call(Get()) == 0  # reactivation is never refused

    async def test_memory_limit_passivates_lru_first(self, clock: ManualClock) -> None:
        async with supervisor(clock, max_memory_bytes=20_000, memory_check_interval=1) as sessions:
            refs = []
            for i in range(5):
                refs.append(await sessions.start(Counter, f"s{i}"))
                await refs[-1].call(Add(i))
                await clock.advance(0.1)
            await clock.advance(1)
            statuses = [status_of(r) for r in refs]
            assert statuses[:2] == [Status.PASSIVATED] * 2
            assert statuses[-2:] == [Status.RUNNING] * 2
            assert sessions.reaper.estimated_bytes() <= 20_000

    async def test_start_rate(self, clock: ManualClock) -> None:
        """A token bucket on starts; restarts and reactivations do not spend tokens."""
        async with supervisor(clock, max_starts_per_second=2, idle_timeout=5) as sessions:
            a = await sessions.start(Counter, "a")
            await sessions.start(Counter, "b")
            with pytest.raises(RateLimited):
                await sessions.start(Counter, "c")
            assert await sessions.store.get("c") is None
            await clock.advance(6)
            assert status_of(a) is Status.PASSIVATED
            assert await a.call(Get()) == 0  # reactivation: no token needed
            await clock.advance(0.5)
            await sessions.start(Counter, "c")

    @pytest.mark.slow
    async def test_limits_under_churn(self, clock: ManualClock) -> None:
        """Many starts and stops: never more active sessions than the limit."""
        async with supervisor(clock, max_sessions=5, on_limit="evict_idle") as sessions:
            peak = 0
            for i in range(40):
                ref = await sessions.start(Counter, f"s{i}")
                peak = max(peak, sessions.active_count)
                if i % 3 == 0:
                    await ref.stop()
                await clock.advance(0.5)
            assert peak <= 5
            assert (await sessions.store.stats()).sessions == 40


class TestReaperItself:
    async def test_reap_counts_by_reason(self, clock: ManualClock) -> None:
        async with supervisor(clock, idle_timeout=10, max_age=1000) as sessions:
            for i in range(3):
                await sessions.start(Counter, f"s{i}")
            clock.jump(11)  # move time without waking the reaper: reap() by hand
            stats = await sessions.reap()
            assert stats.removed == {RemovalReason.IDLE: 3}
            assert stats.due == 3

    async def test_crash_restarts_the_reaper_and_touches_no_session(
        self, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A crash in a pass restarts the reaper; its schedule survives; no session is hurt."""
        async with supervisor(clock, idle_timeout=10) as sessions:
            idle = await sessions.start(Counter, "idle")
            busy = await sessions.start(Counter, "busy")
            await busy.call(Add(3))
            reaper = sessions.reaper
            real_reap = reaper.reap
            calls = [0]

            async def flaky_reap() -> object:
                calls[0] += 1
                if calls[0] == 1:
                    raise RuntimeError("reaper bug")
                return await real_reap()

            monkeypatch.setattr(reaper, "reap", flaky_reap)
            await clock.advance(5)
            await busy.call(Get())
            await clock.advance(6)
            assert reaper.crashes == 1
            assert calls[0] >= 2  # restarted, and the due check ran again
            assert status_of(idle) is Status.PASSIVATED
            assert status_of(busy) is Status.RUNNING
            assert await busy.call(Get()) == 3

    async def test_pass_cost_follows_what_is_due(self, clock: ManualClock) -> None:
        """A pass looks at due sessions only: 1,000 sessions, 10 due, 10 checks."""
        async with supervisor(clock, idle_timeout=100) as sessions:
            for i in range(1000):
                await sessions.start(Counter, f"s{i}")
                if i == 9:
                    await clock.advance(50)
            clock.jump(51)
            stats = await sessions.reap()
            assert (stats.due, stats.total) == (10, 10)


class TestLifecycleSubscribers:
    async def test_slow_subscriber_drops_and_never_blocks(self, clock: ManualClock) -> None:
        async with supervisor(clock) as sessions:
            slow = sessions.lifecycle(buffer=2)
            for i in range(5):
                await sessions.start(Counter, f"s{i}")
            assert slow.dropped == 3
            got = [(await slow.__anext__()).session_id for _ in range(2)]
            assert got == ["s0", "s1"]

    async def test_iteration_ends_at_shutdown(self, clock: ManualClock) -> None:
        seen: list[tuple[str, Status]] = []

        async def watch(sub: AsyncIterator[object]) -> None:
            async for e in sub:
                seen.append((e.session_id, e.status))  # type: ignore[attr-defined]

        async with anyio.create_task_group() as tg:
            async with supervisor(clock) as sessions:
                tg.start_soon(watch, sessions.lifecycle())
                c = await sessions.start(Counter, "c")
                await c.call(Get())
                await c.stop()
                await anyio.wait_all_tasks_blocked()
        assert seen == [("c", Status.RUNNING), ("c", Status.STOPPED)]


class TestReentry:
    """The reaper's bookkeeping is its own: a supervisor entered again reaps its sessions again."""

    async def test_entered_again(self, clock: ManualClock) -> None:
        """Enter, call, exit, enter again, call: the idle session is still passivated on time."""
        sessions = supervisor(clock, idle_timeout=10)
        async with sessions:
            c = await sessions.start(Counter, "c")
            await c.call(Add(1))
        async with sessions:
            assert await c.call(Get()) == 1
            await clock.advance(11)
            await anyio.wait_all_tasks_blocked()
            assert status_of(c) is Status.PASSIVATED
            assert sessions.reaper.totals[RemovalReason.IDLE] == 1

    async def test_under_a_tree_restart(self, clock: ManualClock) -> None:
        """ONE_FOR_ALL restarts the session supervisor with a worker; its sessions are reaped after."""
        from anyio.abc import TaskStatus

        from supervisors import ChildSpec, Strategy, Supervisor

        sessions = supervisor(clock, idle_timeout=10)
        crash = anyio.Event()
        runs: list[int] = []

        async def worker(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            runs.append(len(runs))
            task_status.started()
            if len(runs) == 1:
                await crash.wait()
                raise RuntimeError("worker bug")
            await anyio.sleep_forever()

        tree = Supervisor(
            [ChildSpec("sessions", sessions), ChildSpec("worker", worker)], strategy=Strategy.ONE_FOR_ALL
        )
        async with anyio.create_task_group() as tg:
            await tg.start(tree.run)
            c = await sessions.start(Counter, "c")
            await c.call(Add(1))
            crash.set()
            await anyio.wait_all_tasks_blocked()
            assert runs == [0, 1]
            assert [i.restarts for i in tree.which_children()] == [1, 1]
            assert await c.call(Get()) == 1
            await clock.advance(111)
            await anyio.wait_all_tasks_blocked()
            assert status_of(c) is Status.PASSIVATED
            assert sessions.reaper.totals[RemovalReason.IDLE] == 1
            tg.cancel_scope.cancel()
