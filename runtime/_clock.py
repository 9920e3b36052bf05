"""The default clock: anyio's, so trio's MockClock drives every deadline in tests."""

from __future__ import annotations

from typing import final

import anyio

__all__ = ["AnyioClock"]


@final
class AnyioClock:
    """Reads ``anyio.current_time()`` and sleeps with ``anyio.sleep_until``."""

    def now(self) -> float:
        return anyio.current_time()

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep_until(deadline)

    def __repr__(self) -> str:
        return "AnyioClock()"
