"""A hashed timer wheel: deadlines in buckets of ``granularity`` seconds.

Pushing is O(1); taking what is due costs in proportion to what is due (plus the few buckets in
between), however many deadlines wait further out. A binary heap of every deadline would cost
O(log n) per pop, and on a heap of 100,000 entries that is mostly cache misses: a reaper pass over
1,000 due sessions grew with the total (measured in bench/bench_reaper.py).
"""

from __future__ import annotations

import heapq
import math
from typing import Generic, TypeVar

__all__ = ["DeadlineWheel"]

T = TypeVar("T")


class DeadlineWheel(Generic[T]):
    """Items keyed by deadline; ``pop_due(now)`` takes every item whose deadline is ``<= now``."""

    def __init__(self, granularity: float = 1.0) -> None:
        if granularity <= 0:
            raise ValueError(f"granularity must be > 0, got {granularity}")
        self.granularity = granularity
        self._buckets: dict[int, list[tuple[float, T]]] = {}
        self._keys: list[int] = []  # a heap of the bucket keys in use: small, and cache-friendly
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(self, deadline: float, item: T) -> None:
        key = math.floor(deadline / self.granularity)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = []
            heapq.heappush(self._keys, key)
        bucket.append((deadline, item))
        self._len += 1

    def next_deadline(self) -> float:
        """The earliest deadline held (``inf`` when empty); costs the size of one bucket."""
        if not self._keys:
            return math.inf
        return min(d for d, _ in self._buckets[self._keys[0]])

    def pop_due(self, now: float) -> list[T]:
        """Remove and return every item whose deadline is ``<= now``, earliest buckets first."""
        due: list[T] = []
        current = math.floor(now / self.granularity)
        keys, buckets = self._keys, self._buckets
        while keys and keys[0] <= current:
            key = keys[0]
            bucket = buckets[key]
            if key < current:
                due.extend(item for _, item in bucket)
                taken = len(bucket)
                del buckets[key]
                heapq.heappop(keys)
            else:  # the bucket now falls in: only part of it may be due
                keep = [(d, item) for d, item in bucket if d > now]
                taken = len(bucket) - len(keep)
                due.extend(item for d, item in bucket if d <= now)
                if keep:
                    buckets[key] = keep
                else:
                    del buckets[key]
                    heapq.heappop(keys)
                self._len -= taken
                break
            self._len -= taken
        return due
