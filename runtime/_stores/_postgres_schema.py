"""The PostgreSQL store's schema, its migrations, and how its connections are opened.

Everything lives in one PostgreSQL schema (``sessionvisor`` unless the store is given another name), so
that one database can hold several stores side by side and a test can drop its own. The table
``schema_version`` holds one row: the number of migrations applied. Migration ``n`` (``MIGRATIONS[n -
1]``) takes the schema from version ``n - 1`` to ``n`` in the same transaction as the new number; the
whole run holds a transaction-scoped advisory lock, so that several node processes starting at once
migrate exactly once. A schema written by a newer sessionvisor is refused rather than guessed at.

The tables are laid out for everything the runtime keeps (DESIGN.md, "Stores", "Sessions outlive their
process" and "Many nodes"):

* ``sessions``: the index. It keeps each session's ``version`` (the acknowledged head): several
  processes append at once, and the row is what their appends lock and check, so a stale writer's
  expected version is refused under the row lock, never by a cache. ``deadline`` is when the reaper
  should next look at the session (``abandon_after``, ``max_age``, ``paused_ttl``, ``retention``),
  indexed so that the next due sessions are a range query; ``handled`` the durable message count;
  ``status_reason`` and ``error_type`` why a session stopped (a quarantine's reason).
* ``events``: the logs, keyed by (session, version), without a foreign key (since version 2).
  ``epoch`` is the fencing epoch of the lease the append was made under (``NULL`` without
  ownership), so that an audit can tell which owner wrote what.
* ``snapshots``: the latest snapshot per session.
* ``reminders``: durable reminders (session, name, due time, message JSON), indexed by due time.
* ``replies``: idempotency keys of calls a client may retry, with their replies (JSON).
* ``leases`` and ``nodes``: which node owns which session, under which fencing epoch, until when;
  which nodes are alive, where, and when they last said so. Lease times are the server's clock
  (``clock_timestamp()``), the one clock every node shares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._exceptions import StoreError

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "set_search_path"]

logger = logging.getLogger(__name__)


def _v1_tables(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
    # ``key`` is the compact reference that events, snapshots, reminders and replies use instead of
    # the id's text (as in SQLite's layout). ``version`` is the acknowledged head, written with every
    # append; ``handled`` the durable count of handled messages (max_messages); ``deadline`` when the
    # reaper should next look at the session (NULL: never).
    cur.execute(
        """
        CREATE TABLE sessions (
            key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id text NOT NULL UNIQUE,
            type text NOT NULL,
            status text NOT NULL,
            args text NOT NULL,
            metadata jsonb NOT NULL,
            version bigint NOT NULL DEFAULT 0,
            handled bigint NOT NULL DEFAULT 0,
            deadline double precision,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            status_reason text,
            error_type text
        )
        """
    )
    # list() pages by age or last activity, by status and type; the reaper asks for the next due
    # deadlines (a range query on a partial index: sessions that need no look cost nothing).
    cur.execute("CREATE INDEX sessions_by_age ON sessions (created_at, id)")
    cur.execute("CREATE INDEX sessions_by_activity ON sessions (updated_at, id)")
    cur.execute("CREATE INDEX sessions_by_status ON sessions (status, type, created_at, id)")
    cur.execute("CREATE INDEX sessions_by_type ON sessions (type, created_at, id)")
    cur.execute("CREATE INDEX sessions_by_deadline ON sessions (deadline) WHERE deadline IS NOT NULL")
    cur.execute(
        """
        CREATE TABLE events (
            session bigint NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
            version bigint NOT NULL,
            type text NOT NULL,
            schema_version integer NOT NULL,
            data text NOT NULL,
            recorded_at double precision NOT NULL,
            epoch bigint,
            PRIMARY KEY (session, version)
        )
        """
    )
    cur.execute(
        """
        CREATE TABLE snapshots (
            session bigint PRIMARY KEY REFERENCES sessions (key) ON DELETE CASCADE,
            version bigint NOT NULL,
            state_version integer NOT NULL,
            data text NOT NULL,
            taken_at double precision NOT NULL
        )
        """
    )
    cur.execute(
        """
        CREATE TABLE reminders (
            session bigint NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
            name text NOT NULL,
            due_at double precision NOT NULL,
            message text NOT NULL,
            PRIMARY KEY (session, name)
        )
        """
    )
    cur.execute("CREATE INDEX reminders_by_due ON reminders (due_at)")
    # Replies of calls made with an idempotency key; ``seq`` orders a session's replies, so that
    # only its newest ones are kept.
    cur.execute(
        """
        CREATE TABLE replies (
            session bigint NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
            key text NOT NULL,
            reply text NOT NULL,
            seq bigint NOT NULL,
            PRIMARY KEY (session, key)
        )
        """
    )
    cur.execute("CREATE INDEX replies_by_age ON replies (session, seq)")
    # A lease row outlives its owner (node NULL once released): the epoch only ever grows, so a
    # copy that held an older one can never write again. Keyed by id, not key: a node may own a
    # session before the first message has created it.
    cur.execute(
        """
        CREATE TABLE leases (
            session_id text PRIMARY KEY,
            node text,
            epoch bigint NOT NULL,
            expires double precision NOT NULL
        )
        """
    )
    cur.execute("CREATE INDEX leases_by_node ON leases (node, expires)")
    cur.execute(
        """
        CREATE TABLE nodes (
            name text PRIMARY KEY,
            address text,
            started_at double precision NOT NULL,
            heartbeat double precision NOT NULL
        )
        """
    )


def _v2_cheaper_appends(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
    # Every append updates its session's row (version, updated_at). With no index on those columns
    # and 20% of each page kept free, that update is a heap-only (HOT) one that touches no index; and
    # without a foreign key, an event row costs no lookup and no row lock of its session. Together
    # they halve a batch's cost (bench/README.md, issue 15). The writer only appends to sessions it
    # has locked and deletes a session's events with it; listing by last activity sorts instead.
    cur.execute("DROP INDEX sessions_by_activity")
    cur.execute("ALTER TABLE events DROP CONSTRAINT events_session_fkey")
    cur.execute("ALTER TABLE sessions SET (fillfactor = 80)")
    # A node is alive while its last heartbeat is younger than its own lease time.
    cur.execute("ALTER TABLE nodes ADD COLUMN lease_ttl double precision NOT NULL DEFAULT 10")


MIGRATIONS: Sequence[Callable[[psycopg.Cursor[tuple[object, ...]]], None]] = (
    _v1_tables,
    _v2_cheaper_appends,
)
"""Migration ``n`` is ``MIGRATIONS[n - 1]``; append new ones, never edit released ones."""

SCHEMA_VERSION = len(MIGRATIONS)


def set_search_path(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """Point ``conn``'s unqualified names at ``schema`` (for this session, committed)."""
    from psycopg import sql

    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    if not conn.autocommit:
        conn.commit()


def migrate(
    conn: psycopg.Connection[tuple[object, ...]],
    schema: str,
    migrations: Sequence[Callable[[psycopg.Cursor[tuple[object, ...]]], None]] = MIGRATIONS,
) -> int:
    """Create ``schema`` if needed and bring it up to ``len(migrations)``, in one transaction.

    Returns:
        The version the schema had before.

    Raises:
        StoreError: the schema is newer than ``migrations``, or holds tables but no version.
    """
    from psycopg import sql

    target = len(migrations)
    with conn.transaction(), conn.cursor() as cur:
        # One migrator at a time per schema, across every process (released at commit).
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("sessionvisor:" + schema,))
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        cur.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
        has_version = bool(_one(cur))
        if has_version:
            cur.execute("SELECT version FROM schema_version")
            found = int(_one(cur))
        else:
            cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,))
            if _one(cur):
                raise StoreError(
                    None,
                    "open the database",
                    f"schema {schema!r} holds tables but no sessionvisor schema version: it belongs "
                    "to something else; give PostgresStore(schema=...) a schema of its own",
                )
            cur.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            cur.execute("INSERT INTO schema_version VALUES (0)")
            found = 0
        if found > target:
            raise StoreError(
                None,
                "open the database",
                f"schema {schema!r} has version {found}, written by a newer sessionvisor (this one "
                f"knows versions up to {target}); upgrade sessionvisor, or use another schema",
            )
        for version in range(found + 1, target + 1):
            migrations[version - 1](cur)
            cur.execute("UPDATE schema_version SET version = %s", (version,))
            logger.info("migrated PostgreSQL schema %r to version %d", schema, version)
    return found


def _one(cur: psycopg.Cursor[tuple[object, ...]]) -> Any:
    row = cur.fetchone()
    assert row is not None
    return row[0]
