"""Call timeouts: one watchdog task per host instead of a cancel scope per call.

A cancel scope with a deadline costs 5 to 20 microseconds to enter and leave (on asyncio it puts a
timer on the loop's heap and takes it off again), as much as a whole call round trip. Here a call
registers its reply in a bucket of the deadline wheel (a dict insert) and removes it when answered
(a dict delete); a single task wakes at the end of each bucket that still holds replies and fails
them with ``CallTimeout``. A timeout fires at most ``granularity`` seconds late.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import final

import anyio

from ._exceptions import CallTimeout
from ._session import Reply

__all__ = ["CallDeadlines"]


@final
class CallDeadlines:
    """The pending call timeouts of one host, and the watchdog that enforces them."""

    def __init__(self, now: Callable[[], float], granularity: float = 0.005) -> None:
        self.now = now
        self.granularity = granularity
        self._buckets: dict[int, dict[Reply, float]] = {}
        self._keys: list[int] = []  # heap of the bucket keys in use
        self._wake: anyio.Event | None = None
        self._target = math.inf
        self.expired = 0

    def __len__(self) -> int:
        return sum(map(len, self._buckets.values()))

    def add(self, reply: Reply, deadline: float, timeout: float) -> None:
        """Fail ``reply`` with ``CallTimeout(timeout)`` if it is still pending at ``deadline``."""
        key = math.ceil(deadline / self.granularity)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            heapq.heappush(self._keys, key)
            if key * self.granularity < self._target and self._wake is not None:
                self._wake.set()
        bucket[reply] = timeout
        reply.deadline_key = key

    def discard(self, reply: Reply) -> None:
        """The reply came (or its caller left): forget its deadline."""
        bucket = self._buckets.get(reply.deadline_key)
        if bucket is not None:
            bucket.pop(reply, None)

    def expire(self) -> None:
        """Fail every reply whose bucket has ended; drop buckets left empty."""
        now, g = self.now(), self.granularity
        keys, buckets = self._keys, self._buckets
        while keys and (keys[0] * g <= now or not buckets.get(keys[0])):
            bucket = buckets.pop(heapq.heappop(keys), None)
            if not bucket:
                continue
            for reply, timeout in bucket.items():
                if reply.fail(CallTimeout(reply.session_id, timeout)):
                    self.expired += 1

    async def run(self) -> None:
        """The watchdog: sleep until the earliest bucket ends (or an earlier one appears)."""
        while True:
            self.expire()
            self._target = self._keys[0] * self.granularity if self._keys else math.inf
            wake = self._wake = anyio.Event()
            delay = self._target - self.now()
            with anyio.move_on_after(delay if delay < math.inf else None):
                await wake.wait()
            self._wake = None
