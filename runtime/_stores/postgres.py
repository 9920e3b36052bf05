"""The store for many processes: one PostgreSQL database shared by every node.

Writes go through one connection in one dedicated thread that commits whatever is queued as one
transaction (see :mod:`._postgres_writer`): psycopg's async API is asyncio-only, and a thread serves trio
and asyncio alike. Reads run in anyio's worker threads on a pool of other connections (psycopg-pool), so
they never wait for a commit (see :mod:`._postgres_reads`). What this store does as SQLite does is in
:mod:`._front` and :mod:`._group_commit`; its leases in :mod:`._postgres_ownership`.

psycopg is imported when the store is opened, not when :mod:`runtime` is: it is an optional extra
(``pip install 'sessionvisor[postgres]'``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, final

import anyio
import attrs

from .._exceptions import OwnershipLost, StoreError
from . import _postgres_reads
from ._front import Reads, StoreFront
from ._group_commit import Kind, WriterStatistics, no_writes
from ._postgres_ownership import Ownership
from ._wakeup import run_in_thread

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    from .._records import AppendExtras, EventData
    from .._status import Status
    from ._postgres_writer import PgWriter

__all__ = ["PostgresStore", "PostgresStoreStatistics"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_INSTALL_HINT = "install the extra: pip install 'sessionvisor[postgres]'"


@attrs.frozen(kw_only=True)
class PostgresStoreStatistics(WriterStatistics):
    """What a :class:`PostgresStore` has done since it was opened (a snapshot).

    Attributes:
        commits: transactions committed by the writer thread (each may hold many operations).
        failed_commits: transactions that failed and were rolled back (every caller got StoreError).
        isolated_retries: batches run again with one savepoint per operation, because one
            operation's data broke a statement.
        operations: writes committed, including the ones rejected with ``SessionExists``,
            ``SessionNotFound`` or ``VersionConflict``.
        appends: successful ``append`` calls.
        events: events those appends wrote.
        rejected: operations that got ``SessionExists``, ``SessionNotFound`` or ``VersionConflict``.
        largest_batch: the most operations committed in one transaction.
        batch_sizes: how many transactions had up to 1, 2, 4, 8, ... operations (power-of-two buckets).
        queued: operations waiting for the writer right now.
        readers: reader connections open right now (idle or in use).
        idle_readers: reader connections open and idle right now.

    .. versionadded:: 0.1
    """

    readers: int
    idle_readers: int


def _describe(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, for messages: never its password."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return "a PostgreSQL server"
    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # a malformed DSN is reported by open(), not by repr()
        return "a PostgreSQL server"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or 5432
    return f"{host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


@final
class PostgresStore(Ownership, StoreFront):
    """Sessions in a PostgreSQL database, shared by every process that opens it.

    Writes are group-committed by one writer thread per store and acknowledged only once committed
    (PostgreSQL's ``synchronous_commit`` decides how durable a commit is; its default flushes the
    WAL). Several processes may open the same database and schema: every append is checked against
    the log's version under a row lock, so two writers never fork a log (one gets
    ``VersionConflict``). Reads run in anyio's worker threads on a pool of connections. It implements
    :class:`runtime.abc.EventStore`; payloads are kept as the JSON text they come in (never pickle).

    Args:
        dsn: a libpq connection string or URI, e.g. ``"postgresql://app@127.0.0.1:5432/app"``.
        schema: the PostgreSQL schema that holds the store's tables; created, and migrated to the
            current layout, by :meth:`open`. Several stores can share a database under different
            schemas.
        max_readers: the most reader connections open at once.
        connect_timeout: seconds to wait for the server when connecting.

    Example::

        store = PostgresStore("postgresql://app@127.0.0.1:5432/app")
        await store.open()
        try:
            ...
        finally:
            await store.aclose()

    .. versionadded:: 0.1
    """

    _label: ClassVar[str] = "PostgreSQL"
    _reads: ClassVar[Reads] = _postgres_reads

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "sessionvisor",
        max_readers: int = 8,
        connect_timeout: float = 10.0,
    ) -> None:
        if not isinstance(schema, str) or not schema:
            raise ValueError(f"schema must be a non-empty str, not {schema!r}")
        if max_readers < 1:
            raise ValueError(f"max_readers must be at least 1, not {max_readers!r}")
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be positive, not {connect_timeout!r}")
        self._dsn = dsn
        self._schema = schema
        self._max_readers = max_readers
        self._connect_timeout = connect_timeout
        self._where = f"{_describe(dsn)} (schema {schema!r})"
        # Shown in pg_stat_activity, so that an operator can tell the store's connections apart.
        self._application_name = f"sessionvisor:{schema}"[:63]
        self._state: Literal["new", "opening", "open", "closing", "closed"] = "new"
        self._writer: PgWriter | None = None
        self._pool: ConnectionPool[Any] | None = None
        Ownership.__init__(self)

    def __repr__(self) -> str:
        return f"PostgresStore({self._where}, {self._state})"

    @property
    def schema(self) -> str:
        """The PostgreSQL schema that holds the store's tables."""
        return self._schema

    def statistics(self) -> PostgresStoreStatistics:
        """Counters of the writer thread and the reader pool, as a frozen snapshot."""
        pool = self._pool
        readers = idle = 0
        if pool is not None:
            stats = pool.get_stats()
            readers = stats.get("pool_size", 0)
            idle = stats.get("pool_available", 0)
        w = no_writes() if self._writer is None else self._writer.statistics()
        return PostgresStoreStatistics(**attrs.asdict(w, recurse=False), readers=readers, idle_readers=idle)

    # -- lifecycle ---------------------------------------------------------------------------

    def _connect(self, *, autocommit: bool) -> psycopg.Connection[Any]:
        import psycopg

        from ._postgres_schema import set_search_path

        conn = psycopg.connect(
            self._dsn,
            autocommit=autocommit,
            connect_timeout=max(1, round(self._connect_timeout)),
            application_name=self._application_name,
        )
        try:
            set_search_path(conn, self._schema)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_writer(self) -> psycopg.Connection[Any]:
        import psycopg

        from ._postgres_schema import migrate, set_search_path

        try:
            conn = psycopg.connect(
                self._dsn,
                autocommit=False,
                connect_timeout=max(1, round(self._connect_timeout)),
                application_name=self._application_name,
            )
        except psycopg.Error as exc:
            raise StoreError(
                None,
                "open the database",
                f"cannot connect to {_describe(self._dsn)} ({type(exc).__name__}: {exc}); check that the "
                "server runs and that the DSN is right",
            ) from exc
        try:
            migrate(conn, self._schema)
            set_search_path(conn, self._schema)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(
                None, "open the database", f"{self._where}: {type(exc).__name__}: {exc}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_pool(self) -> ConnectionPool[Any]:
        from psycopg_pool import ConnectionPool

        from ._postgres_schema import set_search_path

        schema = self._schema

        def configure(conn: psycopg.Connection[Any]) -> None:
            set_search_path(conn, schema)

        pool: ConnectionPool[Any] = ConnectionPool(
            self._dsn,
            min_size=1,
            max_size=self._max_readers,
            open=False,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, round(self._connect_timeout)),
                "application_name": self._application_name,
            },
            configure=configure,
            # A connection the server dropped (restart, failover) is replaced before it is used.
            check=ConnectionPool.check_connection,
            name=f"sessionvisor-readers:{self._schema}",
            timeout=self._connect_timeout,
        )
        pool.open(wait=True, timeout=self._connect_timeout)
        return pool

    async def open(self) -> None:
        """Connect, create and migrate the schema, start the writer thread and the reader pool.

        Raises:
            StoreError: the server cannot be reached, the schema belongs to something else or was
                written by a newer sessionvisor, or the store was opened before.
        """
        if self._state != "new":
            raise StoreError(
                None, "open the database", f"{self!r} was opened before; make a new PostgresStore"
            )
        try:
            import psycopg_pool  # noqa: F401

            from ._postgres_writer import PgWriter
        except ImportError as exc:
            raise StoreError(
                None, "open the database", f"PostgresStore needs psycopg and psycopg-pool: {_INSTALL_HINT}"
            ) from exc
        self._state = "opening"
        try:
            conn = await run_in_thread(self._open_writer)
            try:
                self._pool = await run_in_thread(self._open_pool)
            except BaseException:
                conn.close()
                raise
        except BaseException as exc:
            self._state = "closed"
            if isinstance(exc, Exception) and not isinstance(exc, StoreError):
                raise StoreError(
                    None, "open the database", f"{self._where}: {type(exc).__name__}: {exc}"
                ) from exc
            raise
        self._writer = PgWriter(lambda: self._connect(autocommit=False), self._where, conn)
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
        writer, pool = self._writer, self._pool
        with anyio.CancelScope(shield=True):
            if writer is not None:
                writer.close()
                await run_in_thread(writer.join)
            if pool is not None:
                await run_in_thread(pool.close)
        self._state = "closed"
        logger.debug("closed %r", self)

    # -- writes (the others: StoreFront; their fences: Ownership) ------------------------------

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

        Committed when it returns. Concurrent appends share one transaction (group commit).
        ``status`` and ``extras`` are written in the same transaction.

        Raises:
            SessionNotFound: the session is not in the index.
            VersionConflict: the log's length is not ``expected_version`` (another writer, perhaps
                another process, appended).
            OwnershipLost: the store joined as a node (:meth:`join`) and holds no lease on the
                session, or its lease moved on to another node (checked in the same transaction).
            StoreError: the transaction failed (nothing of it was written) or the store is closed.
        """
        fence: tuple[str, int] | None = None
        node = self._node
        if node is not None:
            epoch = self._fences.get(session_id)
            if epoch is None:
                raise OwnershipLost(session_id, node, None)
            fence = (node, epoch)
        result = await self._write(
            Kind.APPEND,
            session_id,
            (expected_version, tuple(events), None if status is None else status.value, extras, fence),
        )
        assert result is not None
        return result

    # -- reads (StoreFront) ------------------------------------------------------------------

    def _run_read(self, session_id: str | None, action: str, fn: Callable[..., T], *args: Any) -> T:
        import psycopg

        pool = self._pool
        if pool is None or self._state != "open":
            raise self._closed_error(session_id, action)
        try:
            with pool.connection() as conn:
                return fn(conn, *args)
        except psycopg.Error as exc:
            raise StoreError(
                session_id, action, f"PostgreSQL failed ({type(exc).__name__}: {exc}) at {self._where}"
            ) from exc
        except (ValueError, TypeError) as exc:  # an undecodable index entry (bad JSON, unknown status)
            raise StoreError(session_id, action, f"a stored index entry cannot be read ({exc})") from exc
        except Exception as exc:  # the pool's own errors (PoolTimeout, PoolClosed)
            if type(exc).__module__.startswith("psycopg_pool"):
                raise StoreError(
                    session_id, action, f"no connection to {self._where} ({type(exc).__name__}: {exc})"
                ) from exc
            raise

    async def _read(self, session_id: str | None, action: str, fn: Callable[..., T], *args: Any) -> T:
        if self._state != "open":
            raise self._closed_error(session_id, action)
        return await run_in_thread(self._run_read, session_id, action, fn, *args)

    async def read_epochs(self, session_id: str) -> list[tuple[int, int | None]]:
        """``(version, epoch)`` of every event of the session: the lease each was appended under
        (``None`` without ownership). For audits: epochs never go back along a log.

        .. versionadded:: 0.2
        """
        return await self._read(session_id, "read the epochs", _postgres_reads.epochs, session_id)
