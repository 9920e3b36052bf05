"""Timeouts: one watchdog task per host, on the host's clock, instead of a cancel scope per call.

A cancel scope with a deadline costs 5 to 20 microseconds to enter and leave (on asyncio it puts a
timer on the loop's heap and takes it off again), as much as a whole call round trip. Here a call
registers its reply in a bucket of the deadline wheel (a dict insert) and removes it when answered
(a dict delete); a single task wakes at the end of each bucket that still holds entries and fails
them with ``CallTimeout`` (or ``OperationTimeout`` for stop, pause and resume). A cancel scope can
be registered too, for the rare waits that are not a reply (room in a full mailbox).

Every deadline reads the host's clock: anyio's by default, or the clock injected in its place
(``ManualClock`` in tests), so that a timeout fires when that clock says so. A timeout fires at the
end of its bucket: at most ``granularity`` seconds late, never early.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, final

import anyio

from ._clock import AnyioClock, wait_until
from ._exceptions import CallTimeout, OperationTimeout
from ._session import Reply

if TYPE_CHECKING:
    from collections.abc import Callable

    from .abc import Clock

__all__ = ["CallDeadlines"]

Entry = Reply | anyio.CancelScope


@final
class CallDeadlines:
    """The pending timeouts of one host, and the watchdog that enforces them.

    Args:
        clock: the host's clock (its ``sleep_until`` is used unless it is anyio's own).
        now: the same clock's ``now`` (anyio's bound to the running loop, when it is anyio's).
        granularity: the width of a bucket, in seconds.
    """

    def __init__(self, clock: Clock, now: Callable[[], float], granularity: float = 0.005) -> None:
        self.clock = clock
        self.now = now
        self.granularity = granularity
        self._buckets: dict[int, dict[Entry, float]] = {}
        self._keys: list[int] = []  # heap of the bucket keys in use
        self._operations: dict[Reply, str] = {}  # stop, pause, resume: the rare replies not a call's
        self._wake: anyio.Event | None = None
        self._target = math.inf
        self.expired = 0

    def __len__(self) -> int:
        return sum(map(len, self._buckets.values()))

    def add(self, entry: Entry, deadline: float, timeout: float, operation: str | None = None) -> int:
        """Fail the reply (or cancel the scope) if it is still pending at ``deadline``.

        Returns:
            The key to ``discard`` it with.
        """
        key = math.ceil(deadline / self.granularity)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            heapq.heappush(self._keys, key)
            if key * self.granularity < self._target and self._wake is not None:
                self._wake.set()
        bucket[entry] = timeout
        if operation is not None:
            assert isinstance(entry, Reply)
            self._operations[entry] = operation
        return key

    def discard(self, entry: Entry, key: int) -> None:
        """The reply came (or its caller left): forget its deadline."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.pop(entry, None)
        if self._operations:
            self._operations.pop(entry, None)  # type: ignore[arg-type]

    def expire(self) -> None:
        """Fail every entry whose bucket has ended; drop buckets left empty."""
        now, g = self.now(), self.granularity
        keys, buckets = self._keys, self._buckets
        while keys and (keys[0] * g <= now or not buckets.get(keys[0])):
            bucket = buckets.pop(heapq.heappop(keys), None)
            if not bucket:
                continue
            for entry, timeout in bucket.items():
                if isinstance(entry, anyio.CancelScope):
                    entry.cancel()
                    self.expired += 1
                    continue
                operation = self._operations.pop(entry, None) if self._operations else None
                error = (
                    CallTimeout(entry.session_id, timeout)
                    if operation is None
                    else OperationTimeout(entry.session_id, operation, timeout)
                )
                if entry.fail(error):
                    self.expired += 1

    async def run(self) -> None:
        """The watchdog: sleep until the earliest bucket ends (or an earlier one appears)."""
        anyio_clock = isinstance(self.clock, AnyioClock)
        while True:
            self.expire()
            target = self._target = self._keys[0] * self.granularity if self._keys else math.inf
            wake = self._wake = anyio.Event()
            if target == math.inf:
                await wake.wait()
            elif anyio_clock:
                with anyio.move_on_after(target - self.now()):
                    await wake.wait()
            else:
                await wait_until(self.clock, target, wake)
            self._wake = None
