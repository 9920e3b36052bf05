"""The per-type instruments of a session supervisor: what every message, record and restart counts.

``Instruments`` holds the labelled metrics of one ``SessionMetrics``; a ``TypeMetrics`` binds every
child of one session type once, so that the hot paths (a message handled, events recorded, a
message queued) pay for an attribute look-up and an addition, never a label look-up.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Final, final

from prometheus_client import Counter, Histogram
from prometheus_client.registry import Collector

from ._mailbox import QueuedCount
from ._metrics_lean import Bounded, LeanCounter, LeanHistogram

__all__ = ["HANDLING_BUCKETS", "MESSAGE_KINDS", "Instruments", "TypeMetrics"]

MESSAGE_KINDS: Final = ("call", "cast", "info", "system")
"""The kinds of message a session handles, the values of the ``kind`` label."""

# Histogram.observe scans its bounds in order: the common (fast) cases come first and there are few.
_APPEND_BUCKETS = (1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
HANDLING_BUCKETS = (*_APPEND_BUCKETS, 5, 10)
_RECOVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_HANDLING = "sessionvisor_message_handling_seconds"


@final
class Instruments:
    """The labelled metrics behind every :class:`TypeMetrics` of one :class:`SessionMetrics`."""

    def __init__(self) -> None:
        self.starts = Counter("sessionvisor_session_starts", "Sessions started.", ["type"], registry=None)
        self.restarts = Counter(
            "sessionvisor_session_restarts",
            "Sessions restarted after a crash, by the crash's exception class.",
            ["type", "reason"],
            registry=None,
        )
        self.recoveries = Counter(
            "sessionvisor_recoveries",
            "Recoveries (state rebuilt from snapshot and log), by outcome.",
            ["type", "outcome"],
            registry=None,
        )
        self.recovery_seconds = Histogram(
            "sessionvisor_recovery_duration_seconds",
            "Time to rebuild a session's state from its snapshot and log.",
            ["type"],
            buckets=_RECOVERY_BUCKETS,
            registry=None,
        )
        self.replayed = Counter(
            "sessionvisor_events_replayed", "Events replayed by recoveries.", ["type"], registry=None
        )
        # Lean (lock-free) like the handling histogram: these two are paid by every record().
        self.recorded = LeanCounter(
            "sessionvisor_events_recorded", "Events recorded (durably appended).", ("type",)
        )
        self.append_seconds = LeanHistogram(
            "sessionvisor_append_duration_seconds",
            "Time for one record() to be durably appended (group commit included).",
            ("type",),
            _APPEND_BUCKETS,
        )
        self.handling = LeanHistogram(
            _HANDLING,
            "Time to handle one message, by kind (call, cast, info, system).",
            ("type", "kind"),
            HANDLING_BUCKETS,
        )
        self.passivations = Counter(
            "sessionvisor_passivations",
            "Sessions passivated (snapshot, task stopped).",
            ["type"],
            registry=None,
        )
        self.expirations = Counter(
            "sessionvisor_expirations",
            "Sessions ended by a time or usage limit, by reason.",
            ["type", "reason"],
            registry=None,
        )
        self.dead_letters = Counter(
            "sessionvisor_dead_letters", "Messages that could not be delivered.", ["type"], registry=None
        )
        self.quarantines = Counter(
            "sessionvisor_session_quarantines",
            "Sessions quarantined as FAILED: their restart budget was spent (the session-level escalation).",
            ["type"],
            registry=None,
        )

    def collectors(self) -> tuple[Collector, ...]:
        return (
            self.starts,
            self.restarts,
            self.recoveries,
            self.recovery_seconds,
            self.replayed,
            self.recorded,
            self.append_seconds,
            self.handling,
            self.passivations,
            self.expirations,
            self.dead_letters,
            self.quarantines,
        )


@final
class TypeMetrics:
    """The instruments of one session type, every child labelled once, here.

    Get it from :meth:`SessionMetrics.for_type`, once per type, and keep it: its methods are meant
    for hot paths.

    .. versionadded:: 0.1
    """

    __slots__ = (
        "_append_bounds",
        "_append_seconds",
        "_dead_letter",
        "_expired",
        "_handled",
        "_passivated",
        "_quarantined",
        "_recorded",
        "_recovered",
        "_recovery_seconds",
        "_replayed",
        "_restarted",
        "_started",
        "queued",
        "type_name",
    )

    def __init__(self, instruments: Instruments, type_name: str) -> None:
        """Made by :meth:`SessionMetrics.for_type`; not meant to be constructed directly."""
        t = type_name
        self.type_name = type_name
        """The ``type`` label of every series of this object."""
        i = instruments
        self._started: Callable[[], None] = i.starts.labels(t).inc
        self._restarted = Bounded(i.restarts, (t,), "sessionvisor_session_restarts")
        self._recovered = Bounded(i.recoveries, (t,), "sessionvisor_recoveries")
        self._recovery_seconds: Callable[[float], None] = i.recovery_seconds.labels(t).observe
        self._replayed: Callable[[float], None] = i.replayed.labels(t).inc
        self._recorded = i.recorded.labels(t)
        # Observed inline by recorded() (a call less per record than through an observer).
        self._append_seconds = i.append_seconds.labels(t)
        self._append_bounds = i.append_seconds.bounds
        self._handled: dict[str, Callable[[float], None]] = {
            kind: i.handling.observer(t, kind) for kind in MESSAGE_KINDS
        }
        self._passivated: Callable[[], None] = i.passivations.labels(t).inc
        self._expired = Bounded(i.expirations, (t,), "sessionvisor_expirations")
        self._dead_letter: Callable[[], None] = i.dead_letters.labels(t).inc
        self._quarantined: Callable[[], None] = i.quarantines.labels(t).inc
        self.queued = QueuedCount()
        """Messages queued in the mailboxes of this type's sessions (each mailbox adds and takes)."""

    def __repr__(self) -> str:
        return f"<TypeMetrics {self.type_name!r}>"

    def handled(self, kind: str, seconds: float) -> None:
        """One message of ``kind`` ("call", "cast", "info", "system") was handled in ``seconds``.

        Counts it in ``sessionvisor_messages_total`` and ``sessionvisor_message_handling_seconds``
        with one histogram observation (the counter is the histogram's count, read at scrape time).

        Raises:
            ValueError: ``kind`` is not one of :data:`MESSAGE_KINDS`.
        """
        try:
            observe = self._handled[kind]
        except KeyError:
            raise ValueError(f"message kind must be one of {MESSAGE_KINDS}, not {kind!r}") from None
        observe(seconds)

    def handled_observer(self, kind: str) -> Callable[[float], None]:
        """The function behind ``handled(kind, seconds)``, for a caller that knows ``kind`` once.

        Calling it with the seconds costs one histogram observation and nothing else.

        Raises:
            ValueError: ``kind`` is not one of :data:`MESSAGE_KINDS`.
        """
        try:
            return self._handled[kind]
        except KeyError:
            raise ValueError(f"message kind must be one of {MESSAGE_KINDS}, not {kind!r}") from None

    def recorded(self, count: int, seconds: float) -> None:
        """One ``record()`` appended ``count`` events durably in ``seconds``."""
        self._recorded.value += count
        child = self._append_seconds
        child.counts[bisect_left(self._append_bounds, seconds)] += 1
        child.sum += seconds

    def started(self) -> None:
        """A new session of this type was started (not a restart, not a reactivation)."""
        self._started()

    def restarted(self, reason: str) -> None:
        """A session restarted after a crash; ``reason`` is the exception's class name."""
        self._restarted.inc(reason)

    def recovered(self, outcome: str, seconds: float, events: int) -> None:
        """A recovery ended with ``outcome`` ("ok", "corrupt", "failed"...) after ``seconds``,
        having replayed ``events`` events."""
        self._recovered.inc(outcome)
        self._recovery_seconds(seconds)
        if events:
            self._replayed(events)

    def passivated(self) -> None:
        """A session was passivated (snapshot taken, task stopped)."""
        self._passivated()

    def expired(self, reason: str) -> None:
        """A session was ended by a limit; ``reason`` names it ("idle", "max_age", "max_messages"...)."""
        self._expired.inc(reason)

    def dead_letter(self) -> None:
        """A message to a session of this type could not be delivered."""
        self._dead_letter()

    def quarantined(self) -> None:
        """A session spent its restart budget and was quarantined as ``FAILED``.

        .. versionadded:: 0.1
        """
        self._quarantined()
