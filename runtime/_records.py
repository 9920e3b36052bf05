"""The plain records that stores keep and return: events, snapshots, the session index, reminders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from ._status import Status

__all__ = [
    "ENDED",
    "AppendExtras",
    "EventData",
    "IdempotentReply",
    "Outcomes",
    "Reminder",
    "SessionOrder",
    "SessionRecord",
    "Snapshot",
    "StoreStats",
    "StoredEvent",
    "StoredSession",
    "nearest_rank",
]


@attrs.frozen
class EventData:
    """An encoded event, ready to append: its registered type name, schema version and JSON text."""

    type: str
    schema_version: int
    data: str


@attrs.frozen
class StoredEvent:
    """An event as the store holds it: ``version`` is its 1-based position in the session's log."""

    session_id: str
    version: int
    type: str
    schema_version: int
    data: str
    recorded_at: float
    """Wall-clock time (``time.time()``) of the append; for display only."""


@attrs.frozen
class Snapshot:
    """A session's state as JSON after its first ``version`` events, under ``state_version``."""

    session_id: str
    version: int
    state_version: int
    data: str
    taken_at: float = 0.0


@attrs.frozen
class SessionRecord:
    """A session's entry in the store's index, behind ``list`` and ``stats``.

    ``args`` are what ``initial_state`` is called with on every recovery; ``metadata`` is free-form
    JSON for filtering (user, channel). Times are wall-clock seconds (``time.time()``).

    ``version`` is the session's acknowledged head: how many events the store has acknowledged
    for it, kept in the index by the same transaction as each append. Its log must hold exactly
    that many events; a shorter one lost its tail, and recovery reports it (``CorruptEventLog``).

    ``deadline`` is when the reaper should next look at the session (wall-clock seconds, ``None``
    for never): a lower bound on its next policy deadline (abandonment, age, pause, retention),
    kept in an index so that the sessions due are found without reading the others. The reaper
    re-checks a due session against its record and pushes the deadline on when it is not due yet.
    ``handled`` is the durable count of messages the session has handled (``max_messages``).

    ``status_reason`` and ``error_type`` say why the session has its status when the runtime told
    the index (``set_status``): the message and the class name of the error that quarantined a
    ``FAILED`` session, so that a later process and the command line can show it. A status taken
    with an append keeps its reason in the log (the ``StatusChanged`` event) and clears them here.

    .. versionchanged:: 0.2
       ``deadline``, ``handled``, ``status_reason`` and ``error_type``; ``version`` is kept by the
       store rather than derived from the log.
    """

    id: str
    type: str
    status: Status = Status.RUNNING
    args: Mapping[str, Any] = attrs.field(factory=dict)
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    deadline: float | None = None
    handled: int = 0
    status_reason: str | None = None
    error_type: str | None = None


@attrs.frozen
class StoredSession:
    """One consistent view of a session, as ``EventStore.load_session`` reads it for a recovery.

    ``events`` are those after ``snapshot`` (all of them when it is ``None``), in version order, up
    to the ``to_version`` asked for. The three parts come from one read transaction, so a snapshot
    is never newer than ``record.version`` because another writer appended in between.

    .. versionadded:: 0.2
    """

    record: SessionRecord
    snapshot: Snapshot | None
    events: Sequence[StoredEvent]
    log_version: int
    """The version of the last event the log holds (0 when it holds none), whatever ``to_version``
    was: ``record.version`` unless the log lost its tail."""
    reminders: Sequence[Reminder] | None = None
    """The session's reminders, earliest due first, read in the same view, so that a recovery
    makes one read; ``None`` when the store did not read them (recovery then asks ``reminders``).

    .. versionadded:: 0.2
    """


@attrs.frozen
class StoreStats:
    """Counts a store reports: sessions by status and type, events and snapshots kept."""

    sessions: int
    events: int
    snapshots: int
    by_status: Mapping[str, int]
    by_type: Mapping[str, int]


@attrs.frozen
class Reminder:
    """A durable reminder: deliver ``message`` to the session's ``handle_info`` at ``due_at``.

    A session has at most one reminder per ``name``. ``due_at`` is wall-clock seconds
    (``time.time()``), so that it means the same in the next process; ``message`` is the JSON text
    the event codec made of the message (a registered type's name, schema version and payload).

    .. versionadded:: 0.2
    """

    session_id: str
    name: str
    due_at: float
    message: str


@attrs.frozen
class IdempotentReply:
    """The reply to a call made with an idempotency key, stored with the call's events.

    ``reply`` is JSON text. The store keeps at most ``keep`` replies per session (the newest).

    .. versionadded:: 0.2
    """

    key: str
    reply: str
    keep: int = 1000


@attrs.frozen(kw_only=True)
class AppendExtras:
    """What an ``append`` writes besides events, in the same transaction.

    Attributes:
        fired: reminders that were delivered by the turn being recorded; each is removed if the
            session still has it with the same ``due_at`` (a reminder the handler re-scheduled
            under the same name stays).
        scheduled: reminders the turn being recorded scheduled (after ``fired`` is removed), each
            replacing the session's reminder of its name: a periodic reminder's next one costs
            no write of its own.
        reply: the reply of an idempotent call, stored under its key.
        handled: the session's durable message count, stored in its index entry.
        deadline: the session's new ``SessionRecord.deadline`` (``None``: leave it as it is).

    .. versionadded:: 0.2
    .. versionchanged:: 0.2 ``scheduled``.
    """

    fired: tuple[Reminder, ...] = ()
    scheduled: tuple[Reminder, ...] = ()
    reply: IdempotentReply | None = None
    handled: int | None = None
    deadline: float | None = None


SessionOrder = Literal["created_at", "updated_at"]
"""What ``list`` sorts by: the session's creation time, or its last change (entry or log)."""

ENDED: tuple[Status, ...] = tuple(s for s in Status if s.terminal)
"""The statuses of sessions that have ended, whose outcomes ``outcomes`` summarises."""


@attrs.frozen(kw_only=True)
class Outcomes:
    """How the sessions of one type turned out, as a store counts them (``EventStore.outcomes``).

    ``ended`` sessions are those in a terminal status (completed, failed, timed out, abandoned,
    stopped). Their duration runs from ``created_at`` to their last change (``updated_at``), in
    wall-clock seconds. Percentiles are nearest-rank: ``duration_p95`` is the smallest duration that
    at least 95% of the ended sessions do not exceed. The figures of ended sessions are ``None``
    while none has ended.

    Attributes:
        type: the session type (``type_name``).
        by_status: how many sessions of the type are in each status (by ``Status.value``), live
            ones included.
        ended: sessions of the type in a terminal status.
        completed: of those, the ``COMPLETED`` ones.
        success_rate: ``completed / ended``.
        duration_mean, duration_p50, duration_p95: seconds from creation to the end.
        events_mean: events per ended session (its log's length).

    .. versionadded:: 0.1
    """

    type: str
    by_status: Mapping[str, int]
    ended: int
    completed: int
    success_rate: float | None
    duration_mean: float | None
    duration_p50: float | None
    duration_p95: float | None
    events_mean: float | None


def nearest_rank(ordered: list[float], percent: int) -> float | None:
    """The nearest-rank ``percent``-th percentile of ``ordered`` (ascending): ``None`` when empty.

    It is the value at 1-based rank ``ceil(percent * n / 100)``, the definition the SQL stores use
    (``rank * 100 >= percent * n``), so that every store reports the same figure.
    """
    if not ordered:
        return None
    rank = -(-percent * len(ordered) // 100)  # ceil, in integers
    return ordered[max(rank, 1) - 1]
