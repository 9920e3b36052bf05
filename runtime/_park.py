"""Parking one task until another wakes it, at the lowest cost each backend allows.

A mailbox's receiver and a call's caller each wait for exactly one other party. ``anyio.Event``
would do, but it costs about a microsecond to make and, on asyncio, holds a deque of its own (an
idle session is a parked receiver, and there may be 100,000 of them): here the waiter parks on a
bare future (asyncio) or as a task (trio), and the waker reschedules it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sniffio
import trio

__all__ = ["Parking"]


class Parking:
    """Base for objects with one waiter: ``await self.park()``, and ``self._wake()`` from elsewhere.

    ``_trio`` says which backend parks (``None``: found at the first park); ``_parked`` is the
    waiter's future or task while it waits, else ``None``.
    """

    __slots__ = ("_parked", "_trio")

    def __init__(self, trio: bool | None = None) -> None:
        self._trio = trio
        self._parked: Any = None

    async def park(self) -> None:
        if self._trio is None:
            self._trio = sniffio.current_async_library() == "trio"
        if self._trio:
            self._parked = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_trio)
        else:
            future = self._parked = asyncio.get_running_loop().create_future()
            try:
                await future
            finally:
                self._parked = None

    def _abort_trio(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        """Reschedule the parked waiter, if any (call with ``_parked`` set, from the same loop)."""
        parked, self._parked = self._parked, None
        if isinstance(parked, asyncio.Future):
            if not parked.done():
                parked.set_result(None)
        elif parked is not None:
            trio.lowlevel.reschedule(parked)
