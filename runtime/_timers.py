"""``send_after``: the cheap, non-durable timers of one incarnation of a session.

Each timer is a task in the host's task group, sleeping on the runtime's clock inside a cancel scope
that the timer's handle owns. A crash, stop or passivation cancels every timer of the incarnation
(``on_start`` re-arms what it needs).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, final

import anyio

from ._mailbox import Envelope, Kind

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._session import Session

__all__ = ["TimerHandle", "Timers"]


@final
class TimerHandle:
    """A timer set with ``send_after``; ``cancel()`` stops it if it has not fired yet.

    .. versionadded:: 0.1
    """

    __slots__ = ("_scope", "deadline", "message")

    def __init__(self, deadline: float, message: object) -> None:
        self.deadline = deadline
        self.message = message
        self._scope = anyio.CancelScope()

    def cancel(self) -> None:
        """Stop the timer. Harmless if it has fired or been cancelled already."""
        self._scope.cancel()

    @property
    def cancelled(self) -> bool:
        return self._scope.cancel_called

    async def _run(self, timers: Timers, instance: Session[Any]) -> None:
        with self._scope:
            await timers.cell.host.clock.sleep_until(self.deadline)
            timers.forget(self)
            await timers.deliver(self.message, instance)
        timers.forget(self)

    def __repr__(self) -> str:
        return f"<TimerHandle at {self.deadline:g} for {self.message!r}>"


@final
class Timers:
    """The pending ``send_after`` timers of one session (made on its first timer)."""

    __slots__ = ("cell", "pending")

    def __init__(self, cell: SessionCell) -> None:
        self.cell = cell
        self.pending: set[TimerHandle] = set()

    def start(self, instance: Session[Any], delay: float, message: object) -> TimerHandle:
        """Deliver ``message`` to ``instance``'s ``handle_info`` after ``delay`` seconds."""
        cell = self.cell
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"session {cell.id!r}: send_after delay must be >= 0, got {delay}")
        handle = TimerHandle(cell.host.clock.now() + delay, message)
        self.pending.add(handle)
        cell.host.spawn(handle._run, self, instance)
        return handle

    async def deliver(self, message: object, instance: Session[Any]) -> None:
        """Put the timer's message in the mailbox if its incarnation is still the live one."""
        cell = self.cell
        mailbox = cell.mailbox
        if cell.instance is not instance or mailbox is None:
            return
        if cell.host.self_sends_count:
            cell.last_active = cell.host.now()
        try:
            await mailbox.put(Envelope(Kind.INFO, message, None, ()))
        except anyio.ClosedResourceError:
            pass

    def forget(self, handle: TimerHandle) -> None:
        """The timer fired or was cancelled: it is no longer pending."""
        self.pending.discard(handle)

    def cancel_all(self) -> None:
        """The incarnation ends: cancel every timer it set."""
        for handle in self.pending:
            handle.cancel()
        self.pending.clear()
