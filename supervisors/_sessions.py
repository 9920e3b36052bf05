"""``SessionSupervisor``: the API that spawns sessions, and a well-behaved child of a tree."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, Self, cast

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskStatus

from runtime import (
    EventRegistry,
    HealthThresholds,
    HistoryConfig,
    HostOptions,
    HostStats,
    MemoryStore,
    Ownership,
    RateLimited,
    Session,
    SessionError,
    SessionRecord,
    Status,
    TooManySessions,
)
from runtime._host import SessionHost  # subclassed: the supervisor is the host with policies
from runtime.abc import Clock, EventStore, LeaseStore, SessionView

from ._node import Node
from ._reaper import CleanupStats, Reaper, ReaperPolicy, RemovalReason
from ._restart import RestartPolicy
from ._store_reaper import StoreReaper
from ._telemetry import Telemetry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["SessionSupervisor"]

logger = logging.getLogger(__name__)

_DEFAULT_DRAIN_TIMEOUT = cast("float", attrs.fields(HostOptions).drain_timeout.default)
_DEFAULT_RECOVERIES = cast("int", attrs.fields(HostOptions).max_concurrent_recoveries.default)
"""Where ``drain_timeout`` and ``max_concurrent_recoveries`` not given come from (``HostOptions``'s
defaults): ``None`` in the signatures, so that either one given beside ``options=`` is noticed even
at its default value."""

_TAKEOVERS_PER_ROUND = 100
"""Sessions of dead nodes one node claims per round: the survivors share the rest over the next rounds."""
_EXPIRY_GRACE = 0.05
"""How long after another node's soonest lease expiry a takeover round runs (the claim needs it past)."""
_RESUME_PAGE = 1000


class SessionSupervisor(SessionHost):
    """Spawns and supervises sessions: each crashed session is restarted from its event log.

    Use it as ``async with SessionSupervisor(...) as sessions:``, or as a child of a
    :class:`Supervisor` tree (its ``run`` follows anyio's ``task_status`` protocol). Leaving it
    rejects new work with ``ShuttingDown``, lets queued messages finish for up to ``drain_timeout``
    seconds, snapshots and runs ``on_stop("shutdown")`` once per live session, flushes and closes the
    store, and leaves no task behind.

    Args:
        store: the event store (default: a fresh ``MemoryStore``).
        session_types: classes of sessions that an earlier process may have stored.
        reaper: passivation, expiry and limits (default: none of them).
        restarts: the per-session restart budget and backoff.
        history: how many recent transitions each session keeps.
        health: when ``inspect`` calls a session stale, stuck or error-prone.
        registry: the Prometheus registry for its metrics (default: its own, ``sessions.registry``).
        clock: where timers, backoff and the reaper read time (default: anyio's clock).
        events: the event registry (default: the one ``@event`` fills).
        drain_timeout: how long shutdown lets queued messages finish (default 5 s).
        max_concurrent_recoveries: how many sessions may replay their logs at once (default 50).
        node: this process as one node among several sharing ``store`` (a ``PostgresStore``):
            sessions run under leases with fencing epochs (DESIGN.md, "Many nodes").
        wall_clock: the wall clock reminders and stored deadlines are due on (default: ``clock``
            moved to the epoch at start; see :class:`runtime.HostOptions`).
        options: the host's options as one record, made by :meth:`host_options` (as
            ``Config.session_supervisor`` does), instead of ``restarts``, ``clock``, ``events``,
            ``drain_timeout``, ``max_concurrent_recoveries``, ``history``, ``health`` and ``wall_clock``.

    .. versionchanged:: 0.2
       ``options``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        *,
        store: EventStore | None = None,
        session_types: Iterable[type[Session[Any]]] = (),
        reaper: ReaperPolicy | None = None,
        restarts: RestartPolicy | None = None,
        history: HistoryConfig | None = None,
        health: HealthThresholds | None = None,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
        events: EventRegistry | None = None,
        drain_timeout: float | None = None,
        max_concurrent_recoveries: int | None = None,
        node: Node | None = None,
        wall_clock: Callable[[], float] | None = None,
        options: HostOptions | None = None,
    ) -> None:
        self.node = node
        ownership: Ownership | None = None
        if node is not None:
            leases: object = store
            if not isinstance(leases, LeaseStore):
                raise TypeError(
                    f"node={node!r} needs a store that several processes share, such as "
                    f"PostgresStore(dsn); {store!r} is not one"
                )
            ownership = Ownership(leases, node=node.name, address=node.address, lease_ttl=node.lease_ttl)
        self.reaper_policy = policy = reaper or ReaperPolicy()
        if options is None:
            options = self.host_options(
                policy,
                restarts=restarts,
                clock=clock,
                events=events,
                drain_timeout=drain_timeout,
                max_concurrent_recoveries=max_concurrent_recoveries,
                history=history,
                health=health,
                wall_clock=wall_clock,
            )
        else:
            _check_options(
                options,
                policy,
                restarts=restarts,
                clock=clock,
                events=events,
                drain_timeout=drain_timeout,
                max_concurrent_recoveries=max_concurrent_recoveries,
                history=history,
                health=health,
                wall_clock=wall_clock,
            )
        assert isinstance(options.restarts, RestartPolicy)
        self.restart_policy = options.restarts
        super().__init__(
            store=store if store is not None else MemoryStore(),
            options=options,
            session_types=session_types,
            registry=registry,
            ownership=ownership,
        )
        self.reaper = Reaper(self, policy, self.clock)
        self.store_reaper = self._new_store_reaper()
        self.telemetry = Telemetry(self, self.registry)
        """The reaper's and this supervisor's figures in ``registry`` (see :mod:`._telemetry`)."""
        self.telemetry.watch(self.reaper)
        self._ready = anyio.Event()
        self.to_resume = 0
        """How many ``resume_on_start`` sessions were running when the last process stopped (known
        once ``ready()`` returns); ``resumed`` counts those activated so far."""
        self.resumed = 0
        """How many ``resume_on_start`` sessions this supervisor activated at start-up."""

    @staticmethod
    def host_options(
        reaper: ReaperPolicy,
        *,
        restarts: RestartPolicy | None = None,
        clock: Clock | None = None,
        events: EventRegistry | None = None,
        drain_timeout: float | None = None,
        max_concurrent_recoveries: int | None = None,
        history: HistoryConfig | None = None,
        health: HealthThresholds | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> HostOptions:
        """The one options record of a supervisor with this ``reaper`` policy: the arguments as
        ``SessionSupervisor`` takes them, and what the policy asks of the host (a message limit,
        measured states, whether self-sends count as activity). Pass it as ``options=``.

        .. versionadded:: 0.2
        """
        return HostOptions(
            restarts=restarts or RestartPolicy(),
            clock=clock,
            events=events,
            drain_timeout=_DEFAULT_DRAIN_TIMEOUT if drain_timeout is None else drain_timeout,
            max_concurrent_recoveries=(
                _DEFAULT_RECOVERIES if max_concurrent_recoveries is None else max_concurrent_recoveries
            ),
            history=history or HistoryConfig(),
            health=health or HealthThresholds(),
            message_limit=reaper.max_messages,
            measure_states=reaper.max_memory_bytes is not None,
            self_sends_count=reaper.idle_counts_self_sends,
            wall_clock=wall_clock,
        )

    def _new_store_reaper(self) -> StoreReaper:
        policy = self.reaper_policy
        export = self.reaper.export if policy.export_dir is not None else None
        return StoreReaper(self, policy, self.clock, self.wall, self.started_at_wall, export=export)

    def __repr__(self) -> str:
        return f"<SessionSupervisor store={self.store!r} sessions={len(self.cells())}>"

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.reaper.reset()
        self.store_reaper = self._new_store_reaper()
        self._ready = anyio.Event()
        self.to_resume = self.resumed = 0
        self.spawn(self.reaper.run)
        # Sessions of earlier processes: their deadlines come from the store's index by due time
        # (ended ones' retention included), never from a scan of every session.
        self.spawn(self.store_reaper.run)
        if self.store_reaper.sets_live_deadlines:
            # Sessions stored under an earlier (or no) policy: their deadlines brought forward.
            self.spawn(self._reschedule_at_start)
        self.spawn(self._resume_stored)
        if self.ownership is not None:
            self.spawn(self._take_over, self.ownership)
        return self

    @property
    def is_ready(self) -> bool:
        """Whether ``ready()`` would return now and the supervisor is not shutting down.

        .. versionadded:: 0.1
        """
        return self.reminder_scheduler.loaded.is_set() and self._ready.is_set() and not self.closing

    async def _take_over(self, ownership: Ownership) -> None:
        """Run here a share of the sessions of dead nodes that must run now (a reminder due, or
        ``resume_on_start``); the others move on their next message.

        A round runs every ``lease_ttl / 3`` (reminders falling due on orphans), and also just after
        the soonest lease of another node expires: a dead node's last leases lapse ``lease_ttl``
        after its last renewal, and its resumable sessions run here right then, not up to a third
        of ``lease_ttl`` later.
        """
        interval = ownership.lease_ttl / 3
        more = False  # the last round claimed all it could: claim again at once
        while True:
            if not more:
                try:
                    soonest = await ownership.next_expiry()
                except SessionError:
                    logger.warning("node %r could not read lease expiries", ownership.node, exc_info=True)
                    soonest = None
                delay = interval if soonest is None else min(interval, soonest + _EXPIRY_GRACE)
                await self.clock.sleep_until(self.clock.now() + delay)
            resumable = [
                name for name, cls in self.session_types().items() if getattr(cls, "resume_on_start", False)
            ]
            try:
                claimed = await ownership.take_over(resumable, limit=_TAKEOVERS_PER_ROUND)
            except SessionError:
                logger.warning(
                    "node %r could not look for sessions to take over", ownership.node, exc_info=True
                )
                more = False
                continue
            more = len(claimed) == _TAKEOVERS_PER_ROUND
            for lease in claimed:
                try:
                    await self.activate(lease.session_id)
                except SessionError:
                    logger.warning(
                        "node %r could not run session %r it took over",
                        ownership.node,
                        lease.session_id,
                        exc_info=True,
                    )

    async def ready(self) -> None:
        """Return once the reminders that are due and the sessions to resume are scheduled.

        Due reminders are then on their way (a reminder that fell due while no process ran is
        delivered right after), and every ``resume_on_start`` session that was running when the
        last process stopped is either activated or queued for activation at
        ``ReaperPolicy.max_resumes_per_second``.

        .. versionadded:: 0.2
        """
        await self.reminder_scheduler.loaded.wait()
        await self._ready.wait()

    async def reschedule_stored(self, *, ended: bool = False) -> int:
        """Bring every stored session's deadline in line with this supervisor's reaper policy.

        The deadlines the reaper over the store acts on are kept with each session, set when it is
        created and moved when it is looked at; sessions stored while no policy (or a laxer one)
        was in force would never be looked at, or late. This pages through the stored sessions that
        have not ended (the ended ones too with ``ended``, after adding a ``retention``) and
        brings forward each deadline that is missing or later than the policy's (call it once after
        tightening the policy). Returns how many were moved. At start, a supervisor whose policy
        sets ``abandon_after``, ``max_age`` or ``paused_ttl`` does it in the background for the
        sessions that have not ended and have no deadline at all.

        .. versionadded:: 0.2
        """
        return await self.store_reaper.reschedule(ended=ended)

    async def _reschedule_at_start(self) -> None:
        try:
            moved = await self.store_reaper.reschedule(missing_only=True)
        except Exception:
            logger.exception("could not bring the stored deadlines in line with the reaper policy")
            return
        if moved:
            logger.info("%d stored sessions given the deadlines of the current reaper policy", moved)

    async def _resume_stored(self) -> None:
        """Activate the ``resume_on_start`` sessions that were running, paced."""
        try:
            found: list[SessionRecord] = []
            for type_name, cls in self.session_types().items():
                if not cls.resume_on_start:
                    continue
                offset = 0
                while True:
                    page = await self.store.list(
                        status=Status.RUNNING, type=type_name, limit=_RESUME_PAGE, offset=offset
                    )
                    found += page
                    if len(page) < _RESUME_PAGE:
                        break
                    offset += _RESUME_PAGE
        except Exception:
            logger.exception("could not list the sessions to resume; none resumed")
            self._ready.set()
            return
        self.to_resume = len(found)
        self._ready.set()  # every one is scheduled: the pacing below is the schedule
        rate = self.reaper_policy.max_resumes_per_second
        started = self.clock.now()
        n = 0
        while n < len(found):
            if rate is None:
                upto = n + 100
                await anyio.lowlevel.checkpoint()
            else:
                # Also when behind schedule it yields, so that messages and recoveries go on; then
                # every session due by now goes at once (one wake per session kept the rate
                # below the setting whenever the loop was busy: 1,320/s for 5,000).
                await self.clock.sleep_until(started + n / rate)
                upto = max(n + 1, math.floor((self.clock.now() - started) * rate) + 1)
            for record in found[n:upto]:
                try:
                    if self.resume(record):
                        self.resumed += 1
                except Exception:
                    logger.exception("session %r: could not resume it", record.id)
            n = upto

    async def run(
        self, *, task_status: TaskStatus[SessionSupervisor] = anyio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Run until cancelled, as a child of a ``Supervisor`` (``await tg.start(sessions.run)``).

        Session crashes stay inside (per-session budgets); only a failure of the supervisor's own
        machinery (its store failing to open, say) escapes, and the tree treats that as its crash.
        """
        async with self:
            task_status.started(self)
            await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def stats(self) -> HostStats:
        """Counts of what this supervisor did, the store's counts and outcomes per type.

        Also refreshes the ``sessionvisor_sessions_stored`` gauge.
        """
        stats = await super().stats()
        self.telemetry.stored = stats.store.sessions
        return stats

    async def count_stored(self) -> int:
        """Count the sessions in the store, for the ``sessionvisor_sessions_stored`` gauge.

        .. versionadded:: 0.1
        """
        self.telemetry.stored = stored = (await self.store.stats()).sessions
        return stored

    # -- the reaper's side of things ------------------------------------------------------------

    async def reap(self) -> CleanupStats:
        """Run one reaper pass now (and the memory check, if there is a memory limit)."""
        stats = await self.reaper.reap()
        if self.reaper_policy.max_memory_bytes is not None:
            evicted = self.reaper.enforce_memory()
            if evicted:
                removed = dict(stats.removed)
                removed[RemovalReason.MEMORY] = removed.get(RemovalReason.MEMORY, 0) + evicted
                stats = CleanupStats(removed, stats.due, stats.errors, stats.duration)
        return stats

    async def admit_start(self, session_id: str) -> None:
        policy = self.reaper_policy
        if not self.reaper.take_start_token():
            assert policy.max_starts_per_second is not None
            self.metrics.rejected("rate_limited")
            raise RateLimited(session_id, policy.max_starts_per_second)
        limit = policy.max_sessions
        if limit is None or self.active_count < limit:
            return
        if policy.on_limit == "evict_idle":
            with anyio.move_on_after(self.drain_timeout):
                while self.active_count >= limit:
                    if not self.reaper.evict_one(RemovalReason.EVICTED):
                        break
                    await self.wait_actor_ended()
            if self.active_count < limit:
                return
        self.metrics.rejected("too_many_sessions")
        raise TooManySessions(session_id, limit)

    def session_changed(self, session: SessionView) -> None:
        """Re-read the session's deadlines (its status changed, or it was loaded)."""
        self.reaper.schedule(session.id)

    def first_deadline(self, now: float) -> float | None:
        return self.store_reaper.first_deadline(now)


def _check_options(
    options: HostOptions,
    reaper: ReaperPolicy,
    *,
    restarts: RestartPolicy | None,
    clock: Clock | None,
    events: EventRegistry | None,
    drain_timeout: float | None,
    max_concurrent_recoveries: int | None,
    history: HistoryConfig | None,
    health: HealthThresholds | None,
    wall_clock: Callable[[], float] | None,
) -> None:
    """``options=`` replaces the single options: refuse both at once, and a record made for another
    reaper policy."""
    given = [
        name
        for name, value, default in (
            ("restarts", restarts, None),
            ("clock", clock, None),
            ("events", events, None),
            ("drain_timeout", drain_timeout, None),
            ("max_concurrent_recoveries", max_concurrent_recoveries, None),
            ("history", history, None),
            ("health", health, None),
            ("wall_clock", wall_clock, None),
        )
        if value is not default
    ]
    if given:
        raise TypeError(f"options= holds them already: pass {', '.join(given)} in it, not beside it")
    if not isinstance(options.restarts, RestartPolicy):
        raise TypeError(f"options.restarts must be a RestartPolicy, not {options.restarts!r}")
    expected = SessionSupervisor.host_options(reaper)
    for field in ("message_limit", "measure_states", "self_sends_count"):
        if getattr(options, field) != getattr(expected, field):
            raise ValueError(
                f"options.{field} is {getattr(options, field)!r} but the reaper policy asks for "
                f"{getattr(expected, field)!r}: build the options with "
                "SessionSupervisor.host_options(reaper, ...)"
            )
