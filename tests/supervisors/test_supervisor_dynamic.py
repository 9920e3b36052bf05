"""Supervisor trees: which_children, count_children and the dynamic operations on a running tree."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import TaskStatus

from supervisors import (
    ChildCounts,
    ChildExists,
    ChildInfo,
    ChildNotFound,
    ChildRunning,
    ChildSpec,
    ChildStartFailed,
    Restart,
    Strategy,
    Supervisor,
    SupervisorNotRunning,
)

from .test_supervisor import Log, Worker, settle, specs, workers

pytestmark = pytest.mark.anyio


class TestIntrospection:
    async def test_which_children(self, anyio_backend_name: str) -> None:
        """which_children lists every child in start order, with its state."""
        log = Log(anyio_backend_name)
        a, b = workers(log, "a", "b")
        inner = Supervisor([])
        children = [
            ChildSpec("a", a),
            ChildSpec("b", b, restart=Restart.TRANSIENT),
            ChildSpec("inner", inner),
        ]
        with log.guard():
            async with Supervisor(children) as sup:
                b.finish()
                await settle()
                assert sup.which_children() == [
                    ChildInfo(
                        id="a",
                        running=True,
                        restart=Restart.PERMANENT,
                        is_supervisor=False,
                        value="a",
                        restarts=0,
                    ),
                    ChildInfo(
                        id="b",
                        running=False,
                        restart=Restart.TRANSIENT,
                        is_supervisor=False,
                        value=None,
                        restarts=0,
                    ),
                    ChildInfo(
                        id="inner",
                        running=True,
                        restart=Restart.PERMANENT,
                        is_supervisor=True,
                        value=inner,
                        restarts=0,
                    ),
                ]
                assert sup.count_children() == ChildCounts(specs=3, active=2, supervisors=1, workers=2)

    async def test_not_running(self, anyio_backend_name: str) -> None:
        """Before it runs and after it stops, the tree refuses introspection and changes."""
        log = Log(anyio_backend_name)
        sup = Supervisor(specs(workers(log, "a")), name="idle")
        for attempt in range(2):
            with pytest.raises(SupervisorNotRunning, match="'idle' is not running"):
                sup.which_children()
            with pytest.raises(SupervisorNotRunning):
                sup.count_children()
            with pytest.raises(SupervisorNotRunning):
                await sup.start_child(ChildSpec("b", Worker(log, "b")))
            for operation in (sup.terminate_child, sup.restart_child, sup.delete_child):
                with pytest.raises(SupervisorNotRunning):
                    await operation("a")
            if attempt == 0:
                with log.guard():
                    async with sup:
                        pass


class TestStartChild:
    async def test_added_last_supervised_and_stopped_first(self, anyio_backend_name: str) -> None:
        """A started child is last in order, restarted when it crashes, and stopped first."""
        log = Log(anyio_backend_name)
        a, b = workers(log, "a", "b")
        with log.guard():
            async with Supervisor(specs([a])) as sup:
                assert await sup.start_child(ChildSpec("b", b)) == "b"
                assert [info.id for info in sup.which_children()] == ["a", "b"]
                b.crash()
                await settle()
        assert log.events == ["start a", "start b", "crash b", "start b", "stop b", "stop a"]

    async def test_existing_id(self, anyio_backend_name: str) -> None:
        """An id already in use is refused, saying whether that child is running."""
        log = Log(anyio_backend_name)
        (a,) = workers(log, "a")
        with log.guard():
            async with Supervisor(specs([a]), name="tree") as sup:
                with pytest.raises(ChildExists, match="already running") as caught:
                    await sup.start_child(ChildSpec("a", a))
                assert (caught.value.child_id, caught.value.running) == ("a", True)
                await sup.terminate_child("a")
                with pytest.raises(ChildExists, match=r"restart_child\('a'\)") as caught:
                    await sup.start_child(ChildSpec("a", a))
                assert caught.value.running is False

    async def test_start_failure_leaves_nothing(self, anyio_backend_name: str) -> None:
        """A child that fails to start is not added, and the tree runs on."""
        log = Log(anyio_backend_name)
        (a,) = workers(log, "a")
        bad = Worker(log, "bad", fail_start=lambda n: True)
        with log.guard():
            async with Supervisor(specs([a])) as sup:
                with pytest.raises(ChildStartFailed, match="'bad'"):
                    await sup.start_child(ChildSpec("bad", bad))
                assert [info.id for info in sup.which_children()] == ["a"]
                assert sup.count_children().active == 1
        assert log.events == ["start a", "start bad", "fail bad", "stop a"]

    async def test_cancelled_caller_stops_the_child(self, anyio_backend_name: str) -> None:
        """If start_child's caller is cancelled while the child starts, the child is stopped."""
        log = Log(anyio_backend_name)
        (a,) = workers(log, "a")

        async def hangs(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            log.add("start hangs")
            try:
                await anyio.sleep_forever()
            finally:
                log.add("stop hangs")

        with log.guard():
            async with Supervisor(specs([a])) as sup:
                with anyio.move_on_after(1 * log.unit):
                    await sup.start_child(ChildSpec("hangs", hangs))
                assert [info.id for info in sup.which_children()] == ["a"]
        log.assert_timed([("start a", 0), ("start hangs", 0), ("stop hangs", 1), ("stop a", 1)])


class TestTerminateRestartDelete:
    async def test_terminate_then_restart(self, anyio_backend_name: str) -> None:
        """A terminated permanent child stays stopped until restart_child, which returns its value."""
        log = Log(anyio_backend_name)
        a, b = workers(log, "a", "b")
        with log.guard():
            async with Supervisor(specs([a, b])) as sup:
                await sup.terminate_child("a")
                await settle()
                assert [info.running for info in sup.which_children()] == [False, True]
                await sup.terminate_child("a")  # already stopped: nothing to do
                assert await sup.restart_child("a") == "a"
                (info_a, _) = sup.which_children()
                assert (info_a.running, info_a.restarts) == (True, 1)
        assert log.events == ["start a", "start b", "stop a", "start a", "stop b", "stop a"]

    async def test_terminate_waits_up_to_shutdown(self, anyio_backend_name: str) -> None:
        """terminate_child returns once the child has finished, or its shutdown has passed."""
        log = Log(anyio_backend_name)
        a = Worker(log, "a", cleanup=2)
        b = Worker(log, "b", cleanup=10)
        children = [ChildSpec("a", a), ChildSpec("b", b, shutdown=3 * log.unit)]
        with log.guard():
            async with Supervisor(children) as sup:
                await sup.terminate_child("a")
                log.add("a terminated")
                await sup.terminate_child("b")
                log.add("b terminated")
        log.assert_timed(
            [
                *[("start a", 0), ("start b", 0), ("stop a", 0), ("cleaned a", 2), ("a terminated", 2)],
                *[("stop b", 2), ("b terminated", 5), ("cleaned b", 12)],
            ]
        )

    async def test_running_children_cannot_be_restarted_or_deleted(self, anyio_backend_name: str) -> None:
        """restart_child and delete_child refuse a running child, naming what to do instead."""
        log = Log(anyio_backend_name)
        with log.guard():
            async with Supervisor(specs(workers(log, "a"))) as sup:
                with pytest.raises(ChildRunning, match=r"terminate_child\('a'\)") as caught:
                    await sup.restart_child("a")
                assert caught.value.action == "restart"
                with pytest.raises(ChildRunning) as caught:
                    await sup.delete_child("a")
                assert caught.value.action == "delete"

    async def test_delete(self, anyio_backend_name: str) -> None:
        """A stopped child can be deleted; its id is then free for start_child."""
        log = Log(anyio_backend_name)
        a, b = workers(log, "a", "b")
        with log.guard():
            async with Supervisor(specs([a, b])) as sup:
                await sup.terminate_child("a")
                await sup.delete_child("a")
                assert [info.id for info in sup.which_children()] == ["b"]
                await sup.start_child(ChildSpec("a", a))
                assert [info.id for info in sup.which_children()] == ["b", "a"]
        assert log.events == ["start a", "start b", "stop a", "start a", "stop a", "stop b"]

    async def test_terminating_a_temporary_child_forgets_it(self, anyio_backend_name: str) -> None:
        """A terminated temporary child's spec is removed, as OTP does."""
        log = Log(anyio_backend_name)
        (a,) = workers(log, "a")
        with log.guard():
            async with Supervisor(specs([a], Restart.TEMPORARY)) as sup:
                await sup.terminate_child("a")
                assert sup.which_children() == []

    async def test_unknown_ids(self, anyio_backend_name: str) -> None:
        """Every operation on an unknown id raises ChildNotFound naming it."""
        log = Log(anyio_backend_name)
        with log.guard():
            async with Supervisor(specs(workers(log, "a")), name="tree") as sup:
                for operation in (sup.terminate_child, sup.restart_child, sup.delete_child):
                    with pytest.raises(ChildNotFound, match="'tree' has no child 'zz'") as caught:
                        await operation("zz")
                    assert caught.value.child_id == "zz"
                    assert isinstance(caught.value, LookupError)

    async def test_restart_failure_leaves_the_child_stopped(self, anyio_backend_name: str) -> None:
        """restart_child raises ChildStartFailed if the child fails to start; it stays stopped."""
        log = Log(anyio_backend_name)
        a = Worker(log, "a", fail_start=lambda n: n == 2)
        with log.guard():
            async with Supervisor(specs([a])) as sup:
                await sup.terminate_child("a")
                with pytest.raises(ChildStartFailed):
                    await sup.restart_child("a")
                assert [info.running for info in sup.which_children()] == [False]
                assert await sup.restart_child("a") == "a"

    async def test_operations_wait_for_a_restart_in_progress(self, anyio_backend_name: str) -> None:
        """A dynamic operation waits until the supervisor has finished restarting children."""
        log = Log(anyio_backend_name)
        (a,) = workers(log, "a")
        starts = 0

        async def slow(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            nonlocal starts
            starts += 1
            if starts > 1:
                await anyio.sleep(3 * log.unit)
            log.add("slow started")
            task_status.started()
            await anyio.sleep_forever()

        children = [ChildSpec("a", a), ChildSpec("slow", slow)]
        with log.guard():
            async with Supervisor(children, strategy=Strategy.ONE_FOR_ALL) as sup:
                a.crash()
                await anyio.sleep(1 * log.unit)
                log.add("terminating a")
                await sup.terminate_child("a")
                log.add("a terminated")
        log.assert_timed(
            [
                *[("start a", 0), ("slow started", 0), ("crash a", 0), ("start a", 0)],
                *[("terminating a", 1), ("slow started", 3), ("stop a", 3), ("a terminated", 3)],
            ]
        )
