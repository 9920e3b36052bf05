"""The sliding window of restarts that trees (restart intensity) and sessions (their budget) share.

Pure and synchronous: the caller passes the time in, so the window is tested with plain numbers; a
supervisor tree feeds it ``anyio.current_time()``, a session its host's clock.
"""

from __future__ import annotations

from collections import deque
from typing import final

__all__ = ["RestartWindow"]


@final
class RestartWindow:
    """A sliding window of restart times, as in OTP's ``supervisor`` (``intensity`` / ``period``).

    A restart at time ``now`` counts together with every earlier one at or after ``now - within``
    (inclusive, as in OTP). While that count is at most ``max_restarts`` the restart is allowed; one more
    and the limit is exceeded.

    Only the newest ``max_restarts + 1`` times are kept: that is enough to tell whether the count is over
    the limit, and bounds memory however long the supervisor runs.

    Args:
        max_restarts: restarts allowed within the window (``0``: the first restart is already too many).
        within: the window's length in seconds, greater than zero.

    Raises:
        ValueError: ``max_restarts`` is negative or ``within`` is not positive.

    .. versionadded:: 0.2
    """

    __slots__ = ("_max_restarts", "_times", "_within")

    def __init__(self, max_restarts: int, within: float) -> None:
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be 0 or more, not {max_restarts!r}")
        if not within > 0:
            raise ValueError(f"within must be a positive number of seconds, not {within!r}")
        self._max_restarts = max_restarts
        self._within = within
        self._times: deque[float] = deque(maxlen=max_restarts + 1)

    @property
    def max_restarts(self) -> int:
        """Restarts allowed within the window."""
        return self._max_restarts

    @property
    def within(self) -> float:
        """The window's length in seconds."""
        return self._within

    def record(self, now: float) -> bool:
        """Record a restart at ``now`` and tell whether it is still within the limit.

        Args:
            now: the time of the restart; calls must pass non-decreasing times.

        Returns:
            ``True`` if at most ``max_restarts`` restarts (this one included) fall within the window
            ``[now - within, now]``; ``False`` once the limit is exceeded.
        """
        times = self._times
        threshold = now - self._within
        while times and times[0] < threshold:
            times.popleft()
        times.append(now)
        return len(times) <= self._max_restarts

    def count(self, now: float) -> int:
        """How many recorded restarts fall within ``[now - within, now]``, capped at ``max_restarts + 1``.

        Args:
            now: the time to look back from; not recorded.
        """
        threshold = now - self._within
        return sum(1 for t in self._times if threshold <= t <= now)

    def __len__(self) -> int:
        """How many restart times are kept: right after ``record(now)``, those in the window."""
        return len(self._times)

    @property
    def times(self) -> tuple[float, ...]:
        """The restart times kept, oldest first (at most ``max_restarts + 1``)."""
        return tuple(self._times)

    def reset(self) -> None:
        """Forget every recorded restart."""
        self._times.clear()
