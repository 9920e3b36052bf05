"""Ownership of sessions by nodes: the records a lease store returns.

Several processes (nodes) share one store. Each active session is owned by exactly one node through a
lease kept in the store: the owning node's name, a fencing ``epoch`` that grows by one whenever the
lease changes hands (or is taken again), and the time it ``expires`` unless renewed. Every append of
an owned session carries the epoch, and the store refuses it, in the same transaction, once the lease
has moved on (``OwnershipLost``), so that a node that was paused or cut off can never write after its
successor. Lease times are the store's clock (PostgreSQL's ``clock_timestamp()``), the one clock every
node shares; they are seconds since the epoch.

See :class:`runtime.abc.LeaseStore` for the operations and :class:`runtime.PostgresStore` for the store
that implements them.
"""

from __future__ import annotations

import attrs

__all__ = ["Lease", "NodeInfo", "Renewal"]


@attrs.frozen
class Lease:
    """A node's ownership of one session.

    Attributes:
        session_id: the session owned.
        node: the owning node's name.
        epoch: the fencing epoch: every append made under this lease carries it.
        expires: when the lease ends unless renewed (the store's clock, seconds since the epoch).
        address: where the owning node can be reached (``Node.address``), if it said.

    .. versionadded:: 0.2
    """

    session_id: str
    node: str
    epoch: int
    expires: float
    address: str | None = None


@attrs.frozen
class NodeInfo:
    """A node that joined the store, as the store last heard of it.

    Attributes:
        name: the node's name.
        address: where it can be reached, if it said.
        started_at: when it first joined (the store's clock).
        heartbeat: when it last renewed its leases (the store's clock).
        lease_ttl: how long its leases last without renewal.
        alive: whether it renewed within ``lease_ttl`` of the store's clock now.
        leases: the leases it holds that have not expired.

    .. versionadded:: 0.2
    """

    name: str
    address: str | None
    started_at: float
    heartbeat: float
    lease_ttl: float
    alive: bool
    leases: int


@attrs.frozen
class Renewal:
    """What one renewal of a node's leases found.

    Attributes:
        renewed: how many leases were renewed.
        lost: the leases that had moved on to another node (or were released meanwhile): the
            sessions they were for must stop on this node.
        expires: when the renewed leases end now (the store's clock).

    .. versionadded:: 0.2
    """

    renewed: int
    lost: tuple[Lease, ...]
    expires: float
