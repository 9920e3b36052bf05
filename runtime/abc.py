"""Protocols that users implement to plug in their own pieces (event stores and clocks), and
``SessionView``, the read-only face of a loaded session that policies such as the reapers read.

A store is what keeps sessions durable. The runtime relies on exactly these guarantees:

* ``append`` is atomic (all of its events or none) and durable when it returns, and it checks
  ``expected_version`` against the log's current length so that a stale writer gets
  ``VersionConflict`` instead of forking the history.
* ``read`` returns events in version order, exactly as appended (the runtime checks for gaps and
  duplicates itself, so a damaged store is reported as ``CorruptEventLog``, never silently replayed).
* The index keeps each session's acknowledged head (``SessionRecord.version``), written by the same
  transaction as each append; it is not derived from the log, so that a log that lost its tail is
  noticed by recovery (``CorruptEventLog``) rather than taken as the whole history.
* ``load_session`` reads the index entry, the snapshot and the log after it in one read
  transaction: one consistent view, even while another writer appends and snapshots.
* Session ids follow one rule in every store: ``create`` and ``get`` call
  :func:`runtime.check_session_id`, which raises ``InvalidSessionId``.
* Nothing the runtime reads is ever rewritten by the store on its own.
* Reminders and session deadlines are kept so that the next due ones are found by an indexed range
  query (``due_reminders``, ``due_sessions``), never by reading every session.

Every method may raise ``StoreError`` (or a subclass) for a failure of the store itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._ownership import Lease, NodeInfo, Renewal
from ._records import (
    AppendExtras,
    EventData,
    IdempotentReply,
    Outcomes,
    Reminder,
    SessionOrder,
    SessionRecord,
    Snapshot,
    StoredEvent,
    StoredSession,
    StoreStats,
    nearest_rank,
)
from ._status import Status

if TYPE_CHECKING:
    from ._window import RestartWindow

__all__ = [
    "Lease",
    "LeaseStore",
    "NodeInfo",
    "Renewal",
    "AppendExtras",
    "Clock",
    "EventData",
    "EventStore",
    "IdempotentReply",
    "Outcomes",
    "Reminder",
    "RestartStrategy",
    "SessionRecord",
    "SessionView",
    "Snapshot",
    "Status",
    "StoreStats",
    "StoredEvent",
    "StoredSession",
    "nearest_rank",
]


@runtime_checkable
class EventStore(Protocol):
    """The store protocol: per-session append-only logs, snapshots and a session index."""

    async def open(self) -> None:
        """Acquire resources (files, threads, connections). Called once before any other method."""

    async def aclose(self) -> None:
        """Flush everything acknowledged and release resources. Idempotent."""

    async def create(self, record: SessionRecord) -> None:
        """Add a new session to the index, at version 0 (``record.version`` is ignored).

        Raises:
            InvalidSessionId: ``record.id`` breaks the rule of :func:`runtime.check_session_id`.
            SessionExists: a session with ``record.id`` is already stored.
        """

    async def append(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[EventData],
        *,
        status: Status | None = None,
        extras: AppendExtras | None = None,
    ) -> int:
        """Append ``events`` atomically as versions ``expected_version + 1 ...``; return the new version.

        The index's acknowledged head (``SessionRecord.version``) becomes the new version in the
        same transaction. When ``status`` is given the index takes it too, and clears
        ``status_reason`` and ``error_type`` (the status event in the log holds the reason); so
        do ``extras`` (fired reminders removed, an idempotent reply kept, the message count, the
        deadline).

        Raises:
            SessionNotFound: the session is not in the index.
            VersionConflict: the acknowledged head is not ``expected_version``.
        """

    async def read(
        self, session_id: str, from_version: int = 1, to_version: int | None = None
    ) -> Sequence[StoredEvent]:
        """Events ``from_version..to_version`` (inclusive; to the end when ``None``), in order."""

    async def load_session(
        self, session_id: str, *, after_snapshot: bool = True, to_version: int | None = None
    ) -> StoredSession | None:
        """The session's index entry, latest snapshot and the events after it, read in one view.

        All three come from one read transaction, so they agree with each other even while
        another writer appends and snapshots (the snapshot is never beyond the entry's version
        because of a write in between).

        Args:
            session_id: the session.
            after_snapshot: return the latest snapshot and only the events after it; when
                ``False``, no snapshot and the events from version 1.
            to_version: the last event to return (inclusive); ``None``: to the end of the log.

        Returns:
            ``None`` when the session is not stored; else the entry, the snapshot, the events and
            ``log_version``, the version of the last event the log holds (whatever
            ``to_version``), which recovery compares with the entry's acknowledged head.

        .. versionadded:: 0.2
        """

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the session's latest (an older one may be dropped)."""

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        """The session's latest snapshot, if any."""

    async def get(self, session_id: str) -> SessionRecord | None:
        """The session's index entry, or ``None`` when it is not stored.

        Raises:
            InvalidSessionId: ``session_id`` breaks the rule of :func:`runtime.check_session_id`.
        """

    async def set_status(
        self,
        session_id: str,
        status: Status,
        *,
        reason: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """Change the session's status in the index only (the log is untouched).

        ``reason`` and ``error_type`` replace the entry's ``status_reason`` and ``error_type``
        (``None`` clears them): why a quarantined session is ``FAILED``, for later processes.

        .. versionchanged:: 0.2
            ``reason`` and ``error_type``.
        """

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
        """Index entries matching every filter given, sorted by ``order_by`` then by id.

        ``metadata`` matches entries whose metadata has each key equal to the value given.
        ``order_by`` is ``"created_at"`` (the default: oldest first) or ``"updated_at"`` (the
        entry's or its log's last change, as ``get`` reports it); ``descending`` reverses the order,
        id included. The time bounds are wall-clock seconds (``time.time()``) and form half-open
        ranges: ``created_after=t`` keeps sessions created at ``t`` or later, ``created_before=t``
        those created before ``t``; likewise ``updated_*``. ``limit`` and ``offset`` apply last.

        .. versionchanged:: 0.1 ``order_by``, ``descending`` and the time bounds.
        """

    async def stats(self) -> StoreStats:
        """Counts of sessions by status and type, of events and of snapshots."""

    async def outcomes(self) -> Mapping[str, Outcomes]:
        """How the sessions of each stored type turned out, by type name (see :class:`Outcomes`).

        A store computes it where the data lives (SQL aggregates in a database), not by reading
        every session back. Durations use the same ``updated_at`` as ``get``; percentiles are
        nearest-rank (:func:`runtime.abc.nearest_rank` states the definition).

        .. versionadded:: 0.1
        """

    async def delete(self, session_id: str) -> None:
        """Remove the session, its log, snapshots, reminders and replies. Unknown ids are ignored."""

    # -- reminders, deadlines, idempotent replies (.. versionadded:: 0.2) -----------------------

    async def set_reminder(self, reminder: Reminder) -> None:
        """Keep ``reminder``, replacing the session's reminder of the same name. Durable on return.

        Raises:
            SessionNotFound: the session is not in the index.
        """

    async def remove_reminder(self, session_id: str, name: str) -> None:
        """Remove the session's reminder ``name``; nothing happens when there is none."""

    async def reminders(self, session_id: str) -> Sequence[Reminder]:
        """The session's reminders, earliest due first."""

    async def due_reminders(self, until: float, *, limit: int) -> Sequence[Reminder]:
        """At most ``limit`` reminders of any session due at or before ``until``, earliest first.

        ``until=math.inf`` finds the next ones whenever they are due.
        """

    async def set_deadline(self, session_id: str, deadline: float | None) -> None:
        """Set the session's ``SessionRecord.deadline`` (``None``: no deadline). Unknown ids are
        ignored (the session was deleted meanwhile)."""

    async def due_sessions(self, until: float, *, limit: int) -> Sequence[SessionRecord]:
        """At most ``limit`` sessions whose deadline is at or before ``until``, earliest first."""

    async def load_reply(self, session_id: str, key: str) -> str | None:
        """The reply (JSON text) stored under idempotency ``key`` for the session, if still kept."""


@runtime_checkable
class LeaseStore(Protocol):
    """What a store shared by several nodes adds: leases with fencing epochs (DESIGN.md, "Many nodes").

    A store joins as one node (:meth:`join`); from then on every append it makes must be for a session
    whose lease it holds, and carries the lease's epoch: the store refuses it with ``OwnershipLost``
    in the same transaction once the lease has moved on, so nothing recorded after losing a lease is
    ever in the log.

    .. versionadded:: 0.2
    """

    async def join(self, node: str, *, address: str | None = None, lease_ttl: float = 10.0) -> None:
        """Become node ``node`` (announced with ``address``); leases last ``lease_ttl`` seconds."""

    async def leave(self) -> None:
        """Release every lease this node holds and remove the node from the membership."""

    async def acquire(self, session_id: str) -> Lease:
        """Own ``session_id``: free, released, expired, or already this node's (a new epoch each time).

        Raises:
            OwnedElsewhere: another live node holds the lease.
        """

    async def release(self, session_id: str) -> None:
        """Give the lease up (passivation, stop), so that any node may own the session at once."""

    async def renew(self) -> Renewal:
        """Renew every lease this node holds, in one round trip, and say which ones were lost."""

    async def locate(self, session_id: str) -> Lease | None:
        """The live lease on ``session_id`` (its node and address), or ``None`` when nobody owns it."""

    async def nodes(self) -> Sequence[NodeInfo]:
        """Every node that joined and has not left, by name."""

    async def claim_orphans(self, *, types: Sequence[str], limit: int) -> Sequence[Lease]:
        """Take over at most ``limit`` sessions whose owner stopped renewing and that must run now.

        Those are sessions with a reminder due, or of one of ``types`` (``resume_on_start``) and
        ``running``. Several nodes calling this at once claim disjoint sets, at random among the
        candidates, so that a dead node's sessions spread among the survivors.
        """

    async def next_expiry(self) -> float | None:
        """Seconds until the soonest live lease of another node expires (``None``: no other node holds one).

        A survivor sleeps until then rather than polling, so that a dead node's sessions are taken
        over as soon as its last leases lapse (``lease_ttl`` after its last renewal).

        .. versionadded:: 0.2
        """


@runtime_checkable
class SessionView(Protocol):
    """What a policy outside the runtime may read about one session loaded in this process.

    The host's ``cached`` and ``cells`` hand out loaded sessions that satisfy it; the reapers decide from them
    when a session is idle, abandoned, too old, paused too long or due for deletion, and how much
    memory it holds. Read-only, and read when deciding: the runtime changes the values as the
    session runs, so a value is only as fresh as the moment it was read. Times are on the host's
    clock (``Clock.now()``), not the wall clock.

    .. versionadded:: 0.2
    """

    @property
    def id(self) -> str:
        """The session's id."""

    @property
    def status(self) -> Status:
        """Its current status."""

    @property
    def status_since(self) -> float:
        """When it entered ``status`` (or was loaded in it)."""

    @property
    def active(self) -> bool:
        """Whether an incarnation runs now (a task with its state in memory)."""

    @property
    def started_at(self) -> float:
        """When it was started or loaded in this process."""

    @property
    def last_active(self) -> float:
        """When it last took a message from outside (its own sends do not count)."""

    @property
    def state_bytes(self) -> int:
        """The size of its state as last encoded (JSON bytes; 0 before its first record)."""

    @property
    def transitions(self) -> int:
        """How many state transitions its history keeps in memory (0 when history is off)."""

    @property
    def mailbox_depth(self) -> int:
        """Messages waiting in its mailbox."""


class Clock(Protocol):
    """Where the runtime reads time and sleeps: anyio's clock by default, a manual one in tests."""

    def now(self) -> float:
        """The current time in seconds, on the same scale as ``sleep_until``'s deadlines."""

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline``."""


class RestartStrategy(Protocol):
    """Decides whether, and after how long, a crashed session is restarted."""

    def window(self) -> RestartWindow:
        """A new, empty window of crash times, kept by the session from its first crash on."""

    def restart_delay(self, window: RestartWindow, now: float) -> float | None:
        """Record a crash at ``now`` in ``window``; seconds to wait before restarting, or ``None``
        to quarantine the session as ``FAILED``.

        Args:
            window: the session's own window (from ``window()``), with its earlier crashes.
            now: the time of this crash (``Clock.now()``).
        """
