"""Group commit, as both SQL stores do it: one queue, one writer thread, one transaction per batch.

Every write of a store (create, append, set_status, save_snapshot, delete, and the reminder and
deadline changes) is an :class:`Op` put on one queue. The writer thread takes *everything* queued (up
to :data:`MAX_BATCH`), runs it as one transaction, commits once (one fsync or WAL flush for the lot)
and only then wakes the callers (:func:`._wakeup.wake_all`: one thread-safe call per event loop
per batch); whatever arrives meanwhile waits for the next transaction. Under load, batches grow by
themselves and the cost of a commit is shared by all of their operations.

:class:`GroupCommitWriter` is that loop, its shutdown and its counters. What a transaction is (the
SQL, how versions are checked, what is retried) belongs to each store's writer, which subclasses it:
:mod:`._sqlite_writer` and :mod:`._postgres_writer`.
"""

from __future__ import annotations

import enum
import threading
from abc import ABC, abstractmethod
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, final

import attrs

from .._exceptions import StoreError
from ._wakeup import Ticket, wake_all

if TYPE_CHECKING:
    import logging
    from collections.abc import Mapping

__all__ = ["MAX_BATCH", "BatchRefused", "GroupCommitWriter", "Kind", "Op", "WriterStatistics", "no_writes"]

MAX_BATCH = 512
"""The most operations committed in one transaction."""


class Kind(enum.Enum):
    """What an :class:`Op` does; its value names the action in ``StoreError``."""

    CREATE = "create"
    APPEND = "append"
    SET_STATUS = "set status"
    SAVE_SNAPSHOT = "save snapshot"
    DELETE = "delete"
    SET_REMINDER = "set a reminder"
    REMOVE_REMINDER = "remove a reminder"
    SET_DEADLINE = "set the deadline"


@final
class Op(Ticket):
    """One queued write and, once the writer is done with it, its outcome.

    Made in the caller's event loop; ``await op.wait()`` returns once the writer is done with it.

    ``args`` by kind: CREATE ``(type, status, args_json, metadata_json, deadline)``; APPEND
    ``(expected_version, events, status | None, extras | None)``, and on PostgreSQL a fifth, the
    lease ``(node, epoch) | None`` the append is fenced by; SET_STATUS ``(status, reason | None,
    error_type | None)``; SAVE_SNAPSHOT ``(version, state_version, data, taken_at)``; DELETE ``()``;
    SET_REMINDER ``(name, due_at, message)``; REMOVE_REMINDER ``(name,)``; SET_DEADLINE ``(deadline |
    None,)``. Statuses are ``Status.value`` strings.

    ``fence`` (PostgreSQL only; ``None`` elsewhere): for the other writes of a session's copy
    (status, snapshot, reminders, deadline), the lease ``(node, epoch)`` the copy holds, checked like
    an append's: the write is refused with ``OwnershipLost`` once the lease has moved on (a stale copy
    writes nothing). A lease this node released meanwhile (no owner, the same epoch) still admits it:
    nobody else has written since.
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


@attrs.frozen(kw_only=True)
class WriterStatistics:
    """Counters of the writer thread since the store was opened: what a store's statistics begin with
    (``SQLiteStoreStatistics``, ``PostgresStoreStatistics`` document them)."""

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

    @property
    def mean_batch(self) -> float:
        """Operations per committed transaction."""
        return self.operations / self.commits if self.commits else 0.0


def no_writes() -> WriterStatistics:
    """The counters of a store whose writer has not started."""
    return WriterStatistics(
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
    )


class BatchRefused(Exception):
    """Raised by :meth:`GroupCommitWriter._write_batch`: the store writes nothing more, for a reason
    it has already logged; every operation of the batch gets ``StoreError`` with that reason."""


class GroupCommitWriter(ABC):
    """Owns the queue and the thread that takes batches from it; see the module docstring.

    A subclass owns the connection: it writes a batch (:meth:`_write_batch`), rolls a failed one back
    (:meth:`_rollback`) and closes the connection when the thread stops (:meth:`_close_connection`).

    Args:
        name: how logs and errors name the store (its path, or its server and schema).
        label: "SQLite" or "PostgreSQL", for logs.
        thread_name: the writer thread's name.
        closed: the reason ``submit`` gives once the writer is closing.
        stopped: the reason operations still queued get when the thread stops.
        log: the store's logger (its own module's), so that its records keep their name.
    """

    _op_errors: tuple[type[BaseException], ...] = ()
    """Errors about one operation's data, not about the database: only that operation fails."""

    def __init__(
        self, *, name: str, label: str, thread_name: str, closed: str, stopped: str, log: logging.Logger
    ) -> None:
        self._name = name
        self._label = label
        self._closed = closed
        self._stopped_reason = stopped
        self._log = log
        self._queue: SimpleQueue[Op | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
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

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def submit(self, op: Op) -> None:
        """Queue ``op`` for the next transaction. Thread-safe and non-blocking.

        Raises:
            StoreError: the writer is closing or closed.
        """
        with self._lock:
            if self._closing:
                raise StoreError(op.session_id, op.kind.value, self._closed)
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

    # -- what a store's writer does ----------------------------------------------------------

    @abstractmethod
    def _write_batch(self, batch: list[Op]) -> None:
        """Run ``batch`` as one transaction and commit it, giving each operation its outcome.

        Raises:
            BatchRefused: nothing was written, for a reason already logged.
            Exception: the transaction failed; the batch is rolled back and its callers told.
        """

    @abstractmethod
    def _transaction(self, batch: list[Op], *, isolate: bool) -> None:
        """One try of ``batch``: with ``isolate``, each operation inside its own savepoint."""

    @abstractmethod
    def _rollback(self) -> None:
        """Roll back whatever the connection has begun, and forget what it assumed of it."""

    @abstractmethod
    def _close_connection(self) -> None:
        """Close the connection, once the thread is done with it."""

    @abstractmethod
    def _failed(self, exc: Exception) -> str:
        """The reason every caller of a batch gets when its transaction failed with ``exc``."""

    def _isolating(self, batch: list[Op]) -> None:
        """Run ``batch``; if one operation's data broke a statement, run it again, each operation
        in its own savepoint, so that only the guilty one fails."""
        try:
            self._transaction(batch, isolate=False)
        except self._op_errors:
            self._rollback()
            self._isolated_retries += 1
            self._transaction(batch, isolate=True)

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._take()
                if batch:
                    self._commit_batch(batch)
        except BaseException:  # pragma: no cover - a bug; its callers still must not hang
            self._log.critical("the %s writer thread of %s died", self._label, self._name, exc_info=True)
            raise
        finally:
            self._stopped()

    def _take(self) -> tuple[list[Op], bool]:
        """The next batch (waiting for its first operation), and whether close() was called."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        # Everything queued while the previous commit was in flight joins this one (up to a
        # bound, so that one transaction's size and its callers' wait stay bounded).
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
            self._closing = True  # nothing more is queued after this
        leftovers: list[Op] = []
        while True:
            try:
                op = self._queue.get_nowait()
            except Empty:
                break
            if op is not None:  # only if the thread died: close() queues nothing after None
                op.error = StoreError(op.session_id, op.kind.value, self._stopped_reason)
                leftovers.append(op)
        wake_all(leftovers)
        self._close_connection()

    def _commit_batch(self, batch: list[Op]) -> None:
        size = len(batch)
        self._largest_batch = max(self._largest_batch, size)
        bucket = 1 << (size - 1).bit_length()  # batch sizes are counted in buckets 1, 2, 4, 8, ...
        self._batch_sizes[bucket] = self._batch_sizes.get(bucket, 0) + 1
        try:
            self._write_batch(batch)
        except BatchRefused as exc:
            self._rollback()
            self._failed_commits += 1
            for op in batch:
                op.result = None
                op.error = StoreError(op.session_id, op.kind.value, str(exc))
        except Exception as exc:
            self._rollback()
            self._failed_commits += 1
            self._log.error(
                "%s store %s: a transaction of %d operations failed and was rolled back: %r",
                self._label,
                self._name,
                size,
                exc,
            )
            why = self._failed(exc)
            for op in batch:
                op.result = None
                op.error = StoreError(op.session_id, op.kind.value, why)
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
