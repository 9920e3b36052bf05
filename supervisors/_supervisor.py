"""Generic OTP-style supervisor trees on anyio (issue 3).

A ``Supervisor`` runs each child in a task of its own task group, inside a cancel scope of the child's
own that is *shielded*: cancelling the supervisor does not reach its children at once, so that the
supervisor can stop them one by one, in reverse start order, each with its ``shutdown`` time. A child
that stops on its own (returns or raises) is reported to the supervisor's task, which applies the
restart type and the strategy under a lock that the dynamic operations (``start_child`` and friends)
share, so that the two never interleave.

Stopping a child, "graceful then hard":

* graceful: the child's scope is cancelled. The child sees anyio's cancellation at its next checkpoint,
  and its ``finally:`` blocks and shielded clean-up (``with anyio.move_on_after(t, shield=True):``) run.
  The supervisor waits up to ``ChildSpec.shutdown`` seconds for the child's task to end.
* hard: anyio cannot do more than cancel. A task that shields itself from cancellation (or blocks the
  event loop in synchronous code) cannot be killed from outside in Python. So once ``shutdown`` has
  passed the supervisor *abandons* the child: it logs a warning and carries on (stops the next child,
  or starts the replacement), while the old task finishes its clean-up in the background. Structured
  concurrency still holds: ``run`` does not return before that task has ended, so a child that shields
  itself forever keeps its supervisor from ever returning.

.. versionadded:: 0.1
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NoReturn, Self, final

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from runtime import RestartWindow

from ._exceptions import (
    ChildExists,
    ChildNotFound,
    ChildRunning,
    ChildStartFailed,
    RestartIntensityExceeded,
    SupervisorNotRunning,
)
from ._spec import ChildCounts, ChildInfo, ChildSpec, Restart, Strategy

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from runtime import TreeMetrics

    from ._spec import ChildStart

__all__ = ["Supervisor"]

_log = logging.getLogger(__name__)
_log.addHandler(logging.NullHandler())

_names = itertools.count(1)


class _Phase(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"


@final
class _Incarnation(TaskStatus[object]):
    """One run of a child: its shielded cancel scope, and the task status it reports readiness to."""

    def __init__(self, child: _Child) -> None:
        self.child = child
        self.scope = anyio.CancelScope(shield=True)
        self.settled = anyio.Event()  # started() was called, or the task ended
        self.finished = False  # the task ended
        self._finished_event: anyio.Event | None = None  # made only for a stop that has to wait
        self.has_started = False
        self.stop_requested = False
        self.value: object = None
        self.error: Exception | None = None

    def started(self, value: object = None) -> None:
        if self.has_started:
            raise RuntimeError("called 'started' twice on the same task status")
        self.has_started = True
        self.value = value
        self.settled.set()

    def finish(self) -> None:
        self.finished = True
        self.settled.set()
        if self._finished_event is not None:
            self._finished_event.set()

    async def wait_finished(self) -> None:
        if not self.finished:
            if self._finished_event is None:
                self._finished_event = anyio.Event()
            await self._finished_event.wait()


@final
class _Child:
    """A child spec plus what the running tree knows about it."""

    def __init__(self, spec: ChildSpec, tree_name: str) -> None:
        self.spec = spec
        self.target: ChildStart = spec.target
        self.task_name = f"{tree_name}/{spec.id}"
        # The incarnation the supervisor is responsible for: set from the start until the supervisor
        # has seen it end (a crash it has not handled yet, or a stop it is waiting for, included).
        self.current: _Incarnation | None = None
        self.restarts = 0

    @property
    def running(self) -> bool:
        inc = self.current
        return inc is not None and inc.has_started and not inc.stop_requested and not inc.finished

    def info(self) -> ChildInfo:
        running = self.running
        return ChildInfo(
            id=self.spec.id,
            running=running,
            restart=self.spec.restart,
            is_supervisor=self.spec.is_supervisor,
            value=self.current.value if running and self.current is not None else None,
            restarts=self.restarts,
        )


@final
class _Tree:
    """The state of one ``Supervisor.run``: a fresh one each time the supervisor (re)starts."""

    def __init__(self, supervisor: Supervisor, task_group: TaskGroup) -> None:
        self.name = supervisor.name
        self.metrics = supervisor.metrics
        self.strategy = supervisor.strategy
        self.intensity = RestartWindow(supervisor.max_restarts, supervisor.within)
        self.children = [_Child(spec, self.name) for spec in supervisor.specs]
        self.phase = _Phase.STARTING
        self.lock = anyio.Lock(fast_acquire=True)
        self._task_group = task_group
        self._exits: deque[_Incarnation] = deque()  # children that stopped on their own
        self._exits_wakeup: anyio.Event | None = None  # set when the supervisor waits for _exits

    @property
    def closing(self) -> bool:
        return self.phase is _Phase.CLOSING

    # -- children's tasks ----------------------------------------------------------------------

    async def _run_child(self, inc: _Incarnation) -> None:
        try:
            with inc.scope:
                try:
                    await inc.child.target(task_status=inc)
                except Exception as exc:  # a crash: the supervisor decides what happens next
                    inc.error = exc
        finally:
            inc.finish()
        if not inc.has_started:
            return  # a failed start is the starter's to report
        if inc.stop_requested or self.closing:
            # A requested stop is no crash, and nothing is restarted once the tree shuts down.
            if inc.error is not None:
                _log.warning(
                    "supervisor %r: child %r raised %s",
                    self.name,
                    inc.child.spec.id,
                    "while being stopped" if inc.stop_requested else "while the tree shut down",
                    exc_info=inc.error,
                )
                inc.error = None  # see supervise()
            return
        self._exits.append(inc)
        if self._exits_wakeup is not None:
            self._exits_wakeup.set()

    async def _start(self, child: _Child) -> object:
        """Start one child and wait until it has called ``task_status.started()``."""
        if self.closing:
            raise SupervisorNotRunning(supervisor=self.name)
        inc = _Incarnation(child)
        child.current = inc
        self._task_group.start_soon(self._run_child, inc, name=child.task_name)
        try:
            await inc.settled.wait()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._stop(child)
            raise
        if inc.has_started:
            return inc.value  # if it has died since, its exit is queued for the supervisor
        if child.current is inc:
            child.current = None
        if self.closing:  # stopped by the supervisor's shutdown, not a failure of its own
            raise SupervisorNotRunning(supervisor=self.name)
        reason, inc.error = inc.error, None  # see supervise()
        if reason is None:
            reason = RuntimeError(f"child {child.spec.id!r} returned without calling task_status.started()")
        raise ChildStartFailed(supervisor=self.name, child_id=child.spec.id, reason=reason)

    async def _stop(self, child: _Child) -> None:
        """Cancel one child and wait up to its ``shutdown`` for it to end; then abandon it."""
        inc = child.current
        if inc is None:
            return
        if not inc.stop_requested:
            inc.stop_requested = True
            inc.scope.cancel()
        if not inc.finished:
            shutdown = child.spec.shutdown
            with anyio.move_on_after(shutdown, shield=True):
                await inc.wait_finished()
            if not inc.finished:
                _log.log(
                    logging.WARNING if shutdown > 0 else logging.DEBUG,
                    "supervisor %r: child %r did not finish within %gs of being cancelled; "
                    "abandoning it (it keeps running until its shielded clean-up ends)",
                    self.name,
                    child.spec.id,
                    shutdown,
                )
        if child.current is inc:
            child.current = None

    # -- the supervisor's own task -------------------------------------------------------------

    async def start_all(self) -> None:
        """Start the children in order; on a failure the caller stops the started ones."""
        for child in self.children:
            await self._start(child)

    async def stop_all(self) -> None:
        """Stop every child in reverse start order; no child can start after this begins."""
        self.phase = _Phase.CLOSING
        for child in reversed(list(self.children)):
            await self._stop(child)

    async def supervise(self) -> NoReturn:
        """Handle children's exits as they come, until cancelled or the intensity is exceeded."""
        exits = self._exits
        while True:
            while exits:
                inc = exits.popleft()
                async with self.lock:
                    if inc.child.current is inc:  # else stale: already stopped or restarted
                        await self._on_exit(inc)
                # The error's traceback holds the child's frames, which refer back to inc: drop it
                # now rather than leave a reference cycle per crash to the garbage collector.
                inc.error = None
            self._exits_wakeup = wakeup = anyio.Event()
            try:
                await wakeup.wait()
            finally:
                self._exits_wakeup = None

    async def _on_exit(self, inc: _Incarnation) -> None:
        child = inc.child
        spec = child.spec
        error = inc.error
        child.current = None
        outcome = "returned" if error is None else "crashed"
        if spec.restart is Restart.TEMPORARY or (spec.restart is Restart.TRANSIENT and error is None):
            if spec.restart is Restart.TEMPORARY:
                self.children.remove(child)
            _log.log(
                logging.INFO if error is None else logging.WARNING,
                "supervisor %r: %s child %r %s; not restarting it",
                self.name,
                spec.restart.value,
                spec.id,
                outcome,
                exc_info=error,
            )
            return
        try:
            await self._restart(child, error)
        finally:
            # Logged once the restart is done (or has failed): a log record costs about as much as
            # the restart itself, and the crashed child's replacement should not wait for it.
            _log.warning(
                "supervisor %r: %s child %r %s (%s restart)",
                self.name,
                spec.restart.value,
                spec.id,
                outcome,
                self.strategy.value,
                exc_info=error,
            )

    async def _restart(self, child: _Child, reason: BaseException | None) -> None:
        """Apply the strategy to ``child``'s exit; a failed restart counts as one more crash."""
        pending: list[_Child] = []  # stopped by this restart and not started again yet
        metrics = self.metrics
        while True:
            if not self.intensity.record(anyio.current_time()):
                if metrics is not None:
                    metrics.escalated(self.name)
                raise RestartIntensityExceeded(
                    supervisor=self.name,
                    child_id=child.spec.id,
                    reason=reason,
                    max_restarts=self.intensity.max_restarts,
                    within=self.intensity.within,
                )
            group = self._affected(child, pending)
            for sibling in reversed(group):
                await self._stop(sibling)
            for sibling in group:
                if sibling is not child and sibling.spec.restart is Restart.TEMPORARY:
                    self.children.remove(sibling)
                    _log.info(
                        "supervisor %r: temporary child %r stopped for a restart; forgetting it",
                        self.name,
                        sibling.spec.id,
                    )
            group = [c for c in group if c is child or c.spec.restart is not Restart.TEMPORARY]
            for index, sibling in enumerate(group):
                sibling.restarts += 1
                if metrics is not None:
                    metrics.restarted(self.name, sibling.spec.id)
                try:
                    await self._start(sibling)
                except ChildStartFailed as failed:
                    _log.warning(
                        "supervisor %r: restarting child %r failed, which counts as one more restart",
                        self.name,
                        sibling.spec.id,
                        exc_info=failed.reason,
                    )
                    child, reason, pending = sibling, failed.reason, group[index + 1 :]
                    break
            else:
                return
            await anyio.lowlevel.checkpoint()  # let cancellation in between attempts

    def _affected(self, child: _Child, pending: list[_Child]) -> list[_Child]:
        """The children a restart of ``child`` stops and starts again, in start order."""
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        first = 0 if self.strategy is Strategy.ONE_FOR_ALL else self.children.index(child)
        return [c for c in self.children[first:] if c is child or c.current is not None or c in pending]

    # -- dynamic operations (callers' tasks) ---------------------------------------------------

    def _find(self, child_id: str) -> _Child:
        for child in self.children:
            if child.spec.id == child_id:
                return child
        raise ChildNotFound(supervisor=self.name, child_id=child_id)

    def _check_running(self) -> None:
        if self.phase is not _Phase.RUNNING:
            raise SupervisorNotRunning(supervisor=self.name)

    async def start_child(self, spec: ChildSpec) -> object:
        async with self.lock:
            self._check_running()
            for existing in self.children:
                if existing.spec.id == spec.id:
                    raise ChildExists(supervisor=self.name, child_id=spec.id, running=existing.running)
            child = _Child(spec, self.name)
            self.children.append(child)
            try:
                return await self._start(child)
            except BaseException:
                if child.current is None and child in self.children:
                    self.children.remove(child)
                raise

    async def terminate_child(self, child_id: str) -> None:
        async with self.lock:
            self._check_running()
            child = self._find(child_id)
            await self._stop(child)
            if child.spec.restart is Restart.TEMPORARY and child in self.children:
                self.children.remove(child)

    async def restart_child(self, child_id: str) -> object:
        async with self.lock:
            self._check_running()
            child = self._find(child_id)
            if child.current is not None:
                raise ChildRunning(supervisor=self.name, child_id=child_id, action="restart")
            child.restarts += 1
            return await self._start(child)

    async def delete_child(self, child_id: str) -> None:
        async with self.lock:
            self._check_running()
            child = self._find(child_id)
            if child.current is not None:
                raise ChildRunning(supervisor=self.name, child_id=child_id, action="delete")
            self.children.remove(child)


@final
class Supervisor(anyio.AsyncContextManagerMixin):
    """A generic OTP-style supervisor: starts children in order, restarts them, stops them in reverse.

    Run it inside your task group, or as a context manager that owns one::

        sup = await task_group.start(Supervisor(specs).run)

        async with Supervisor(specs, strategy=Strategy.ONE_FOR_ALL) as sup:
            ...

    Children start one at a time, in order, each once the previous one has called
    ``task_status.started()``. When the supervisor stops (it is cancelled, or it gives up) it stops them
    one at a time in reverse order, each given its ``shutdown`` (see the module documentation for what
    graceful and hard mean here). A child that stops on its own is restarted according to its
    ``Restart`` type, with its siblings as the ``Strategy`` says. A child stopped because of a sibling's
    crash is started again unless it is temporary; a child that was not running (terminated, or a
    transient child that returned) stays stopped. A restart whose start fails counts as one more
    restart, and is tried again according to the strategy. Crash handling and the dynamic operations
    take turns: an operation waits for a restart in progress, and a crash waits for an operation in
    progress (a ``start_child`` whose child is slow to start, say).

    More than ``max_restarts`` restarts within a sliding ``within`` seconds (read from
    ``anyio.current_time()``) stop every child and raise ``RestartIntensityExceeded`` out of ``run``; a
    parent supervisor treats that as its child's crash, so nested limits multiply.

    Each ``run`` starts from the specs given here, like a restarted OTP supervisor: children added
    with ``start_child`` (or removed) do not survive the supervisor's own restart. Give a child that is
    itself a supervisor a long ``shutdown`` (``math.inf``, as OTP does), since it stops its own children
    within that time.

    Args:
        children: the children's specs, in start order; ids must be unique.
        strategy: what a child's crash does to its siblings.
        max_restarts: restarts allowed within the window before the supervisor gives up.
        within: the window's length, in seconds.
        name: names the supervisor in logs, errors and metrics; generated when not given.
        metrics: where to count restarts (by child) and escalations (``runtime.TreeMetrics``).

    Raises:
        ValueError: two children share an id, ``max_restarts`` is negative or ``within`` not positive.
        TypeError: a child is not a ``ChildSpec``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        children: Iterable[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        within: float = 5.0,
        name: str | None = None,
        metrics: TreeMetrics | None = None,
    ) -> None:
        specs = tuple(children)
        seen: set[str] = set()
        for spec in specs:
            if not isinstance(spec, ChildSpec):
                raise TypeError(f"Supervisor children must be ChildSpec instances, not {spec!r}")
            if spec.id in seen:
                raise ValueError(f"two children share the id {spec.id!r}: child ids must be unique")
            seen.add(spec.id)
        RestartWindow(max_restarts, within)  # validates both, before anything runs
        self.name = name if name is not None else f"supervisor-{next(_names)}"
        self.specs = specs
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.within = within
        self.metrics = metrics
        self._tree: _Tree | None = None

    def __repr__(self) -> str:
        return (
            f"<Supervisor {self.name!r} {self.strategy.name} children={len(self.specs)} "
            f"max_restarts={self.max_restarts} within={self.within:g}>"
        )

    async def run(self, *, task_status: TaskStatus[Supervisor] = anyio.TASK_STATUS_IGNORED) -> NoReturn:
        """Start the children, then supervise them until cancelled.

        Usable as ``await task_group.start(supervisor.run)``, which returns the supervisor once every
        child has started, and as a child of another supervisor (``ChildSpec("id", supervisor)``).

        It never returns normally. Being cancelled stops the children (in reverse order) and then lets
        the cancellation through. The two failures below are raised as they are, not in a group (a
        task group around ``run`` will group them, as usual). A ``BaseException`` other than
        cancellation escaping a child (``KeyboardInterrupt``, ``SystemExit``) is not a crash: the
        children are stopped and it comes out of ``run`` in a ``BaseExceptionGroup``, as from any anyio
        task group.

        Args:
            task_status: receives the supervisor itself once all children have started.

        Raises:
            ChildStartFailed: a child failed to start (before ``task_status.started()``); the children
                started before it were stopped in reverse order first.
            RestartIntensityExceeded: too many restarts; every child was stopped first.
            RuntimeError: this supervisor is already running.
        """
        if self._tree is not None:
            raise RuntimeError(
                f"supervisor {self.name!r} is already running: a Supervisor runs one tree at a time "
                "(create another Supervisor for a second tree)"
            )
        failure: ChildStartFailed | RestartIntensityExceeded | None = None
        try:
            async with anyio.create_task_group() as task_group:
                tree = self._tree = _Tree(self, task_group)
                try:
                    await tree.start_all()
                    tree.phase = _Phase.RUNNING
                    task_status.started(self)
                    await tree.supervise()
                except (ChildStartFailed, RestartIntensityExceeded) as exc:
                    failure = exc  # raised below, outside the task group: not wrapped in a group
                finally:
                    with anyio.CancelScope(shield=True):
                        await tree.stop_all()
        finally:
            self._tree = None
        assert failure is not None  # the task group only exits without an exception on a failure
        _log.error("supervisor %r stopped: %s", self.name, failure)
        raise failure

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self, None]:
        """Run the tree in a task group of its own for the duration of the ``async with`` block.

        The block's body runs once every child has started; leaving the block stops the tree. A start
        failure, or the tree giving up while the body runs (which cancels the body), comes out of the
        ``async with`` inside an ``ExceptionGroup``, as from any anyio task group.
        """
        # Yielding inside a task group is safe here: this generator is an @asynccontextmanager, which
        # the caller enters and exits in one task (anyio's AsyncContextManagerMixin contract).
        async with anyio.create_task_group() as task_group:
            await task_group.start(self.run)
            try:
                yield self
            finally:
                task_group.cancel_scope.cancel()

    # -- introspection -------------------------------------------------------------------------

    def _current_tree(self) -> _Tree:
        tree = self._tree
        if tree is None:
            raise SupervisorNotRunning(supervisor=self.name)
        return tree

    def which_children(self) -> list[ChildInfo]:
        """A snapshot of every child, in start order (like OTP's ``which_children``).

        Raises:
            SupervisorNotRunning: the supervisor is not running.
        """
        return [child.info() for child in self._current_tree().children]

    def count_children(self) -> ChildCounts:
        """How many children there are, running and in all (like OTP's ``count_children``).

        Raises:
            SupervisorNotRunning: the supervisor is not running.
        """
        children = self._current_tree().children
        supervisors = sum(1 for child in children if child.spec.is_supervisor)
        return ChildCounts(
            specs=len(children),
            active=sum(1 for child in children if child.running),
            supervisors=supervisors,
            workers=len(children) - supervisors,
        )

    # -- dynamic operations --------------------------------------------------------------------

    async def start_child(self, spec: ChildSpec) -> object:
        """Add a child after the others, start it and wait until it has started.

        Its restart type and the strategy then apply to it like to any other child; it stops first
        when the tree stops. It does not survive the supervisor's own restart.

        Args:
            spec: the new child.

        Returns:
            What the child passed to ``task_status.started()``.

        Raises:
            ChildExists: a child with that id exists (running or not).
            ChildStartFailed: the child failed to start; it is not added.
            SupervisorNotRunning: the supervisor is not running.
        """
        return await self._current_tree().start_child(spec)

    async def terminate_child(self, child_id: str) -> None:
        """Stop a child (cancel it, waiting up to its ``shutdown``) and leave it stopped.

        The spec is kept, so ``restart_child`` can start it again, unless the child is temporary.
        Terminating a child that is not running does nothing.

        Raises:
            ChildNotFound: no child has that id.
            SupervisorNotRunning: the supervisor is not running.
        """
        await self._current_tree().terminate_child(child_id)

    async def restart_child(self, child_id: str) -> object:
        """Start again a child that is stopped (terminated, or a transient child that returned).

        This is not a crash restart: it does not count towards the restart intensity.

        Returns:
            What the child passed to ``task_status.started()``.

        Raises:
            ChildNotFound: no child has that id.
            ChildRunning: the child is running, or the supervisor is about to restart it.
            ChildStartFailed: the child failed to start; it stays stopped.
            SupervisorNotRunning: the supervisor is not running.
        """
        return await self._current_tree().restart_child(child_id)

    async def delete_child(self, child_id: str) -> None:
        """Forget a stopped child's spec.

        Raises:
            ChildNotFound: no child has that id.
            ChildRunning: the child is running; terminate it first.
            SupervisorNotRunning: the supervisor is not running.
        """
        await self._current_tree().delete_child(child_id)
