"""Session statuses."""

from __future__ import annotations

import enum

__all__ = ["Status"]


class Status(enum.Enum):
    """Where a session is in its life.

    ``RUNNING``, ``PASSIVATED`` and ``PAUSED`` are live: the session still takes messages (a passivated
    one is reactivated by its next message; a paused one answers ``SessionPaused``). The others are
    terminal: messages to the session raise ``SessionStopped``.
    """

    RUNNING = "running"
    PASSIVATED = "passivated"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    ABANDONED = "abandoned"
    STOPPED = "stopped"

    @property
    def terminal(self) -> bool:
        """Whether the session takes no more messages in this status."""
        return self not in _LIVE


_LIVE = frozenset({Status.RUNNING, Status.PASSIVATED, Status.PAUSED})
