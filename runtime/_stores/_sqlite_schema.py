"""The SQLite store's schema, its migrations, and how its connections are opened.

The schema version lives in ``PRAGMA user_version``: migration ``n`` (``MIGRATIONS[n - 1]``) takes a
file from version ``n - 1`` to ``n``, each in its own transaction together with the new version number.
A file written by a newer sessionvisor (a higher version than :data:`SCHEMA_VERSION`) is refused rather
than guessed at. ``PRAGMA application_id`` marks the file as ours, so that a stranger's database is
refused too instead of being written into.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .._exceptions import StoreError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "connect_reader",
    "connect_writer",
    "file_identity",
    "migrate",
]

logger = logging.getLogger(__name__)

APPLICATION_ID = 0x53565354
"""``PRAGMA application_id`` of a sessionvisor store ("SVST")."""

BUSY_TIMEOUT_MS = 10_000
"""How long a connection waits for another one's lock (a checkpoint, another process) before failing."""

PAGE_SIZE = 8192
"""Bytes per page of a new file. Larger than SQLite's 4096: appends spread over many sessions touch
many index pages per commit, and fewer, larger pages make that cheaper (bench/README.md, issue 4)."""
WAL_AUTOCHECKPOINT_PAGES = 16 * 1024 * 1024 // PAGE_SIZE
WRITER_CACHE_KIB = 65536


def _v1_tables(conn: sqlite3.Connection) -> None:
    # The index of sessions. ``key`` is the compact reference the events and snapshots use instead
    # of the id: events carry an 8-byte integer rather than the id's text (a UUID is 36 bytes), which
    # with ids like UUIDs more than halves an append's SQL cost (bench/README.md, issue 4).
    # AUTOINCREMENT: a deleted session's key is never handed to a new one.
    # The index keeps no copy of a session's version: that is its log's last version, read through
    # the events index when needed. So an append writes its events and nothing else (one b-tree
    # update fewer per event), and the index can never disagree with the log. updated_at here is
    # the last change of the entry itself; get() adds the log's.
    conn.execute(
        """
        CREATE TABLE sessions (
            key INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            status TEXT NOT NULL,
            args TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )
        """
    )
    # A rowid table in append order with a (session, version) index for replays, rather than a
    # WITHOUT ROWID table clustered by session: interleaved appends to many sessions then dirty a few
    # pages at the table's end (plus small index entries) instead of one page per session, which
    # makes commits 2x cheaper; replays scan ~25% slower, still far above target. ``position`` is
    # the event's place in the store's global order.
    conn.execute(
        """
        CREATE TABLE events (
            position INTEGER PRIMARY KEY,
            session INTEGER NOT NULL,
            version INTEGER NOT NULL,
            type TEXT NOT NULL,
            schema_version INTEGER NOT NULL,
            data TEXT NOT NULL,
            recorded_at REAL NOT NULL,
            UNIQUE (session, version)
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE snapshots (
            session INTEGER PRIMARY KEY,
            version INTEGER NOT NULL,
            state_version INTEGER NOT NULL,
            data TEXT NOT NULL,
            taken_at REAL NOT NULL
        )
        """
    )


def _v2_list_indexes(conn: sqlite3.Connection) -> None:
    # list() pages through sessions oldest first and filters by status or type.
    conn.execute("CREATE INDEX sessions_by_age ON sessions (created_at, id)")
    conn.execute("CREATE INDEX sessions_by_status ON sessions (status, created_at, id)")
    conn.execute("CREATE INDEX sessions_by_type ON sessions (type, created_at, id)")


def _v3_reminders_and_deadlines(conn: sqlite3.Connection) -> None:
    # Sessions outlive their process (issue 12). ``deadline`` is when the reaper should next look at
    # a session (a lower bound on its next policy deadline), ``handled`` its durable message count.
    # Sessions written by an earlier release get their creation time as deadline: each is looked at
    # once by the first reaper pass after the upgrade (running ones left behind by a dead process
    # included), which then sets its real deadline or none.
    conn.execute("ALTER TABLE sessions ADD COLUMN deadline REAL")
    conn.execute("ALTER TABLE sessions ADD COLUMN handled INTEGER NOT NULL DEFAULT 0")
    conn.execute("UPDATE sessions SET deadline = created_at")
    conn.execute("CREATE INDEX sessions_by_deadline ON sessions (deadline) WHERE deadline IS NOT NULL")
    # The sessions to resume at start-up: running ones of a type.
    conn.execute("CREATE INDEX sessions_by_status_type ON sessions (status, type, created_at, id)")
    # One reminder per (session, name); the next due ones come from the due-time index.
    conn.execute(
        """
        CREATE TABLE reminders (
            session INTEGER NOT NULL,
            name TEXT NOT NULL,
            due_at REAL NOT NULL,
            message TEXT NOT NULL,
            PRIMARY KEY (session, name)
        ) WITHOUT ROWID
        """
    )
    conn.execute("CREATE INDEX reminders_by_due ON reminders (due_at)")
    # Replies of idempotent calls, the newest ``keep`` per session (``seq`` orders them).
    conn.execute(
        """
        CREATE TABLE replies (
            session INTEGER NOT NULL,
            key TEXT NOT NULL,
            reply TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (session, key)
        ) WITHOUT ROWID
        """
    )
    conn.execute("CREATE INDEX replies_by_seq ON replies (session, seq)")


def _v4_heads_and_reasons(conn: sqlite3.Connection) -> None:
    # Issue 13: the index keeps each session's acknowledged head, written by the same transaction
    # as the append, instead of deriving it from the log: a log that lost its tail (a restored
    # backup, a hand edit, a damaged file) then reads as shorter than what was acknowledged, and
    # recovery reports it rather than taking the stump for the whole history. The append touches
    # the session's row by its rowid (``key``) and no index covers ``version`` or ``updated_at``,
    # so that costs one table b-tree update per session per commit, not one per event.
    # ``updated_at`` now moves with every append too (get() no longer reads the last event's time).
    # Existing files take the head their logs have now: nothing was recorded against them.
    conn.execute("ALTER TABLE sessions ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
    conn.execute(
        "UPDATE sessions SET "
        "version = coalesce((SELECT max(version) FROM events WHERE session = sessions.key), 0), "
        "updated_at = max(updated_at, coalesce((SELECT recorded_at FROM events "
        "WHERE session = sessions.key ORDER BY version DESC LIMIT 1), 0))"
    )
    # Why a session has its status when the runtime set it in the index alone: the message and
    # the error's class name of a quarantine, for later processes and the command line (issue 13).
    conn.execute("ALTER TABLE sessions ADD COLUMN status_reason TEXT")
    conn.execute("ALTER TABLE sessions ADD COLUMN error_type TEXT")


MIGRATIONS: Sequence[Callable[[sqlite3.Connection], None]] = (
    _v1_tables,
    _v2_list_indexes,
    _v3_reminders_and_deadlines,
    _v4_heads_and_reasons,
)
"""Migration ``n`` is ``MIGRATIONS[n - 1]``; append new ones, never edit released ones."""

SCHEMA_VERSION = len(MIGRATIONS)


def _pragma(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute(f"PRAGMA {name}").fetchone()
    return int(row[0])


def migrate(
    conn: sqlite3.Connection,
    path: str | Path,
    migrations: Sequence[Callable[[sqlite3.Connection], None]] = MIGRATIONS,
) -> int:
    """Bring the file behind ``conn`` (in autocommit mode) up to ``len(migrations)``.

    Returns:
        The version the file had before.

    Raises:
        StoreError: the file is newer than ``migrations`` or is not a sessionvisor store.
    """
    target = len(migrations)
    found = _pragma(conn, "user_version")
    app = _pragma(conn, "application_id")
    if app not in (0, APPLICATION_ID):
        raise StoreError(
            None,
            "open the database",
            f"{str(path)!r} belongs to another application (application_id {app:#x}); "
            "point the store at a file of its own",
        )
    if found > target:
        raise StoreError(
            None,
            "open the database",
            f"{str(path)!r} has schema version {found}, written by a newer sessionvisor (this one "
            f"knows versions up to {target}); upgrade sessionvisor, or open another file",
        )
    if found == 0 and app == 0:
        has_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if has_tables:
            raise StoreError(
                None,
                "open the database",
                f"{str(path)!r} is an SQLite database of something else (it has tables but no "
                "sessionvisor schema version); point the store at a new file",
            )
    for version in range(found + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrations[version - 1](conn)
            # PRAGMA takes no bound parameters; these are our own integers, never outside input.
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute(f"PRAGMA application_id = {int(APPLICATION_ID)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        logger.info("migrated %s to schema version %d", path, version)
    return found


def _connect(path: str | Path) -> sqlite3.Connection:
    # Autocommit mode (isolation_level=None): the store issues BEGIN/COMMIT itself. Connections move
    # between worker threads, one thread at a time, hence check_same_thread=False.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    return conn


def file_identity(path: str | Path) -> tuple[int, int] | None:
    """``(device, inode)`` of the file at ``path`` now, or ``None`` when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _refuse_empty(path: str | Path) -> None:
    """A file that exists but is empty is not a store; only a path with no file makes a new one.

    SQLite would take a 0-byte file for a new database and write a store into it: a file truncated
    by accident (or a store deleted and recreated by something else) would silently read as an
    empty store (issue 17).
    """
    try:
        size = os.stat(path).st_size
    except OSError:  # no file (a new store), or SQLite says why not in a moment
        return
    if size == 0 and os.path.isfile(path):
        raise StoreError(
            None,
            "open the database",
            f"{str(path)!r} is an empty file (0 bytes), not a sessionvisor store; a new store is made "
            "only where no file exists: delete the empty file, or point the store at its own path",
        )


def connect_writer(path: str | Path, synchronous: str) -> sqlite3.Connection:
    """Open the one writing connection: WAL, the given ``synchronous`` level, schema migrated.

    The file must be a sessionvisor store, or not exist yet (then it is created); an existing
    empty or non-database file is refused and left as it is.

    Raises:
        StoreError: the file is empty or not a database, or cannot be opened, put in WAL mode or
            migrated.
    """
    if synchronous not in ("FULL", "NORMAL"):  # checked by the store too; never format other text
        raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
    _refuse_empty(path)
    try:
        conn = _connect(path)
    except sqlite3.Error as exc:
        raise StoreError(None, "open the database", f"cannot open {str(path)!r}: {exc}") from exc
    try:
        # Only a new, empty file takes a page size (and only before it is in WAL mode).
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE:d}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                None,
                "open the database",
                f"{str(path)!r} cannot use write-ahead logging (journal mode stays {mode!r}); "
                "put it on a local file system",
            )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # Checkpoint every 16 MiB of WAL instead of SQLite's 1,000 pages, and let the writer
        # cache up to 64 MiB: appends spread over many sessions dirty many index pages per
        # commit, and these two settings cut the commit cost by ~15% (bench/README.md, issue 4).
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES:d}")
        conn.execute(f"PRAGMA cache_size = {-WRITER_CACHE_KIB:d}")
        migrate(conn, path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if "not a database" in str(exc):
            raise StoreError(
                None,
                "open the database",
                f"{str(path)!r} is not an SQLite database ({exc}); it was left as it is: point the "
                "store at its own file",
            ) from exc
        raise StoreError(None, "open the database", f"{str(path)!r}: {exc}") from exc
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(None, "open the database", f"{str(path)!r}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def connect_reader(path: str | Path) -> sqlite3.Connection:
    """Open a read-only connection to a store that :func:`connect_writer` has set up."""
    conn = _connect(path)
    conn.execute("PRAGMA query_only = 1")
    return conn
