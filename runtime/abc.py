"""Protocols that users implement to plug in their own pieces: event stores and clocks.

A store is what keeps sessions durable. The runtime relies on exactly these guarantees:

* ``append`` is atomic (all of its events or none) and durable when it returns, and it checks
  ``expected_version`` against the log's current length so that a stale writer gets
  ``VersionConflict`` instead of forking the history.
* ``read`` returns events in version order, exactly as appended (the runtime checks for gaps and
  duplicates itself, so a damaged store is reported as ``CorruptEventLog``, never silently replayed).
* Nothing the runtime reads is ever rewritten by the store on its own.
* Reminders and session deadlines are kept so that the next due ones are found by an indexed range
  query (``due_reminders``, ``due_sessions``), never by reading every session.

Every method may raise ``StoreError`` (or a subclass) for a failure of the store itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ._records import (
    AppendExtras,
    EventData,
    IdempotentReply,
    Reminder,
    SessionRecord,
    Snapshot,
    StoredEvent,
    StoreStats,
)
from ._status import Status

__all__ = [
    "AppendExtras",
    "Clock",
    "EventData",
    "EventStore",
    "IdempotentReply",
    "Reminder",
    "RestartStrategy",
    "SessionRecord",
    "Snapshot",
    "Status",
    "StoreStats",
    "StoredEvent",
]


@runtime_checkable
class EventStore(Protocol):
    """The store protocol: per-session append-only logs, snapshots and a session index."""

    async def open(self) -> None:
        """Acquire resources (files, threads, connections). Called once before any other method."""

    async def aclose(self) -> None:
        """Flush everything acknowledged and release resources. Idempotent."""

    async def create(self, record: SessionRecord) -> None:
        """Add a new session to the index.

        Raises:
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

        When ``status`` is given the index takes it in the same transaction; so do ``extras``
        (fired reminders removed, an idempotent reply kept, the message count, the deadline).

        Raises:
            SessionNotFound: the session is not in the index.
            VersionConflict: the log's length is not ``expected_version``.
        """

    async def read(
        self, session_id: str, from_version: int = 1, to_version: int | None = None
    ) -> Sequence[StoredEvent]:
        """Events ``from_version..to_version`` (inclusive; to the end when ``None``), in order."""

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the session's latest (an older one may be dropped)."""

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        """The session's latest snapshot, if any."""

    async def get(self, session_id: str) -> SessionRecord | None:
        """The session's index entry, or ``None`` when it is not stored."""

    async def set_status(self, session_id: str, status: Status) -> None:
        """Change the session's status in the index only (the log is untouched)."""

    async def list(
        self,
        *,
        status: Status | None = None,
        type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Sequence[SessionRecord]:
        """Index entries matching every filter given (``metadata``: each key equal), oldest first."""

    async def stats(self) -> StoreStats:
        """Counts of sessions by status and type, of events and of snapshots."""

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


class Clock(Protocol):
    """Where the runtime reads time and sleeps: anyio's clock by default, a manual one in tests."""

    def now(self) -> float:
        """The current time in seconds, on the same scale as ``sleep_until``'s deadlines."""

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline``."""


class RestartStrategy(Protocol):
    """Decides whether, and after how long, a crashed session is restarted."""

    def restart_delay(self, recent: list[float], now: float) -> float | None:
        """Seconds to wait before restarting, or ``None`` to quarantine the session as ``FAILED``.

        Args:
            recent: the times (``Clock.now()``) of this session's earlier restarts, oldest first.
                The list belongs to the session and is kept for the strategy, which may drop the
                times it no longer needs; the runtime appends ``now`` when it restarts the session.
            now: the time of this crash.
        """
