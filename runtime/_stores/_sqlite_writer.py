"""The SQLite store's writer: the transaction that one group commit runs (:mod:`._group_commit`).

The writer keeps every session's current version in memory (its acknowledged head: the index holds
it, and each append moves it in its own transaction), so an append is checked against it, including
the appends before it in the same batch, before anything is written: a ``VersionConflict`` or
``SessionNotFound`` only concerns that append. The cache is dropped whenever another connection has
written to the file (``PRAGMA data_version``) or a transaction failed, and bounded: beyond
``max_cached_heads`` sessions, the ones cached longest ago are dropped (a session deleted through the
store is dropped at once); a session not cached has its head read from the index by its next append,
once. Accepted appends are then written with a few multi-row INSERTs. If a statement still fails on
one operation's data (a value SQLite cannot take), the batch is rolled back and run again with every
operation inside its own ``SAVEPOINT``, so that only that one fails. A failure of the database itself
(I/O error, disk full, failed commit) rolls the whole batch back and every caller in it gets
``StoreError``: nothing of it is written.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import time
from typing import TYPE_CHECKING, final

from .._exceptions import SessionExists, SessionNotFound, StoreError, VersionConflict
from ._group_commit import MAX_BATCH as MAX_BATCH  # what the benchmarks read here
from ._group_commit import BatchRefused, GroupCommitWriter, Kind, Op

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from .._records import AppendExtras, EventData

__all__ = ["MAX_CACHED_HEADS", "Writer", "commit"]

logger = logging.getLogger(__name__)

MAX_CACHED_HEADS = 100_000
"""How many sessions' heads the writer keeps in memory by default (~250 bytes each, 20-char ids)."""

_INSERT_EVENTS = "INSERT INTO events (session, version, type, schema_version, data, recorded_at) VALUES "
_ROW = "(?, ?, ?, ?, ?, ?)"
_ROW_WIDTH = 6
_CHUNKS = (128, 64, 32, 16, 8, 4, 2, 1)
_INSERT_ROWS = {n: _INSERT_EVENTS + ", ".join([_ROW] * n) for n in _CHUNKS}
"""INSERT statements for 1, 2, 4 ... 128 rows at once.

A batch's events go in with a few multi-row INSERTs rather than one executemany: executemany steps
once per row and Python's sqlite3 releases and retakes the GIL at every step, which, while the event
loop thread is busy waking callers, made the writer wait for the GIL more than it worked (issue 4).
"""
_SET_HEAD = "UPDATE sessions SET version = ?, updated_at = ? WHERE key = ?"
_SET_HEAD_AND_STATUS = (
    "UPDATE sessions SET version = ?, updated_at = ?, status = ?, status_reason = NULL, "
    "error_type = NULL WHERE key = ?"
)
"""The index's acknowledged head moves in the same transaction as the events (issue 13)."""
_SET_HEADS = {
    n: "UPDATE sessions SET version = v.column2, updated_at = ? FROM (VALUES "
    + ", ".join(["(?, ?)"] * n)
    + ") AS v WHERE sessions.key = v.column1"
    for n in _CHUNKS
}
"""The heads of 1, 2, 4 ... 128 sessions in one statement (UPDATE FROM, SQLite 3.33 or later), for
the reason the events go in with multi-row INSERTs: one step instead of one per session (1,000
sessions: +9% events/s on asyncio, +20% on trio, bench/README.md "Pipelined persistence")."""
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33)


@final
class Writer(GroupCommitWriter):
    """Owns the writing connection and the thread that uses it; see the module docstring."""

    _op_errors = (
        sqlite3.IntegrityError,
        sqlite3.DataError,
        sqlite3.ProgrammingError,  # a value SQLite cannot bind
        sqlite3.InterfaceError,
        OverflowError,  # an integer beyond 64 bits
        UnicodeEncodeError,  # a string with lone surrogates
    )

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str | Path,
        identity: tuple[int, int] | None = None,
        *,
        max_cached_heads: int = MAX_CACHED_HEADS,
    ) -> None:
        if max_cached_heads < 1:
            raise ValueError(f"max_cached_heads must be >= 1, not {max_cached_heads!r}")
        GroupCommitWriter.__init__(
            self,
            name=str(path),
            label="SQLite",
            thread_name=f"sessionvisor-sqlite-writer:{path}",
            closed=f"the SQLite store at {str(path)!r} is closed; open a new store",
            stopped=f"the SQLite writer of {str(path)!r} stopped",
            log=logger,
        )
        self._conn = conn
        self._path = path
        self._identity = identity
        self.file_lost: str | None = None
        """Why the file behind the connection is no longer at its path, once the writer saw it."""
        # session id -> [key, version], oldest cached first (dicts keep insertion order)
        self._heads: dict[str, list[int]] = {}
        self._max_heads = max_cached_heads
        self._data_version = -1
        self._head_reads = 0  # written by the writer thread only

    def head_cache(self) -> tuple[int, int]:
        """(sessions whose head is cached now, heads read from the index so far)."""
        return len(self._heads), self._head_reads

    # -- the writer thread -------------------------------------------------------------------

    def _write_batch(self, batch: list[Op]) -> None:
        if self.file_lost is not None:
            raise BatchRefused(self.file_lost)
        self._check_file()  # before: nothing is written into a file that has gone
        self._isolating(batch)
        self._check_file()  # and after: nothing is acknowledged that went with it

    def _failed(self, exc: Exception) -> str:
        return (
            f"the SQLite transaction failed ({type(exc).__name__}: {exc}); check the "
            f"disk and the file {str(self._path)!r}"
        )

    def _close_connection(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error:  # pragma: no cover - closing a healthy connection does not fail
            logger.exception("closing the SQLite writer connection of %s failed", self._path)

    def _check_file(self) -> None:
        """Raise ``BatchRefused`` if the path no longer leads to the file the connection has open.

        Twice per transaction, before its BEGIN and after its COMMIT (before anyone is told it
        is durable): a ``stat`` of the path against the (device, inode) seen at open. A database
        deleted or replaced under a running store would otherwise take acknowledged writes into a
        file that nobody can open again (issue 17: 16,945 calls were acknowledged that way), or
        leave frames of the old file in the write-ahead log next to the new one.
        """
        if self._identity is None:
            return
        try:
            found = os.stat(self._path)
        except FileNotFoundError:
            why = "was deleted"
        else:
            if (found.st_dev, found.st_ino) == self._identity:
                return
            why = "was replaced by another file"
        self.file_lost = (
            f"the database file {str(self._path)!r} {why} while the store had it open: what it "
            "writes now would be lost with the old file, so it writes nothing more; close this "
            "store and open the file again (restore it first if it was deleted)"
        )
        logger.critical("SQLite store %s: %s", self._path, self.file_lost)
        # The write-ahead log at the path is still ours: empty it into the file we have open, so
        # that its frames are not replayed onto whatever file now has the name (SQLite does not
        # tie a WAL to its database's inode).
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            logger.exception("SQLite store %s: could not empty the write-ahead log", self._path)
        raise BatchRefused(self.file_lost)

    def _rollback(self) -> None:
        self._heads.clear()
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("SQLite store %s: ROLLBACK failed", self._path)

    def _transaction(self, batch: Sequence[Op], *, isolate: bool) -> None:
        conn = self._conn
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        # Our cached versions hold only while nobody else writes to the file.
        data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        if data_version != self._data_version:
            self._heads.clear()
            self._data_version = data_version
        elif len(self._heads) > self._max_heads:
            self._forget_oldest_heads()
        rows: list[object] = []  # the events' values, six per row
        heads: dict[int, tuple[int, str | None]] = {}  # session key -> new head, new status
        for op in batch:
            op.result = None
            op.error = None
            if isolate:
                conn.execute("SAVEPOINT op")
                try:
                    self._apply(op, now, rows, heads)
                    self._flush(now, rows, heads)
                except self._op_errors as exc:
                    conn.execute("ROLLBACK TO op")
                    self._heads.pop(op.session_id, None)
                    rows.clear()
                    heads.clear()
                    op.result = None
                    op.error = StoreError(
                        op.session_id,
                        op.kind.value,
                        f"SQLite rejected the data ({type(exc).__name__}: {exc}); the stored log "
                        f"of this session may be inconsistent, inspect {str(self._path)!r}",
                    )
                    op.error.__cause__ = exc
                conn.execute("RELEASE op")
            elif op.kind is Kind.APPEND:
                self._apply(op, now, rows, heads)
            else:
                self._flush(now, rows, heads)  # keep the batch's statements in queue order
                self._apply(op, now, rows, heads)
        self._flush(now, rows, heads)
        commit(conn)

    def _flush(
        self,
        now: float,
        rows: list[object],
        heads: dict[int, tuple[int, str | None]],
    ) -> None:
        if rows:
            count = len(rows) // _ROW_WIDTH
            at = 0
            for chunk in _CHUNKS:
                while count - at >= chunk:
                    start = at * _ROW_WIDTH
                    at += chunk
                    self._conn.execute(_INSERT_ROWS[chunk], rows[start : at * _ROW_WIDTH])
            rows.clear()
        if heads:
            plain = [(version, now, key) for key, (version, status) in heads.items() if status is None]
            if plain and _UPDATE_FROM:
                pairs: list[object] = []  # (key, version) of each session, flat
                for version, _, key in plain:
                    pairs += (key, version)
                count, at = len(plain), 0
                for chunk in _CHUNKS:
                    while count - at >= chunk:
                        self._conn.execute(_SET_HEADS[chunk], [now, *pairs[2 * at : 2 * (at + chunk)]])
                        at += chunk
            elif plain:  # an SQLite older than 3.33
                self._conn.executemany(_SET_HEAD, plain)
            if len(plain) < len(heads):
                self._conn.executemany(
                    _SET_HEAD_AND_STATUS,
                    [(v, now, status, key) for key, (v, status) in heads.items() if status is not None],
                )
            heads.clear()

    def _forget_oldest_heads(self) -> None:
        """Drop the heads cached longest ago, down to three quarters of the bound.

        Between transactions only (a batch holds on to the heads it moves). Dropping a quarter at
        once makes the cost of the bound O(1) per session cached; a session still in use is read
        again from the index by its next append and cached anew, as the newest.
        """
        excess = len(self._heads) - self._max_heads * 3 // 4
        for session_id in list(itertools.islice(self._heads, excess)):
            del self._heads[session_id]

    def _head(self, session_id: str) -> list[int] | None:
        """``[key, version]`` of the session (cached; the list is updated in place), or ``None``."""
        head = self._heads.get(session_id)
        if head is None:
            self._head_reads += 1
            row = self._conn.execute(
                "SELECT key, version FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return None
            head = self._heads[session_id] = [row[0], row[1]]
        return head

    def _apply(
        self,
        op: Op,
        now: float,
        rows: list[object],
        heads: dict[int, tuple[int, str | None]],
    ) -> None:
        sid = op.session_id
        kind = op.kind
        conn = self._conn
        if kind is Kind.APPEND:
            expected: int = op.args[0]
            events: Sequence[EventData] = op.args[1]
            status: str | None = op.args[2]
            extras: AppendExtras | None = op.args[3]
            head = self._heads.get(sid) or self._head(sid)
            if head is None:
                op.error = SessionNotFound(sid)
                return
            key, current = head
            if current != expected:
                op.error = VersionConflict(sid, expected, current)
                return
            version = expected
            for event in events:
                version += 1
                rows += (key, version, event.type, event.schema_version, event.data, now)
            head[1] = version
            if status is None:
                earlier = heads.get(key)
                if earlier is not None:  # an earlier append of this batch changed the status
                    status = earlier[1]
            heads[key] = (version, status)
            if extras is not None:
                _write_extras(conn, key, extras)
            op.result = version
        elif kind is Kind.CREATE:
            type_name, status, args_json, metadata_json, deadline = op.args
            cursor = conn.execute(
                "INSERT INTO sessions (id, type, status, args, metadata, created_at, updated_at, "
                "deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (sid, type_name, status, args_json, metadata_json, now, now, deadline),
            )
            if cursor.rowcount == 0:
                op.error = SessionExists(sid)
            else:
                assert cursor.lastrowid is not None
                self._heads[sid] = [cursor.lastrowid, 0]
        elif kind is Kind.SET_STATUS:
            status, reason, error_type = op.args
            cursor = conn.execute(
                "UPDATE sessions SET status = ?, status_reason = ?, error_type = ?, updated_at = ? "
                "WHERE id = ?",
                (status, reason, error_type, now, sid),
            )
            if cursor.rowcount == 0:
                op.error = SessionNotFound(sid)
        elif kind is Kind.SAVE_SNAPSHOT:
            conn.execute(
                "INSERT INTO snapshots (session, version, state_version, data, taken_at) "
                "SELECT key, ?, ?, ?, ? FROM sessions WHERE id = ? "
                "ON CONFLICT (session) DO UPDATE SET version = excluded.version, "
                "state_version = excluded.state_version, data = excluded.data, "
                "taken_at = excluded.taken_at",
                (*op.args, sid),
            )
        elif kind is Kind.SET_REMINDER:
            # The session's key from the head cache (no look-up per reminder once cached).
            head = self._heads.get(sid) or self._head(sid)
            if head is None:
                op.error = SessionNotFound(sid)
            else:
                conn.execute(_SET_REMINDER, (head[0], *op.args))
        elif kind is Kind.REMOVE_REMINDER:
            conn.execute(
                "DELETE FROM reminders WHERE session = (SELECT key FROM sessions WHERE id = ?) AND name = ?",
                (sid, op.args[0]),
            )
        elif kind is Kind.SET_DEADLINE:
            conn.execute("UPDATE sessions SET deadline = ? WHERE id = ?", (op.args[0], sid))
        else:  # Kind.DELETE
            row = conn.execute("SELECT key FROM sessions WHERE id = ?", (sid,)).fetchone()
            if row is not None:
                conn.execute("DELETE FROM events WHERE session = ?", row)
                conn.execute("DELETE FROM snapshots WHERE session = ?", row)
                conn.execute("DELETE FROM reminders WHERE session = ?", row)
                conn.execute("DELETE FROM replies WHERE session = ?", row)
                conn.execute("DELETE FROM sessions WHERE key = ?", row)
            self._heads.pop(sid, None)


_SET_REMINDER = (
    "INSERT INTO reminders (session, name, due_at, message) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (session, name) DO UPDATE SET due_at = excluded.due_at, message = excluded.message"
)


def _write_extras(conn: sqlite3.Connection, key: int, extras: AppendExtras) -> None:
    """What an append writes besides its events (see ``AppendExtras``), in its transaction."""
    for fired in extras.fired:
        # Only the reminder that fired: one the handler re-scheduled under the name stays.
        conn.execute(
            "DELETE FROM reminders WHERE session = ? AND name = ? AND due_at = ?",
            (key, fired.name, fired.due_at),
        )
    if extras.scheduled:
        conn.executemany(_SET_REMINDER, [(key, r.name, r.due_at, r.message) for r in extras.scheduled])
    reply = extras.reply
    if reply is not None:
        conn.execute(
            "INSERT INTO replies (session, key, reply, seq) VALUES (?1, ?2, ?3, "
            "coalesce((SELECT max(seq) FROM replies WHERE session = ?1), 0) + 1) "
            "ON CONFLICT (session, key) DO UPDATE SET reply = excluded.reply, seq = excluded.seq",
            (key, reply.key, reply.reply),
        )
        conn.execute(
            "DELETE FROM replies WHERE session = ?1 AND seq <= "
            "(SELECT max(seq) FROM replies WHERE session = ?1) - ?2",
            (key, max(reply.keep, 1)),
        )
    if extras.handled is not None or extras.deadline is not None:
        conn.execute(
            "UPDATE sessions SET handled = coalesce(?, handled), deadline = coalesce(?, deadline) "
            "WHERE key = ?",
            (extras.handled, extras.deadline, key),
        )


def commit(conn: sqlite3.Connection) -> None:
    """COMMIT the writer's transaction: the point where a batch becomes durable.

    A module-level function so that tests can make it fail (a disk that fails at the worst moment).
    """
    conn.execute("COMMIT")
