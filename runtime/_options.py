"""``HostOptions``: how a host runs its sessions, decided once before it starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from ._clock import AnyioClock
from ._events import EventRegistry, default_registry
from ._history import HistoryConfig
from ._inspect import HealthThresholds

if TYPE_CHECKING:
    from .abc import Clock, RestartStrategy

__all__ = ["HostOptions"]


def _clock(clock: Clock | None) -> Clock:
    return AnyioClock() if clock is None else clock


def _events(events: EventRegistry | None) -> EventRegistry:
    return default_registry if events is None else events


@attrs.frozen(kw_only=True)
class HostOptions:
    """How a host runs its sessions. Built once (``SessionSupervisor`` builds it from its arguments
    and policies) and handed to the host, which never changes it.

    Attributes:
        restarts: decides, per crash, whether and when a session restarts.
        clock: where every deadline reads time: timers, backoff, call, stop, pause and resume
            timeouts, the drain on shutdown (default: anyio's clock).
        events: the event registry (default: the one ``@event`` fills).
        drain_timeout: how long leaving the host lets queued messages finish.
        max_concurrent_recoveries: how many sessions may replay their logs at once.
        history: how many recent transitions each session keeps (for ``inspect``).
        health: when ``inspect`` calls a session stale, stuck or error-prone.
        message_limit: end sessions as ``TIMED_OUT`` after this many handled messages.
        measure_states: estimate each recovered state's JSON size (for memory limits).
        self_sends_count: a session's messages to itself (timers, self-casts) count as activity.
        wall_clock: the wall clock that reminders and stored deadlines are due on, in seconds since
            the epoch. Default (``None``): ``clock`` moved to ``time.time()`` when the host starts,
            so that it advances with a virtual clock in tests; a test that runs two hosts one after
            the other on a virtual clock passes one that both share.

    .. versionadded:: 0.2
    .. versionchanged:: 0.2 ``wall_clock`` (a keyword of ``SessionHost`` before).
    """

    restarts: RestartStrategy
    clock: Clock = attrs.field(default=None, converter=_clock)
    events: EventRegistry = attrs.field(default=None, converter=_events)
    drain_timeout: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    max_concurrent_recoveries: int = attrs.field(default=50, validator=attrs.validators.ge(1))
    history: HistoryConfig = attrs.field(factory=HistoryConfig)
    health: HealthThresholds = attrs.field(factory=HealthThresholds)
    message_limit: int | None = None
    measure_states: bool = False
    self_sends_count: bool = False
    wall_clock: Callable[[], float] | None = None
