"""The embedded default event store: one SQLite file, WAL, group commit in one writer thread.

Writes go through one connection in one dedicated thread that commits whatever is queued as one
transaction (see :mod:`._sqlite_writer`); callers are woken once their transaction is durable. Reads use
a small pool of other connections in anyio's worker threads, so that they never wait for a commit: in
WAL mode readers see the last committed state while the writer writes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from itertools import starmap
from types import MemberDescriptorType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final

import anyio
import attrs

from .._exceptions import CorruptEventLog, StoreError
from .._ids import check_session_id
from .._records import (
    ENDED,
    Outcomes,
    Reminder,
    SessionOrder,
    SessionRecord,
    Snapshot,
    StoredEvent,
    StoredSession,
    StoreStats,
)
from .._status import Status
from ._sqlite_schema import connect_reader, connect_writer, file_identity
from ._sqlite_wakeup import run_in_thread
from ._sqlite_writer import MAX_CACHED_HEADS, Kind, Op, Writer

if TYPE_CHECKING:
    from pathlib import Path

    from .._records import AppendExtras, EventData

__all__ = ["SQLiteStore", "SQLiteStoreStatistics"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_LAST_VERSION = 2**63 - 1
_KEEP_READERS = 8
"""Idle reader connections kept open; more are opened while more reads run at once."""


@attrs.frozen(kw_only=True)
class SQLiteStoreStatistics:
    """What a :class:`SQLiteStore` has done since it was opened (a snapshot).

    Attributes:
        commits: transactions committed by the writer thread (each may hold many operations).
        failed_commits: transactions that failed and were rolled back (every caller got StoreError).
        isolated_retries: batches run again with one savepoint per operation, because one
            operation's data broke a statement.
        operations: writes committed (creates, appends, status changes, snapshots, deletes),
            including the ones rejected with ``SessionExists``/``SessionNotFound``/``VersionConflict``.
        appends: successful ``append`` calls.
        events: events those appends wrote.
        rejected: operations that got ``SessionExists``, ``SessionNotFound`` or ``VersionConflict``.
        largest_batch: the most operations committed in one transaction.
        batch_sizes: how many transactions had up to 1, 2, 4, 8, ... operations (power-of-two buckets).
        queued: operations waiting for the writer right now.
        idle_readers: reader connections open and idle right now.
        cached_heads: sessions whose current version the writer has in memory right now (at most
            ``max_cached_heads``, plus the sessions of the transaction in progress).
        head_reads: current versions the writer read from the index because it had none cached (a
            session's first append after the store opened, after the cache was dropped or bounded).

    .. versionchanged:: 0.2
       ``cached_heads`` and ``head_reads``.
    """

    commits: int
    failed_commits: int
    isolated_retries: int
    operations: int
    appends: int
    events: int
    rejected: int
    largest_batch: int
    batch_sizes: Mapping[int, int]
    queued: int
    idle_readers: int
    cached_heads: int = 0
    head_reads: int = 0

    @property
    def mean_batch(self) -> float:
        """Operations per committed transaction."""
        return self.operations / self.commits if self.commits else 0.0


def _dump(value: Mapping[str, Any], *, sort_keys: bool) -> str:
    return json.dumps(dict(value), sort_keys=sort_keys, separators=(",", ":"), allow_nan=False)


def _record(row: tuple[Any, ...]) -> SessionRecord:
    (
        sid,
        type_name,
        status,
        args,
        metadata,
        version,
        created_at,
        updated_at,
        deadline,
        handled,
        reason,
        error_type,
    ) = row
    return SessionRecord(
        sid,
        type_name,
        Status(status),
        json.loads(args),
        json.loads(metadata),
        version,
        created_at,
        updated_at,
        deadline,
        handled,
        reason,
        error_type,
    )


# ``version`` is the acknowledged head the writer keeps with every append (schema version 4).
_SELECT_RECORD = (
    "SELECT id, type, status, args, metadata, version, created_at, updated_at, deadline, handled, "
    "status_reason, error_type FROM sessions"
)
_SELECT_EVENTS = (
    "SELECT version, type, schema_version, data, recorded_at FROM events "
    "WHERE session = (SELECT key FROM sessions WHERE id = ?) "
    "AND version >= ? AND version <= ? ORDER BY version"
)
_SELECT_LOG_VERSION = (
    "SELECT coalesce(max(version), 0) FROM events WHERE session = (SELECT key FROM sessions WHERE id = ?)"
)
_SELECT_REMINDERS = (
    "SELECT name, due_at, message FROM reminders "
    "WHERE session = (SELECT key FROM sessions WHERE id = ?) ORDER BY due_at, name"
)
_SELECT_SNAPSHOT = (
    "SELECT version, state_version, data, taken_at FROM snapshots "
    "WHERE session = (SELECT key FROM sessions WHERE id = ?)"
)


def _load_session(
    conn: sqlite3.Connection, session_id: str, after_snapshot: bool, last: int
) -> StoredSession | None:
    """The entry, the snapshot, the events after it and the reminders (inside a read transaction)."""
    row = conn.execute(f"{_SELECT_RECORD} WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        return None
    snapshot = None
    if after_snapshot:
        found = conn.execute(_SELECT_SNAPSHOT, (session_id,)).fetchone()
        snapshot = None if found is None else Snapshot(session_id, *found)
    first = 1 if snapshot is None else snapshot.version + 1
    events = _read_events(conn, session_id, first, last)
    (end,) = conn.execute(_SELECT_LOG_VERSION, (session_id,)).fetchone()
    reminders = [Reminder(session_id, *r) for r in conn.execute(_SELECT_REMINDERS, (session_id,))]
    return StoredSession(_record(row), snapshot, events, end, reminders)


def _read_events(
    conn: sqlite3.Connection, session_id: str, from_version: int, to_version: int
) -> list[StoredEvent]:
    """The session's events ``from_version..to_version`` on ``conn``, in order.

    Raises:
        CorruptEventLog: an event's type or payload is not valid UTF-8 text.
    """
    params = (session_id, from_version, to_version)
    # The session id is bound once, not selected per row: one column fewer to convert.
    cursor = conn.execute(_SELECT_EVENTS, params)
    try:
        return _events(session_id, cursor)
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    finally:
        cursor.close()  # a cursor left mid-way keeps a read transaction (a stale view) open
    # Bytes that are not UTF-8 (bit rot, a foreign writer): that is a corrupt log, reported
    # as such at the first such event, not a failing store (which the actor would retry).
    conn.text_factory = bytes
    raw = conn.execute(_SELECT_EVENTS, params)
    try:
        for version, type_name, _, data, _ in raw:
            try:
                type_name.decode("utf-8")
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise CorruptEventLog(
                    session_id, version, "its payload cannot be decoded: it is not valid UTF-8 text"
                ) from None
    finally:
        raw.close()
        conn.text_factory = str
    raise StoreError(session_id, "read the log", "SQLite could not decode a row")


_ORDER_BY = {
    ("created_at", False): " ORDER BY created_at, id",
    ("created_at", True): " ORDER BY created_at DESC, id DESC",
    ("updated_at", False): " ORDER BY updated_at, id",
    ("updated_at", True): " ORDER BY updated_at DESC, id DESC",
}

# Outcomes of ended sessions per type, in one statement: durations and log lengths of the ended
# sessions, ranked per type for the nearest-rank percentiles (rank * 100 >= p * n, in integers).
_ENDED_MARKS = ", ".join("?" * len(ENDED))
_OUTCOMES = f"""
WITH ended AS (
    SELECT type, updated_at - created_at AS duration, version AS events
    FROM sessions WHERE status IN ({_ENDED_MARKS})
), ranked AS (
    SELECT type, duration, events,
        row_number() OVER (PARTITION BY type ORDER BY duration) AS rank,
        count(*) OVER (PARTITION BY type) AS n
    FROM ended
)
SELECT type, avg(duration),
    min(CASE WHEN rank * 100 >= 50 * n THEN duration END),
    min(CASE WHEN rank * 100 >= 95 * n THEN duration END),
    avg(events)
FROM ranked GROUP BY type
"""


_EVENT_FIELDS = ("session_id", "version", "type", "schema_version", "data", "recorded_at")


def _slot_setters() -> tuple[Callable[[object, object], None], ...] | None:
    """StoredEvent's slot setters, when filling the slots is all its ``__init__`` does.

    Replays build one StoredEvent per event, and attrs' frozen ``__init__`` (an ``object.__setattr__``
    per field) is half the cost of reading a log back (bench/README.md, issue 4). When StoredEvent is
    a plain slotted attrs class (no validators, converters, init hooks or cached hash), setting its
    slots directly makes the same object for less; otherwise (``None``) reads use ``__init__``.
    """
    try:
        fields = attrs.fields(StoredEvent)
        plain = (
            tuple(f.name for f in fields) == _EVENT_FIELDS
            and all(f.validator is None and f.converter is None for f in fields)
            and set(getattr(StoredEvent, "__slots__", ())) - {"__weakref__"} == set(_EVENT_FIELDS)
            and not hasattr(StoredEvent, "__attrs_pre_init__")
            and not hasattr(StoredEvent, "__attrs_post_init__")
            and all(isinstance(StoredEvent.__dict__.get(n), MemberDescriptorType) for n in _EVENT_FIELDS)
        )
    except (TypeError, AttributeError):  # pragma: no cover - StoredEvent changed shape
        return None
    if not plain:  # pragma: no cover - idem
        return None
    setters = tuple(StoredEvent.__dict__[n].__set__ for n in _EVENT_FIELDS)
    sample = ("s", 1, "T", 1, "{}", 1.0)
    made = object.__new__(StoredEvent)
    for setter, value in zip(setters, sample, strict=True):
        setter(made, value)
    return setters if made == StoredEvent(*sample) else None


_SETTERS = _slot_setters()


def _events(session_id: str, rows: Iterable[tuple[Any, ...]]) -> list[StoredEvent]:
    """StoredEvents of ``session_id`` from ``(version, type, schema_version, data, recorded_at)`` rows."""
    if _SETTERS is None:  # StoredEvent is not plain
        return list(starmap(partial(StoredEvent, session_id), rows))
    set_session, set_version, set_type, set_schema, set_data, set_recorded = _SETTERS
    new = object.__new__
    out: list[StoredEvent] = []
    add = out.append
    for version, type_name, schema_version, data, recorded_at in rows:
        event = new(StoredEvent)
        set_session(event, session_id)
        set_version(event, version)
        set_type(event, type_name)
        set_schema(event, schema_version)
        set_data(event, data)
        set_recorded(event, recorded_at)
        add(event)
    return out


def _open_writer(path: str, synchronous: str) -> tuple[sqlite3.Connection, tuple[int, int] | None]:
    """The writer's connection and the identity of the file it opened (see ``Writer``)."""
    conn = connect_writer(path, synchronous)
    return conn, file_identity(path)


@final
class _Readers:
    """A pool of read-only connections, each used by one worker thread at a time."""

    def __init__(self, path: str | Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    def run(
        self,
        session_id: str | None,
        action: str,
        fn: Callable[[sqlite3.Connection], T],
    ) -> T:
        """In a worker thread: run ``fn`` on a pooled connection; SQLite errors become StoreError."""
        with self._lock:
            if self._closed:
                raise StoreError(session_id, action, f"the SQLite store at {str(self._path)!r} is closed")
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = connect_reader(self._path)
            return fn(conn)
        except sqlite3.Error as exc:
            raise StoreError(session_id, action, f"SQLite failed ({type(exc).__name__}: {exc})") from exc
        except (ValueError, TypeError) as exc:  # undecodable index entry (bad JSON, unknown status)
            raise StoreError(session_id, action, f"a stored index entry cannot be read ({exc})") from exc
        finally:
            if conn is not None:
                with self._lock:
                    keep = not self._closed and len(self._idle) < _KEEP_READERS
                    if keep:
                        self._idle.append(conn)
                if not keep:
                    conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@final
class SQLiteStore:
    """Sessions in one SQLite file: the embedded default store.

    The file is in WAL mode. Writes are group-committed by one writer thread and acknowledged only once
    durable (with ``synchronous="FULL"``, the default, durable across power loss; with ``"NORMAL"``, a
    power loss may drop the last acknowledged transactions, but never corrupts the file). Reads run in
    anyio's worker threads on their own connections and never wait for the writer. It implements
    :class:`runtime.abc.EventStore`; payloads are kept as the JSON text they come in (never pickle).

    Args:
        path: the database file; created, and migrated to the current schema, by :meth:`open`.
        synchronous: SQLite's ``PRAGMA synchronous`` for the writer: ``"FULL"`` or ``"NORMAL"``.
        max_cached_heads: how many sessions' current versions the writer keeps in memory, so that an
            append needs no read (about 250 bytes each with 20-character ids). Beyond it, the ones
            cached longest ago are dropped; such a session's next append reads its version from the
            index once.

    Example::

        store = SQLiteStore("sessions.db")
        await store.open()
        try:
            ...
        finally:
            await store.aclose()

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``max_cached_heads`` (before, the writer forgot every cached version at once beyond 100,000).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        max_cached_heads: int = MAX_CACHED_HEADS,
    ) -> None:
        level = str(synchronous).upper()
        if level not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        if type(max_cached_heads) is not int or max_cached_heads < 1:
            raise ValueError(f"max_cached_heads must be an int >= 1, not {max_cached_heads!r}")
        path = os.fspath(path)
        if path == ":memory:" or path.startswith("file::memory:") or not path:
            raise ValueError(
                "SQLiteStore needs a file (its reader connections share it with the writer); "
                "use MemoryStore() for a store in memory"
            )
        self._path = path
        self._synchronous = level
        self._max_cached_heads = max_cached_heads
        self._state: Literal["new", "opening", "open", "closing", "closed"] = "new"
        self._writer: Writer | None = None
        self._readers = _Readers(path)

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r}, synchronous={self._synchronous!r}, {self._state})"

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def statistics(self) -> SQLiteStoreStatistics:
        """Counters of the writer thread and the reader pool, as a frozen snapshot."""
        if self._writer is None:
            return SQLiteStoreStatistics(
                commits=0,
                failed_commits=0,
                isolated_retries=0,
                operations=0,
                appends=0,
                events=0,
                rejected=0,
                largest_batch=0,
                batch_sizes={},
                queued=0,
                idle_readers=self._readers.idle,
                cached_heads=0,
                head_reads=0,
            )
        w = self._writer.statistics()
        cached, reads = self._writer.head_cache()
        return SQLiteStoreStatistics(
            **attrs.asdict(w, recurse=False),
            idle_readers=self._readers.idle,
            cached_heads=cached,
            head_reads=reads,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file (creating it), put it in WAL mode, migrate it, start the writer thread.

        Raises:
            StoreError: the file cannot be opened or migrated, or was written by a newer
                sessionvisor; or the store was opened before.
        """
        if self._state != "new":
            raise StoreError(None, "open the database", f"{self!r} was opened before; make a new SQLiteStore")
        self._state = "opening"
        try:
            conn, identity = await run_in_thread(_open_writer, self._path, self._synchronous)
        except BaseException:
            self._state = "closed"
            self._readers.close()
            raise
        self._writer = Writer(conn, self._path, identity, max_cached_heads=self._max_cached_heads)
        self._writer.start()
        self._state = "open"
        logger.debug("opened %r", self)

    async def aclose(self) -> None:
        """Commit everything queued, stop the writer thread and close every connection. Idempotent.

        Operations called after this raise ``StoreError``.
        """
        if self._state == "closed":
            return
        self._state = "closing"
        writer = self._writer
        if writer is not None:
            writer.close()
            with anyio.CancelScope(shield=True):
                await run_in_thread(writer.join)
        self._readers.close()
        self._state = "closed"
        logger.debug("closed %r", self)

    # -- writes ------------------------------------------------------------------------------

    async def _write(self, kind: Kind, session_id: str, args: tuple[Any, ...]) -> int | None:
        writer = self._writer
        if writer is None or self._state == "closed":
            why = "not open: await store.open() first" if self._state == "new" else "closed"
            raise StoreError(session_id, kind.value, f"the SQLite store is {why}")
        op = Op(kind, session_id, args)
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
            args_json = _dump(record.args, sort_keys=False)
            # Sorted keys, so that list(metadata=...) can compare nested values as text.
            metadata_json = _dump(record.metadata, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                record.id, "create", f"args and metadata must be JSON-serialisable ({exc})"
            ) from exc
        await self._write(
            Kind.CREATE,
            record.id,
            (record.type, record.status.value, args_json, metadata_json, record.deadline),
        )

    async def append(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[EventData],
        *,
        status: Status | None = None,
        extras: AppendExtras | None = None,
    ) -> int:
        """Append ``events`` atomically after ``expected_version``; return the new version.

        Durable when it returns. Concurrent appends share one transaction (group commit).
        ``status`` and ``extras`` are written in the same transaction.

        Raises:
            SessionNotFound: the session is not in the index.
            VersionConflict: the log's length is not ``expected_version``.
            StoreError: the transaction failed (nothing of it was written) or the store is closed.
        """
        # _write() inlined: this is the hot path.
        writer = self._writer
        if writer is None or self._state == "closed":
            why = "not open: await store.open() first" if self._state == "new" else "closed"
            raise StoreError(session_id, "append", f"the SQLite store is {why}")
        op = Op(
            Kind.APPEND,
            session_id,
            (expected_version, tuple(events), None if status is None else status.value, extras),
        )
        writer.submit(op)
        await op.wait()
        if op.error is not None:
            raise op.error
        assert op.result is not None
        return op.result

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
        """Keep ``reminder``, replacing the session's reminder of that name; durable on return.

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

    async def _read(self, session_id: str | None, action: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._state != "open":
            why = "not open: await store.open() first" if self._state == "new" else "closed"
            raise StoreError(session_id, action, f"the SQLite store is {why}")
        writer = self._writer
        if writer is not None and writer.file_lost is not None:
            # What the readers would see is a file nobody else can open any more.
            raise StoreError(session_id, action, writer.file_lost)
        return await run_in_thread(self._readers.run, session_id, action, fn)

    async def read(
        self, session_id: str, from_version: int = 1, to_version: int | None = None
    ) -> Sequence[StoredEvent]:
        """Events ``from_version..to_version`` (inclusive; to the end when ``None``), in order."""
        last = _LAST_VERSION if to_version is None else to_version
        return await self._read(
            session_id,
            "read the log",
            lambda conn: _read_events(conn, session_id, from_version, last),
        )

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        """The session's latest snapshot, if any."""

        def query(conn: sqlite3.Connection) -> Snapshot | None:
            row = conn.execute(_SELECT_SNAPSHOT, (session_id,)).fetchone()
            return None if row is None else Snapshot(session_id, *row)

        return await self._read(session_id, "load the snapshot", query)

    async def load_session(
        self, session_id: str, *, after_snapshot: bool = True, to_version: int | None = None
    ) -> StoredSession | None:
        """The index entry, latest snapshot and the events after it, in one read transaction.

        .. versionadded:: 0.2
        """
        last = _LAST_VERSION if to_version is None else to_version

        def query(conn: sqlite3.Connection) -> StoredSession | None:
            # One transaction: in WAL mode its first read fixes the view every later read sees,
            # whatever other connections (or processes) commit meanwhile (issue 17).
            conn.execute("BEGIN")
            try:
                return _load_session(conn, session_id, after_snapshot, last)
            finally:
                conn.execute("COMMIT")

        return await self._read(session_id, "load the session", query)

    async def load_sessions(
        self, session_ids: Sequence[str], *, after_snapshot: bool = True
    ) -> list[StoredSession | None]:
        """``load_session`` for several sessions in one read transaction (one trip to a thread):
        what recoveries that run at once (resumption at start-up) share.

        .. versionadded:: 0.2
        """

        def query(conn: sqlite3.Connection) -> list[StoredSession | None]:
            conn.execute("BEGIN")
            try:
                return [_load_session(conn, sid, after_snapshot, _LAST_VERSION) for sid in session_ids]
            finally:
                conn.execute("COMMIT")

        return await self._read(None, "load sessions", query)

    async def get(self, session_id: str) -> SessionRecord | None:
        """The session's index entry, or ``None`` when it is not stored.

        Raises:
            InvalidSessionId: ``session_id`` breaks the rule of :func:`runtime.check_session_id`.
        """
        check_session_id(session_id)

        def query(conn: sqlite3.Connection) -> SessionRecord | None:
            row = conn.execute(f"{_SELECT_RECORD} WHERE id = ?", (session_id,)).fetchone()
            return None if row is None else _record(row)

        return await self._read(session_id, "read the index", query)

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
        order = _ORDER_BY.get((order_by, bool(descending)))
        if order is None:
            raise ValueError(f"order_by must be 'created_at' or 'updated_at', not {order_by!r}")
        where: list[str] = []
        params: list[object] = []
        for column, bound, op in (
            ("created_at", created_after, ">="),
            ("created_at", created_before, "<"),
            ("updated_at", updated_after, ">="),
            ("updated_at", updated_before, "<"),
        ):
            if bound is not None:
                where.append(f"{column} {op} ?")
                params.append(float(bound))
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if type is not None:
            where.append("type = ?")
            params.append(type)
        for key, value in (metadata or {}).items():
            # json_each compares keys as plain text: no JSON path to build, whatever the key holds.
            if value is None:
                where.append(
                    "coalesce((SELECT j.type = 'null' FROM json_each(sessions.metadata) AS j "
                    "WHERE j.key = ?), 1)"
                )
                params.append(key)
            elif isinstance(value, Mapping | list | tuple):
                where.append(
                    "(SELECT j.type IN ('object', 'array') AND j.value = ? "
                    "FROM json_each(sessions.metadata) AS j WHERE j.key = ?)"
                )
                try:
                    params += [json.dumps(value, sort_keys=True, separators=(",", ":")), key]
                except (TypeError, ValueError) as exc:
                    raise StoreError(
                        None, "list sessions", f"metadata filter {key!r} is not JSON ({exc})"
                    ) from exc
            elif isinstance(value, str | int | float):
                where.append(
                    "(SELECT j.type NOT IN ('object', 'array') AND j.value = ? "
                    "FROM json_each(sessions.metadata) AS j WHERE j.key = ?)"
                )
                params += [value, key]
            else:
                raise StoreError(
                    None,
                    "list sessions",
                    f"metadata filter {key!r} must be JSON (str, number, bool, None, list, dict), "
                    f"not {value!r}",
                )
        sql = _SELECT_RECORD
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += order + " LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]

        def query(conn: sqlite3.Connection) -> list[SessionRecord]:
            return [_record(row) for row in conn.execute(sql, params)]

        return await self._read(None, "list sessions", query)

    async def reminders(self, session_id: str) -> Sequence[Reminder]:
        """The session's reminders, earliest due first."""

        def query(conn: sqlite3.Connection) -> list[Reminder]:
            return [Reminder(session_id, *row) for row in conn.execute(_SELECT_REMINDERS, (session_id,))]

        return await self._read(session_id, "read the reminders", query)

    async def due_reminders(self, until: float, *, limit: int) -> Sequence[Reminder]:
        """At most ``limit`` reminders due at or before ``until``, earliest first (by the due index)."""

        def query(conn: sqlite3.Connection) -> list[Reminder]:
            rows = conn.execute(
                "SELECT s.id, r.name, r.due_at, r.message FROM reminders AS r "
                "JOIN sessions AS s ON s.key = r.session "
                "WHERE r.due_at <= ? ORDER BY r.due_at LIMIT ?",
                (until, limit),
            )
            return list(starmap(Reminder, rows))

        return await self._read(None, "find due reminders", query)

    async def due_sessions(self, until: float, *, limit: int) -> Sequence[SessionRecord]:
        """At most ``limit`` sessions whose deadline is at or before ``until``, earliest first."""

        def query(conn: sqlite3.Connection) -> list[SessionRecord]:
            rows = conn.execute(
                f"{_SELECT_RECORD} WHERE deadline <= ? ORDER BY deadline LIMIT ?", (until, limit)
            )
            return [_record(row) for row in rows]

        return await self._read(None, "find due sessions", query)

    async def load_reply(self, session_id: str, key: str) -> str | None:
        """The reply stored under idempotency ``key`` for the session, if it is still kept."""

        def query(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT reply FROM replies WHERE session = (SELECT key FROM sessions WHERE id = ?) "
                "AND key = ?",
                (session_id, key),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._read(session_id, "read a stored reply", query)

    async def stats(self) -> StoreStats:
        """Counts of sessions by status and type, of events and of snapshots (one consistent read)."""

        def query(conn: sqlite3.Connection) -> StoreStats:
            conn.execute("BEGIN")
            try:
                by_status = dict(conn.execute("SELECT status, count(*) FROM sessions GROUP BY status"))
                by_type = dict(conn.execute("SELECT type, count(*) FROM sessions GROUP BY type"))
                # The acknowledged heads: recovery checks that every log holds that many events.
                sessions, events = conn.execute(
                    "SELECT count(*), coalesce(sum(version), 0) FROM sessions"
                ).fetchone()
                (snapshots,) = conn.execute("SELECT count(*) FROM snapshots").fetchone()
            finally:
                conn.execute("COMMIT")
            return StoreStats(
                sessions=sessions,
                events=events,
                snapshots=snapshots,
                by_status=by_status,
                by_type=by_type,
            )

        return await self._read(None, "count sessions", query)

    async def outcomes(self) -> Mapping[str, Outcomes]:
        """How each type's sessions turned out, computed by SQLite (one consistent read)."""

        def query(conn: sqlite3.Connection) -> dict[str, Outcomes]:
            conn.execute("BEGIN")
            try:
                counts = conn.execute(
                    "SELECT type, status, count(*) FROM sessions GROUP BY type, status"
                ).fetchall()
                ended = {
                    row[0]: row[1:] for row in conn.execute(_OUTCOMES, [status.value for status in ENDED])
                }
            finally:
                conn.execute("COMMIT")
            by_type: dict[str, dict[str, int]] = {}
            for type_name, status, count in counts:
                by_type.setdefault(type_name, {})[status] = count
            return {name: _outcomes(name, n, ended.get(name)) for name, n in sorted(by_type.items())}

        return await self._read(None, "count outcomes", query)


def _outcomes(type_name: str, by_status: dict[str, int], ended: tuple[Any, ...] | None) -> Outcomes:
    n = sum(by_status.get(status.value, 0) for status in ENDED)
    completed = by_status.get(Status.COMPLETED.value, 0)
    mean, p50, p95, events = ended if ended is not None else (None, None, None, None)
    return Outcomes(
        type=type_name,
        by_status=by_status,
        ended=n,
        completed=completed,
        success_rate=completed / n if n else None,
        duration_mean=mean,
        duration_p50=p50,
        duration_p95=p95,
        events_mean=events,
    )
