"""How an incarnation of a session ends: stop, completion, expiry, passivation, shutdown.

Whatever the way, an incarnation's timers are cancelled and its ``on_stop`` runs exactly once
(``stop_instance``); when the actor task itself ends, its mailbox is closed and every message still
queued in it is answered (``end_task``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import anyio

from ._status import Status

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._session import Session

__all__ = [
    "Passivated",
    "end_task",
    "ending",
    "expire",
    "passivate",
    "shut_down",
    "stop_instance",
    "terminate",
]

logger = logging.getLogger(__name__)

_RUNNING: Final = Status.RUNNING


class Passivated(Exception):
    """The incarnation passivated itself: end the task, or start the next one if mail came."""


def ending(cell: SessionCell) -> bool:
    """Whether the turn just taken ended the session (complete, fail, stop, expiry)."""
    status = cell.status
    return cell.stop_reason is not None or (status is not _RUNNING and status.terminal)


async def passivate(cell: SessionCell, instance: Session[Any]) -> None:
    """Snapshot, stop the incarnation, mark it PASSIVATED; the next message reactivates it.

    Without snapshots (``snapshot_every = None``) the next message replays the whole log.

    Passivation is where the session lives (memory or store), not something that happened to it: it
    is marked in the store's index, not recorded in its log (README, "Statuses").

    Raises:
        Passivated: always, to end the incarnation's turn loop.
    """
    await cell.journal.snapshot_if_behind(instance)
    await stop_instance(cell, instance, "passivated")
    # A passivated session keeps almost nothing in memory (issue 5 budgets 1 KB for it): its
    # recent transitions go too. Its log is its durable history.
    cell.history = None
    await cell.host.statuses.mark(cell, Status.PASSIVATED, "idle")
    raise Passivated


async def expire(cell: SessionCell, status: Status, reason: str) -> None:
    """End the session in a terminal status the runtime decided (TTLs, limits)."""
    await cell.host.statuses.record(cell, status, reason)
    cell.stop_reason = reason


async def terminate(cell: SessionCell, instance: Session[Any]) -> None:
    """End after a turn that completed, failed or stopped the session."""
    reason = cell.stop_reason
    if not cell.status.terminal:
        reason = reason or "normal"
        await cell.host.statuses.record(cell, Status.STOPPED, reason, required=False)
    elif reason is None:
        reason = cell.status.value
    await stop_instance(cell, instance, reason)


async def shut_down(cell: SessionCell, instance: Session[Any]) -> None:
    """The host is shutting down and the mailbox is drained: snapshot, then ``on_stop``."""
    await cell.journal.snapshot_if_behind(instance)
    await stop_instance(cell, instance, "shutdown")


async def stop_instance(cell: SessionCell, instance: Session[Any], reason: str) -> None:
    """Cancel the incarnation's timers and run its ``on_stop`` once."""
    timers, cell.timers = cell.timers, None
    if timers is not None:
        timers.cancel_all()
    if cell.instance is not instance:
        return
    cell.instance = None
    try:
        await instance.on_stop(reason)
    except Exception:
        logger.exception("session %r: on_stop(%r) raised", cell.id, reason)


async def end_task(cell: SessionCell) -> None:
    """The actor task is ending: close the mailbox and answer whatever is still queued in it."""
    host = cell.host
    if cell.instance is not None:
        # Cancelled (a shutdown past its drain timeout): the incarnation still gets its on_stop.
        with anyio.move_on_after(host.drain_timeout):
            await stop_instance(cell, cell.instance, "shutdown")
    cell.active = False
    mailbox, cell.mailbox = cell.mailbox, None
    if mailbox is not None:
        mailbox.close()
        while (env := mailbox.poll()) is not None:
            cell.reject(env)
    if cell.status.terminal or host.closing:
        cell.fail_deferred(cell.refusal())
