"""What a host does to a session without a message from a caller: the reaper's levers, and revive.

Passivating an idle session, ending a live one (an active session does it itself, in order with its
messages; an inactive one is ended here without being activated, under its lease when several nodes
share the store), bringing an abandoned or timed-out session back, deleting an ended one. The host's
methods of the same names are the public face; these hold the logic, through the host's public
methods.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from ._exceptions import SessionNotEnded, SessionStopped, ShuttingDown
from ._mailbox import Envelope, Kind
from ._status import Status

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._host import SessionHost
    from ._ref import SessionRef

__all__ = ["delete", "expire", "request_passivation", "revive"]

logger = logging.getLogger(__name__)

_LIVE = (Status.RUNNING, Status.PASSIVATED, Status.PAUSED)


def request_passivation(host: SessionHost, cell: SessionCell, idle_since: float) -> bool:
    """See ``SessionHost.request_passivation``."""
    mailbox = cell.mailbox
    if host.closing or mailbox is None or not cell.active:
        return False
    if not cell.passivation_allowed(idle_since):
        return False
    try:
        mailbox.put_nowait(Envelope(Kind.PASSIVATE, idle_since, None, ()))
    except (anyio.WouldBlock, anyio.ClosedResourceError):
        return False
    return True


async def expire(
    host: SessionHost, session_id: str, status: Status, reason: str, idle_since: float | None
) -> bool:
    """See ``SessionHost.expire``."""
    if host.closing:
        return False
    cell = await host.cell(session_id)
    if cell.status not in _LIVE:
        return False
    if idle_since is not None and cell.last_active > idle_since:
        return False
    if cell.active:
        mailbox = cell.mailbox
        assert mailbox is not None
        try:
            await mailbox.put(Envelope(Kind.EXPIRE, (status, reason, idle_since), None, ()))
        except anyio.ClosedResourceError:
            return False
        return True
    try:
        async with host.leases.writing(cell) as owned:
            if not owned:
                return False  # another node owns it: it ends the session there, in order
            await host.statuses.record(cell, status, reason)
    except Exception:
        logger.exception("session %r: could not record %s", cell.id, status.value)
        return False
    return True


async def revive(host: SessionHost, session_id: str) -> SessionRef:
    """See ``SessionHost.revive``."""
    if host.closing:
        raise ShuttingDown(session_id)
    cell = await host.cell(session_id)
    if cell.status not in (Status.ABANDONED, Status.TIMED_OUT):
        if not cell.status.terminal:
            return cell.ref
        raise SessionStopped(session_id, cell.status, "only abandoned or timed-out sessions revive")
    async with host.leases.writing(cell) as owned:
        if not owned:
            raise await host.leases.owned_elsewhere(session_id)
        await host.statuses.revive(cell)
    return cell.ref


async def delete(host: SessionHost, session_id: str) -> None:
    """See ``SessionHost.delete``."""
    cell = host.cached(session_id)
    if cell is not None:
        if cell.active or not cell.status.terminal:
            raise SessionNotEnded(session_id, cell.status)
        host.forget(session_id)
    await host.store.delete(session_id)
