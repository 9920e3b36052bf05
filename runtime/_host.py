"""``SessionHost``: the registry of sessions, their activation, their tasks and an orderly shutdown.

The host is the mechanism; :class:`supervisors.SessionSupervisor` builds the public API on it and
brings the policies (restart budgets, the reaper, limits). It owns one task group in which every
active session runs as one task. Its parts live in modules of their own: how a session comes to
run here, started new or loaded from the index (``_host_starts``), the wall clock and the delivery
of due reminders (``_host_reminders``), this node's side of the leases (``_host_leases``), what it
does to a session without a caller's message (``_levers``), the census of loaded sessions for the
metrics scrape (``_census``); every status change and its notice go through ``_status_writer``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVarTuple

import anyio

from . import _host_starts, _levers
from ._actor import run_actor
from ._backend import Backend, current_backend
from ._cell import SessionCell
from ._census import SessionCensus
from ._clock import AnyioClock, wait_until
from ._counters import HostCounters, HostStats
from ._deadlines import CallDeadlines
from ._events import register_runtime_events
from ._exact import SnapshotGuard
from ._exceptions import (
    SessionError,
    SessionNotFound,
    ShuttingDown,
    TypeNameTaken,
)
from ._history import history_json, records
from ._host_leases import HostLeases
from ._host_reminders import HostReminders
from ._ids import check_session_id
from ._inspect import Inspection, debug_dump, find_cells, inspect_cell
from ._lifecycle import LifecycleHub, LifecycleSubscription
from ._metrics import SessionMetrics
from ._options import HostOptions
from ._ownership import Lease, Ownership
from ._records import Reminder, SessionOrder, SessionRecord
from ._recovery import ViewLoader
from ._ref import SessionRef
from ._reminders import Delivery
from ._replay import replay
from ._session import Session
from ._status import Status
from ._status_writer import StatusWriter

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from prometheus_client import CollectorRegistry

    from ._mailbox import Kind
    from ._metrics_types import TypeMetrics
    from .abc import Clock, EventStore, SessionView

__all__ = ["HostStats", "SessionHost"]

logger = logging.getLogger(__name__)

PosArgs = TypeVarTuple("PosArgs")


class SessionHost:
    """Runs sessions: one task each, in one task group, with their mailboxes and their store.

    Args:
        store: where events, snapshots and the session index live (opened and closed by the host).
        options: how it runs its sessions (restart strategy, clock, timeouts, limits).
        session_types: the ``Session`` classes that stored sessions may have, by ``type_name``.
        registry: the Prometheus registry for this host's metrics (default: a new one of its own,
            so that two hosts in one process never clash).
        ownership: this node's leases on a store shared by several processes: a session is
            activated only under a lease, and stops with ``OwnershipLost`` when the lease moves on.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        *,
        store: EventStore,
        options: HostOptions,
        session_types: Iterable[type[Session[Any]]] = (),
        registry: CollectorRegistry | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        self.store = store
        self.options = options
        self._cells: dict[str, SessionCell] = {}
        self.ownership = ownership
        """This node's leases when several processes share the store (DESIGN.md, "Many nodes")."""
        self.metrics = SessionMetrics(registry)
        self.registry: CollectorRegistry = self.metrics.registry
        """This host's own Prometheus registry (serve it with ``runtime.serve_metrics``)."""
        self.census = SessionCensus()
        """The loaded sessions by type and status, for the metrics scrape."""
        self.metrics.observe_sessions(self.census.sessions)
        self.metrics.observe_store(store)
        if ownership is not None:
            self.metrics.observe_ownership(ownership.statistics)
        # The options read on the way of every message, bound once (read-only: see ``options``).
        self.health = options.health
        self.history = options.history
        self.restarts = options.restarts
        self.clock: Clock = options.clock
        self.events = options.events
        register_runtime_events(self.events)  # a registry of one's own needs them too
        self.drain_timeout = options.drain_timeout
        self.self_sends_count = options.self_sends_count
        self.measure_states = options.measure_states
        self.message_limit = options.message_limit
        self.closing = False
        self._ended: anyio.Event | None = None
        self.lifecycle_hub = LifecycleHub()
        self.statuses = StatusWriter(self)
        """The one writer of every session's status."""
        self.backend: Backend | None = None
        self.deadlines = CallDeadlines(self.clock, self.clock.now)
        """The call timeouts of this host's sessions (enforced by one watchdog task)."""
        self.now: Callable[[], float] = self.clock.now
        self.started_at_wall = 0.0
        """When this host started, on the wall clock."""
        self.reminders = HostReminders(self, options.wall_clock)
        """The wall clock reminders are due on, their scheduler and their delivery."""
        self.reminder_scheduler = self.reminders.scheduler
        self.leases = HostLeases(ownership, self._cells.get)
        """This node's side of the leases (many nodes); no-ops without one."""
        self.views = ViewLoader(store)
        """Reads what recoveries need, those running at once in one store call."""
        self._types: dict[str, type[Session[Any]]] = {}
        for cls in session_types:
            self.register_type(cls)
        self._tg: TaskGroup | None = None
        self._running = 0
        self._all_stopped: anyio.Event | None = None
        self._recovery_limiter: anyio.CapacityLimiter | None = None
        self.counters = HostCounters(self.metrics)
        """What this host has done (``stats()``), fed by its sessions' actors."""
        self.snapshots = SnapshotGuard(self.counters.snapshot_not_written)
        """Encodes snapshots, refusing session classes whose state does not round-trip exactly."""
        self.handled_observers: dict[TypeMetrics, dict[Kind, Callable[[float], None]]] = {}
        """Per session type, what observes each message kind's handling time (made by ``_actor``
        at a type's first incarnation, read at every one after it)."""

    # -- context management ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._tg is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self.backend = backend = current_backend()
        # The clock of the hot path (every message notes its sender's activity): anyio's own
        # clock bound to this loop, or the clock injected in its place.
        self.now = backend.now if isinstance(self.clock, AnyioClock) else self.clock.now
        self.deadlines = CallDeadlines(self.clock, self.now)
        await self.store.open()
        try:
            await self.leases.join()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.store.aclose()
            raise
        self._recovery_limiter = anyio.CapacityLimiter(self.options.max_concurrent_recoveries)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self.deadlines.run)
        self.leases.run(tg)
        # The wall clock (reminders' due times, stored deadlines) is the runtime's clock moved to
        # the epoch now: it advances with the runtime's clock (virtual in tests).
        self.reminder_scheduler = self.reminders.start(tg)
        self.started_at_wall = self.wall()
        if self.views.batched:
            tg.start_soon(self.views.run)
        self.closing = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        assert tg is not None
        try:
            with anyio.CancelScope(shield=True):
                await self._drain()
            suppress = await tg.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None
            with anyio.CancelScope(shield=True):
                try:
                    await self.leases.leave(self.drain_timeout)
                finally:
                    await self.store.aclose()
        return suppress

    async def _drain(self) -> None:
        """Take no new work, let queued messages finish up to ``drain_timeout``, then cancel."""
        self.closing = True
        for cell in list(self._cells.values()):
            if cell.mailbox is not None:
                cell.mailbox.close()
        if self._running:
            done = self._all_stopped = anyio.Event()
            await wait_until(self.clock, self.now() + self.drain_timeout, done)
        tg = self._tg
        assert tg is not None
        tg.cancel_scope.cancel()
        self.lifecycle_hub.close()

    def wall(self) -> float:
        """The wall-clock time (seconds since the epoch) on the runtime's clock.

        .. versionadded:: 0.2
        """
        return self.reminders.wall()

    # -- tasks ----------------------------------------------------------------------------------

    def spawn(self, fn: Callable[[*PosArgs], Coroutine[Any, Any, object]], *args: *PosArgs) -> None:
        """Run ``fn(*args)`` in the host's task group."""
        tg = self._tg
        if tg is None:
            raise ShuttingDown()
        tg.start_soon(fn, *args)

    def spawn_actor(self, cell: SessionCell, initial: Session[Any] | None) -> None:
        self._running += 1
        self.spawn(run_actor, cell, initial)

    def actor_ended(self, cell: SessionCell) -> None:
        """Called by each actor task as it ends (it runs with no wrapper: a frame per idle session)."""
        self._running -= 1
        if not self._running and self._all_stopped is not None:
            self._all_stopped.set()
        ended, self._ended = self._ended, None
        if ended is not None:
            ended.set()

    @property
    def running(self) -> bool:
        """Whether the host is running: entered, its task group open (and not exited yet)."""
        return self._tg is not None

    @property
    def active_count(self) -> int:
        """How many sessions have a running task (active, or recovering, or draining)."""
        return self._running

    async def wait_actor_ended(self) -> None:
        """Wait until some actor task ends."""
        if self._ended is None:
            self._ended = anyio.Event()
        await self._ended.wait()

    @property
    def recovery_limiter(self) -> anyio.CapacityLimiter:
        limiter = self._recovery_limiter
        if limiter is None:
            raise ShuttingDown()
        return limiter

    # -- sessions -------------------------------------------------------------------------------

    def register_type(self, cls: type[Session[Any]]) -> str:
        """Make ``cls`` known under its ``type_name``, so stored sessions of it can be reactivated.

        Raises:
            TypeNameTaken: another class has this ``type_name`` already.
        """
        name = cls.type_name or cls.__name__
        depth = cls.pipeline_depth
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"{cls.__qualname__}.pipeline_depth must be an int >= 1, not {depth!r}")
        known = self._types.get(name)
        if known is not None and known is not cls:
            raise TypeNameTaken(name, known.__qualname__, cls.__qualname__)
        self._types[name] = cls
        return name

    def session_types(self) -> Mapping[str, type[Session[Any]]]:
        """The session classes this host can run, by stored type name (a read-only view).

        .. versionadded:: 0.2
        """
        return MappingProxyType(self._types)

    async def admit_start(self, session_id: str) -> None:
        """Raise if a new session may not start now (overridden to add limits)."""

    async def start(
        self,
        cls: type[Session[Any]],
        session_id: str | None = None,
        args: Mapping[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> SessionRef:
        """Create a session, persist its index entry and start its actor.

        Args:
            cls: the ``Session`` subclass (registered as a known type).
            session_id: the id; an unguessable one is generated when ``None``.
            args: JSON-able arguments for ``initial_state`` (kept for every recovery).
            metadata: JSON-able labels for ``list`` and ``stats``.

        Raises:
            InvalidSessionId: ``session_id`` breaks the rule of :func:`runtime.check_session_id`.
            SessionExists: the id is taken (active or stored).
            ShuttingDown: the host is shutting down.
            UnencodableValue: a part of ``args`` or ``metadata`` would not come back exactly from
                the store's JSON (NaN, an integer out of range, an object that is not JSON); its
                ``path`` names it, e.g. ``args['limit']``. Nothing is kept.
        """
        return await _host_starts.start(self, self._cells, cls, session_id, args, metadata)

    def first_deadline(self, now: float) -> float | None:
        """The stored deadline of a session created at ``now`` (wall clock); ``None`` here.

        A supervisor with a reaper policy overrides it, so that a session left behind by a dead
        process is still looked at on time.
        """
        return None

    async def get(self, session_id: str) -> SessionRef:
        """A reference to a known session (active, passivated or persisted).

        Raises:
            SessionNotFound: no such session.
        """
        return (await self.cell(session_id)).ref

    def ref(self, session_id: str) -> SessionRef:
        """A reference without a look-up: an unknown id fails on the first message.

        Raises:
            InvalidSessionId: ``session_id`` breaks the rule of :func:`runtime.check_session_id`.
        """
        cell = self._cells.get(session_id)
        return SessionRef(self, session_id if cell is not None else check_session_id(session_id), cell)

    def cached(self, session_id: str) -> SessionCell | None:
        """The session's cell if this process has it loaded."""
        return self._cells.get(session_id)

    def cell_nowait(self, session_id: str) -> SessionCell:
        cell = self._cells.get(session_id)
        if cell is None:
            raise SessionNotFound(session_id)
        return cell

    async def cell(self, session_id: str) -> SessionCell:
        """The session's cell, loaded from the store's index if this process has not seen it."""
        cell = self._cells.get(session_id)
        if cell is not None:
            return cell
        record = await self.store.get(session_id)
        if record is None:
            raise SessionNotFound(session_id)
        return self.load(record)

    def load(self, record: SessionRecord) -> SessionCell:
        """The cell of a stored session, made from its index entry (the loaded one if there is one).

        Raises:
            SessionError: the session's type is not one this host knows.
        """
        return _host_starts.load(self, self._cells, self._types, record)

    def resume(self, record: SessionRecord) -> bool:
        """Activate a stored session that was ``RUNNING`` when the last process stopped, with no
        message (``resume_on_start``); ``False`` if it is loaded already or not running.

        .. versionadded:: 0.2
        """
        return _host_starts.resume(self, record)

    async def deliver_reminder(self, reminder: Reminder) -> Delivery:
        """Put a due reminder in its session's mailbox, activating the session if needed.

        .. versionadded:: 0.2
        """
        return await self.reminders.deliver(reminder)

    def forget(self, session_id: str) -> None:
        """Drop an inactive session from memory (it stays in the store)."""
        cell = self._cells.get(session_id)
        if cell is not None and not cell.active:
            del self._cells[session_id]
            self.census.count(cell, cell.status, -1)

    @property
    def loaded_count(self) -> int:
        """How many sessions are loaded in this process (active or not).

        .. versionadded:: 0.1
        """
        return len(self._cells)

    def cells(self) -> list[SessionCell]:
        """Every session loaded in this process."""
        return list(self._cells.values())

    async def list(
        self,
        *,
        status: Status | None = None,
        type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
        order_by: SessionOrder = "created_at",
        descending: bool = False,
        created_after: float | None = None,
        created_before: float | None = None,
        updated_after: float | None = None,
        updated_before: float | None = None,
    ) -> Sequence[SessionRecord]:
        """Stored sessions matching every filter given, oldest first unless ``order_by`` says otherwise.

        The arguments are those of :meth:`runtime.abc.EventStore.list` (``status``, ``type``,
        ``metadata``, the page, the order, and wall-clock bounds on creation and last change).

        .. versionchanged:: 0.1 ``order_by``, ``descending`` and the time bounds.
        """
        return await self.store.list(
            status=status,
            type=type,
            metadata=metadata,
            limit=limit,
            offset=offset,
            order_by=order_by,
            descending=descending,
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
        )

    async def stats(self) -> HostStats:
        """Counts of what this host did, with the store's counts, its sessions' outcomes per type
        (and the nodes sharing the store)."""
        store = await self.store.stats()
        outcomes = await self.store.outcomes()
        node, nodes = await self.leases.figures()
        return self.counters.stats(
            active=self._running,
            known=len(self._cells),
            store=store,
            outcomes=outcomes,
            node=node,
            nodes=nodes,
        )

    async def activate(self, session_id: str) -> SessionRef:
        """Run a stored session now, without a message (a takeover, a resumption).

        Raises:
            SessionNotFound: no such session.
            SessionStopped: it has ended.

        .. versionadded:: 0.2
        """
        return await _host_starts.activate(self, session_id)

    async def locate(self, session_id: str) -> Lease | None:
        """Where ``session_id`` lives: the live lease on it (node, address), or ``None`` when no node
        owns it (it is then activated wherever its next message arrives).

        Without a node (one process, no leases) it is always ``None``.

        .. versionadded:: 0.2
        """
        return await self.leases.locate(session_id)

    def lease_lost(self, lease: Lease) -> None:
        """The lease on ``lease.session_id`` moved on: stop this node's copy (its callers get
        ``OwnershipLost``); called by the renewal loop."""
        self.leases.lost(lease)

    async def inspect(self, session_id: str) -> Inspection:
        """What the session is doing now, without activating it.

        The state of an inactive session (passivated, ended, or stored by an earlier process) is
        rebuilt from the store, read-only.

        Raises:
            SessionNotFound: no such session.
        """
        cell = await self.cell(session_id)
        state = None
        if cell.instance is None and cell.error is None:
            record = await self.store.get(session_id)
            if record is not None:
                try:
                    state = (await replay(self.store, record, cell.cls(), self.events)).state
                except SessionError as exc:
                    logger.warning("inspect %r: cannot rebuild its state: %s", session_id, exc)
        return inspect_cell(cell, self.now(), self.health, state)

    def find(
        self,
        *,
        status: Status | None = None,
        label: str | None = None,
        where: Callable[[Inspection], bool] | None = None,
    ) -> Sequence[SessionRef]:
        """The sessions loaded in this process that match every filter given.

        ``label`` compares a live session's state-machine label; ``where`` is called with each
        candidate's inspection (live state, no store reads).
        """
        cells = find_cells(list(self._cells.values()), self.now(), self.health, status, label, where)
        return [cell.ref for cell in cells]

    async def debug_dump(self) -> dict[str, Any]:
        """Everything an operator wants at a glance, as JSON-able data.

        Counts of the loaded sessions by status and type, a summary line per loaded session,
        this host's counters and the store's figures (its ``statistics()`` too, if it has one).
        """
        return debug_dump(self.now(), list(self._cells.values()), self.health, await self.stats(), self)

    async def export_history(self, session_id: str) -> str:
        """The session's recent transitions as JSON text."""
        cell = await self.cell(session_id)
        return history_json(session_id, records(cell.history or ()))

    # -- lifecycle operations (the reaper's levers, and revive) ----------------------------------

    def lifecycle(self, buffer: int = 1000) -> LifecycleSubscription:
        """Subscribe to every session's status changes (an async iterator, bounded buffer).

        A subscriber that falls ``buffer`` events behind loses the newer ones (counted in its
        ``dropped``); it never slows a session down.
        """
        return self.lifecycle_hub.subscribe(buffer)

    def request_passivation(self, session_id: str, idle_since: float) -> bool:
        """Ask an idle session to passivate; ``False`` if it is not loaded, busy, waiting or not running.

        The session checks again when it takes the request (in order with its messages): any
        activity after ``idle_since`` cancels it.
        """
        cell = self._cells.get(session_id)
        return cell is not None and _levers.request_passivation(self, cell, idle_since)

    async def expire(
        self, session_id: str, status: Status, reason: str, *, idle_since: float | None = None
    ) -> bool:
        """End a live session in ``status`` (recorded in its log); ``False`` if it was not live.

        With ``idle_since``, a session that had a message from outside since then is left alone.
        An active session does it itself, in order with its messages; an inactive one is ended here
        without being activated.
        """
        return await _levers.expire(self, session_id, status, reason, idle_since)

    async def revive(self, session_id: str) -> SessionRef:
        """Bring an ``ABANDONED`` or ``TIMED_OUT`` session back (recorded in its log).

        Raises:
            SessionNotFound: no such session.
            SessionStopped: it is in another status (completed, failed and stopped sessions stay
                ended).
        """
        return await _levers.revive(self, session_id)

    async def delete(self, session_id: str) -> None:
        """Remove an ended session from memory and the store (its log and snapshots).

        Raises:
            SessionNotEnded: the session is live (or still has a task).
        """
        await _levers.delete(self, session_id)

    # -- hooks (a supervisor adds its policies here) ---------------------------------------------

    def note_loaded(self, cell: SessionCell) -> None:
        """A stored session was loaded into this process (inactive until its first message)."""
        self.census.count(cell, cell.status, 1)
        self.session_changed(cell)

    def session_changed(self, session: SessionView) -> None:
        """A loaded session changed status, or was loaded: a subclass re-reads its deadlines here.

        Called after the host's own bookkeeping (census, lifecycle notice). Does nothing here.
        """
