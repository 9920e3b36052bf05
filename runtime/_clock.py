"""The default clock: anyio's, so trio's MockClock drives every deadline in tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import anyio

if TYPE_CHECKING:
    from .abc import Clock

__all__ = ["AnyioClock", "wait_until"]


@final
class AnyioClock:
    """Reads ``anyio.current_time()`` and sleeps with ``anyio.sleep_until``."""

    def now(self) -> float:
        return anyio.current_time()

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep_until(deadline)

    def __repr__(self) -> str:
        return "AnyioClock()"


async def wait_until(clock: Clock, deadline: float, event: anyio.Event) -> bool:
    """Wait until ``event`` is set or ``clock`` reaches ``deadline``; whether ``event`` was set."""
    if isinstance(clock, AnyioClock):
        with anyio.CancelScope(deadline=deadline):
            await event.wait()
        return event.is_set()

    async def alarm() -> None:
        await clock.sleep_until(deadline)
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(alarm)
        await event.wait()
        tg.cancel_scope.cancel()
    return event.is_set()
