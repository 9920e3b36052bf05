"""The embedded default event store: one SQLite file, WAL, group commit in one writer thread.

Writes go through one connection in one dedicated thread that commits whatever is queued as one
transaction (see :mod:`._sqlite_writer`); callers are woken once their transaction is durable. Reads use
a small pool of other connections in anyio's worker threads, so that they never wait for a commit: in
WAL mode readers see the last committed state while the writer writes (see :mod:`._sqlite_reads`).
What this store does as PostgreSQL does is in :mod:`._front` and :mod:`._group_commit`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, final

import anyio
import attrs

from .._exceptions import StoreError
from . import _sqlite_reads
from ._front import Reads, StoreFront
from ._group_commit import Kind, Op, WriterStatistics, no_writes
from ._sqlite_reads import ReaderPool
from ._sqlite_schema import connect_writer, file_identity
from ._sqlite_writer import MAX_CACHED_HEADS, Writer
from ._wakeup import run_in_thread

if TYPE_CHECKING:
    import sqlite3

    from .._records import AppendExtras, EventData
    from .._status import Status

__all__ = ["SQLiteStore", "SQLiteStoreStatistics"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class SQLiteStoreStatistics(WriterStatistics):
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

    idle_readers: int
    cached_heads: int = 0
    head_reads: int = 0


def _open_writer(path: str, synchronous: str) -> tuple[sqlite3.Connection, tuple[int, int] | None]:
    """The writer's connection and the identity of the file it opened (see ``Writer``)."""
    conn = connect_writer(path, synchronous)
    return conn, file_identity(path)


@final
class SQLiteStore(StoreFront):
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

    _label: ClassVar[str] = "SQLite"
    _reads: ClassVar[Reads] = _sqlite_reads

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
        self._readers = ReaderPool(path)

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r}, synchronous={self._synchronous!r}, {self._state})"

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def statistics(self) -> SQLiteStoreStatistics:
        """Counters of the writer thread and the reader pool, as a frozen snapshot."""
        writer = self._writer
        w = no_writes() if writer is None else writer.statistics()
        cached, reads = (0, 0) if writer is None else writer.head_cache()
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

    # -- writes (the others: StoreFront) -----------------------------------------------------

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
        # StoreFront._write() inlined: this is the hot path.
        writer = self._writer
        if writer is None or self._state == "closed":
            raise self._closed_error(session_id, "append")
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

    # -- reads (StoreFront) ------------------------------------------------------------------

    async def _read(self, session_id: str | None, action: str, fn: Callable[..., T], *args: Any) -> T:
        if self._state != "open":
            raise self._closed_error(session_id, action)
        writer = self._writer
        if writer is not None and writer.file_lost is not None:
            # What the readers would see is a file nobody else can open any more.
            raise StoreError(session_id, action, writer.file_lost)
        return await run_in_thread(self._readers.run, session_id, action, fn, *args)
