"""Waiting for work done in real threads, from tests that may run under trio's autojump MockClock.

Under ``MockClock(autojump_threshold=0)`` virtual time jumps whenever every task is blocked, and a task
waiting on a worker thread counts as blocked: a poll bounded by ``anyio.sleep`` or a number of
iterations can run out in a few real milliseconds while the thread (an export, a store write, an HTTP
request) still works, and fails only on a busy machine. Wait in real time instead, bounded by a
real-time deadline.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["wait_real"]


async def wait_real(
    condition: Callable[[], bool | Awaitable[bool]], what: str, *, timeout: float = 30.0
) -> None:
    """Return once ``condition()`` holds; poll every few real milliseconds for up to ``timeout`` s.

    Raises:
        AssertionError: ``condition`` did not hold within ``timeout`` real seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {timeout:g} real seconds")
        # A real sleep, in a thread: the threads being waited for get the time (and the GIL).
        await anyio.to_thread.run_sync(time.sleep, 0.005)
