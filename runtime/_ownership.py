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

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, final

import anyio
import attrs

from ._clock import AnyioClock, wait_until
from ._exceptions import StoreError

if TYPE_CHECKING:
    from .abc import Clock, LeaseStore

__all__ = ["Lease", "NodeInfo", "Ownership", "OwnershipStatistics", "Renewal"]

logger = logging.getLogger(__name__)

_MAX_RENEWALS = 2
"""Renewal rounds in flight at once: one that hangs, and the next, on another connection."""


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


@attrs.frozen(kw_only=True)
class OwnershipStatistics:
    """What a node's :class:`Ownership` has done since it joined (a snapshot).

    Attributes:
        node: the node's name.
        leases_held: leases held right now.
        acquired: leases acquired (first messages, activations, takeovers included).
        released: leases given up (passivation, stop).
        lost: leases that moved on to another node, or that this node stopped trusting because it
            could not renew them for ``lease_ttl``.
        takeovers: sessions of a dead node claimed by this one.
        renewals: renewal rounds that reached the store (one statement each, whatever the number of
            leases).
        renewal_failures: renewal rounds that failed (the store was unreachable).
        fencing_refusals: appends of this node the store refused because the lease had moved on.

    .. versionadded:: 0.2
    """

    node: str
    leases_held: int
    acquired: int
    released: int
    lost: int
    takeovers: int
    renewals: int
    renewal_failures: int
    fencing_refusals: int


@final
class Ownership:
    """One node's leases on one :class:`runtime.abc.LeaseStore`: acquired, renewed, released.

    The host acquires a lease before it activates a session and releases it after the session
    passivated or stopped. :meth:`run` renews every lease held, with one statement per tick (every
    ``lease_ttl / 3`` seconds), and calls ``on_lost`` for each lease that moved on; when it cannot reach
    the store for ``lease_ttl`` it stops trusting all of them (another node may own them by then) and
    calls ``on_lost`` for each too, so that a node cut off from the store stops its copies within
    ``lease_ttl`` (they could not have acknowledged anything meanwhile: their appends cannot commit).

    Args:
        store: the shared store.
        node: this node's name.
        address: where clients can reach this node.
        lease_ttl: seconds a lease lasts without renewal.
        clock: where the renewal loop reads time and sleeps (default: anyio's clock).

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        store: LeaseStore,
        *,
        node: str,
        address: str | None = None,
        lease_ttl: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be positive, not {lease_ttl!r}")
        self.store = store
        self.node = node
        self.address = address
        self.lease_ttl = lease_ttl
        self._clock: Clock = clock if clock is not None else AnyioClock()
        self._held: dict[str, int] = {}
        self._acquiring: dict[str, anyio.Event] = {}
        self._acquired = 0
        self._released = 0
        self._lost = 0
        self._takeovers = 0
        self._renewals = 0
        self._renewal_failures = 0
        self._refusals = 0

    def __repr__(self) -> str:
        return f"Ownership(node={self.node!r}, leases={len(self._held)})"

    def statistics(self) -> OwnershipStatistics:
        """The counters, as a frozen snapshot."""
        return OwnershipStatistics(
            node=self.node,
            leases_held=len(self._held),
            acquired=self._acquired,
            released=self._released,
            lost=self._lost,
            takeovers=self._takeovers,
            renewals=self._renewals,
            renewal_failures=self._renewal_failures,
            fencing_refusals=self._refusals,
        )

    def holds(self, session_id: str) -> bool:
        """Whether this node holds (and still trusts) a lease on ``session_id``."""
        return session_id in self._held

    async def join(self) -> None:
        """Announce this node to the store."""
        await self.store.join(self.node, address=self.address, lease_ttl=self.lease_ttl)

    async def leave(self) -> None:
        """Release every lease and leave the membership."""
        await self.store.leave()
        self._released += len(self._held)
        self._held.clear()

    async def acquire(self, session_id: str) -> Lease:
        """Own ``session_id`` (see :meth:`runtime.abc.LeaseStore.acquire`).

        Raises:
            OwnedElsewhere: another live node owns it.
        """
        # One acquisition per session at a time: two in flight would each take a new epoch, and
        # the one answered last would leave this node fencing its appends with a stale epoch.
        while (pending := self._acquiring.get(session_id)) is not None:
            await pending.wait()
        self._acquiring[session_id] = done = anyio.Event()
        try:
            lease = await self.store.acquire(session_id)
        finally:
            del self._acquiring[session_id]
            done.set()
        self._held[session_id] = lease.epoch
        self._acquired += 1
        return lease

    async def release(self, session_id: str) -> None:
        """Give up the lease on ``session_id``, if held."""
        if self._held.pop(session_id, None) is not None:
            self._released += 1
        await self.store.release(session_id)

    async def locate(self, session_id: str) -> Lease | None:
        """The live lease on ``session_id``, or ``None`` when no node owns it."""
        return await self.store.locate(session_id)

    async def take_over(self, types: Sequence[str], limit: int) -> Sequence[Lease]:
        """Claim up to ``limit`` sessions of dead nodes that must run now; the caller activates them."""
        claimed = await self.store.claim_orphans(types=types, limit=limit)
        for lease in claimed:
            self._held[lease.session_id] = lease.epoch
        self._acquired += len(claimed)
        self._takeovers += len(claimed)
        return claimed

    async def next_expiry(self) -> float | None:
        """Seconds until another node's soonest live lease expires, or ``None`` if none holds one."""
        return await self.store.next_expiry()

    def note_refusal(self, session_id: str) -> None:
        """The store refused an append of ``session_id``: its lease moved on."""
        self._refusals += 1
        if self._held.pop(session_id, None) is not None:
            self._lost += 1

    async def renew_once(self, on_lost: Callable[[Lease], object], last_ok: float) -> float:
        """One renewal round; returns when the last one that reached the store started."""
        started = self._clock.now()
        try:
            renewal = await self.store.renew()
        except StoreError:
            self._renewal_failures += 1
            logger.warning("node %r could not renew its %d leases", self.node, len(self._held), exc_info=True)
            if started - last_ok >= self.lease_ttl:
                self._give_up(on_lost)
            return last_ok
        self._renewals += 1
        for lease in renewal.lost:
            if self._held.get(lease.session_id) == lease.epoch:
                del self._held[lease.session_id]
                self._lost += 1
                on_lost(lease)
        return started

    def _give_up(self, on_lost: Callable[[Lease], object]) -> None:
        """Not renewed for lease_ttl: another node may own any of the leases by now."""
        stale, self._held = self._held, {}
        self._lost += len(stale)
        for sid, epoch in stale.items():
            on_lost(Lease(sid, self.node, epoch, 0.0))

    async def run(self, on_lost: Callable[[Lease], object]) -> None:
        """Renew the leases every ``lease_ttl / 3`` seconds until cancelled.

        A renewal may hang rather than fail (a link that holds packets, a half-open connection: the
        store's thread waits on the socket). The loop does not wait for it past the leases' end:
        ``lease_ttl`` after the last renewal that reached the store, it gives every lease up whether
        the one in flight has answered or not, and it starts the next rounds meanwhile (at most
        two in flight), so that a healthy connection renews as soon as there is one.
        """
        interval = self.lease_ttl / 3
        # When the last renewal that reached the store started (or the leases were last given up:
        # those held since are younger): every lease held lasts until lease_ttl after it at least.
        last_ok = self._clock.now()
        in_flight = 0

        async def renewal(done: anyio.Event) -> None:
            nonlocal last_ok, in_flight
            in_flight += 1
            try:
                last_ok = max(last_ok, await self.renew_once(on_lost, last_ok))
            finally:
                in_flight -= 1
                done.set()

        async with anyio.create_task_group() as tg:
            while True:
                await self._clock.sleep_until(self._clock.now() + interval)
                if in_flight < _MAX_RENEWALS:
                    done = anyio.Event()
                    tg.start_soon(renewal, done)
                    await wait_until(self._clock, last_ok + self.lease_ttl, done)
                now = self._clock.now()
                if now - last_ok >= self.lease_ttl:
                    if self._held:
                        logger.warning(
                            "node %r: no renewal answered for %g s (lease_ttl): giving its %d leases up",
                            self.node,
                            now - last_ok,
                            len(self._held),
                        )
                        self._give_up(on_lost)
                    last_ok = now  # every lease held from now on was taken since
