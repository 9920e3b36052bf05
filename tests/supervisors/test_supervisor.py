"""Supervisor trees: start and stop order, strategies, restart types, start failures, intensity.

Time-dependent tests run in virtual time on trio (``MockClock``), where they also check the exact time
of each event; on asyncio the same tests run with a hundredth of the delays and check only the order.
The shared helpers (``Log``, ``Worker``) are imported by the other ``test_supervisor_*`` modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

import anyio
import pytest
from anyio.abc import TaskStatus

import supervisors
from supervisors import (
    ChildSpec,
    ChildStartFailed,
    Restart,
    RestartIntensityExceeded,
    Strategy,
    Supervisor,
    SupervisorError,
)

pytestmark = pytest.mark.anyio


class Boom(Exception):
    """What the test children raise when they crash."""


class Log:
    """Records what children do, in order, with the time each event happened at (in units).

    On trio the clock is virtual, so times are exact and a unit is one second; on asyncio the clock is
    real, so a unit is 10 ms and only the order of events is checked.
    """

    def __init__(self, backend: str) -> None:
        self.exact = backend == "trio"
        self.unit = 1.0 if self.exact else 0.01
        self.events: list[str] = []
        self.timed: list[tuple[str, float]] = []
        self._t0 = anyio.current_time()
        self._added = anyio.Event()

    def add(self, event: str) -> None:
        self.events.append(event)
        self.timed.append((event, self.now()))
        self._added.set()

    async def wait_for(self, event: str, count: int) -> None:
        """Return once ``event`` has been logged ``count`` times."""
        while self.events.count(event) < count:
            self._added = anyio.Event()
            await self._added.wait()

    def now(self) -> float:
        """Units elapsed since the log was created."""
        return round((anyio.current_time() - self._t0) / self.unit, 6)

    def guard(self, units: float = 200) -> AbstractContextManager[anyio.CancelScope]:
        """A deadline for the whole test: fires at once in virtual time if the test deadlocks."""
        return anyio.fail_after(units * self.unit)

    def assert_timed(self, expected: list[tuple[str, float]]) -> None:
        """Check the events' order always, and their times too where the clock is virtual."""
        assert self.events == [event for event, _ in expected]
        if self.exact:
            assert self.timed == expected


class Worker:
    """A test child: logs "start", "stop", "crash", "return", "fail" (start), "cleaned" events.

    Args:
        log: where events go.
        name: the child's name in events.
        crash_after: units after starting at which each incarnation crashes (``None``: only when
            ``crash()`` is called).
        fail_start: which incarnations (numbered from 1) raise before calling ``started()``.
        cleanup: units of shielded clean-up each incarnation does once cancelled.
    """

    def __init__(
        self,
        log: Log,
        name: str,
        *,
        crash_after: float | None = None,
        fail_start: Callable[[int], bool] = lambda n: False,
        cleanup: float = 0,
    ) -> None:
        self.log = log
        self.name = name
        self.crash_after = crash_after
        self.fail_start = fail_start
        self.cleanup = cleanup
        self.incarnations = 0
        self._exit = anyio.Event()
        self._error: Exception | None = None

    async def __call__(self, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        self.incarnations += 1
        self.log.add(f"start {self.name}")
        if self.fail_start(self.incarnations):
            self.log.add(f"fail {self.name}")
            raise Boom(f"{self.name} failed to start")
        self._exit = anyio.Event()
        self._error = None
        task_status.started(self.name)
        try:
            if self.crash_after is None:
                await self._exit.wait()
            else:
                await anyio.sleep(self.crash_after * self.log.unit)
                self._error = Boom(f"{self.name} crashed")
        except anyio.get_cancelled_exc_class():
            self.log.add(f"stop {self.name}")
            if self.cleanup:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(self.cleanup * self.log.unit)
                self.log.add(f"cleaned {self.name}")
            raise
        if self._error is not None:
            self.log.add(f"crash {self.name}")
            raise self._error
        self.log.add(f"return {self.name}")

    def crash(self) -> None:
        """Make the running incarnation raise ``Boom``."""
        self._error = Boom(f"{self.name} crashed")
        self._exit.set()

    def finish(self) -> None:
        """Make the running incarnation return normally."""
        self._exit.set()


def workers(log: Log, *names: str, crash_after: float | None = None) -> list[Worker]:
    """One ``Worker`` per name."""
    return [Worker(log, name, crash_after=crash_after) for name in names]


async def idle(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """A child that starts and then waits to be cancelled."""
    task_status.started()
    await anyio.sleep_forever()


def specs(children: list[Worker], restart: Restart = Restart.PERMANENT) -> list[ChildSpec]:
    """A ``ChildSpec`` per worker, ids being the workers' names."""
    return [ChildSpec(child.name, child, restart=restart) for child in children]


async def settle() -> None:
    await anyio.wait_all_tasks_blocked()


class TestStartAndStop:
    async def test_start_in_order_stop_in_reverse(self, anyio_backend_name: str) -> None:
        """Children start one by one in order and stop one by one in reverse order."""
        log = Log(anyio_backend_name)
        with log.guard():
            async with Supervisor(specs(workers(log, "a", "b", "c"))) as sup:
                assert [info.running for info in sup.which_children()] == [True, True, True]
                log.add("body")
        assert log.events == ["start a", "start b", "start c", "body", "stop c", "stop b", "stop a"]

    async def test_task_group_start_returns_the_supervisor(self, anyio_backend_name: str) -> None:
        """await tg.start(sup.run) returns the supervisor once every child has started."""
        log = Log(anyio_backend_name)
        sup = Supervisor(specs(workers(log, "a", "b")), name="tree")
        with log.guard():
            async with anyio.create_task_group() as tg:
                assert await tg.start(sup.run) is sup
                assert log.events == ["start a", "start b"]
                assert [info.value for info in sup.which_children()] == ["a", "b"]
                tg.cancel_scope.cancel()
        assert log.events == ["start a", "start b", "stop b", "stop a"]

    async def test_waits_for_each_child_to_start(self, anyio_backend_name: str) -> None:
        """The next child starts only once the previous one has called task_status.started()."""
        log = Log(anyio_backend_name)

        async def slow(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            log.add("slow starting")
            await anyio.sleep(3 * log.unit)
            log.add("slow started")
            task_status.started()
            await anyio.sleep_forever()

        (b,) = workers(log, "b")
        with log.guard():
            async with Supervisor([ChildSpec("slow", slow), ChildSpec("b", b)]):
                pass
        log.assert_timed([("slow starting", 0), ("slow started", 3), ("start b", 3), ("stop b", 3)])

    async def test_cancelled_while_starting(self, anyio_backend_name: str) -> None:
        """Cancelling the tree while a child starts stops it and the ones before it, in reverse."""
        log = Log(anyio_backend_name)
        a, b = workers(log, "a", "b")

        async def hangs(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            log.add("start hangs")
            try:
                await anyio.sleep_forever()
            finally:
                log.add("stop hangs")

        tree = Supervisor([ChildSpec("a", a), ChildSpec("hangs", hangs), ChildSpec("b", b)])
        with log.guard(), anyio.move_on_after(2 * log.unit):
            await tree.run()
        log.assert_timed([("start a", 0), ("start hangs", 0), ("stop hangs", 2), ("stop a", 2)])

    async def test_runs_once_at_a_time(self, anyio_backend_name: str) -> None:
        """A second concurrent run of the same supervisor is refused."""
        log = Log(anyio_backend_name)
        with log.guard():
            async with Supervisor(specs(workers(log, "a")), name="once") as sup:
                with pytest.raises(RuntimeError, match="'once' is already running"):
                    await sup.run()

    async def test_runs_again_after_stopping(self, anyio_backend_name: str) -> None:
        """Once stopped, a supervisor can run again, from its original specs."""
        log = Log(anyio_backend_name)
        sup = Supervisor(specs(workers(log, "a")))
        with log.guard():
            for _ in range(2):
                async with sup:
                    pass
        assert log.events == ["start a", "stop a", "start a", "stop a"]


STRATEGY_TAIL = {
    Strategy.ONE_FOR_ONE: ["start b"],
    Strategy.ONE_FOR_ALL: ["stop c", "stop a", "start a", "start b", "start c"],
    Strategy.REST_FOR_ONE: ["stop c", "start b", "start c"],
}
RESTARTS_COUNTS = {
    Strategy.ONE_FOR_ONE: [0, 1, 0],
    Strategy.ONE_FOR_ALL: [1, 1, 1],
    Strategy.REST_FOR_ONE: [0, 1, 1],
}


class TestStrategies:
    @pytest.mark.parametrize("strategy", list(Strategy))
    @pytest.mark.parametrize(
        ("restart", "how", "restarted"),
        [
            (Restart.PERMANENT, "crash", True),
            (Restart.PERMANENT, "return", True),
            (Restart.TRANSIENT, "crash", True),
            (Restart.TRANSIENT, "return", False),
            (Restart.TEMPORARY, "crash", False),
            (Restart.TEMPORARY, "return", False),
        ],
    )
    async def test_matrix(
        self,
        anyio_backend_name: str,
        strategy: Strategy,
        restart: Restart,
        how: str,
        restarted: bool,
    ) -> None:
        """The middle child of three exits: which children stop and start again, in what order."""
        log = Log(anyio_backend_name)
        a, b, c = workers(log, "a", "b", "c")
        with log.guard():
            async with Supervisor(specs([a, b, c], restart), strategy=strategy) as sup:
                if how == "crash":
                    b.crash()
                else:
                    b.finish()
                await settle()
                infos = sup.which_children()
        expected = ["start a", "start b", "start c", f"{how} b"]
        if restarted:
            expected += STRATEGY_TAIL[strategy]
            assert [(i.id, i.running, i.restarts) for i in infos] == list(
                zip("abc", [True] * 3, RESTARTS_COUNTS[strategy], strict=True)
            )
            expected += ["stop c", "stop b", "stop a"]
        elif restart is Restart.TEMPORARY:
            assert [(i.id, i.running) for i in infos] == [("a", True), ("c", True)]
            expected += ["stop c", "stop a"]
        else:
            assert [(i.id, i.running) for i in infos] == [("a", True), ("b", False), ("c", True)]
            expected += ["stop c", "stop a"]
        assert log.events == expected

    @pytest.mark.parametrize(
        ("strategy", "tail", "left"),
        [
            (Strategy.ONE_FOR_ALL, ["stop c", "stop a", "start b"], ["b"]),
            (Strategy.REST_FOR_ONE, ["stop c", "start b"], ["a", "b"]),
        ],
    )
    async def test_temporary_siblings_are_not_restarted(
        self, anyio_backend_name: str, strategy: Strategy, tail: list[str], left: list[str]
    ) -> None:
        """Temporary children stopped by a sibling's restart stay stopped and are forgotten."""
        log = Log(anyio_backend_name)
        a, b, c = workers(log, "a", "b", "c")
        children = [
            ChildSpec("a", a, restart=Restart.TEMPORARY),
            ChildSpec("b", b),
            ChildSpec("c", c, restart=Restart.TEMPORARY),
        ]
        with log.guard():
            async with Supervisor(children, strategy=strategy) as sup:
                b.crash()
                await settle()
                assert [info.id for info in sup.which_children()] == left
        assert log.events[:4] == ["start a", "start b", "start c", "crash b"]
        assert log.events[4:] == tail + [f"stop {x}" for x in reversed(left)]

    async def test_stopped_children_stay_stopped(self, anyio_backend_name: str) -> None:
        """ONE_FOR_ALL restarts the children that were running, not one that had returned."""
        log = Log(anyio_backend_name)
        a, b, c = workers(log, "a", "b", "c")
        children = [ChildSpec("a", a, restart=Restart.TRANSIENT), ChildSpec("b", b), ChildSpec("c", c)]
        with log.guard():
            async with Supervisor(children, strategy=Strategy.ONE_FOR_ALL):
                a.finish()
                await settle()
                c.crash()
                await settle()
        assert log.events == [
            *["start a", "start b", "start c", "return a", "crash c"],
            *["stop b", "start b", "start c", "stop c", "stop b"],
        ]

    async def test_simultaneous_crashes_restart_once(self, anyio_backend_name: str) -> None:
        """Under ONE_FOR_ALL, two children crashing together cause one restart of all, not two."""
        log = Log(anyio_backend_name)
        a, b = workers(log, "a", "b")
        with log.guard():
            async with Supervisor(specs([a, b]), strategy=Strategy.ONE_FOR_ALL, max_restarts=1) as sup:
                a.crash()
                b.crash()
                await settle()
                assert [(info.running, info.restarts) for info in sup.which_children()] == [(True, 1)] * 2
        assert sorted(log.events[2:4]) == ["crash a", "crash b"]  # trio wakes them in either order
        assert log.events[:2] + log.events[4:] == [
            *["start a", "start b"],
            *["start a", "start b", "stop b", "stop a"],
        ]


class TestLogging:
    async def test_crash_is_logged_with_its_traceback(
        self, anyio_backend_name: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A crash is logged at WARNING, naming the supervisor and the child, with the exception."""
        log = Log(anyio_backend_name)
        (a,) = workers(log, "a")
        with log.guard():
            async with Supervisor(specs([a]), name="tree"):
                a.crash()
                await settle()
        (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert record.name == "supervisors._supervisor"
        assert record.getMessage() == "supervisor 'tree': permanent child 'a' crashed (one_for_one restart)"
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], Boom)

    async def test_raising_while_stopped_is_logged_not_restarted(
        self, anyio_backend_name: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A child that raises instead of stopping quietly is logged, and not counted as a crash."""
        log = Log(anyio_backend_name)

        async def grumpy(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                log.add("grumpy stopped")
                raise Boom("grumpy")

        with log.guard():
            async with Supervisor([ChildSpec("grumpy", grumpy)], max_restarts=0) as sup:
                await sup.terminate_child("grumpy")
                assert [info.running for info in sup.which_children()] == [False]
        assert log.events == ["grumpy stopped"]
        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert messages == [f"supervisor {sup.name!r}: child 'grumpy' raised while being stopped"]


class TestStartFailure:
    async def test_run_raises_naming_the_child(self, anyio_backend_name: str) -> None:
        """Child k fails to start: k-1..1 stop in that order, and run raises naming k, with its cause."""
        log = Log(anyio_backend_name)
        a, b, c, d = workers(log, "a", "b", "c", "d")
        c.fail_start = lambda n: True
        sup = Supervisor(specs([a, b, c, d]), name="tree")
        with log.guard():
            async with anyio.create_task_group() as tg:
                with pytest.raises(ChildStartFailed) as caught:
                    await tg.start(sup.run)
        assert log.events == ["start a", "start b", "start c", "fail c", "stop b", "stop a"]
        error = caught.value
        assert (error.supervisor, error.child_id) == ("tree", "c")
        assert isinstance(error.__cause__, Boom)
        assert error.reason is error.__cause__
        assert "'tree'" in str(error)
        assert "'c'" in str(error)

    async def test_returning_before_started_is_a_failure(self, anyio_backend_name: str) -> None:
        """A child that returns without calling task_status.started() failed to start."""
        log = Log(anyio_backend_name)

        async def quits(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            log.add("quits")

        with log.guard(), pytest.raises(ChildStartFailed, match="'quits' failed to start") as caught:
            await Supervisor([ChildSpec("quits", quits)]).run()
        assert isinstance(caught.value.__cause__, RuntimeError)
        assert "without calling task_status.started()" in str(caught.value.__cause__)

    async def test_context_manager_raises_a_group(self, anyio_backend_name: str) -> None:
        """As an async context manager, a start failure comes out in an ExceptionGroup."""
        log = Log(anyio_backend_name)
        a, b = workers(log, "a", "b")
        b.fail_start = lambda n: True
        with log.guard(), pytest.RaisesGroup(pytest.RaisesExc(ChildStartFailed, match="'b'")):
            async with Supervisor(specs([a, b])):
                pytest.fail("the body must not run")
        assert log.events == ["start a", "start b", "fail b", "stop a"]


class TestIntensity:
    async def test_exceeding_stops_children_and_raises(self, anyio_backend_name: str) -> None:
        """The restart past max_restarts within the window stops the rest and raises out of run."""
        log = Log(anyio_backend_name)
        (a,) = workers(log, "a", crash_after=1)
        (b,) = workers(log, "b")
        # A window far wider than the crashes' spacing: on asyncio (real time) a busy machine spaces
        # them out, and they must still fall within it.
        sup = Supervisor(specs([a, b]), max_restarts=2, within=1000 * log.unit, name="tree")
        with log.guard(), pytest.raises(RestartIntensityExceeded) as caught:
            await sup.run()
        log.assert_timed(
            [
                *[("start a", 0), ("start b", 0)],
                *[("crash a", 1), ("start a", 1), ("crash a", 2), ("start a", 2), ("crash a", 3)],
                ("stop b", 3),
            ]
        )
        error = caught.value
        assert (error.supervisor, error.child_id, error.max_restarts) == ("tree", "a", 2)
        assert isinstance(error.__cause__, Boom)
        assert isinstance(error, SupervisorError)

    async def test_permanent_normal_returns_count(self, anyio_backend_name: str) -> None:
        """A permanent child that keeps returning normally also exhausts the intensity."""
        log = Log(anyio_backend_name)

        async def returns(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            log.add("start")
            task_status.started()

        with log.guard(), pytest.raises(RestartIntensityExceeded, match="returned normally") as caught:
            await Supervisor([ChildSpec("r", returns)], max_restarts=1).run()
        assert caught.value.reason is None
        assert log.events == ["start", "start"]

    # Crashes 3 units apart in a 1000-unit window, or 6 apart in a 5-unit one: in real time (asyncio)
    # a busy machine only spaces crashes out, so neither case depends on the machine's speed.
    @pytest.mark.parametrize(("every", "within", "escalates_at"), [(3, 1000, 6), (6, 5, None)])
    async def test_sliding_window(
        self, anyio_backend_name: str, every: float, within: float, escalates_at: float | None
    ) -> None:
        """Crashes closer together than the window escalate; crashes spread wider never do."""
        log = Log(anyio_backend_name)
        (a,) = workers(log, "a", crash_after=every)
        sup = Supervisor(specs([a]), max_restarts=1, within=within * log.unit)

        async def stop_after_four_crashes(scope: anyio.CancelScope) -> None:
            # Counted, not timed: in real time (asyncio) a busy machine spaces the crashes out
            # further (never closer together), so a deadline would see fewer of them.
            await log.wait_for("crash a", 4)
            scope.cancel()

        with log.guard(2000):
            async with anyio.create_task_group() as tg:
                tg.start_soon(stop_after_four_crashes, tg.cancel_scope)
                try:
                    await sup.run()
                except RestartIntensityExceeded:
                    log.add("escalated")
                    tg.cancel_scope.cancel()
        if escalates_at is None:
            assert log.events.count("crash a") == 4
            assert "escalated" not in log.events
            if log.exact:
                assert [t for e, t in log.timed if e == "crash a"] == [6, 12, 18, 24]
        else:
            log.assert_timed(
                [("start a", 0), ("crash a", 3), ("start a", 3), ("crash a", 6), ("escalated", 6)]
            )

    async def test_failed_restarts_count(self, anyio_backend_name: str) -> None:
        """A restart whose start fails counts as another restart, and is retried by the strategy."""
        log = Log(anyio_backend_name)
        a, c = workers(log, "a", "c")
        b = Worker(log, "b", crash_after=1, fail_start=lambda n: n > 1)
        sup = Supervisor(specs([a, b, c]), strategy=Strategy.ONE_FOR_ALL, max_restarts=2)
        with log.guard(), pytest.raises(RestartIntensityExceeded) as caught:
            await sup.run()
        assert log.events == [
            *["start a", "start b", "start c", "crash b", "stop c", "stop a"],
            *["start a", "start b", "fail b", "stop a"],
            *["start a", "start b", "fail b", "stop a"],
        ]
        assert caught.value.child_id == "b"
        assert str(caught.value.reason) == "b failed to start"

    async def test_failing_restarts_do_not_busy_loop(self, anyio_backend_name: str) -> None:
        """Restart attempts yield to other tasks, and stop once the intensity is exceeded."""
        log = Log(anyio_backend_name)
        a = Worker(log, "a", crash_after=0, fail_start=lambda n: n > 1)
        ticks = 0

        async def ticker() -> None:  # bounded: a busy task keeps trio's virtual clock from moving
            nonlocal ticks
            for _ in range(10_000):
                await anyio.lowlevel.checkpoint()
                ticks += 1

        with log.guard():
            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker)
                with pytest.raises(RestartIntensityExceeded):
                    await Supervisor(specs([a]), max_restarts=50).run()
                tg.cancel_scope.cancel()
        assert a.incarnations == 1 + 50
        assert ticks >= 25

    @pytest.mark.parametrize(("inner_max", "outer_max"), [(0, 0), (2, 1), (3, 3)])
    async def test_nested_limits_multiply(
        self, anyio_backend_name: str, inner_max: int, outer_max: int
    ) -> None:
        """A parent counts its child supervisor giving up as a crash: the limits multiply."""
        log = Log(anyio_backend_name)
        (leaf,) = workers(log, "leaf", crash_after=0)
        inner = Supervisor([ChildSpec("leaf", leaf)], max_restarts=inner_max, name="inner")
        outer = Supervisor([ChildSpec("inner", inner)], max_restarts=outer_max, name="outer")
        with log.guard(), pytest.raises(RestartIntensityExceeded) as caught:
            await outer.run()
        assert leaf.incarnations == (inner_max + 1) * (outer_max + 1)
        error = caught.value
        assert (error.supervisor, error.child_id) == ("outer", "inner")
        assert isinstance(error.__cause__, RestartIntensityExceeded)
        assert (error.__cause__.supervisor, error.__cause__.child_id) == ("inner", "leaf")

    async def test_context_manager_group_and_body_cancelled(self, anyio_backend_name: str) -> None:
        """Giving up while the async with body runs cancels the body and raises a group."""
        log = Log(anyio_backend_name)
        (a,) = workers(log, "a", crash_after=1)
        with log.guard(), pytest.RaisesGroup(RestartIntensityExceeded):
            async with Supervisor(specs([a]), max_restarts=0):
                try:
                    await anyio.sleep_forever()
                finally:
                    log.add("body cancelled")
        log.assert_timed([("start a", 0), ("crash a", 1), ("body cancelled", 1)])


class TestSpecs:
    def test_defaults(self) -> None:
        """ChildSpec defaults to a permanent child with 5 s to shut down."""
        spec = ChildSpec("a", idle)
        assert (spec.restart, spec.shutdown, spec.is_supervisor) == (Restart.PERMANENT, 5.0, False)

    def test_supervisor_child_runs_its_run(self) -> None:
        """A Supervisor given as start is a supervisor child whose run is what starts."""
        inner = Supervisor([])
        spec = ChildSpec("inner", inner, shutdown=1)
        assert spec.is_supervisor
        assert spec.target == inner.run
        assert spec.shutdown == 1.0

    @pytest.mark.parametrize(
        ("args", "kwargs", "error"),
        [
            (("", Supervisor([])), {}, TypeError),
            (("a", 42), {}, TypeError),
            (("a", Supervisor([])), {"shutdown": -1}, ValueError),
            (("a", Supervisor([])), {"restart": "permanent"}, TypeError),
        ],
    )
    def test_rejects(self, args: tuple[object, ...], kwargs: dict[str, object], error: type) -> None:
        """Bad ids, starts, shutdowns and restart types are refused at once."""
        with pytest.raises(error):
            ChildSpec(*args, **kwargs)  # type: ignore[arg-type]

    def test_supervisor_rejects_duplicate_ids_and_bad_limits(self) -> None:
        """Duplicate child ids and bad intensity limits fail when the supervisor is built."""
        spec = ChildSpec("a", Supervisor([]))
        with pytest.raises(ValueError, match="'a'"):
            Supervisor([spec, spec])
        with pytest.raises(ValueError, match="within"):
            Supervisor([], within=0)
        with pytest.raises(TypeError, match="ChildSpec"):
            Supervisor(["a"])  # type: ignore[list-item]

    def test_exports(self) -> None:
        """The tree's public names are exported from the package."""
        names = {
            "ChildCounts",
            "ChildExists",
            "ChildInfo",
            "ChildNotFound",
            "ChildRunning",
            "ChildSpec",
            "ChildStartFailed",
            "Restart",
            "RestartIntensityExceeded",
            "Strategy",
            "Supervisor",
            "SupervisorError",
            "SupervisorNotRunning",
        }
        assert names <= set(supervisors.__all__)
        for name in names:
            assert getattr(supervisors, name).__module__.startswith("supervisors._")
        assert issubclass(RestartIntensityExceeded, SupervisorError)
