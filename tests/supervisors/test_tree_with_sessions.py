"""A SessionSupervisor as a child of a Supervisor tree, beside plain workers."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import TaskStatus

from runtime import MemoryStore, SessionCrashed, ShuttingDown, StoreError
from supervisors import (
    Backoff,
    ChildSpec,
    ChildStartFailed,
    RestartPolicy,
    SessionSupervisor,
    Supervisor,
)
from tests.apps.counter import Add, Boom, Counter, Get

pytestmark = pytest.mark.anyio


async def test_session_crashes_stay_inside_and_workers_restart() -> None:
    """A session crash is the session supervisor's business; a worker crash is the tree's."""
    sessions = SessionSupervisor(restarts=RestartPolicy(backoff=Backoff(initial=0)))
    starts: list[str] = []
    crash_worker = anyio.Event()

    async def worker(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        starts.append("worker")
        task_status.started()
        if len(starts) == 1:  # the first incarnation crashes when told; the next one just runs
            await crash_worker.wait()
            raise RuntimeError("worker bug")
        await anyio.sleep_forever()

    tree = Supervisor(
        [ChildSpec("sessions", sessions), ChildSpec("worker", worker)],
        max_restarts=3,
        within=5.0,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(tree.run)
        c = await sessions.start(Counter, "c")
        await c.call(Add(2))
        with pytest.raises(SessionCrashed):
            await c.call(Boom())
        assert await c.call(Get()) == 2
        assert [i.restarts for i in tree.which_children()] == [0, 0]

        crash_worker.set()
        await anyio.wait_all_tasks_blocked()
        assert starts == ["worker", "worker"]
        assert [i.restarts for i in tree.which_children()] == [0, 1]
        assert await c.call(Get()) == 2  # the sessions never noticed
        tg.cancel_scope.cancel()
    with pytest.raises(ShuttingDown):
        await c.call(Get())


async def test_session_supervisor_that_cannot_open_its_store_fails_the_tree() -> None:
    """A session supervisor whose store cannot open fails to start; the tree stops at once with
    ChildStartFailed naming it, the store's error as the reason, and no second attempt."""

    store = MemoryStore()
    opens: list[str] = []

    async def fail_open() -> None:
        opens.append("open")
        raise StoreError(None, "open", "disk gone")

    store.open = fail_open  # type: ignore[method-assign]
    tree = Supervisor([ChildSpec("sessions", SessionSupervisor(store=store))], max_restarts=2)
    with pytest.RaisesGroup(pytest.RaisesExc(ChildStartFailed, match="'sessions'")) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(tree.run)
    failed = info.value.exceptions[0]
    assert isinstance(failed, ChildStartFailed)
    assert failed.child_id == "sessions"
    assert isinstance(failed.reason, StoreError)
    reason = failed.reason
    assert (reason.session_id, reason.action, reason.detail) == (None, "open", "disk gone")
    assert opens == ["open"]
