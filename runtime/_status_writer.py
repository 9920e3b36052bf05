"""The one writer of session statuses.

A status change touches up to four things, always in the same order: the session's own log (a
``StatusChanged`` event), the store's index, the cell in memory, then the lifecycle notice and the
metrics. Every path that changes a status (a handler's ``complete``/``fail``/``stop``, pause and
resume, the reaper's expiries and passivations, quarantine, ``revive``, reactivation) goes through
this writer, so none of them can forget one of the four or take them in another order.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, final

from ._lifecycle import LifecycleEvent
from ._status import Status

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._host import SessionHost

__all__ = ["StatusWriter"]

logger = logging.getLogger(__name__)

_EXPIRED = frozenset({Status.TIMED_OUT, Status.ABANDONED})


@final
class StatusWriter:
    """Changes the statuses of one host's sessions."""

    __slots__ = ("host",)

    def __init__(self, host: SessionHost) -> None:
        self.host = host

    def started(self, cell: SessionCell) -> None:
        """A new session: its first notice (the store's index was written by ``start``)."""
        self.host.counters.started(cell)
        self._notify(cell, None, "started")

    def take(self, cell: SessionCell, status: Status, reason: object = None) -> None:
        """Change the status in memory only, with its notice and metrics.

        For what needs no record: a passivated session taking a message again, a recovery adopting
        the status its log ends with, a status that could not be recorded but must hold anyway.
        """
        previous = cell.status
        cell.status_reason = reason
        if status is previous:
            return
        cell.status = status
        cell.status_since = self.host.clock.now()
        if status is Status.PASSIVATED and previous is Status.RUNNING:
            cell.metrics.passivated()
        elif status in _EXPIRED:
            cell.metrics.expired(status.value)
        self._notify(cell, previous, reason)

    def _notify(self, cell: SessionCell, previous: Status | None, reason: object) -> None:
        """The status changed in memory (``previous`` is ``None`` for a new session): the census,
        the lifecycle notice, then the host's hook (a supervisor re-reads the deadlines)."""
        host = self.host
        host.census.moved(cell, previous)
        host.lifecycle_hub.publish(
            LifecycleEvent(
                cell.id,
                cell.cls.type_name or cell.cls.__name__,
                cell.status,
                previous,
                None if reason is None else str(reason),
                cell.version,
                time.time(),
                cell.metadata,
            )
        )
        host.session_changed(cell)

    async def record(
        self,
        cell: SessionCell,
        status: Status,
        reason: object = None,
        *,
        result: object = None,
        required: bool = True,
        error_type: str | None = None,
    ) -> bool:
        """Record the change in the session's log and index, then take it.

        The cell holds the new status from before the append (no message is admitted under the old
        one meanwhile) and gets it back if the append fails. ``result`` (``complete``'s) goes into
        the event and becomes the cell's status reason. ``error_type`` (a quarantine's) goes into
        the index with the reason, for later processes and the command line.

        Returns:
            Whether the change was recorded. With ``required=False`` a failed append is logged and
            the status is taken in memory anyway; otherwise the store's error is raised.
        """
        previous, previous_reason = cell.status, cell.status_reason
        cell.status = status
        try:
            await cell.journal.append_status(status, reason, result)
        except Exception:
            cell.status, cell.status_reason = previous, previous_reason
            if required:
                raise
            logger.exception("session %r: could not record %s", cell.id, status.value)
            recorded = False
        else:
            recorded = True
            if error_type is not None:
                await self._index(cell, status, reason, error_type)
        cell.status = previous
        self.take(cell, status, reason)
        if result is not None:
            cell.status_reason = result
        return recorded

    async def mark(
        self, cell: SessionCell, status: Status, reason: object = None, *, error_type: str | None = None
    ) -> None:
        """Set the status in the store's index only (not the log), then take it.

        For passivation (where the session lives, not what happened to it) and for quarantining a
        session whose log cannot be read (the log is never touched then). A failure of the index is
        logged: the status holds in memory regardless.
        """
        await self._index(cell, status, reason, error_type)
        self.take(cell, status, reason)

    async def _index(self, cell: SessionCell, status: Status, reason: object, error_type: str | None) -> None:
        why = None if reason is None else str(reason)
        try:
            await self.host.store.set_status(cell.id, status, reason=why, error_type=error_type)
        except Exception:
            logger.exception("session %r: could not mark it %s in the index", cell.id, status.value)

    async def revive(self, cell: SessionCell) -> None:
        """Back from ``ABANDONED`` or ``TIMED_OUT``: ``RUNNING`` in the log and the index.

        In memory it is ``PASSIVATED`` (it has no task): its next message activates it, and an
        earlier process reading the index sees a session to reactivate on demand.
        """
        cell.messages = 0  # the count starts again, stored with the revival
        await cell.journal.append_status(Status.RUNNING, "revived")
        cell.error = None
        cell.last_active = self.host.now()
        self.take(cell, Status.PASSIVATED, "revived")
