"""The reaper: passivates idle sessions, ends abandoned and expired ones, forgets and deletes the ended.

It is driven by deadlines kept in a timer wheel, never by a scan of every session: a pass pops the entries
that are due and re-checks each against the session as it is now (activity since the entry was
pushed just pushes it again, later). So a pass costs in proportion to what is due, and a message costs
the reaper nothing at all.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import anyio
import attrs
from anyio.abc import TaskStatus

from runtime import Status

from ._wheel import DeadlineWheel

if TYPE_CHECKING:
    from runtime._host import SessionHost
    from runtime.abc import Clock, SessionView

__all__ = ["CleanupStats", "ReaperPolicy", "RemovalReason"]

logger = logging.getLogger(__name__)

_EXPORT_RETRY = 60.0
"""Seconds before a failed export (and so the deletion it guards) is tried again."""
_READABLE_PREFIX = 64


def export_file_name(session_id: str) -> str:
    """The file a session's log is exported to before retention deletes it: one per id.

    A readable part (the id with everything but letters, digits, ``-``, ``_`` and ``.`` replaced
    by ``_``, at most 64 characters) and the first 16 hex digits of the id's SHA-256: ``a/b``,
    ``a_b`` and ``a?b`` once all became ``a_b.jsonl`` and overwrote each other (issue 17). The
    digest keeps names apart on case-insensitive file systems too, and bounds their length. The id
    itself is in every line of the file.

    .. versionadded:: 0.2
    """
    readable = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in session_id)
    readable = readable[:_READABLE_PREFIX].lstrip(".") or "_"
    digest = hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:16]
    return f"{readable}-{digest}.jsonl"


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (Windows has no directory handles to fsync)."""
    if os.name == "nt":  # pragma: no cover
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not (isinstance(value, int | float) and value > 0):
        raise ValueError(f"ReaperPolicy.{attribute.name} must be > 0 or None (no limit), got {value!r}")


@attrs.frozen(kw_only=True)
class ReaperPolicy:
    """When sessions are passivated, abandoned, timed out, forgotten and deleted; and the limits.

    Every field is ``None`` for "no limit". Times are seconds on the runtime's clock.

    Attributes:
        idle_timeout: passivate a session with no call or cast from outside for this long.
        abandon_after: end a session with no call or cast from outside for this long as ``ABANDONED``.
        max_age: end a session this old (since it was created) as ``TIMED_OUT``.
        max_messages: end a session that has handled this many messages as ``TIMED_OUT``.
        paused_ttl: end a session paused for this long as ``ABANDONED``.
        terminal_ttl: drop an ended session from memory this long after it ended (it stays stored).
        retention: delete an ended session's log and snapshots this long after it ended.
        export_dir: before deleting, write the session's log here (JSON lines, one file each,
            named by :func:`export_file_name`); a log whose export fails is kept, and tried again.
        max_sessions: how many sessions may be active (have a task) at once.
        on_limit: at ``max_sessions``, "reject" new starts (``TooManySessions``) or "evict_idle"
            (passivate the least recently used idle session to make room).
        max_memory_bytes: passivate least recently used idle sessions while the estimated size of
            the active ones (state, history, mailbox) is above this; checked every
            ``memory_check_interval`` seconds.
        max_starts_per_second: a token bucket on starts (``RateLimited``); restarts and
            reactivations never count.
        max_resumes_per_second: how fast ``resume_on_start`` sessions are activated after a
            restart (``None``: as fast as they recover), so that a large store does not stampede
            the machine.

            .. versionadded:: 0.2
        idle_counts_self_sends: count a session's messages to itself (timers, self-casts) as
            activity.

    .. versionadded:: 0.1
    """

    idle_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    abandon_after: float | None = attrs.field(default=None, validator=_positive_or_none)
    max_age: float | None = attrs.field(default=None, validator=_positive_or_none)
    max_messages: int | None = attrs.field(default=None, validator=_positive_or_none)
    paused_ttl: float | None = attrs.field(default=None, validator=_positive_or_none)
    terminal_ttl: float | None = attrs.field(default=None, validator=_positive_or_none)
    retention: float | None = attrs.field(default=None, validator=_positive_or_none)
    export_dir: str | os.PathLike[str] | None = None
    max_sessions: int | None = attrs.field(default=None, validator=_positive_or_none)
    on_limit: Literal["reject", "evict_idle"] = attrs.field(
        default="reject", validator=attrs.validators.in_(("reject", "evict_idle"))
    )
    max_memory_bytes: int | None = attrs.field(default=None, validator=_positive_or_none)
    memory_check_interval: float = attrs.field(default=5.0, validator=_positive_or_none)
    max_starts_per_second: float | None = attrs.field(default=None, validator=_positive_or_none)
    max_resumes_per_second: float | None = attrs.field(default=None, validator=_positive_or_none)
    idle_counts_self_sends: bool = False


class RemovalReason(enum.Enum):
    """Why the reaper passivated, ended, forgot or deleted a session."""

    IDLE = "idle"
    """Passivated after ``idle_timeout``."""
    EVICTED = "evicted"
    """Passivated to make room under ``max_sessions``."""
    MEMORY = "memory"
    """Passivated to get under ``max_memory_bytes``."""
    ABANDONED = "abandoned"
    """Ended as ``ABANDONED`` after ``abandon_after``."""
    MAX_AGE = "max_age"
    """Ended as ``TIMED_OUT`` after ``max_age``."""
    PAUSED_TOO_LONG = "paused_too_long"
    """Ended as ``ABANDONED`` after ``paused_ttl``."""
    TERMINAL_TTL = "terminal_ttl"
    """An ended session dropped from memory."""
    RETENTION = "retention"
    """An ended session deleted from the store."""


@attrs.frozen
class CleanupStats:
    """What one reaper pass did.

    Attributes:
        removed: how many sessions, by reason.
        due: how many scheduled checks came due (each one looked at one session).
        errors: checks that failed (logged; the session is left as it was).
        duration: seconds the pass took.
    """

    removed: Mapping[RemovalReason, int]
    due: int
    errors: int
    duration: float

    @property
    def total(self) -> int:
        return sum(self.removed.values())


class _Check(enum.IntEnum):
    IDLE = 1
    ABANDON = 2
    MAX_AGE = 4
    PAUSED = 8
    TERMINAL = 16
    RETENTION = 32


_LIVE = (Status.RUNNING, Status.PASSIVATED)


class Reaper:
    """Keeps the deadlines of the sessions of one host and acts on them when they come due."""

    def __init__(self, host: SessionHost, policy: ReaperPolicy, clock: Clock) -> None:
        self.host = host
        self.policy = policy
        self.clock = clock
        self._wheel: DeadlineWheel[tuple[str, _Check]] = DeadlineWheel(1.0)
        # Which checks each session has in the wheel already (bit flags), so that none is pushed
        # twice. Kept here with the wheel, never on the session: a reaper made anew (the
        # supervisor entered again, after a tree restarted it) starts with an empty wheel and no
        # marks, so that every session is scheduled again.
        self._marks: dict[str, int] = {}
        self._wake: anyio.Event | None = None
        self._next_wake = math.inf
        self._tokens = float(policy.max_starts_per_second or 0)
        self._tokens_at = -math.inf
        # Least recently used first, corrected lazily (a message costs the reaper nothing): an
        # entry whose session was active since it was stamped moves to the end when looked at.
        self._lru: OrderedDict[str, float] = OrderedDict()
        self._track_lru = (
            policy.max_sessions is not None and policy.on_limit == "evict_idle"
        ) or policy.max_memory_bytes is not None
        self.passes = 0
        self.crashes = 0
        self.export_failures = 0
        self.errors = 0
        """Checks that failed, over every pass."""
        self.totals: Counter[RemovalReason] = Counter()
        self.due_monotonic = math.inf
        """When the loop means to wake next, in ``time.monotonic()`` seconds (for the telemetry: a
        reaper that stopped leaves it in the past)."""
        self.last_estimate: int | None = None
        """The memory estimate of the last check (``max_memory_bytes`` set), for the telemetry."""
        self.observe_pass: Callable[[CleanupStats], None] | None = None
        """Called with each pass's figures (the telemetry's histogram)."""

    # -- scheduling -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Start over from the sessions loaded now (the supervisor is entered, again or first).

        The wheel of an earlier run is gone with its task: every loaded session is scheduled anew.
        """
        self._wheel = DeadlineWheel(1.0)
        self._marks.clear()
        self._wake = None
        self._next_wake = math.inf
        self.due_monotonic = math.inf
        for cell in self._views():
            self.schedule(cell.id)

    def _view(self, session_id: str) -> SessionView | None:
        """The loaded session, through the only face the reaper reads (``runtime.abc.SessionView``)."""
        return self.host.cached(session_id)

    def _views(self) -> Sequence[SessionView]:
        """Every loaded session, as ``SessionView``s."""
        return self.host.cells()

    def schedule(self, session_id: str) -> None:
        """Push the checks the session's current status calls for (once each)."""
        cell = self._view(session_id)
        if cell is None:
            return
        p = self.policy
        status = cell.status
        if self._track_lru and status is Status.RUNNING:
            self._lru[cell.id] = cell.last_active
            self._lru.move_to_end(cell.id)
        if status in _LIVE:
            if p.idle_timeout is not None and status is Status.RUNNING:
                self._push(cell.id, cell, _Check.IDLE, cell.last_active + p.idle_timeout)
            if p.abandon_after is not None:
                self._push(cell.id, cell, _Check.ABANDON, cell.last_active + p.abandon_after)
        if not status.terminal and p.max_age is not None:
            self._push(cell.id, cell, _Check.MAX_AGE, cell.started_at + p.max_age)
        if status is Status.PAUSED and p.paused_ttl is not None:
            self._push(cell.id, cell, _Check.PAUSED, cell.status_since + p.paused_ttl)
        if status.terminal:
            if p.terminal_ttl is not None:
                self._push(cell.id, cell, _Check.TERMINAL, cell.status_since + p.terminal_ttl)
            if p.retention is not None:
                self._push(cell.id, cell, _Check.RETENTION, cell.status_since + p.retention)

    def _push(self, session_id: str, cell: SessionView | None, check: _Check, deadline: float) -> None:
        marks = self._marks.get(session_id, 0)
        if marks & check:
            return  # already in the wheel: it re-checks (and re-pushes itself) when due
        self._marks[session_id] = marks | check
        self._wheel.push(deadline, (session_id, check))
        if deadline < self._next_wake and self._wake is not None:
            self._wake.set()

    def push_retention(self, session_id: str, deadline: float) -> None:
        """Schedule the deletion of an ended session that is not loaded in this process."""
        self._push(session_id, self._view(session_id), _Check.RETENTION, deadline)

    def __len__(self) -> int:
        return len(self._wheel)

    def next_deadline(self) -> float:
        """The earliest deadline in the wheel, on the reaper's clock (``inf`` when none)."""
        return self._wheel.next_deadline()

    # -- the actor ------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> NoReturn:
        """Pass after pass as deadlines come due; a crash restarts the loop and touches no session."""
        task_status.started()
        while True:
            try:
                await self._loop()
            except Exception:
                self.crashes += 1
                logger.exception("the reaper crashed; restarting it (no session was touched)")
                await anyio.lowlevel.checkpoint()

    async def _loop(self) -> NoReturn:
        memory_due = self.clock.now() + self.policy.memory_check_interval
        while True:
            target = self._wheel.next_deadline()
            if self.policy.max_memory_bytes is not None:
                target = min(target, memory_due)
            self._next_wake = target
            self.due_monotonic = time.monotonic() + max(0.0, target - self.clock.now())
            wake = self._wake = anyio.Event()
            async with anyio.create_task_group() as tg:
                # Woken by the deadline, or sooner by a new earlier one (``_push`` sets ``wake``).
                tg.start_soon(self._alarm, target, wake)
                await wake.wait()
                tg.cancel_scope.cancel()
            self._wake = None
            self._next_wake = math.inf
            now = self.clock.now()
            if self.policy.max_memory_bytes is not None and now >= memory_due:
                memory_due = now + self.policy.memory_check_interval
                self.enforce_memory()
            if self._wheel.next_deadline() <= now:
                await self.reap()

    async def _alarm(self, deadline: float, wake: anyio.Event) -> None:
        if deadline < math.inf:
            await self.clock.sleep_until(deadline)
            wake.set()

    async def reap(self) -> CleanupStats:
        """One pass now: act on every check that is due."""
        started = time.perf_counter()
        now = self.clock.now()
        removed: Counter[RemovalReason] = Counter()
        due = errors = 0
        for session_id, check in self._wheel.pop_due(now):
            due += 1
            try:
                reason = await self._check(session_id, check, now)
            except Exception:
                errors += 1
                logger.exception("reaper: checking session %r failed; left as it was", session_id)
                continue
            if reason is not None:
                removed[reason] += 1
                self.host.metrics.removed(reason.value)
        self.passes += 1
        self.errors += errors
        self.totals.update(removed)
        stats = CleanupStats(dict(removed), due, errors, time.perf_counter() - started)
        if self.observe_pass is not None:
            self.observe_pass(stats)
        return stats

    async def _check(self, session_id: str, check: _Check, now: float) -> RemovalReason | None:
        host, p = self.host, self.policy
        marks = self._marks.pop(session_id, 0) & ~check
        if marks:
            self._marks[session_id] = marks
        cell = self._view(session_id)
        status = None if cell is None else cell.status

        if check is _Check.IDLE:
            if cell is None or status is not Status.RUNNING or p.idle_timeout is None:
                return None
            if cell.last_active + p.idle_timeout > now:
                self._push(session_id, cell, check, cell.last_active + p.idle_timeout)
                return None
            if host.request_passivation(cell.id, cell.last_active):
                return RemovalReason.IDLE
            # Busy (a queued message, a deferred reply): look again a little later.
            self._push(session_id, cell, check, now + p.idle_timeout / 4)
            return None

        if check is _Check.ABANDON:
            if cell is None or status not in _LIVE or p.abandon_after is None:
                return None
            if cell.last_active + p.abandon_after > now:
                self._push(session_id, cell, check, cell.last_active + p.abandon_after)
                return None
            reason = f"no message from outside for {p.abandon_after:g}s"
            if await host.expire(session_id, Status.ABANDONED, reason, idle_since=cell.last_active):
                return RemovalReason.ABANDONED
            return None

        if check is _Check.MAX_AGE:
            if cell is None or status is None or status.terminal or p.max_age is None:
                return None
            if cell.started_at + p.max_age > now:
                self._push(session_id, cell, check, cell.started_at + p.max_age)
                return None
            if await host.expire(session_id, Status.TIMED_OUT, f"older than max_age {p.max_age:g}s"):
                return RemovalReason.MAX_AGE
            return None

        if check is _Check.PAUSED:
            if cell is None or status is not Status.PAUSED or p.paused_ttl is None:
                return None
            if cell.status_since + p.paused_ttl > now:
                self._push(session_id, cell, check, cell.status_since + p.paused_ttl)
                return None
            reason = f"paused for longer than {p.paused_ttl:g}s"
            if await host.expire(session_id, Status.ABANDONED, reason):
                return RemovalReason.PAUSED_TOO_LONG
            return None

        if check is _Check.TERMINAL:
            if cell is None or status is None or not status.terminal or cell.active:
                return None
            host.forget(session_id)
            return RemovalReason.TERMINAL_TTL

        # _Check.RETENTION: the session may have left memory already (terminal_ttl).
        if cell is not None and (status is None or not status.terminal or cell.active):
            return None
        record = await host.store.get(session_id)
        if record is None or not record.status.terminal:
            return None
        if p.export_dir is not None:
            try:
                await self.export(session_id)
            except OSError:
                # Never delete a log whose export did not reach the disk: keep it, try again later.
                logger.exception(
                    "reaper: exporting session %r to %s failed; its log is kept and the export "
                    "retried in %gs",
                    session_id,
                    p.export_dir,
                    _EXPORT_RETRY,
                )
                self.push_retention(session_id, now + _EXPORT_RETRY)
                self.export_failures += 1
                return None
        await host.delete(session_id)
        return RemovalReason.RETENTION

    async def export(self, session_id: str) -> None:
        """Write the session's log to its own file in ``export_dir``, durably, before deletion.

        The file's name comes from :func:`export_file_name` (two ids never share a file) and each
        line carries the id itself. The lines go to a temporary file that is fsynced, renamed over
        the name, and the directory fsynced: once this returns the export survives a power loss,
        and if it raises (disk full, no permission) the log must not be deleted.
        """
        events = await self.host.store.read(session_id)
        record = await self.host.store.get(session_id)
        assert self.policy.export_dir is not None
        folder = Path(self.policy.export_dir)
        lines = [
            json.dumps(
                {
                    "session_id": session_id,
                    "session_type": None if record is None else record.type,
                    "version": e.version,
                    "type": e.type,
                    "schema_version": e.schema_version,
                    "recorded_at": e.recorded_at,
                    "data": json.loads(e.data),
                }
            )
            for e in events
        ]

        name = export_file_name(session_id)

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / name
            tmp = folder / f"{name}.tmp"
            with open(tmp, "w", encoding="utf-8") as file:
                file.writelines(line + "\n" for line in lines)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, target)
            _fsync_directory(folder)  # the rename itself, so that the name survives a power loss

        await anyio.to_thread.run_sync(write)

    # -- limits ---------------------------------------------------------------------------------

    def take_start_token(self) -> bool:
        """Spend a start from the token bucket; ``False`` if the rate is exceeded."""
        rate = self.policy.max_starts_per_second
        if rate is None:
            return True
        now = self.clock.now()
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def idle_candidates(self) -> Iterator[str]:
        """Active, running sessions, least recently used first (amortised O(1) per candidate)."""
        lru = self._lru
        for _ in range(2 * len(lru)):
            if not lru:
                return
            session_id, stamp = next(iter(lru.items()))
            cell = self._view(session_id)
            if cell is None or not cell.active or cell.status is not Status.RUNNING:
                del lru[session_id]
                continue
            if cell.last_active > stamp:
                lru[session_id] = cell.last_active
                lru.move_to_end(session_id)
                continue
            lru.move_to_end(session_id)  # looked at: if it cannot go now, try the others first
            yield session_id

    def evict_one(self, reason: RemovalReason) -> bool:
        """Ask the least recently used idle session to passivate."""
        for session_id in self.idle_candidates():
            cell = self._view(session_id)
            if cell is not None and self.host.request_passivation(cell.id, cell.last_active):
                self.totals[reason] += 1
                self.host.metrics.removed(reason.value)
                return True
        return False

    def estimated_bytes(self) -> int:
        """The estimated memory of the active sessions: state, history, mailbox, fixed costs."""
        total = 0
        for cell in self._views():
            if cell.active:
                total += _ACTIVE_BASE + 2 * cell.state_bytes
                total += _PER_TRANSITION * cell.transitions
                total += _PER_MESSAGE * cell.mailbox_depth
        return total

    def enforce_memory(self) -> int:
        """Passivate least recently used idle sessions until the estimate is under the limit."""
        limit = self.policy.max_memory_bytes
        if limit is None:
            return 0
        self.last_estimate = estimate = self.estimated_bytes()
        excess = estimate - limit
        evicted = 0
        for session_id in self.idle_candidates():
            if excess <= 0:
                break
            cell = self._view(session_id)
            if cell is None:
                continue
            size = _ACTIVE_BASE + 2 * cell.state_bytes + _PER_TRANSITION * cell.transitions
            if self.host.request_passivation(cell.id, cell.last_active):
                excess -= size
                evicted += 1
        self.totals[RemovalReason.MEMORY] += evicted
        for _ in range(evicted):
            self.host.metrics.removed(RemovalReason.MEMORY.value)
        return evicted


# Estimates, measured with bench/bench_session.py (an idle active session costs about 6 KB with its
# task and mailbox); a transition record and a queued message cost a few hundred bytes each.
_ACTIVE_BASE = 6_000
_PER_TRANSITION = 200
_PER_MESSAGE = 200
