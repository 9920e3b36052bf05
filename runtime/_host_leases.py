"""The host's side of the leases when several nodes share one store (DESIGN.md, "Many nodes").

:mod:`._ownership` holds the leases themselves (acquire, renew, release, the fencing epochs). This module
holds what ties them to one host: joining and leaving the store as a node, one start per id at a
time, the lease held while writing for a session that is not active here, a lease lost by the
renewal loop (that copy stops), where a session lives, and the nodes' figures for ``stats``. Without
a node every method is a no-op that lets the host carry on as the only writer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, final

import anyio

from ._exceptions import OwnedElsewhere, OwnershipLost, SessionError

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._cell import SessionCell
    from ._ownership import Lease, NodeInfo, Ownership, OwnershipStatistics

__all__ = ["HostLeases"]

logger = logging.getLogger(__name__)


@final
class HostLeases:
    """One host's leases (``ownership``, or ``None`` for a store of one process).

    Args:
        ownership: this node's leases.
        cached: the host's look-up of a loaded session's cell (``SessionHost.cached``).
    """

    def __init__(self, ownership: Ownership | None, cached: Callable[[str], SessionCell | None]) -> None:
        self.ownership = ownership
        self._cached = cached
        # Starts of one id in progress here. A second start waits for the first, so that the
        # loser of the race cannot release the lease the winner runs under.
        self._starting: dict[str, anyio.Event] = {}

    async def join(self) -> None:
        """Join the store as this node (before anything runs)."""
        if self.ownership is not None:
            await self.ownership.join()

    def run(self, tg: TaskGroup) -> None:
        """Renew the leases in ``tg``; a lost one stops this node's copy of its session."""
        if self.ownership is not None:
            tg.start_soon(self.ownership.run, self.lost)

    async def leave(self, timeout: float) -> None:
        """Give every lease back and leave the store (at most ``timeout`` seconds; never raises)."""
        ownership = self.ownership
        if ownership is None:
            return
        try:
            with anyio.move_on_after(timeout):
                await ownership.leave()
        except SessionError:
            logger.warning("node %r could not leave the store cleanly", ownership, exc_info=True)

    @asynccontextmanager
    async def starting(self, session_id: str, refuse_taken: Callable[[], None]) -> AsyncIterator[None]:
        """Hold ``session_id``'s lease for its start (taken inside; one start per id at a time).

        Raises:
            OwnedElsewhere: another node has it (started it, perhaps).
            SessionExists: raised by ``refuse_taken`` after waiting for an earlier start of the id.
        """
        ownership = self.ownership
        if ownership is None:
            yield
            return
        while (earlier := self._starting.get(session_id)) is not None:
            await earlier.wait()
            refuse_taken()
        self._starting[session_id] = started = anyio.Event()
        try:
            await ownership.acquire(session_id)
            yield
        finally:
            del self._starting[session_id]
            started.set()

    async def release(self, session_id: str) -> None:
        """Give the lease back (a start that failed), shielded from cancellation."""
        if self.ownership is not None:
            with anyio.CancelScope(shield=True):
                await self.ownership.release(session_id)

    @asynccontextmanager
    async def writing(self, cell: SessionCell) -> AsyncIterator[bool]:
        """Hold the session's lease while writing for an inactive session.

        Yields whether this node may write: always without a node; with one, after taking the lease
        (``False`` when another node owns the session). The lease is given back afterwards unless the
        session was activated here meanwhile (its incarnation keeps it).
        """
        ownership = self.ownership
        if ownership is None or ownership.holds(cell.id):
            yield True
            return
        try:
            await ownership.acquire(cell.id)
        except OwnedElsewhere:
            yield False
            return
        try:
            yield True
        finally:
            if not cell.active:
                with anyio.CancelScope(shield=True):
                    await ownership.release(cell.id)

    def lost(self, lease: Lease) -> None:
        """The lease on ``lease.session_id`` moved on: stop this node's copy (its callers get
        ``OwnershipLost``); called by the renewal loop."""
        cell = self._cached(lease.session_id)
        if cell is None or not cell.active:
            return
        cell.disown(OwnershipLost(lease.session_id, lease.node, lease.epoch))

    async def locate(self, session_id: str) -> Lease | None:
        """The live lease on ``session_id``, or ``None`` (always without a node)."""
        if self.ownership is None:
            return None
        return await self.ownership.locate(session_id)

    async def owned_elsewhere(self, session_id: str) -> OwnedElsewhere:
        """The error for a session that another node owns, naming it when it is known."""
        lease = await self.locate(session_id)
        if lease is None:
            return OwnedElsewhere(session_id, "another node", None)
        return OwnedElsewhere(session_id, lease.node, lease.address)

    async def figures(self) -> tuple[OwnershipStatistics | None, tuple[NodeInfo, ...]]:
        """This node's lease statistics and every node sharing the store (for ``stats``)."""
        ownership = self.ownership
        if ownership is None:
            return None, ()
        nodes = tuple(await ownership.store.nodes())
        return ownership.statistics(), nodes
