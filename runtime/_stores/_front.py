"""The async front both SQL stores share: writes queued for a writer thread, reads run in worker threads.

A write becomes an :class:`~._group_commit.Op` queued for the store's writer thread, and the caller
waits for its ticket: the transaction that carries it has committed (or failed) by then. A read runs
one of the store's read functions on a pooled connection in one of anyio's worker threads. What is
the same for SQLite and PostgreSQL (which operation each method queues, how its arguments become
JSON, which read answers which question) is here; each store keeps what is its own: its SQL (its
read module, :mod:`._sqlite_reads` or :mod:`._postgres_reads`), its connections, its lifecycle, its
statistics and its ``append``, the hot path, which each store makes as short as it can.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from .._exceptions import StoreError
from .._ids import check_session_id
from .._records import StoredSession
from . import _rows
from ._group_commit import Kind, Op

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .._records import (
        Outcomes,
        Reminder,
        SessionOrder,
        SessionRecord,
        Snapshot,
        StoredEvent,
        StoreStats,
    )
    from .._status import Status
    from ._group_commit import GroupCommitWriter

__all__ = ["LAST_VERSION", "Reads", "StoreFront"]

T = TypeVar("T")

LAST_VERSION = 2**63 - 1
"""The highest version a log can reach: reads "to the end" read up to it."""


class Reads(Protocol):
    """What a store's read module holds: its SQL for the index, and one function per question,
    each run on a reader connection in a worker thread (``conn`` is ``sqlite3.Connection`` or
    ``psycopg.Connection``)."""

    @property
    def MARK(self) -> str:
        """The store's parameter placeholder."""

    @property
    def NO_LIMIT(self) -> int | None:
        """The LIMIT parameter that means no limit."""

    @property
    def SELECT_RECORD(self) -> str:
        """``SELECT`` of the index's columns, in the order :func:`._rows.record` takes them."""

    @property
    def BEGIN_SNAPSHOT(self) -> str:
        """Begins a read transaction whose reads all see one state, whatever is committed meanwhile."""

    def metadata_filter(self, key: str, value: object) -> tuple[str, list[object]]:
        """The condition (and its parameters) of ``list(metadata={key: value})``.

        Raises:
            StoreError: ``value`` is not JSON.
        """

    def events(self, conn: Any, session_id: str, from_version: int, to_version: int) -> list[StoredEvent]: ...

    def snapshot(self, conn: Any, session_id: str) -> Snapshot | None: ...

    def entry_row(self, conn: Any, session_id: str) -> tuple[Any, ...] | None:
        """The session's row of :attr:`SELECT_RECORD`, or ``None``."""

    def log_version(self, conn: Any, session_id: str) -> int:
        """The version of the session's last event (0: none)."""

    def entry(self, conn: Any, session_id: str) -> SessionRecord | None: ...

    def entries(self, conn: Any, sql: str, params: list[object]) -> list[SessionRecord]: ...

    def reminders(self, conn: Any, session_id: str) -> list[Reminder]: ...

    def due_reminders(self, conn: Any, until: float, limit: int) -> list[Reminder]: ...

    def due_sessions(self, conn: Any, until: float, limit: int) -> list[SessionRecord]: ...

    def reply(self, conn: Any, session_id: str, key: str) -> str | None: ...

    def stats(self, conn: Any) -> StoreStats: ...

    def outcomes(self, conn: Any) -> dict[str, Outcomes]: ...


class StoreFront(ABC):
    """The methods of :class:`runtime.abc.EventStore` that SQLite and PostgreSQL share.

    A subclass sets ``_label`` and ``_reads``, keeps ``_state`` and ``_writer``, and implements
    :meth:`_read` (which checks that the store is open and runs a read function in a thread).
    """

    _label: ClassVar[str]
    """The database's name for messages: "SQLite" or "PostgreSQL"."""
    _reads: ClassVar[Reads]
    _state: Literal["new", "opening", "open", "closing", "closed"]
    _writer: GroupCommitWriter | None

    def _closed_error(self, session_id: str | None, action: str) -> StoreError:
        why = "not open: await store.open() first" if self._state == "new" else "closed"
        return StoreError(session_id, action, f"the {self._label} store is {why}")

    # -- writes ------------------------------------------------------------------------------

    def _fence(self, kind: Kind, session_id: str) -> tuple[str, int] | None:
        """The lease ``(node, epoch)`` a write of ``kind`` is fenced by, if any (see ``Op``)."""
        return None

    async def _write(self, kind: Kind, session_id: str, args: tuple[Any, ...]) -> int | None:
        writer = self._writer
        if writer is None or self._state == "closed":
            raise self._closed_error(session_id, kind.value)
        op = Op(kind, session_id, args, self._fence(kind, session_id))
        writer.submit(op)
        await op.wait()
        if op.error is not None:
            raise op.error
        return op.result

    async def create(self, record: SessionRecord) -> None:
        """Add a new session to the index, at version 0.

        Raises:
            InvalidSessionId: ``record.id`` breaks the rule of :func:`runtime.check_session_id`.
            SessionExists: a session with ``record.id`` is already stored.
            StoreError: ``args``/``metadata`` are not JSON, or the database failed.
        """
        check_session_id(record.id)
        try:
            args_json = _rows.dump(record.args, sort_keys=False)
            # Sorted keys, so that list(metadata=...) can compare nested values as text.
            metadata_json = _rows.dump(record.metadata, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                record.id, "create", f"args and metadata must be JSON-serialisable ({exc})"
            ) from exc
        await self._write(
            Kind.CREATE,
            record.id,
            (record.type, record.status.value, args_json, metadata_json, record.deadline),
        )

    async def set_status(
        self,
        session_id: str,
        status: Status,
        *,
        reason: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """Change the session's status in the index, with why (``None`` clears the reason).

        Raises:
            SessionNotFound: the session is not in the index.
        """
        await self._write(Kind.SET_STATUS, session_id, (status.value, reason, error_type))

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the session's latest (replacing the one before; ignored when the
        session is not stored)."""
        await self._write(
            Kind.SAVE_SNAPSHOT,
            snapshot.session_id,
            (snapshot.version, snapshot.state_version, snapshot.data, snapshot.taken_at),
        )

    async def delete(self, session_id: str) -> None:
        """Remove the session, its log, snapshot, reminders and replies. Unknown ids are ignored."""
        await self._write(Kind.DELETE, session_id, ())

    async def set_reminder(self, reminder: Reminder) -> None:
        """Keep ``reminder``, replacing the session's reminder of that name; committed on return.

        Raises:
            SessionNotFound: the session is not in the index.
        """
        await self._write(
            Kind.SET_REMINDER, reminder.session_id, (reminder.name, reminder.due_at, reminder.message)
        )

    async def remove_reminder(self, session_id: str, name: str) -> None:
        """Remove the session's reminder ``name`` (nothing happens when there is none)."""
        await self._write(Kind.REMOVE_REMINDER, session_id, (name,))

    async def set_deadline(self, session_id: str, deadline: float | None) -> None:
        """Set when the reaper should next look at the session (``None``: never)."""
        await self._write(Kind.SET_DEADLINE, session_id, (deadline,))

    # -- reads -------------------------------------------------------------------------------

    @abstractmethod
    async def _read(self, session_id: str | None, action: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on a reader connection in a worker thread; ``StoreError`` (for
        ``action`` on ``session_id``) when the store is not open or the database fails."""

    async def read(
        self, session_id: str, from_version: int = 1, to_version: int | None = None
    ) -> Sequence[StoredEvent]:
        """Events ``from_version..to_version`` (inclusive; to the end when ``None``), in order."""
        last = LAST_VERSION if to_version is None else to_version
        return await self._read(
            session_id, "read the log", self._reads.events, session_id, from_version, last
        )

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        """The session's latest snapshot, if any."""
        return await self._read(session_id, "load the snapshot", self._reads.snapshot, session_id)

    async def load_session(
        self, session_id: str, *, after_snapshot: bool = True, to_version: int | None = None
    ) -> StoredSession | None:
        """The index entry, latest snapshot and the events after it, in one read transaction.

        .. versionadded:: 0.2
        """
        last = LAST_VERSION if to_version is None else to_version
        (loaded,) = await self._read(
            session_id, "load the session", _load, self._reads, (session_id,), after_snapshot, last
        )
        return loaded

    async def load_sessions(
        self, session_ids: Sequence[str], *, after_snapshot: bool = True
    ) -> list[StoredSession | None]:
        """``load_session`` for several sessions in one read transaction (one trip to a thread):
        what recoveries that run at once (resumption at start-up) share.

        .. versionadded:: 0.2
        """
        return await self._read(
            None, "load sessions", _load, self._reads, session_ids, after_snapshot, LAST_VERSION
        )

    async def get(self, session_id: str) -> SessionRecord | None:
        """The session's index entry, or ``None`` when it is not stored.

        Raises:
            InvalidSessionId: ``session_id`` breaks the rule of :func:`runtime.check_session_id`.
        """
        check_session_id(session_id)
        return await self._read(session_id, "read the index", self._reads.entry, session_id)

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
        """Index entries matching every filter given, by ``order_by`` (oldest first) then by id.

        ``metadata`` matches entries whose metadata has each key equal to the value given (compared
        as JSON; ``None`` also matches a missing key, as in ``metadata.get(key) == None``). The time
        bounds are half-open: ``*_after`` inclusive, ``*_before`` exclusive
        (:meth:`runtime.abc.EventStore.list`).
        """
        order = _rows.ORDER_BY.get((order_by, bool(descending)))
        if order is None:
            raise ValueError(f"order_by must be 'created_at' or 'updated_at', not {order_by!r}")
        reads = self._reads
        mark = reads.MARK
        where: list[str] = []
        params: list[object] = []
        for condition, bound in (
            (f"created_at >= {mark}", created_after),
            (f"created_at < {mark}", created_before),
            (f"updated_at >= {mark}", updated_after),
            (f"updated_at < {mark}", updated_before),
        ):
            if bound is not None:
                where.append(condition)
                params.append(float(bound))
        if status is not None:
            where.append(f"status = {mark}")
            params.append(status.value)
        if type is not None:
            where.append(f"type = {mark}")
            params.append(type)
        for key, value in (metadata or {}).items():
            condition, values = reads.metadata_filter(key, value)
            where.append(condition)
            params += values
        sql = reads.SELECT_RECORD
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f"{order} LIMIT {mark} OFFSET {mark}"
        params += [reads.NO_LIMIT if limit is None else limit, offset]
        return await self._read(None, "list sessions", reads.entries, sql, params)

    async def reminders(self, session_id: str) -> Sequence[Reminder]:
        """The session's reminders, earliest due first."""
        return await self._read(session_id, "read the reminders", self._reads.reminders, session_id)

    async def due_reminders(self, until: float, *, limit: int) -> Sequence[Reminder]:
        """At most ``limit`` reminders due at or before ``until``, earliest first (by the due index)."""
        return await self._read(None, "find due reminders", self._reads.due_reminders, until, limit)

    async def due_sessions(self, until: float, *, limit: int) -> Sequence[SessionRecord]:
        """At most ``limit`` sessions whose deadline is at or before ``until``, earliest first."""
        return await self._read(None, "find due sessions", self._reads.due_sessions, until, limit)

    async def load_reply(self, session_id: str, key: str) -> str | None:
        """The reply stored under idempotency ``key`` for the session, if it is still kept."""
        return await self._read(session_id, "read a stored reply", self._reads.reply, session_id, key)

    async def stats(self) -> StoreStats:
        """Counts of sessions by status and type, of events and of snapshots (one consistent read)."""
        return await self._read(None, "count sessions", self._reads.stats)

    async def outcomes(self) -> Mapping[str, Outcomes]:
        """How each type's sessions turned out, computed by the database (one consistent read)."""
        return await self._read(None, "count outcomes", self._reads.outcomes)


def _load(
    conn: Any, reads: Reads, session_ids: Sequence[str], after_snapshot: bool, last: int
) -> list[StoredSession | None]:
    """Each session's index entry, latest snapshot (if ``after_snapshot``), the events after it up
    to ``last`` and its reminders, all in one read transaction: one state of the database, whatever
    other connections (or processes, or nodes) commit meanwhile (issue 17)."""
    conn.execute(reads.BEGIN_SNAPSHOT)
    try:
        return [_load_one(conn, reads, sid, after_snapshot, last) for sid in session_ids]
    finally:
        conn.execute("COMMIT")


def _load_one(
    conn: Any, reads: Reads, session_id: str, after_snapshot: bool, last: int
) -> StoredSession | None:
    row = reads.entry_row(conn, session_id)
    if row is None:
        return None
    snapshot = reads.snapshot(conn, session_id) if after_snapshot else None
    first = 1 if snapshot is None else snapshot.version + 1
    events = reads.events(conn, session_id, first, last)
    end = reads.log_version(conn, session_id)
    return StoredSession(_rows.record(row), snapshot, events, end, reads.reminders(conn, session_id))
