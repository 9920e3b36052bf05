"""The reaper over the whole store: deadlines of the sessions this process has not loaded.

The in-process reaper (:mod:`._reaper`) watches the sessions loaded here. A session that no process has
loaded (one left ``RUNNING`` by a process that died, an ended one that left memory) is looked at through
the store's index by due time instead: every stored session carries a ``deadline`` (wall-clock
seconds), a lower bound of the earliest of its policy deadlines. A pass takes the sessions whose
deadline has come (``EventStore.due_sessions``, a range over an index, never a scan) and for each one:

* loaded in this process: the in-process reaper owns it; its stored deadline is moved to what that
  reaper will act on (so that a process dying now leaves a deadline that is still a lower bound);
* otherwise its record says what is due: abandoned (``abandon_after`` after its stored last activity),
  timed out (``max_age`` after it was created), abandoned when paused (``paused_ttl``), deleted when
  ended (``retention``). It is ended without being activated, with its lifecycle event (and so its
  webhook) as for a loaded session; when nothing is due yet, its deadline moves to the next one.

A deadline is set when a session is created (from the policy of that process), and moved by each pass
that looks at it. A policy added or tightened later would not reach sessions stored without one (or
with a later one): :meth:`StoreReaper.reschedule` pages through the stored live sessions (running,
passivated, paused; ended ones too if asked, for ``retention``) and brings forward every deadline that
is missing or later than the current policy's. A supervisor runs it once in the background at start,
for the missing deadlines only, when its policy sets any deadline for live sessions: one paged read of
the live sessions per start, a write only for those without a deadline. After tightening a policy, an
application calls ``SessionSupervisor.reschedule_stored()`` once for the later ones.

The stored last activity is the session's last append or status change (``SessionRecord.updated_at``):
a message that recorded nothing leaves no trace in the store. Time while no process ran does not
count as inactivity: idleness counts from the later of that activity and this process's start. Ages
(``max_age``), pauses and retention count the whole time.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import TYPE_CHECKING, NoReturn

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskStatus

from runtime import SessionRecord, Status

from ._reaper import RemovalReason

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from runtime._host import SessionHost
    from runtime.abc import Clock, SessionView

    from ._reaper import ReaperPolicy

__all__ = ["Due", "StoreReaper", "next_deadline"]

logger = logging.getLogger(__name__)

_LIVE = (Status.RUNNING, Status.PASSIVATED)


@attrs.frozen
class Due:
    """A stored session's next policy deadline (wall clock) and what happens then."""

    at: float
    reason: RemovalReason


def next_deadline(
    policy: ReaperPolicy,
    status: Status,
    *,
    idle_since: float,
    created_at: float,
    status_since: float,
) -> Due | None:
    """The earliest deadline ``policy`` sets for a session in ``status`` (``None``: none ever).

    Pure: times are wall-clock seconds. ``idle_since`` is its last activity, ``status_since`` when
    it took ``status``.
    """
    found: list[Due] = []
    if status in _LIVE and policy.abandon_after is not None:
        found.append(Due(idle_since + policy.abandon_after, RemovalReason.ABANDONED))
    if not status.terminal and policy.max_age is not None:
        found.append(Due(created_at + policy.max_age, RemovalReason.MAX_AGE))
    if status is Status.PAUSED and policy.paused_ttl is not None:
        found.append(Due(status_since + policy.paused_ttl, RemovalReason.PAUSED_TOO_LONG))
    if status.terminal and policy.retention is not None:
        found.append(Due(status_since + policy.retention, RemovalReason.RETENTION))
    return min(found, key=lambda d: d.at, default=None)


class StoreReaper:
    """Acts on the stored deadlines of one supervisor's store (see the module docstring).

    Args:
        host: the supervisor.
        policy: its reaper policy.
        clock: the runtime's clock (for sleeping).
        wall: the wall clock deadlines are kept on.
        started_at: when this process started, on the wall clock.
        export: writes a session's log out before ``retention`` deletes it (``export_dir``).
        batch: the most sessions taken from the store per read.
        poll: the longest sleep between passes (other writers may set earlier deadlines).
    """

    def __init__(
        self,
        host: SessionHost,
        policy: ReaperPolicy,
        clock: Clock,
        wall: Callable[[], float],
        started_at: float,
        *,
        export: Callable[[str], Awaitable[None]] | None = None,
        batch: int = 500,
        poll: float = 30.0,
    ) -> None:
        self.host = host
        self.policy = policy
        self.clock = clock
        self.wall = wall
        self.started_at = started_at
        self.export = export
        self.batch = batch
        self.poll = poll
        self.passes = 0
        self.looked_at = 0
        """Due sessions read from the store, over all passes (what a pass costs)."""
        self.expired: Counter[RemovalReason] = Counter()
        """Stored sessions ended or deleted without being activated, by reason."""
        self.rescheduled = 0
        """Stored deadlines brought forward to the current policy by ``reschedule``."""
        self._wake: anyio.Event | None = None

    def first_deadline(self, now: float) -> float | None:
        """The deadline of a session created now (``SessionRecord.deadline`` at ``create``)."""
        due = next_deadline(self.policy, Status.RUNNING, idle_since=now, created_at=now, status_since=now)
        return None if due is None else due.at

    def _record_due(self, record: SessionRecord) -> Due | None:
        return next_deadline(
            self.policy,
            record.status,
            idle_since=max(record.updated_at, self.started_at),
            created_at=record.created_at,
            status_since=record.updated_at,
        )

    def _cell_due(self, cell: SessionView) -> Due | None:
        shift = self.wall() - self.clock.now()  # the runtime clock to the wall clock
        return next_deadline(
            self.policy,
            cell.status,
            idle_since=cell.last_active + shift,
            created_at=cell.started_at + shift,
            status_since=cell.status_since + shift,
        )

    @property
    def sets_live_deadlines(self) -> bool:
        """Whether the policy sets any deadline for a session that has not ended."""
        policy = self.policy
        return any(v is not None for v in (policy.abandon_after, policy.max_age, policy.paused_ttl))

    async def reschedule(self, *, ended: bool = False, missing_only: bool = False, page: int = 1000) -> int:
        """Make every stored deadline reflect the current policy; how many were moved.

        Pages through the stored sessions that have not ended (and the ended ones with ``ended``)
        and sets the deadline of each whose stored one is missing or later than the policy's
        (only the missing ones with ``missing_only``; an earlier one is left: the pass that reaches
        it moves it on). A session loaded here is given the deadline its in-process reaper acts on.
        """
        host, store = self.host, self.host.store
        statuses = [Status.RUNNING, Status.PASSIVATED, Status.PAUSED]
        if ended:
            statuses += [s for s in Status if s.terminal]
        moved = 0
        for status in statuses:
            offset = 0
            while True:
                records = await store.list(status=status, limit=page, offset=offset)
                for record in records:
                    cell = host.cached(record.id)
                    due = self._record_due(record) if cell is None else self._cell_due(cell)
                    if due is None:
                        continue
                    if record.deadline is None or (not missing_only and record.deadline > due.at):
                        await store.set_deadline(record.id, due.at)
                        moved += 1
                if len(records) < page:
                    break
                offset += page
                await anyio.lowlevel.checkpoint()
        self.rescheduled += moved
        if moved and self._wake is not None:
            self._wake.set()  # the next pass may be due sooner than the reaper sleeps
        return moved

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> NoReturn:
        """Pass after pass, sleeping until the next stored deadline (at most ``poll`` seconds)."""
        task_status.started()
        while True:
            try:
                await self.reap()
                upcoming = await self.host.store.due_sessions(math.inf, limit=1)
            except Exception:
                logger.exception("the store reaper failed; trying again in %gs", self.poll)
                upcoming = []
            next_at = upcoming[0].deadline if upcoming and upcoming[0].deadline is not None else math.inf
            delay = min(self.poll, max(0.0, next_at - self.wall()))
            # Woken sooner when ``reschedule`` brought deadlines forward.
            wake = self._wake = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._alarm, self.clock.now() + max(delay, 0.01), wake)
                await wake.wait()
                tg.cancel_scope.cancel()
            self._wake = None

    async def _alarm(self, deadline: float, wake: anyio.Event) -> None:
        await self.clock.sleep_until(deadline)
        wake.set()

    async def reap(self) -> Counter[RemovalReason]:
        """One pass: every stored session whose deadline has come, ``batch`` at a time."""
        removed: Counter[RemovalReason] = Counter()
        store = self.host.store
        self.passes += 1
        while True:
            now = self.wall()
            due = await store.due_sessions(now, limit=self.batch)
            self.looked_at += len(due)
            for record in due:
                try:
                    reason = await self._check(record, now)
                except Exception:
                    logger.exception("store reaper: session %r left as it was", record.id)
                    # Look again later rather than at every pass.
                    await store.set_deadline(record.id, now + self.poll)
                    continue
                if reason is not None:
                    removed[reason] += 1
            if len(due) < self.batch:
                break
        self.expired.update(removed)
        return removed

    async def _check(self, record: SessionRecord, now: float) -> RemovalReason | None:
        host, store = self.host, self.host.store
        cell = host.cached(record.id)
        if cell is not None:
            # Loaded here: the in-process reaper acts on it. Keep the stored deadline a lower bound.
            due = self._cell_due(cell)
            await store.set_deadline(record.id, None if due is None else max(due.at, now + 1.0))
            return None
        due = self._record_due(record)
        if due is None or due.at > now:
            await store.set_deadline(record.id, None if due is None else due.at)
            return None
        reason = due.reason
        if reason is RemovalReason.RETENTION:
            if self.export is not None:
                await self.export(record.id)
            await host.delete(record.id)
            host.metrics.stored_expired(record.type, reason.value)
            return reason
        status, text = _EXPIRY[reason]
        if not await host.expire(record.id, status, text(self.policy)):
            await store.set_deadline(record.id, now + self.poll)
            return None
        host.metrics.stored_expired(record.type, reason.value)
        host.forget(record.id)  # it was loaded only to be ended
        after = next_deadline(self.policy, status, idle_since=now, created_at=now, status_since=now)
        await store.set_deadline(record.id, None if after is None else after.at)
        return reason


def _abandoned(policy: ReaperPolicy) -> str:
    return f"no message from outside for {policy.abandon_after:g}s"


def _aged(policy: ReaperPolicy) -> str:
    return f"older than max_age {policy.max_age:g}s"


def _paused(policy: ReaperPolicy) -> str:
    return f"paused for longer than {policy.paused_ttl:g}s"


_EXPIRY: dict[RemovalReason, tuple[Status, Callable[[ReaperPolicy], str]]] = {
    RemovalReason.ABANDONED: (Status.ABANDONED, _abandoned),
    RemovalReason.MAX_AGE: (Status.TIMED_OUT, _aged),
    RemovalReason.PAUSED_TOO_LONG: (Status.ABANDONED, _paused),
}
