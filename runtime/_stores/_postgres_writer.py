"""The PostgreSQL store's one writer thread, which commits queued operations in groups.

psycopg's async API runs on asyncio only; a thread with a blocking connection serves trio and asyncio
alike, and is what gives group commit: the thread takes *everything* queued, runs it as one transaction,
commits once (one WAL flush for the lot) and only then wakes the callers (:mod:`._sqlite_wakeup`: one
thread-safe call per event loop per batch). Whatever arrives meanwhile waits for the next transaction.

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
import threading
import time
from collections.abc import Callable, Sequence
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, final

import psycopg
import psycopg.errors

from .._exceptions import OwnershipLost, SessionExists, SessionNotFound, StoreError, VersionConflict
from ._sqlite_wakeup import Ticket, wake_all
from ._sqlite_writer import Kind, WriterStatistics

if TYPE_CHECKING:
    from .._records import AppendExtras, EventData

__all__ = ["Op", "PgWriter", "commit"]

logger = logging.getLogger(__name__)

MAX_BATCH = 512
"""The most operations committed in one transaction."""

_RETRIES = 2
"""Tries of one batch after a deadlock or a connection lost before COMMIT."""
_OP_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,  # NUL in text, a number out of range, bytes the encoding cannot hold
    psycopg.IntegrityError,
    psycopg.ProgrammingError,  # a value psycopg cannot adapt
    UnicodeEncodeError,  # a string with lone surrogates
    OverflowError,
)
"""Errors about one operation's data, not about the database: only that operation fails."""

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


@final
class Op(Ticket):
    """One queued write and, once the writer is done with it, its outcome.

    ``args`` by kind, as for the SQLite writer: CREATE ``(type, status, args_json, metadata_json,
    deadline)``; APPEND ``(expected_version, events, status | None, extras | None, (node, epoch) |
    None)``, the last being the lease the append is fenced by; SET_STATUS ``(status, reason | None,
    error_type | None)``; SAVE_SNAPSHOT ``(version, state_version, data, taken_at)``; DELETE ``()``;
    SET_REMINDER ``(name, due_at, message)``; REMOVE_REMINDER ``(name,)``; SET_DEADLINE ``(deadline |
    None,)``. Statuses are ``Status.value`` strings.

    ``fence``: for the other writes of a session's copy (status, snapshot, reminders, deadline), the
    lease ``(node, epoch)`` the copy holds, checked like an append's: the write is refused with
    ``OwnershipLost`` once the lease has moved on (a stale copy writes nothing). A lease this node
    released meanwhile (no owner, the same epoch) still admits it: nobody else has written since.
    """

    __slots__ = ("args", "error", "fence", "kind", "result", "session_id")

    def __init__(
        self, kind: Kind, session_id: str, args: tuple[Any, ...], fence: tuple[str, int] | None = None
    ) -> None:
        Ticket.__init__(self)
        self.kind = kind
        self.session_id = session_id
        self.args = args
        self.fence = fence
        self.result: int | None = None
        self.error: Exception | None = None


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
class PgWriter:
    """Owns the writing connection and the thread that uses it; see the module docstring.

    Args:
        connect: opens a new connection (not in autocommit mode, search path set); called in the
            thread whenever there is none or the last one broke.
        name: how logs and errors name the store.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], name: str) -> None:
        self._connect = connect
        self._name = name
        self._conn: psycopg.Connection[Any] | None = None
        self._queue: SimpleQueue[Op | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._closing = False
        self._committing = False  # whether the failing transaction had sent COMMIT
        self._thread = threading.Thread(target=self._run, name=f"sessionvisor-pg-writer:{name}", daemon=True)
        # Counters: written by the writer thread only, read by statistics().
        self._commits = 0
        self._failed_commits = 0
        self._isolated_retries = 0
        self._operations = 0
        self._appends = 0
        self._events = 0
        self._rejected = 0
        self._largest_batch = 0
        self._batch_sizes: dict[int, int] = {}

    def start(self, conn: psycopg.Connection[Any]) -> None:
        """Start the writer thread with its first connection."""
        self._conn = conn
        self._thread.start()

    def submit(self, op: Op) -> None:
        """Queue ``op`` for the next transaction. Thread-safe and non-blocking.

        Raises:
            StoreError: the writer is closing or closed.
        """
        with self._lock:
            if self._closing:
                raise StoreError(
                    op.session_id,
                    op.kind.value,
                    f"the PostgreSQL store {self._name} is closed; open a new one",
                )
            self._queue.put(op)

    def close(self) -> None:
        """Stop taking operations; the thread finishes what is queued, then closes the connection."""
        with self._lock:
            if not self._closing:
                self._closing = True
                self._queue.put(None)

    def join(self) -> None:
        """Wait (blocking) until the thread has finished and closed its connection."""
        if self._thread.ident is not None:
            self._thread.join()

    def statistics(self) -> WriterStatistics:
        """A snapshot of the counters."""
        return WriterStatistics(
            commits=self._commits,
            failed_commits=self._failed_commits,
            isolated_retries=self._isolated_retries,
            operations=self._operations,
            appends=self._appends,
            events=self._events,
            rejected=self._rejected,
            largest_batch=self._largest_batch,
            batch_sizes=dict(sorted(self._batch_sizes.items())),
            queued=self._queue.qsize(),
        )

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._take()
                if batch:
                    self._commit_batch(batch)
        except BaseException:  # pragma: no cover - a bug; its callers still must not hang
            logger.critical("the PostgreSQL writer thread of %s died", self._name, exc_info=True)
            raise
        finally:
            self._stopped()

    def _take(self) -> tuple[list[Op], bool]:
        """The next batch (waiting for its first operation), and whether close() was called."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                op = self._queue.get_nowait()
            except Empty:
                break
            if op is None:
                return batch, True
            batch.append(op)
        return batch, False

    def _stopped(self) -> None:
        with self._lock:
            self._closing = True
        leftovers: list[Op] = []
        while True:
            try:
                op = self._queue.get_nowait()
            except Empty:
                break
            if op is not None:  # only if the thread died: close() queues nothing after None
                op.error = StoreError(op.session_id, op.kind.value, f"the writer of {self._name} stopped")
                leftovers.append(op)
        wake_all(leftovers)
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

    def _commit_batch(self, batch: list[Op]) -> None:
        size = len(batch)
        self._largest_batch = max(self._largest_batch, size)
        bucket = 1 << (size - 1).bit_length()
        self._batch_sizes[bucket] = self._batch_sizes.get(bucket, 0) + 1
        try:
            attempt = 0
            while True:
                attempt += 1
                self._committing = False
                try:
                    try:
                        self._transaction(batch, isolate=False)
                    except _OP_ERRORS:
                        self._rollback()
                        # One operation's data broke a statement: run the batch again, each
                        # operation in its own savepoint, so that only the guilty one fails.
                        self._isolated_retries += 1
                        self._transaction(batch, isolate=True)
                    break
                except psycopg.errors.DeadlockDetected:
                    # Only possible against a writer that locks in another order (not ours).
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
        except Exception as exc:
            self._rollback()
            self._failed_commits += 1
            logger.error(
                "PostgreSQL store %s: a transaction of %d operations failed and was rolled back: %r",
                self._name,
                size,
                exc,
            )
            for op in batch:
                op.result = None
                op.error = StoreError(
                    op.session_id,
                    op.kind.value,
                    f"the PostgreSQL transaction failed ({type(exc).__name__}: {exc}); check the server "
                    f"and the connection to {self._name}",
                )
                op.error.__cause__ = exc
        else:
            self._commits += 1
            self._operations += size
            for op in batch:
                if op.error is not None:
                    self._rejected += 1
                elif op.kind is Kind.APPEND:
                    self._appends += 1
                    self._events += len(op.args[1])
        wake_all(batch)

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
                    except _OP_ERRORS as exc:
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
