"""The store for many processes: one PostgreSQL database shared by every node.

Writes go through one connection in one dedicated thread that commits whatever is queued as one
transaction (see :mod:`._postgres_writer`): psycopg's async API is asyncio-only, and a thread serves trio
and asyncio alike. Reads run in anyio's worker threads on a pool of other connections (psycopg-pool), so
they never wait for a commit.

psycopg is imported when the store is opened, not when :mod:`runtime` is: it is an optional extra
(``pip install 'sessionvisor[postgres]'``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final

import anyio
import attrs

from .._exceptions import OwnedElsewhere, OwnershipLost, StoreError
from .._ids import check_session_id
from .._ownership import Lease, NodeInfo, Renewal
from .._records import (
    ENDED,
    Outcomes,
    Reminder,
    SessionOrder,
    SessionRecord,
    Snapshot,
    StoredEvent,
    StoredSession,
    StoreStats,
)
from .._status import Status
from ._sqlite_wakeup import run_in_thread
from ._sqlite_writer import Kind
from .sqlite import _events

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    from .._records import AppendExtras, EventData
    from ._postgres_writer import PgWriter

__all__ = ["PostgresStore", "PostgresStoreStatistics"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_LAST_VERSION = 2**63 - 1
# A session's writes besides its appends (which carry their fence themselves): fenced by the lease a
# node's copy holds, so that a stale copy's status, snapshot, reminders or deadline never land.
_FENCED = frozenset(
    {Kind.SET_STATUS, Kind.SAVE_SNAPSHOT, Kind.SET_REMINDER, Kind.REMOVE_REMINDER, Kind.SET_DEADLINE}
)
_INSTALL_HINT = "install the extra: pip install 'sessionvisor[postgres]'"

_SELECT_RECORD = (
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
_ORDER_BY = {
    ("created_at", False): " ORDER BY created_at, id",
    ("created_at", True): " ORDER BY created_at DESC, id DESC",
    ("updated_at", False): " ORDER BY updated_at, id",
    ("updated_at", True): " ORDER BY updated_at DESC, id DESC",
}

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


@attrs.frozen(kw_only=True)
class PostgresStoreStatistics:
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
    readers: int
    idle_readers: int

    @property
    def mean_batch(self) -> float:
        """Operations per committed transaction."""
        return self.operations / self.commits if self.commits else 0.0


def _load_session(
    conn: psycopg.Connection[Any], session_id: str, after_snapshot: bool, last: int
) -> StoredSession | None:
    """The entry, the snapshot, the events after it and the reminders (inside a read transaction)."""
    row = conn.execute(f"{_SELECT_RECORD} WHERE id = %s", (session_id,)).fetchone()
    if row is None:
        return None
    snapshot = None
    if after_snapshot:
        found = conn.execute(_SELECT_SNAPSHOT, (session_id,)).fetchone()
        snapshot = None if found is None else Snapshot(session_id, *found)
    first = 1 if snapshot is None else snapshot.version + 1
    events = _events(session_id, conn.execute(_SELECT_EVENTS, (session_id, first, last)).fetchall())
    (end,) = conn.execute(
        "SELECT coalesce(max(version), 0) FROM events "
        "WHERE session = (SELECT key FROM sessions WHERE id = %s)",
        (session_id,),
    ).fetchone() or (0,)
    reminders = [Reminder(session_id, *r) for r in conn.execute(_SELECT_REMINDERS, (session_id,)).fetchall()]
    return StoredSession(_record(row), snapshot, events, end, reminders)


def _record(row: tuple[Any, ...]) -> SessionRecord:
    (
        sid,
        type_name,
        status,
        args,
        metadata,
        version,
        created_at,
        updated_at,
        deadline,
        handled,
        reason,
        error_type,
    ) = row
    return SessionRecord(
        sid,
        type_name,
        Status(status),
        json.loads(args),
        json.loads(metadata),
        version,
        created_at,
        updated_at,
        deadline,
        handled,
        reason,
        error_type,
    )


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
class PostgresStore:
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
        # Ownership (LeaseStore): this store's node, once joined, and the epochs of its leases.
        self._node: str | None = None
        self._address: str | None = None
        self._lease_ttl = 10.0
        self._fences: dict[str, int] = {}

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
        if self._writer is None:
            return PostgresStoreStatistics(
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
                readers=readers,
                idle_readers=idle,
            )
        w = self._writer.statistics()
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
        self._writer = PgWriter(lambda: self._connect(autocommit=False), self._where)
        self._writer.start(conn)
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

    # -- writes ------------------------------------------------------------------------------

    def _closed_error(self, session_id: str | None, action: str) -> StoreError:
        why = "not open: await store.open() first" if self._state == "new" else "closed"
        return StoreError(session_id, action, f"the PostgreSQL store is {why}")

    async def _write(self, kind: Kind, session_id: str, args: tuple[Any, ...]) -> int | None:
        from ._postgres_writer import Op

        writer = self._writer
        if writer is None or self._state == "closed":
            raise self._closed_error(session_id, kind.value)
        fence = None
        if kind in _FENCED and self._node is not None:
            # A node's copy writes under the lease it holds: refused once the lease moved on.
            epoch = self._fences.get(session_id)
            if epoch is not None:
                fence = (self._node, epoch)
        op = Op(kind, session_id, args, fence)
        writer.submit(op)
        await op.wait()
        if op.error is not None:
            raise op.error
        return op.result

    async def create(self, record: SessionRecord) -> None:
        """Add a new session to the index, at version 0.

        Raises:
            InvalidSessionId: ``record.id`` breaks the rule of :func:`runtime.check_session_id`.
            SessionExists: a session with ``record.id`` is already stored.
            StoreError: ``args``/``metadata`` are not JSON, or the database failed.
        """
        check_session_id(record.id)
        try:
            args_json = json.dumps(dict(record.args), separators=(",", ":"), allow_nan=False)
            metadata_json = json.dumps(
                dict(record.metadata), sort_keys=True, separators=(",", ":"), allow_nan=False
            )
        except (TypeError, ValueError) as exc:
            raise StoreError(
                record.id, "create", f"args and metadata must be JSON-serialisable ({exc})"
            ) from exc
        await self._write(
            Kind.CREATE,
            record.id,
            (record.type, record.status.value, args_json, metadata_json, record.deadline),
        )

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

    async def set_status(
        self,
        session_id: str,
        status: Status,
        *,
        reason: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """Change the session's status in the index, with why (``None`` clears the reason).

        Raises:
            SessionNotFound: the session is not in the index.
        """
        await self._write(Kind.SET_STATUS, session_id, (status.value, reason, error_type))

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the session's latest (replacing the one before; ignored when the
        session is not stored)."""
        await self._write(
            Kind.SAVE_SNAPSHOT,
            snapshot.session_id,
            (snapshot.version, snapshot.state_version, snapshot.data, snapshot.taken_at),
        )

    async def delete(self, session_id: str) -> None:
        """Remove the session, its log, snapshot, reminders and replies. Unknown ids are ignored."""
        await self._write(Kind.DELETE, session_id, ())

    async def set_reminder(self, reminder: Reminder) -> None:
        """Keep ``reminder``, replacing the session's reminder of that name; committed on return.

        Raises:
            SessionNotFound: the session is not in the index.
        """
        await self._write(
            Kind.SET_REMINDER, reminder.session_id, (reminder.name, reminder.due_at, reminder.message)
        )

    async def remove_reminder(self, session_id: str, name: str) -> None:
        """Remove the session's reminder ``name`` (nothing happens when there is none)."""
        await self._write(Kind.REMOVE_REMINDER, session_id, (name,))

    async def set_deadline(self, session_id: str, deadline: float | None) -> None:
        """Set when the reaper should next look at the session (``None``: never)."""
        await self._write(Kind.SET_DEADLINE, session_id, (deadline,))

    # -- ownership (runtime.abc.LeaseStore) --------------------------------------------------

    @property
    def node(self) -> str | None:
        """The node this store joined as, or ``None``."""
        return self._node

    def held(self) -> dict[str, int]:
        """The sessions this node holds leases on, with their epochs (a copy)."""
        return dict(self._fences)

    def _need_node(self, action: str) -> str:
        if self._node is None:
            raise StoreError(None, action, "the store has not joined as a node: await store.join(name) first")
        return self._node

    async def join(self, node: str, *, address: str | None = None, lease_ttl: float = 10.0) -> None:
        """Become node ``node``: from now on every append must be for a session this node leases.

        Args:
            node: the node's name, unique among the processes sharing the store.
            address: where clients can reach the node (shown to other nodes, in ``OwnedElsewhere``).
            lease_ttl: seconds a lease lasts without renewal.

        .. versionadded:: 0.2
        """
        from . import _postgres_leases as leases

        if not isinstance(node, str) or not node:
            raise ValueError(f"a node's name must be a non-empty str, not {node!r}")
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be positive, not {lease_ttl!r}")
        await self._read(None, "join as a node", lambda conn: leases.join(conn, node, address, lease_ttl))
        self._node, self._address, self._lease_ttl = node, address, lease_ttl

    async def leave(self) -> None:
        """Release every lease of this node and remove it from the membership."""
        from . import _postgres_leases as leases

        node = self._need_node("leave")
        await self._read(None, "leave", lambda conn: leases.leave(conn, node))
        self._fences.clear()
        self._node = None

    async def acquire(self, session_id: str) -> Lease:
        """Own ``session_id`` under a new epoch: free, released, expired, or already this node's.

        Raises:
            OwnedElsewhere: another live node holds the lease.
        """
        from . import _postgres_leases as leases

        node = self._need_node("acquire a lease")
        address, ttl = self._address, self._lease_ttl

        def query(conn: psycopg.Connection[Any]) -> Lease | None:
            lease = leases.acquire(conn, session_id, node, address, ttl)
            if lease is None:
                # Held by a live node; it may have gone meanwhile: then try once more.
                owner = leases.owner_of(conn, session_id)
                if owner is not None:
                    return owner
                lease = leases.acquire(conn, session_id, node, address, ttl)
            return lease

        lease = await self._read(session_id, "acquire a lease", query)
        if lease is None or lease.node != node:
            owner = lease.node if lease is not None else "another node"
            raise OwnedElsewhere(session_id, owner, lease.address if lease is not None else None)
        self._fences[session_id] = lease.epoch
        return lease

    async def release(self, session_id: str) -> None:
        """Give up this node's lease on ``session_id`` (no error when it holds none)."""
        from . import _postgres_leases as leases

        node = self._need_node("release a lease")
        epoch = self._fences.pop(session_id, None)
        if epoch is not None:
            await self._read(
                session_id, "release a lease", lambda conn: leases.release(conn, session_id, node, epoch)
            )

    async def renew(self) -> Renewal:
        """Renew all of this node's leases and its heartbeat in one statement; report the lost ones.

        A lost lease stays known to the store (its appends are refused) until :meth:`release`.
        """
        from . import _postgres_leases as leases

        node = self._need_node("renew leases")
        held = dict(self._fences)
        address, ttl = self._address, self._lease_ttl
        return await self._read(
            None, "renew leases", lambda conn: leases.renew(conn, node, address, ttl, held)
        )

    async def locate(self, session_id: str) -> Lease | None:
        """The live lease on ``session_id``, or ``None`` when no node owns it."""
        from . import _postgres_leases as leases

        return await self._read(
            session_id, "locate a session", lambda conn: leases.owner_of(conn, session_id)
        )

    async def owners(self, session_ids: Sequence[str]) -> dict[str, Lease]:
        """The live leases on ``session_ids`` (one query), by session id; unowned ones are left out."""
        from . import _postgres_leases as leases

        ids = list(session_ids)
        return await self._read(None, "locate sessions", lambda conn: leases.owners(conn, ids))

    async def nodes(self) -> Sequence[NodeInfo]:
        """The nodes that joined and have not left, by name, with their liveness and lease counts."""
        from . import _postgres_leases as leases

        return await self._read(None, "list nodes", leases.nodes)

    async def claim_orphans(self, *, types: Sequence[str], limit: int) -> Sequence[Lease]:
        """Take over up to ``limit`` sessions of dead owners that must run now (see LeaseStore)."""
        from . import _postgres_leases as leases

        node = self._need_node("take over sessions")
        address, ttl, wall = self._address, self._lease_ttl, time.time()
        claimed = await self._read(
            None,
            "take over sessions",
            lambda conn: leases.claim_orphans(conn, node, address, ttl, types, limit, wall),
        )
        for lease in claimed:
            self._fences[lease.session_id] = lease.epoch
        return claimed

    async def next_expiry(self) -> float | None:
        """Seconds until another node's soonest live lease expires (see LeaseStore)."""
        from . import _postgres_leases as leases

        node = self._need_node("look for leases about to expire")
        return await self._read(
            None, "look for leases about to expire", lambda conn: leases.next_expiry(conn, node)
        )

    # -- reads -------------------------------------------------------------------------------

    def _run_read(self, session_id: str | None, action: str, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        import psycopg

        pool = self._pool
        if pool is None or self._state != "open":
            raise self._closed_error(session_id, action)
        try:
            with pool.connection() as conn:
                return fn(conn)
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

    async def _read(
        self, session_id: str | None, action: str, fn: Callable[[psycopg.Connection[Any]], T]
    ) -> T:
        if self._state != "open":
            raise self._closed_error(session_id, action)
        return await run_in_thread(self._run_read, session_id, action, fn)

    async def read(
        self, session_id: str, from_version: int = 1, to_version: int | None = None
    ) -> Sequence[StoredEvent]:
        """Events ``from_version..to_version`` (inclusive; to the end when ``None``), in order."""
        params = (session_id, from_version, _LAST_VERSION if to_version is None else to_version)

        def query(conn: psycopg.Connection[Any]) -> list[StoredEvent]:
            return _events(session_id, conn.execute(_SELECT_EVENTS, params).fetchall())

        return await self._read(session_id, "read the log", query)

    async def read_epochs(self, session_id: str) -> list[tuple[int, int | None]]:
        """``(version, epoch)`` of every event of the session: the lease each was appended under
        (``None`` without ownership). For audits: epochs never go back along a log.

        .. versionadded:: 0.2
        """

        def query(conn: psycopg.Connection[Any]) -> list[tuple[int, int | None]]:
            rows = conn.execute(
                "SELECT version, epoch FROM events WHERE session = (SELECT key FROM sessions WHERE id = %s) "
                "ORDER BY version",
                (session_id,),
            )
            return [(int(version), None if epoch is None else int(epoch)) for version, epoch in rows]

        return await self._read(session_id, "read the epochs", query)

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        """The session's latest snapshot, if any."""

        def query(conn: psycopg.Connection[Any]) -> Snapshot | None:
            row = conn.execute(_SELECT_SNAPSHOT, (session_id,)).fetchone()
            return None if row is None else Snapshot(session_id, *row)

        return await self._read(session_id, "load the snapshot", query)

    async def load_session(
        self, session_id: str, *, after_snapshot: bool = True, to_version: int | None = None
    ) -> StoredSession | None:
        """The index entry, latest snapshot and the events after it, in one read transaction.

        .. versionadded:: 0.2
        """
        last = _LAST_VERSION if to_version is None else to_version

        def query(conn: psycopg.Connection[Any]) -> StoredSession | None:
            # One snapshot of the database for all five reads, whatever other nodes commit
            # meanwhile (issue 17). COMMIT after an error ends the aborted transaction too.
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                return _load_session(conn, session_id, after_snapshot, last)
            finally:
                conn.execute("COMMIT")

        return await self._read(session_id, "load the session", query)

    async def load_sessions(
        self, session_ids: Sequence[str], *, after_snapshot: bool = True
    ) -> list[StoredSession | None]:
        """``load_session`` for several sessions in one read transaction (one trip to a thread):
        what recoveries that run at once (resumption at start-up) share.

        .. versionadded:: 0.2
        """

        def query(conn: psycopg.Connection[Any]) -> list[StoredSession | None]:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                return [_load_session(conn, sid, after_snapshot, _LAST_VERSION) for sid in session_ids]
            finally:
                conn.execute("COMMIT")

        return await self._read(None, "load sessions", query)

    async def get(self, session_id: str) -> SessionRecord | None:
        """The session's index entry, or ``None`` when it is not stored.

        Raises:
            InvalidSessionId: ``session_id`` breaks the rule of :func:`runtime.check_session_id`.
        """
        check_session_id(session_id)

        def query(conn: psycopg.Connection[Any]) -> SessionRecord | None:
            row = conn.execute(f"{_SELECT_RECORD} WHERE id = %s", (session_id,)).fetchone()
            return None if row is None else _record(row)

        return await self._read(session_id, "read the index", query)

    async def list(
        self,
        *,
        status: Status | None = None,
        type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
        order_by: SessionOrder = "created_at",
        descending: bool = False,
        created_after: float | None = None,
        created_before: float | None = None,
        updated_after: float | None = None,
        updated_before: float | None = None,
    ) -> Sequence[SessionRecord]:
        """Index entries matching every filter given, by ``order_by`` (oldest first) then by id.

        ``metadata`` matches entries whose metadata has each key equal to the value given (compared
        as JSON; ``None`` also matches a missing key, as in ``metadata.get(key) == None``). The time
        bounds are half-open: ``*_after`` inclusive, ``*_before`` exclusive
        (:meth:`runtime.abc.EventStore.list`).
        """
        order = _ORDER_BY.get((order_by, bool(descending)))
        if order is None:
            raise ValueError(f"order_by must be 'created_at' or 'updated_at', not {order_by!r}")
        where: list[str] = []
        params: list[object] = []
        for condition, bound in (
            ("created_at >= %s", created_after),
            ("created_at < %s", created_before),
            ("updated_at >= %s", updated_after),
            ("updated_at < %s", updated_before),
        ):
            if bound is not None:
                where.append(condition)
                params.append(float(bound))
        if status is not None:
            where.append("status = %s")
            params.append(status.value)
        if type is not None:
            where.append("type = %s")
            params.append(type)
        for key, value in (metadata or {}).items():
            if value is None:
                where.append("coalesce(metadata -> %s, 'null'::jsonb) = 'null'::jsonb")
                params.append(key)
                continue
            if not isinstance(value, Mapping | list | tuple | str | int | float):
                raise StoreError(
                    None,
                    "list sessions",
                    f"metadata filter {key!r} must be JSON (str, number, bool, None, list, dict), "
                    f"not {value!r}",
                )
            try:
                as_json = json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise StoreError(
                    None, "list sessions", f"metadata filter {key!r} is not JSON ({exc})"
                ) from exc
            where.append("metadata -> %s = %s::jsonb")
            params += [key, as_json]
        sql = _SELECT_RECORD
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += order + " LIMIT %s OFFSET %s"
        params += [limit, offset]

        def query(conn: psycopg.Connection[Any]) -> list[SessionRecord]:
            return [_record(row) for row in conn.execute(sql, params)]

        return await self._read(None, "list sessions", query)

    async def reminders(self, session_id: str) -> Sequence[Reminder]:
        """The session's reminders, earliest due first."""

        def query(conn: psycopg.Connection[Any]) -> list[Reminder]:
            return [Reminder(session_id, *row) for row in conn.execute(_SELECT_REMINDERS, (session_id,))]

        return await self._read(session_id, "read the reminders", query)

    async def due_reminders(self, until: float, *, limit: int) -> Sequence[Reminder]:
        """At most ``limit`` reminders due at or before ``until``, earliest first (by the due index)."""

        def query(conn: psycopg.Connection[Any]) -> list[Reminder]:
            rows = conn.execute(
                "SELECT s.id, r.name, r.due_at, r.message FROM reminders AS r "
                "JOIN sessions AS s ON s.key = r.session "
                "WHERE r.due_at <= %s ORDER BY r.due_at, s.id, r.name LIMIT %s",
                (until, limit),
            )
            return [Reminder(*row) for row in rows]

        return await self._read(None, "find due reminders", query)

    async def due_sessions(self, until: float, *, limit: int) -> Sequence[SessionRecord]:
        """At most ``limit`` sessions whose deadline is at or before ``until``, earliest first."""

        def query(conn: psycopg.Connection[Any]) -> list[SessionRecord]:
            rows = conn.execute(
                f"{_SELECT_RECORD} WHERE deadline <= %s ORDER BY deadline, id LIMIT %s", (until, limit)
            )
            return [_record(row) for row in rows]

        return await self._read(None, "find due sessions", query)

    async def load_reply(self, session_id: str, key: str) -> str | None:
        """The reply stored under idempotency ``key`` for the session, if it is still kept."""

        def query(conn: psycopg.Connection[Any]) -> str | None:
            row = conn.execute(
                "SELECT reply FROM replies WHERE session = (SELECT key FROM sessions WHERE id = %s) "
                "AND key = %s",
                (session_id, key),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._read(session_id, "read a stored reply", query)

    async def stats(self) -> StoreStats:
        """Counts of sessions by status and type, of events and of snapshots (one consistent read)."""

        def query(conn: psycopg.Connection[Any]) -> StoreStats:
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
            by_status, by_type, sessions, events, snapshots = row
            return StoreStats(
                sessions=int(sessions),
                events=int(events),
                snapshots=int(snapshots),
                by_status=json.loads(by_status),
                by_type=json.loads(by_type),
            )

        return await self._read(None, "count sessions", query)

    async def outcomes(self) -> Mapping[str, Outcomes]:
        """How each type's sessions turned out, computed by PostgreSQL in one statement."""

        def query(conn: psycopg.Connection[Any]) -> dict[str, Outcomes]:
            rows = conn.execute(_OUTCOMES, ([status.value for status in ENDED],)).fetchall()
            return {row[0]: _outcomes(*row) for row in rows}

        return await self._read(None, "count outcomes", query)


def _outcomes(
    type_name: str,
    by_status_json: str,
    mean: Any,
    p50: float | None,
    p95: float | None,
    events: Any,
) -> Outcomes:
    by_status: dict[str, int] = json.loads(by_status_json)
    n = sum(by_status.get(status.value, 0) for status in ENDED)
    completed = by_status.get(Status.COMPLETED.value, 0)
    return Outcomes(
        type=type_name,
        by_status=by_status,
        ended=n,
        completed=completed,
        success_rate=completed / n if n else None,
        duration_mean=None if mean is None else float(mean),
        duration_p50=p50,
        duration_p95=p95,
        events_mean=None if events is None else float(events),
    )
