"""The PostgreSQL store's side of :class:`runtime.abc.LeaseStore`: the node, its leases, its fences.

Once a store has joined as a node, every write of a session's copy carries the lease it holds: an
append its ``(node, epoch)`` in its arguments, the other writes (status, snapshot, reminders, deadline)
as the operation's ``fence``. The writer checks them against the lease rows in the same transaction
(:mod:`._postgres_writer`), so a stale copy writes nothing once its lease has moved on. The statements
are in :mod:`._postgres_leases`; they run on the reader pool, each its own transaction.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, TypeVar

from .._exceptions import OwnedElsewhere, StoreError
from . import _postgres_leases as leases
from ._group_commit import Kind

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import psycopg

    from .._ownership import Lease, NodeInfo, Renewal

__all__ = ["Ownership"]

T = TypeVar("T")

_FENCED = frozenset(
    {Kind.SET_STATUS, Kind.SAVE_SNAPSHOT, Kind.SET_REMINDER, Kind.REMOVE_REMINDER, Kind.SET_DEADLINE}
)
"""A session's writes besides its appends (which carry their fence themselves): fenced by the lease a
node's copy holds, so that a stale copy's status, snapshot, reminders or deadline never land."""


class Ownership:
    """The LeaseStore methods of :class:`~.postgres.PostgresStore` (a mixin over its reads)."""

    def __init__(self) -> None:
        # This store's node, once joined, and the epochs of its leases.
        self._node: str | None = None
        self._address: str | None = None
        self._lease_ttl = 10.0
        self._fences: dict[str, int] = {}

    @abstractmethod
    async def _read(self, session_id: str | None, action: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on a reader connection in a worker thread (see ``StoreFront``)."""

    def _fence(self, kind: Kind, session_id: str) -> tuple[str, int] | None:
        """The lease a node's copy writes under: refused once the lease moved on."""
        if kind in _FENCED and self._node is not None:
            epoch = self._fences.get(session_id)
            if epoch is not None:
                return (self._node, epoch)
        return None

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
        if not isinstance(node, str) or not node:
            raise ValueError(f"a node's name must be a non-empty str, not {node!r}")
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be positive, not {lease_ttl!r}")
        await self._read(None, "join as a node", leases.join, node, address, lease_ttl)
        self._node, self._address, self._lease_ttl = node, address, lease_ttl

    async def leave(self) -> None:
        """Release every lease of this node and remove it from the membership."""
        node = self._need_node("leave")
        await self._read(None, "leave", leases.leave, node)
        self._fences.clear()
        self._node = None

    async def acquire(self, session_id: str) -> Lease:
        """Own ``session_id`` under a new epoch: free, released, expired, or already this node's.

        Raises:
            OwnedElsewhere: another live node holds the lease.
        """
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
        node = self._need_node("release a lease")
        epoch = self._fences.pop(session_id, None)
        if epoch is not None:
            await self._read(session_id, "release a lease", leases.release, session_id, node, epoch)

    async def renew(self) -> Renewal:
        """Renew all of this node's leases and its heartbeat in one statement; report the lost ones.

        A lost lease stays known to the store (its appends are refused) until :meth:`release`.
        """
        node = self._need_node("renew leases")
        held = dict(self._fences)
        return await self._read(
            None, "renew leases", leases.renew, node, self._address, self._lease_ttl, held
        )

    async def locate(self, session_id: str) -> Lease | None:
        """The live lease on ``session_id``, or ``None`` when no node owns it."""
        return await self._read(session_id, "locate a session", leases.owner_of, session_id)

    async def owners(self, session_ids: Sequence[str]) -> dict[str, Lease]:
        """The live leases on ``session_ids`` (one query), by session id; unowned ones are left out."""
        return await self._read(None, "locate sessions", leases.owners, list(session_ids))

    async def nodes(self) -> Sequence[NodeInfo]:
        """The nodes that joined and have not left, by name, with their liveness and lease counts."""
        return await self._read(None, "list nodes", leases.nodes)

    async def claim_orphans(self, *, types: Sequence[str], limit: int) -> Sequence[Lease]:
        """Take over up to ``limit`` sessions of dead owners that must run now (see LeaseStore)."""
        node = self._need_node("take over sessions")
        address, ttl, wall = self._address, self._lease_ttl, time.time()
        claimed = await self._read(
            None, "take over sessions", leases.claim_orphans, node, address, ttl, types, limit, wall
        )
        for lease in claimed:
            self._fences[lease.session_id] = lease.epoch
        return claimed

    async def next_expiry(self) -> float | None:
        """Seconds until another node's soonest live lease expires (see LeaseStore)."""
        node = self._need_node("look for leases about to expire")
        return await self._read(None, "look for leases about to expire", leases.next_expiry, node)
