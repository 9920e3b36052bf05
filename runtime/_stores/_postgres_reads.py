"""The PostgreSQL store's reads: one function per question, on a connection of the reader pool.

Each function runs in one of anyio's worker threads on a pooled connection in autocommit mode, never
the writer's, so reads never wait for a commit. Several reads that must agree (a session's entry,
snapshot and log) share one ``REPEATABLE READ`` transaction; the counts are single statements (one
snapshot each). The store's front (:mod:`._front`) decides which function answers which call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import StoreError
from .._records import ENDED, Reminder, Snapshot, StoreStats
from . import _rows

if TYPE_CHECKING:
    import psycopg

    from .._records import Outcomes, SessionRecord, StoredEvent

__all__ = [
    "MARK",
    "NO_LIMIT",
    "SELECT_RECORD",
    "BEGIN_SNAPSHOT",
    "due_reminders",
    "due_sessions",
    "entries",
    "entry",
    "entry_row",
    "epochs",
    "events",
    "log_version",
    "metadata_filter",
    "outcomes",
    "reminders",
    "reply",
    "snapshot",
    "stats",
]

MARK: Final = "%s"
NO_LIMIT: Final = None
BEGIN_SNAPSHOT: Final = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
"""One snapshot of the database for every read of the transaction. COMMIT after an error ends the
aborted transaction too."""

SELECT_RECORD: Final = (
    "SELECT id, type, status, args, metadata::text, version, created_at, updated_at, deadline, handled, "
    "status_reason, error_type FROM sessions"
)
_SELECT_EVENTS = (
    "SELECT version, type, schema_version, data, recorded_at FROM events "
    "WHERE session = (SELECT key FROM sessions WHERE id = %s) "
    "AND version >= %s AND version <= %s ORDER BY version"
)
_SELECT_REMINDERS = (
    "SELECT name, due_at, message FROM reminders "
    "WHERE session = (SELECT key FROM sessions WHERE id = %s) ORDER BY due_at, name"
)
_SELECT_SNAPSHOT = (
    "SELECT version, state_version, data, taken_at FROM snapshots "
    "WHERE session = (SELECT key FROM sessions WHERE id = %s)"
)

# Outcomes per type in one statement (one snapshot): counts by status of every session, and of the
# ended ones the mean duration, its nearest-rank percentiles (percentile_disc is that definition)
# and the mean log length.
_OUTCOMES = """
SELECT c.type, c.by_status::text, e.mean, e.p50, e.p95, e.events
FROM (
    SELECT type, json_object_agg(status, n) AS by_status
    FROM (SELECT type, status, count(*) AS n FROM sessions GROUP BY type, status) AS s
    GROUP BY type
) AS c
LEFT JOIN (
    SELECT type, avg(updated_at - created_at) AS mean,
        percentile_disc(0.5) WITHIN GROUP (ORDER BY updated_at - created_at) AS p50,
        percentile_disc(0.95) WITHIN GROUP (ORDER BY updated_at - created_at) AS p95,
        avg(version) AS events
    FROM sessions WHERE status = ANY(%s) GROUP BY type
) AS e ON e.type = c.type
ORDER BY c.type
"""


def metadata_filter(key: str, value: object) -> tuple[str, list[object]]:
    """The condition of ``list(metadata={key: value})`` and its parameters (jsonb equality)."""
    if value is None:
        return "coalesce(metadata -> %s, 'null'::jsonb) = 'null'::jsonb", [key]
    if not isinstance(value, Mapping | list | tuple | str | int | float):
        raise StoreError(
            None,
            "list sessions",
            f"metadata filter {key!r} must be JSON (str, number, bool, None, list, dict), not {value!r}",
        )
    try:
        as_json = json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(None, "list sessions", f"metadata filter {key!r} is not JSON ({exc})") from exc
    return "metadata -> %s = %s::jsonb", [key, as_json]


def events(
    conn: psycopg.Connection[Any], session_id: str, from_version: int, to_version: int
) -> list[StoredEvent]:
    """The session's events ``from_version..to_version``, in order."""
    return _rows.events(
        session_id, conn.execute(_SELECT_EVENTS, (session_id, from_version, to_version)).fetchall()
    )


def epochs(conn: psycopg.Connection[Any], session_id: str) -> list[tuple[int, int | None]]:
    """``(version, epoch)`` of every event of the session."""
    rows = conn.execute(
        "SELECT version, epoch FROM events WHERE session = (SELECT key FROM sessions WHERE id = %s) "
        "ORDER BY version",
        (session_id,),
    )
    return [(int(version), None if epoch is None else int(epoch)) for version, epoch in rows]


def entry_row(conn: psycopg.Connection[Any], session_id: str) -> tuple[Any, ...] | None:
    return conn.execute(f"{SELECT_RECORD} WHERE id = %s", (session_id,)).fetchone()


def log_version(conn: psycopg.Connection[Any], session_id: str) -> int:
    (end,) = conn.execute(
        "SELECT coalesce(max(version), 0) FROM events "
        "WHERE session = (SELECT key FROM sessions WHERE id = %s)",
        (session_id,),
    ).fetchone() or (0,)
    return int(end)


def snapshot(conn: psycopg.Connection[Any], session_id: str) -> Snapshot | None:
    row = conn.execute(_SELECT_SNAPSHOT, (session_id,)).fetchone()
    return None if row is None else Snapshot(session_id, *row)


def entry(conn: psycopg.Connection[Any], session_id: str) -> SessionRecord | None:
    row = entry_row(conn, session_id)
    return None if row is None else _rows.record(row)


def entries(conn: psycopg.Connection[Any], sql: str, params: list[object]) -> list[SessionRecord]:
    return [_rows.record(row) for row in conn.execute(sql, params)]


def reminders(conn: psycopg.Connection[Any], session_id: str) -> list[Reminder]:
    return [Reminder(session_id, *row) for row in conn.execute(_SELECT_REMINDERS, (session_id,))]


def due_reminders(conn: psycopg.Connection[Any], until: float, limit: int) -> list[Reminder]:
    rows = conn.execute(
        "SELECT s.id, r.name, r.due_at, r.message FROM reminders AS r "
        "JOIN sessions AS s ON s.key = r.session "
        "WHERE r.due_at <= %s ORDER BY r.due_at, s.id, r.name LIMIT %s",
        (until, limit),
    )
    return [Reminder(*row) for row in rows]


def due_sessions(conn: psycopg.Connection[Any], until: float, limit: int) -> list[SessionRecord]:
    rows = conn.execute(
        f"{SELECT_RECORD} WHERE deadline <= %s ORDER BY deadline, id LIMIT %s", (until, limit)
    )
    return [_rows.record(row) for row in rows]


def reply(conn: psycopg.Connection[Any], session_id: str, key: str) -> str | None:
    row = conn.execute(
        "SELECT reply FROM replies WHERE session = (SELECT key FROM sessions WHERE id = %s) AND key = %s",
        (session_id, key),
    ).fetchone()
    return None if row is None else str(row[0])


def stats(conn: psycopg.Connection[Any]) -> StoreStats:
    # One statement: one snapshot of the database.
    row = conn.execute(
        "SELECT (SELECT coalesce(json_object_agg(status, n), '{}') FROM "
        "(SELECT status, count(*) AS n FROM sessions GROUP BY status) AS s)::text, "
        "(SELECT coalesce(json_object_agg(type, n), '{}') FROM "
        "(SELECT type, count(*) AS n FROM sessions GROUP BY type) AS t)::text, "
        "(SELECT count(*) FROM sessions), (SELECT coalesce(sum(version), 0) FROM sessions), "
        "(SELECT count(*) FROM snapshots)"
    ).fetchone()
    assert row is not None
    by_status, by_type, count, total, snapshots = row
    return StoreStats(
        sessions=int(count),
        events=int(total),
        snapshots=int(snapshots),
        by_status=json.loads(by_status),
        by_type=json.loads(by_type),
    )


def outcomes(conn: psycopg.Connection[Any]) -> dict[str, Outcomes]:
    rows = conn.execute(_OUTCOMES, ([status.value for status in ENDED],)).fetchall()
    return {
        type_name: _rows.outcomes(type_name, json.loads(by_status), mean, p50, p95, events_mean)
        for type_name, by_status, mean, p50, p95, events_mean in rows
    }
