"""The PostgreSQL store's writer: the transaction that one group commit runs (:mod:`._group_commit`).

psycopg's async API runs on asyncio only; a thread with a blocking connection serves trio and asyncio
alike, and is what gives group commit: one transaction (one WAL flush) for everything queued.

Several processes append to one database at once, so nothing about a session's version is cached
between transactions: each batch first locks the index rows of every session it touches (``SELECT ...
ORDER BY id FOR UPDATE``: always in id order, so that two writers never deadlock on each other) and
reads their versions. Each append is then checked against that version, including the appends before
it in the same batch: a ``VersionConflict`` or ``SessionNotFound`` concerns that append only. Accepted
events go in with one ``COPY`` and the versions with one ``UPDATE``, so a
batch costs a few round trips whatever its size.

If a statement fails on one operation's data (text PostgreSQL cannot hold), the batch is rolled back and
run again with every operation inside its own savepoint, so that only that one fails. A failure of the
database (connection lost, disk full, failed commit) rolls the batch back and every caller in it gets
``StoreError``: nothing of it is written; the next batch opens a new connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, final

import psycopg
import psycopg.errors

from .._exceptions import OwnershipLost, SessionExists, SessionNotFound, StoreError, VersionConflict
from ._group_commit import GroupCommitWriter, Kind, Op

if TYPE_CHECKING:
    from .._records import AppendExtras, EventData

__all__ = ["PgWriter", "commit"]

logger = logging.getLogger(__name__)

_RETRIES = 2
"""Tries of one batch after a deadlock or a connection lost before COMMIT."""

_LOCK_HEADS = "SELECT id, key, version FROM sessions WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
_LOCK_LEASES = (
    "SELECT session_id, node, epoch FROM leases WHERE session_id = ANY(%s) ORDER BY session_id FOR SHARE"
)
# A batch's events go in with COPY: twice as fast as one INSERT from unnest() arrays (bench/README.md,
# issue 15); the version checks were made under the row locks already.
_COPY_EVENTS = "COPY events (session, version, type, schema_version, data, recorded_at, epoch) FROM STDIN"
_UPDATE_HEADS = (
    "UPDATE sessions SET version = r.v, updated_at = %(now)s, status = coalesce(r.s, sessions.status), "
    # A status taken with an append keeps its reason in the log: the index's reason goes.
    "status_reason = CASE WHEN r.s IS NULL THEN sessions.status_reason END, "
    "error_type = CASE WHEN r.s IS NULL THEN sessions.error_type END, "
    "handled = coalesce(r.h, sessions.handled), deadline = coalesce(r.d, sessions.deadline) "
    "FROM unnest(%(keys)s::bigint[], %(versions)s::bigint[], %(statuses)s::text[], "
    "%(handled)s::bigint[], %(deadlines)s::float8[]) AS r(k, v, s, h, d) "
    "WHERE sessions.key = r.k"
)
_SET_REMINDERS = (
    "INSERT INTO reminders (session, name, due_at, message) "
    "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::float8[], %s::text[]) "
    "ON CONFLICT (session, name) DO UPDATE SET due_at = excluded.due_at, message = excluded.message"
)
# Only the reminder that fired: one the handler re-scheduled under the name (another due time) stays.
_DELETE_FIRED = (
    "DELETE FROM reminders USING unnest(%s::bigint[], %s::text[], %s::float8[]) AS f(k, n, d) "
    "WHERE session = f.k AND name = f.n AND due_at = f.d"
)
_KEEP_REPLY = (
    "INSERT INTO replies (session, key, reply, seq) VALUES (%(session)s, %(key)s, %(reply)s, "
    "coalesce((SELECT max(seq) FROM replies WHERE session = %(session)s), 0) + 1) "
    "ON CONFLICT (session, key) DO UPDATE SET reply = excluded.reply, seq = excluded.seq"
)
_DROP_OLD_REPLIES = (
    "DELETE FROM replies WHERE session = %(session)s AND seq <= "
    "(SELECT max(seq) FROM replies WHERE session = %(session)s) - %(keep)s"
)
_SET_STATUS = (
    "UPDATE sessions SET updated_at = %(now)s, status = %(status)s, status_reason = %(reason)s, "
    "error_type = %(error_type)s WHERE key = %(key)s"
)


class _Batch:
    """What one transaction has gathered so far: the locked heads and the pending appends."""

    __slots__ = ("fired", "heads", "leases", "rows", "scheduled", "versions")

    def __init__(self, heads: dict[str, list[int]]) -> None:
        self.heads = heads  # session id -> [key, version], locked for this transaction
        # Pending event rows: (key, version, type, schema version, data, epoch).
        self.rows: list[tuple[int, int, str, int, str, int | None]] = []
        # Pending index updates: key -> [version, status, handled, deadline] (None: unchanged).
        self.versions: dict[int, list[Any]] = {}
        # Fired reminders to remove, column by column (keys, names, due times).
        self.fired: tuple[list[object], ...] = ([], [], [])
        # Reminders scheduled by the appends' turns, kept after the fired ones are removed:
        # (key, name) -> (due time, message), the last one per name.
        self.scheduled: dict[tuple[int, str], tuple[float, str]] = {}
        # The current leases (node, epoch) of the sessions whose writes carry an epoch.
        self.leases: dict[str, tuple[str | None, int]] = {}

    def clear(self) -> None:
        self.rows.clear()
        for column in self.fired:
            column.clear()
        self.scheduled.clear()
        self.versions.clear()


@final
class PgWriter(GroupCommitWriter):
    """Owns the writing connection and the thread that uses it; see the module docstring.

    Args:
        connect: opens a new connection (not in autocommit mode, search path set); called in the
            thread whenever there is none or the last one broke.
        name: how logs and errors name the store.
        conn: the first connection.
    """

    _op_errors = (
        psycopg.DataError,  # NUL in text, a number out of range, bytes the encoding cannot hold
        psycopg.IntegrityError,
        psycopg.ProgrammingError,  # a value psycopg cannot adapt
        UnicodeEncodeError,  # a string with lone surrogates
        OverflowError,
    )

    def __init__(
        self, connect: Callable[[], psycopg.Connection[Any]], name: str, conn: psycopg.Connection[Any]
    ) -> None:
        GroupCommitWriter.__init__(
            self,
            name=name,
            label="PostgreSQL",
            thread_name=f"sessionvisor-pg-writer:{name}",
            closed=f"the PostgreSQL store {name} is closed; open a new one",
            stopped=f"the writer of {name} stopped",
            log=logger,
        )
        self._connect = connect
        self._conn: psycopg.Connection[Any] | None = conn
        self._committing = False  # whether the failing transaction had sent COMMIT

    # -- the writer thread -------------------------------------------------------------------

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = None
            conn = self._conn = self._connect()
        return conn

    def _write_batch(self, batch: list[Op]) -> None:
        attempt = 0
        while True:
            attempt += 1
            self._committing = False
            try:
                self._isolating(batch)
                return
            except psycopg.errors.DeadlockDetected:
                # Only possible against a writer that locks in another order (not this store's:
                # its lease renewals lock in the batches' order, see _postgres_leases._RENEW).
                self._rollback()
                if attempt >= _RETRIES:
                    raise
            except psycopg.OperationalError:
                # The connection broke. Before COMMIT was sent nothing can have been written,
                # so the batch runs again on a new connection (a server restart, an idle
                # connection dropped by a proxy). A failure during COMMIT leaves the outcome
                # unknown: it is reported, and a stale writer is then caught by the version
                # check of its next append.
                self._rollback()
                if self._committing or attempt >= _RETRIES:
                    raise
                logger.warning("PostgreSQL store %s: connection lost; retrying on a new one", self._name)

    def _failed(self, exc: Exception) -> str:
        return (
            f"the PostgreSQL transaction failed ({type(exc).__name__}: {exc}); check the server "
            f"and the connection to {self._name}"
        )

    def _rollback(self) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            return
        if conn.broken:
            conn.close()
            return
        try:
            conn.rollback()
        except psycopg.Error:
            logger.warning("PostgreSQL store %s: ROLLBACK failed; reconnecting", self._name, exc_info=True)
            conn.close()

    def _transaction(self, batch: Sequence[Op], *, isolate: bool) -> None:
        conn = self._connection()
        now = time.time()
        with conn.cursor() as cur:
            ids = sorted({op.session_id for op in batch})
            cur.execute(_LOCK_HEADS, (ids,))
            pending = _Batch({sid: [key, version] for sid, key, version in cur})
            fenced = sorted(
                {
                    op.session_id
                    for op in batch
                    if op.fence is not None or (op.kind is Kind.APPEND and op.args[4])
                }
            )
            if fenced:
                # The leases of the writes that carry an epoch, held (FOR SHARE) until COMMIT: a
                # takeover waits for this transaction, and this one sees one that committed first.
                cur.execute(_LOCK_LEASES, (fenced,))
                pending.leases = {sid: (node, epoch) for sid, node, epoch in cur}
            for op in batch:
                op.result = None
                op.error = None
                if isolate:
                    cur.execute("SAVEPOINT op")
                    saved = {sid: list(head) for sid, head in pending.heads.items()}
                    try:
                        self._apply(cur, op, now, pending)
                        self._flush(cur, now, pending)
                    except self._op_errors as exc:
                        cur.execute("ROLLBACK TO SAVEPOINT op")
                        pending.heads = saved
                        pending.clear()
                        op.result = None
                        op.error = StoreError(
                            op.session_id,
                            op.kind.value,
                            f"PostgreSQL rejected the data ({type(exc).__name__}: {exc})",
                        )
                        op.error.__cause__ = exc
                    cur.execute("RELEASE SAVEPOINT op")
                elif op.kind is Kind.APPEND:
                    self._apply(cur, op, now, pending)
                else:
                    self._flush(cur, now, pending)  # keep the batch's statements in queue order
                    self._apply(cur, op, now, pending)
            self._flush(cur, now, pending)
        self._committing = True
        commit(conn)

    def _flush(self, cur: psycopg.Cursor[Any], now: float, pending: _Batch) -> None:
        rows = pending.rows
        if rows:
            with cur.copy(_COPY_EVENTS) as copy:
                write = copy.write_row
                for key, version, type_name, schema_version, data, epoch in rows:
                    write((key, version, type_name, schema_version, data, now, epoch))
        if pending.versions:
            updates = pending.versions.values()
            cur.execute(
                _UPDATE_HEADS,
                {
                    "now": now,
                    "keys": list(pending.versions),
                    "versions": [u[0] for u in updates],
                    "statuses": [u[1] for u in updates],
                    "handled": [u[2] for u in updates],
                    "deadlines": [u[3] for u in updates],
                },
            )
        if pending.fired[0]:
            cur.execute(_DELETE_FIRED, pending.fired)
        scheduled = pending.scheduled
        if scheduled:  # after the fired ones went: a re-scheduled name may have the same due time
            cur.execute(
                _SET_REMINDERS,
                (
                    [k for k, _ in scheduled],
                    [n for _, n in scheduled],
                    [d for d, _ in scheduled.values()],
                    [m for _, m in scheduled.values()],
                ),
            )
        pending.clear()

    def _apply(self, cur: psycopg.Cursor[Any], op: Op, now: float, pending: _Batch) -> None:
        sid = op.session_id
        kind = op.kind
        head = pending.heads.get(sid)
        held = op.fence
        if held is not None:
            lease = pending.leases.get(sid)
            # Released by this very node (no owner, the same epoch: nobody took it since) is as good
            # as held: the copy's last writes may race its own release.
            if lease != held and lease != (None, held[1]):
                op.error = OwnershipLost(sid, held[0], held[1], None if lease is None else lease[0])
                return
        if kind is Kind.APPEND:
            expected: int = op.args[0]
            events: Sequence[EventData] = op.args[1]
            status: str | None = op.args[2]
            extras: AppendExtras | None = op.args[3]
            fence: tuple[str, int] | None = op.args[4]
            epoch: int | None = None
            if fence is not None:
                node, epoch = fence
                lease = pending.leases.get(sid)
                if lease != fence:
                    op.error = OwnershipLost(sid, node, epoch, None if lease is None else lease[0])
                    return
            if head is None:
                op.error = SessionNotFound(sid)
                return
            key, current = head
            if current != expected:
                op.error = VersionConflict(sid, expected, current)
                return
            add = pending.rows.append
            version = expected
            for event in events:
                version += 1
                add((key, version, event.type, event.schema_version, event.data, epoch))
            head[1] = version
            update = pending.versions.get(key)
            if update is None:
                update = pending.versions[key] = [version, status, None, None]
            else:  # an earlier append in this batch: the later values win, None keeps the earlier
                update[0] = version
                update[1] = status if status is not None else update[1]
            if extras is not None:
                self._extras(cur, key, extras, update, pending)
            op.result = version
        elif kind is Kind.CREATE:
            if head is not None:
                op.error = SessionExists(sid)
                return
            type_name, status, args_json, metadata_json, deadline = op.args
            cur.execute(
                "INSERT INTO sessions (id, type, status, args, metadata, created_at, updated_at, deadline) "
                "VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING key",
                (sid, type_name, status, args_json, metadata_json, now, now, deadline),
            )
            row = cur.fetchone()
            if row is None:  # created meanwhile by another process
                op.error = SessionExists(sid)
            else:
                pending.heads[sid] = [row[0], 0]
        elif kind is Kind.SET_STATUS:
            if head is None:
                op.error = SessionNotFound(sid)
                return
            status, reason, error_type = op.args
            cur.execute(
                _SET_STATUS,
                {"now": now, "status": status, "reason": reason, "error_type": error_type, "key": head[0]},
            )
        elif kind is Kind.SAVE_SNAPSHOT:
            if head is None:
                return
            version, state_version, data_json, taken_at = op.args
            cur.execute(
                "INSERT INTO snapshots (session, version, state_version, data, taken_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (session) DO UPDATE SET "
                "version = excluded.version, state_version = excluded.state_version, "
                "data = excluded.data, taken_at = excluded.taken_at",
                (head[0], version, state_version, data_json, taken_at),
            )
        elif kind is Kind.SET_REMINDER:
            if head is None:
                op.error = SessionNotFound(sid)
                return
            name, due_at, message = op.args
            cur.execute(
                "INSERT INTO reminders (session, name, due_at, message) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (session, name) DO UPDATE SET due_at = excluded.due_at, "
                "message = excluded.message",
                (head[0], name, due_at, message),
            )
        elif kind is Kind.REMOVE_REMINDER:
            if head is not None:
                cur.execute("DELETE FROM reminders WHERE session = %s AND name = %s", (head[0], op.args[0]))
        elif kind is Kind.SET_DEADLINE:
            if head is not None:
                cur.execute("UPDATE sessions SET deadline = %s WHERE key = %s", (op.args[0], head[0]))
        else:  # Kind.DELETE
            if head is not None:
                # Snapshots, reminders and replies go with it (ON DELETE CASCADE); events have no
                # foreign key (see the schema).
                cur.execute("DELETE FROM events WHERE session = %s", (head[0],))
                cur.execute("DELETE FROM sessions WHERE key = %s", (head[0],))
                del pending.heads[sid]

    @staticmethod
    def _extras(
        cur: psycopg.Cursor[Any], key: int, extras: AppendExtras, update: list[Any], pending: _Batch
    ) -> None:
        """Gather (or, for a reply, write) what an accepted append writes besides its events."""
        if extras.handled is not None:
            update[2] = extras.handled
        if extras.deadline is not None:
            update[3] = extras.deadline
        keys, names, due = pending.fired
        for fired in extras.fired:
            keys.append(key)
            names.append(fired.name)
            due.append(fired.due_at)
        for reminder in extras.scheduled:
            pending.scheduled[key, reminder.name] = (reminder.due_at, reminder.message)
        reply = extras.reply
        if reply is not None:  # rare (calls with an idempotency key): written at once
            params = {"session": key, "key": reply.key, "reply": reply.reply, "keep": max(reply.keep, 1)}
            cur.execute(_KEEP_REPLY, params)
            cur.execute(_DROP_OLD_REPLIES, params)


def commit(conn: psycopg.Connection[Any]) -> None:
    """COMMIT the writer's transaction: the point where a batch becomes durable.

    A module-level function so that tests can make it fail (a server that fails at the worst moment).
    """
    conn.commit()
