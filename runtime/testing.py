"""Helpers for testing code built on sessionvisor, like ``trio.testing``."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import final

import anyio
import sniffio

__all__ = ["ManualClock"]


async def _all_blocked() -> None:
    """``anyio.wait_all_tasks_blocked()``, without its real sleeps on asyncio where it can.

    anyio's asyncio version sleeps 0.1 s of real time whenever some task can still run, so each
    ``advance`` of a busy program cost tenths of a second. Here the loop is turned (``sleep(0)``)
    until every other task waits on a pending future (anyio's own test) and no callback is queued
    (a cancel scope delivers cancellation by callbacks). If that does not settle within a few
    thousand turns, anyio's version decides. On trio, anyio's (the scheduler's exact check) is used.
    """
    if sniffio.current_async_library() != "asyncio":
        await anyio.wait_all_tasks_blocked()
        return
    loop = asyncio.get_running_loop()
    this = asyncio.current_task()
    for _ in range(_SPINS):
        await asyncio.sleep(0)
        if getattr(loop, "_ready", None):
            continue
        for task in asyncio.all_tasks():
            if task is this:
                continue
            waiter = task._fut_waiter  # type: ignore[attr-defined]
            if waiter is None or waiter.done():
                break
        else:
            return
    await anyio.wait_all_tasks_blocked()


_SPINS = 5000


@final
class ManualClock:
    """A clock that moves only when told to, on any backend.

    ``await clock.advance(dt)`` moves time forward, wakes every sleeper whose deadline has passed (in
    deadline order), then waits until all tasks are blocked again, so that a test can assert what the
    woken tasks did.

    .. versionadded:: 0.1
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        wake = anyio.Event()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), wake))
        await wake.wait()

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and let the woken tasks run until all are blocked."""
        if not seconds >= 0:
            raise ValueError(f"time only moves forward, got {seconds}")
        target = self._now + seconds
        # Let the tasks that are runnable now go to sleep first: a sleeper that is about to pick
        # an earlier deadline (woken by what the test just did) must not see time jump past it.
        await _all_blocked()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, wake = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            wake.set()
            await _all_blocked()
        self._now = target
        await _all_blocked()

    def jump(self, seconds: float) -> None:
        """Move time forward by ``seconds`` without waking anyone.

        Whoever reads ``now()`` sees the new time; sleepers whose deadline has passed wake at the
        next ``advance``. For tests that act on due work by hand (a reaper pass, say) and must not
        let the sleepers race them to it.

        .. versionadded:: 0.2
        """
        if not seconds >= 0:
            raise ValueError(f"time only moves forward, got {seconds}")
        self._now += seconds

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now}, sleepers={len(self._sleepers)})"
