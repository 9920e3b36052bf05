"""The SQLite store's reads: a pool of read-only connections, and one function per question.

Each function runs in one of anyio's worker threads on a connection of :class:`ReaderPool`, never the
writer's: in WAL mode a reader sees the last committed state while the writer writes, so reads never
wait for a commit. Several reads that must agree (a session's entry, snapshot and log) share one read
transaction. The store's front (:mod:`._front`) decides which function answers which call.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping
from itertools import starmap
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

from .._exceptions import CorruptEventLog, StoreError
from .._records import ENDED, Reminder, Snapshot, StoreStats
from . import _rows
from ._sqlite_schema import connect_reader

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from .._records import Outcomes, SessionRecord, StoredEvent

__all__ = [
    "MARK",
    "NO_LIMIT",
    "SELECT_RECORD",
    "BEGIN_SNAPSHOT",
    "ReaderPool",
    "due_reminders",
    "due_sessions",
    "entries",
    "entry",
    "entry_row",
    "events",
    "log_version",
    "metadata_filter",
    "outcomes",
    "reminders",
    "reply",
    "snapshot",
    "stats",
]

T = TypeVar("T")

KEEP_READERS = 8
"""Idle reader connections kept open; more are opened while more reads run at once."""

MARK: Final = "?"
NO_LIMIT: Final = -1
BEGIN_SNAPSHOT: Final = "BEGIN"
"""In WAL mode a transaction's first read fixes the view every later read of it sees."""

# ``version`` is the acknowledged head the writer keeps with every append (schema version 4).
SELECT_RECORD: Final = (
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


@final
class ReaderPool:
    """Read-only connections, each used by one worker thread at a time."""

    def __init__(self, path: str | Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    def run(self, session_id: str | None, action: str, fn: Callable[..., T], *args: object) -> T:
        """In a worker thread: ``fn(conn, *args)`` on a pooled connection; SQLite errors become
        StoreError."""
        with self._lock:
            if self._closed:
                raise StoreError(session_id, action, f"the SQLite store at {str(self._path)!r} is closed")
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = connect_reader(self._path)
            return fn(conn, *args)
        except sqlite3.Error as exc:
            raise StoreError(session_id, action, f"SQLite failed ({type(exc).__name__}: {exc})") from exc
        except (ValueError, TypeError) as exc:  # undecodable index entry (bad JSON, unknown status)
            raise StoreError(session_id, action, f"a stored index entry cannot be read ({exc})") from exc
        finally:
            if conn is not None:
                with self._lock:
                    keep = not self._closed and len(self._idle) < KEEP_READERS
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


def metadata_filter(key: str, value: object) -> tuple[str, list[object]]:
    """The condition of ``list(metadata={key: value})`` and its parameters.

    json_each compares keys as plain text: no JSON path to build, whatever the key holds.
    """
    if value is None:
        return (
            "coalesce((SELECT j.type = 'null' FROM json_each(sessions.metadata) AS j WHERE j.key = ?), 1)",
            [key],
        )
    if isinstance(value, Mapping | list | tuple):
        try:
            as_json = json.dumps(value, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise StoreError(None, "list sessions", f"metadata filter {key!r} is not JSON ({exc})") from exc
        return (
            "(SELECT j.type IN ('object', 'array') AND j.value = ? "
            "FROM json_each(sessions.metadata) AS j WHERE j.key = ?)",
            [as_json, key],
        )
    if isinstance(value, str | int | float):
        return (
            "(SELECT j.type NOT IN ('object', 'array') AND j.value = ? "
            "FROM json_each(sessions.metadata) AS j WHERE j.key = ?)",
            [value, key],
        )
    raise StoreError(
        None,
        "list sessions",
        f"metadata filter {key!r} must be JSON (str, number, bool, None, list, dict), not {value!r}",
    )


def events(
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
        return _rows.events(session_id, cursor)
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


def entry_row(conn: sqlite3.Connection, session_id: str) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(f"{SELECT_RECORD} WHERE id = ?", (session_id,)).fetchone()
    return row


def log_version(conn: sqlite3.Connection, session_id: str) -> int:
    (end,) = conn.execute(_SELECT_LOG_VERSION, (session_id,)).fetchone()
    return int(end)


def snapshot(conn: sqlite3.Connection, session_id: str) -> Snapshot | None:
    row = conn.execute(_SELECT_SNAPSHOT, (session_id,)).fetchone()
    return None if row is None else Snapshot(session_id, *row)


def entry(conn: sqlite3.Connection, session_id: str) -> SessionRecord | None:
    row = entry_row(conn, session_id)
    return None if row is None else _rows.record(row)


def entries(conn: sqlite3.Connection, sql: str, params: list[object]) -> list[SessionRecord]:
    return [_rows.record(row) for row in conn.execute(sql, params)]


def reminders(conn: sqlite3.Connection, session_id: str) -> list[Reminder]:
    return [Reminder(session_id, *row) for row in conn.execute(_SELECT_REMINDERS, (session_id,))]


def due_reminders(conn: sqlite3.Connection, until: float, limit: int) -> list[Reminder]:
    rows = conn.execute(
        "SELECT s.id, r.name, r.due_at, r.message FROM reminders AS r "
        "JOIN sessions AS s ON s.key = r.session "
        "WHERE r.due_at <= ? ORDER BY r.due_at LIMIT ?",
        (until, limit),
    )
    return list(starmap(Reminder, rows))


def due_sessions(conn: sqlite3.Connection, until: float, limit: int) -> list[SessionRecord]:
    rows = conn.execute(f"{SELECT_RECORD} WHERE deadline <= ? ORDER BY deadline LIMIT ?", (until, limit))
    return [_rows.record(row) for row in rows]


def reply(conn: sqlite3.Connection, session_id: str, key: str) -> str | None:
    row = conn.execute(
        "SELECT reply FROM replies WHERE session = (SELECT key FROM sessions WHERE id = ?) AND key = ?",
        (session_id, key),
    ).fetchone()
    return None if row is None else str(row[0])


def stats(conn: sqlite3.Connection) -> StoreStats:
    conn.execute("BEGIN")
    try:
        by_status = dict(conn.execute("SELECT status, count(*) FROM sessions GROUP BY status"))
        by_type = dict(conn.execute("SELECT type, count(*) FROM sessions GROUP BY type"))
        # The acknowledged heads: recovery checks that every log holds that many events.
        count, total = conn.execute("SELECT count(*), coalesce(sum(version), 0) FROM sessions").fetchone()
        (snapshots,) = conn.execute("SELECT count(*) FROM snapshots").fetchone()
    finally:
        conn.execute("COMMIT")
    return StoreStats(sessions=count, events=total, snapshots=snapshots, by_status=by_status, by_type=by_type)


def outcomes(conn: sqlite3.Connection) -> dict[str, Outcomes]:
    conn.execute("BEGIN")
    try:
        counts = conn.execute("SELECT type, status, count(*) FROM sessions GROUP BY type, status").fetchall()
        ended: dict[str, tuple[Any, ...]] = {
            row[0]: row[1:] for row in conn.execute(_OUTCOMES, [status.value for status in ENDED])
        }
    finally:
        conn.execute("COMMIT")
    by_type: dict[str, dict[str, int]] = {}
    for type_name, status, count in counts:
        by_type.setdefault(type_name, {})[status] = count
    none = (None, None, None, None)
    return {name: _rows.outcomes(name, n, *ended.get(name, none)) for name, n in sorted(by_type.items())}
