"""The host's side of durable reminders: the wall clock they are due on, and their delivery.

:mod:`._reminders` holds the reminders themselves (checks, codec, the scheduler, a session's side).
This module holds what ties them to one host: the wall clock (seconds since the epoch, on the
runtime's clock so that it advances with a virtual clock in tests), the scheduler's task, and the
hand-over of a due reminder to its session's mailbox, activating the session if needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, final

from ._exceptions import (
    OwnedElsewhere,
    OwnershipLost,
    SessionNotFound,
    SessionPaused,
    SessionStopped,
    ShuttingDown,
)
from ._mailbox import Envelope, Kind
from ._reminders import Delivery, DueReminder, ReminderScheduler
from ._status import Status

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._host import SessionHost
    from ._records import Reminder

__all__ = ["HostReminders"]


@final
class HostReminders:
    """One host's wall clock and reminder scheduler.

    Args:
        host: the host whose sessions the reminders go to.
        wall_clock: an injected wall clock (``HostOptions.wall_clock``), or ``None`` for the
            runtime's clock moved to ``time.time()`` when the host starts.
    """

    def __init__(self, host: SessionHost, wall_clock: Callable[[], float] | None) -> None:
        self.host = host
        self._wall_clock = wall_clock
        self._offset = 0.0  # set when the host starts (reading the clock needs its loop)
        self.scheduler = self._new_scheduler()

    def _new_scheduler(self) -> ReminderScheduler:
        host = self.host
        return ReminderScheduler(host.store, host.clock, host.wall, self.deliver)

    def wall(self) -> float:
        """The wall-clock time (seconds since the epoch) on the runtime's clock."""
        if self._wall_clock is not None:
            return self._wall_clock()
        # ``host.now`` is the loop's own clock once the host runs (``clock.now`` goes through
        # anyio's backend look-up: several times the cost, on every reminder scheduled and fired).
        return self._offset + self.host.now()

    def start(self, tg: TaskGroup) -> ReminderScheduler:
        """Fix the wall clock's offset and run a new scheduler in ``tg`` (the host starting)."""
        if self._wall_clock is None:
            self._offset = time.time() - self.host.clock.now()
        self.scheduler = scheduler = self._new_scheduler()
        tg.start_soon(scheduler.run)
        return scheduler

    async def deliver(self, reminder: Reminder) -> Delivery:
        """Put a due reminder in its session's mailbox, activating the session if needed."""
        host = self.host
        if host.closing:
            return Delivery.LATER
        try:
            cell = await host.cell(reminder.session_id)
        except SessionNotFound:
            return Delivery.GONE
        status = cell.status
        if status.terminal:
            return Delivery.GONE
        if status is Status.PAUSED:
            return Delivery.LATER
        kept = cell.reminders
        if cell.active and (kept is None or kept.get(reminder.name) != reminder):
            return Delivery.STALE
        # From the session to itself: a reminder is not activity from outside (abandon_after).
        env = Envelope(Kind.INFO, DueReminder(reminder), None, (cell.id,))
        try:
            await cell.deliver(env)
        except SessionPaused:
            return Delivery.LATER
        except SessionStopped:
            return Delivery.GONE
        except ShuttingDown:
            return Delivery.LATER
        except (OwnedElsewhere, OwnershipLost):
            return Delivery.STALE  # another node owns the session: its scheduler fires the reminder
        return Delivery.QUEUED
