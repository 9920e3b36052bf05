"""Prometheus instruments for sessions and supervisor trees (the endpoint: ``_metrics_server``).

Every supervisor has its own :class:`~prometheus_client.CollectorRegistry` (never the global
``REGISTRY``), so that two runtimes in one process keep separate figures and tests start from zero.
Metric names start with ``sessionvisor_``. Labels are bounded: session type, status, message kind,
reason, outcome, stage; a session id is never a label (millions of ids would be millions of series).

The hot paths (a message handled, events recorded) pay for a dictionary look-up and the
``prometheus_client`` increments themselves: every child is labelled when its :class:`TypeMetrics` is
made, and the message counter is derived from the handling-time histogram at scrape time instead of
being incremented a second time per message. ``bench/bench_metrics.py`` measures it.

Figures that are cheaper to read than to keep (sessions by status, mailbox depths, the store's group
commit) are read by callbacks when Prometheus scrapes.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final, Generic, TypeVar, final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = [
    "MESSAGE_KINDS",
    "MetricsServer",
    "SessionMetrics",
    "TreeMetrics",
    "TypeMetrics",
    "serve_metrics",
]

# The endpoint lives in its own module; its names stay importable from here too.
from ._metrics_server import MetricsServer, serve_metrics

logger = logging.getLogger(__name__)

MESSAGE_KINDS: Final = ("call", "cast", "info", "system")
"""The kinds of message a session handles, the values of the ``kind`` label."""

# Histogram.observe scans its bounds in order: the common (fast) cases come first and there are few.
_APPEND_BUCKETS = (1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_HANDLING_BUCKETS = (*_APPEND_BUCKETS, 5, 10)
_RECOVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = tuple(1 << i for i in range(13))  # 1 .. 4096: SQLiteStore's power-of-two buckets

_MAX_LABEL_VALUES = 100
"""Distinct values one free-form label (a reason, a stage) may take before the rest become "other"."""

_OTHER = "other"

# SQLiteStore.statistics() fields, read with getattr so that any store with such a method fits.
_STORE_COUNTERS = (
    ("commits", "sessionvisor_store_commits", "Transactions committed by the store's writer."),
    ("failed_commits", "sessionvisor_store_failed_commits", "Transactions that failed and were rolled back."),
    ("isolated_retries", "sessionvisor_store_isolated_retries", "Batches retried one savepoint per op."),
    ("operations", "sessionvisor_store_operations", "Write operations committed (all kinds)."),
    ("appends", "sessionvisor_store_appends", "Successful appends."),
    ("events", "sessionvisor_store_events", "Events written by those appends."),
    (
        "rejected",
        "sessionvisor_store_rejected_operations",
        "Operations refused (exists, not found, conflict).",
    ),
)
_STORE_GAUGES = (
    ("largest_batch", "sessionvisor_store_largest_batch", "The most operations in one transaction."),
    ("queued", "sessionvisor_store_queued_operations", "Operations waiting for the store's writer now."),
    ("idle_readers", "sessionvisor_store_idle_readers", "Idle reader connections kept open."),
)
_NODE_COUNTERS = (
    ("acquired", "sessionvisor_leases_acquired", "Session leases this node acquired (takeovers included)."),
    ("released", "sessionvisor_leases_released", "Session leases this node gave up (passivation, stop)."),
    ("lost", "sessionvisor_leases_lost", "Session leases that moved on to another node."),
    ("takeovers", "sessionvisor_lease_takeovers", "Sessions of dead nodes this node took over."),
    ("fencing_refusals", "sessionvisor_fencing_refusals", "Appends the store refused: the lease moved on."),
    (
        "renewal_failures",
        "sessionvisor_lease_renewal_failures",
        "Lease renewals that could not reach the store.",
    ),
)
_NODE_GAUGES = (("leases_held", "sessionvisor_leases_held", "Session leases this node holds now."),)
_STORE_BATCH = "sessionvisor_store_batch_size"
_SESSIONS = "sessionvisor_sessions"
_MAILBOXES = "sessionvisor_mailbox_messages"
_MESSAGES = "sessionvisor_messages"
_HANDLING = "sessionvisor_message_handling_seconds"


def _register_all(registry: CollectorRegistry, collectors: Iterable[Collector]) -> None:
    """Register every collector, or none of them, with an error that says what to do."""
    done: list[Collector] = []
    try:
        for collector in collectors:
            registry.register(collector)
            done.append(collector)
    except ValueError as exc:
        for collector in done:
            registry.unregister(collector)
        raise ValueError(
            f"this CollectorRegistry holds sessionvisor metrics already ({exc}): give each "
            f"supervisor its own registry, or share one SessionMetrics/TreeMetrics between them"
        ) from exc


@final
class _Bounded:
    """The children of one labelled counter, by the value of its last label, at most 100 of them.

    Label values come from the code (exception class names, reasons), so they are few; the bound
    keeps a bug (say, a message in a reason) from creating a series per call.
    """

    __slots__ = ("_children", "_metric", "_name", "_prefix")

    def __init__(self, metric: Counter, prefix: tuple[str, ...], name: str) -> None:
        self._metric = metric
        self._prefix = prefix
        self._name = name
        self._children: dict[str, Callable[[float], None]] = {}

    def inc(self, value: str, amount: float = 1) -> None:
        inc = self._children.get(value)
        if inc is None:
            inc = self._bind(value)
        inc(amount)

    def _bind(self, value: str) -> Callable[[float], None]:
        if len(self._children) >= _MAX_LABEL_VALUES:
            if _OTHER not in self._children:
                logger.warning(
                    "metric %s: more than %d distinct label values; counting the rest (first: %r) "
                    'as "other". Label values must be bounded: pass a category, not a message',
                    self._name,
                    _MAX_LABEL_VALUES,
                    value,
                )
            value = _OTHER
            inc = self._children.get(value)
            if inc is not None:
                return inc
        inc = self._children[value] = self._metric.labels(*self._prefix, value).inc
        return inc


_Child = TypeVar("_Child")


@final
class _LeanChild:
    """One (type, kind) series of the handling-time histogram: bucket counts and a sum.

    Observing is a bisect and two additions, with no lock: it runs on the event loop's thread for
    every message. A scrape (in the exposition server's thread) may see one observation in the
    count before the sum; a scrape is a sample anyway.
    """

    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum = 0.0


class _Lean(Generic[_Child]):
    """What the lean instruments share: a name, help text, label names, a child per label values."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = labels
        self._children: dict[tuple[str, ...], _Child] = {}

    def _new_child(self) -> _Child:
        raise NotImplementedError

    def labels(self, *values: str) -> _Child:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._new_child()
        return child


@final
class _LeanHistogram(_Lean[_LeanChild]):
    """A histogram for per-message and per-event paths, kept cheaper than prometheus_client's.

    ``Histogram.observe`` takes a lock and walks the buckets (about 650 ns); this costs about a
    quarter of that, and it is paid by every message. Exposed as an ordinary Prometheus histogram.
    """

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...], buckets: tuple[float, ...]):
        super().__init__(name, documentation, labels)
        self.bounds = tuple(float(b) for b in buckets)

    def _new_child(self) -> _LeanChild:
        return _LeanChild(len(self.bounds) + 1)

    def observer(self, *values: str) -> Callable[[float], None]:
        """A function that observes one value into the ``values`` series."""
        child = self.labels(*values)
        counts, bounds = child.counts, self.bounds

        def observe(seconds: float) -> None:
            counts[bisect_left(bounds, seconds)] += 1
            child.sum += seconds

        return observe

    def _empty(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=list(self.label_names))

    def describe(self) -> list[Metric]:
        return [self._empty()]

    def collect(self) -> Iterator[Metric]:
        family = self._empty()
        for values, child in list(self._children.items()):
            counts = list(child.counts)
            running = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
                running += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            family.add_metric(list(values), buckets, child.sum)
        yield family


@final
class _LeanCount:
    """One series of a :class:`_LeanCounter`: a number, added to without a lock (see _LeanChild)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


@final
class _LeanCounter(_Lean[_LeanCount]):
    """A labelled counter for the per-event path, cheaper than prometheus_client's (no lock).

    Exposed as an ordinary Prometheus counter (``<name>_total``).
    """

    def _new_child(self) -> _LeanCount:
        return _LeanCount()

    def _empty(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=list(self.label_names))

    def describe(self) -> list[Metric]:
        return [self._empty()]

    def collect(self) -> Iterator[Metric]:
        family = self._empty()
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family


@final
class _Instruments:
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
        self.recorded = _LeanCounter(
            "sessionvisor_events_recorded", "Events recorded (durably appended).", ("type",)
        )
        self.append_seconds = _LeanHistogram(
            "sessionvisor_append_duration_seconds",
            "Time for one record() to be durably appended (group commit included).",
            ("type",),
            _APPEND_BUCKETS,
        )
        self.handling = _LeanHistogram(
            _HANDLING,
            "Time to handle one message, by kind (call, cast, info, system).",
            ("type", "kind"),
            _HANDLING_BUCKETS,
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
        "_dead_letter",
        "_expired",
        "_handled",
        "_passivated",
        "_quarantined",
        "_recorded",
        "_recorded_seconds",
        "_recovered",
        "_recovery_seconds",
        "_replayed",
        "_restarted",
        "_started",
        "type_name",
    )

    def __init__(self, instruments: _Instruments, type_name: str) -> None:
        """Made by :meth:`SessionMetrics.for_type`; not meant to be constructed directly."""
        t = type_name
        self.type_name = type_name
        """The ``type`` label of every series of this object."""
        i = instruments
        self._started: Callable[[], None] = i.starts.labels(t).inc
        self._restarted = _Bounded(i.restarts, (t,), "sessionvisor_session_restarts")
        self._recovered = _Bounded(i.recoveries, (t,), "sessionvisor_recoveries")
        self._recovery_seconds: Callable[[float], None] = i.recovery_seconds.labels(t).observe
        self._replayed: Callable[[float], None] = i.replayed.labels(t).inc
        self._recorded = i.recorded.labels(t)
        self._recorded_seconds = i.append_seconds.observer(t)
        self._handled: dict[str, Callable[[float], None]] = {
            kind: i.handling.observer(t, kind) for kind in MESSAGE_KINDS
        }
        self._passivated: Callable[[], None] = i.passivations.labels(t).inc
        self._expired = _Bounded(i.expirations, (t,), "sessionvisor_expirations")
        self._dead_letter: Callable[[], None] = i.dead_letters.labels(t).inc
        self._quarantined: Callable[[], None] = i.quarantines.labels(t).inc

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
        self._recorded_seconds(seconds)

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


@final
class _ScrapeCollector:
    """The figures read at scrape time: sessions by status, mailboxes, the store, message counts."""

    def __init__(self, handling: _LeanHistogram) -> None:
        self.handling = handling
        self.sessions: Callable[[], Mapping[tuple[str, str], int]] | None = None
        self.mailboxes: Callable[[], Mapping[str, int]] | None = None
        self.store_statistics: Callable[[], object] | None = None
        self.ownership_statistics: Callable[[], object] | None = None

    def describe(self) -> list[Metric]:
        families: list[Metric] = [
            GaugeMetricFamily(_SESSIONS, "", labels=["type", "status"]),
            GaugeMetricFamily(_MAILBOXES, "", labels=["type"]),
            CounterMetricFamily(_MESSAGES, "", labels=["type", "kind"]),
            HistogramMetricFamily(_STORE_BATCH, ""),
        ]
        families += [CounterMetricFamily(name, "") for _, name, _ in _STORE_COUNTERS]
        families += [GaugeMetricFamily(name, "") for _, name, _ in _STORE_GAUGES]
        families += [CounterMetricFamily(name, "") for _, name, _ in _NODE_COUNTERS]
        families += [GaugeMetricFamily(name, "") for _, name, _ in _NODE_GAUGES]
        return families

    def collect(self) -> Iterator[Metric]:
        yield self._messages()
        for family in (self._sessions, self._mailboxes, self._store, self._node):
            try:
                yield from family()
            except Exception:
                # One failing callback must not take the whole scrape (and every other figure) down.
                logger.warning("a sessionvisor metrics callback failed during a scrape", exc_info=True)

    def _messages(self) -> Metric:
        family = CounterMetricFamily(
            _MESSAGES, "Messages handled, by kind (call, cast, info, system).", labels=["type", "kind"]
        )
        count = _HANDLING + "_count"
        for metric in self.handling.collect():
            for sample in metric.samples:
                if sample.name == count:
                    family.add_metric([sample.labels["type"], sample.labels["kind"]], sample.value)
        return family

    def _sessions(self) -> Iterator[Metric]:
        if self.sessions is None:
            return
        family = GaugeMetricFamily(_SESSIONS, "Sessions by type and status.", labels=["type", "status"])
        for (type_name, status), n in sorted(self.sessions().items()):
            family.add_metric([type_name, status], n)
        yield family

    def _mailboxes(self) -> Iterator[Metric]:
        if self.mailboxes is None:
            return
        family = GaugeMetricFamily(
            _MAILBOXES, "Messages queued in mailboxes, by session type.", labels=["type"]
        )
        for type_name, n in sorted(self.mailboxes().items()):
            family.add_metric([type_name], n)
        yield family

    def _node(self) -> Iterator[Metric]:
        if self.ownership_statistics is None:
            return
        stats = self.ownership_statistics()
        for field, name, doc in _NODE_COUNTERS:
            value = _number(getattr(stats, field, None))
            if value is not None:
                yield CounterMetricFamily(name, doc, value=value)
        for field, name, doc in _NODE_GAUGES:
            value = _number(getattr(stats, field, None))
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)

    def _store(self) -> Iterator[Metric]:
        if self.store_statistics is None:
            return
        stats = self.store_statistics()
        for field, name, doc in _STORE_COUNTERS:
            value = _number(getattr(stats, field, None))
            if value is not None:
                yield CounterMetricFamily(name, doc, value=value)
        for field, name, doc in _STORE_GAUGES:
            value = _number(getattr(stats, field, None))
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)
        sizes = getattr(stats, "batch_sizes", None)
        if isinstance(sizes, Mapping):
            # Cumulative counts at fixed bounds, so that every scrape has the same series. There is
            # no _sum: the store counts the operations of committed transactions only.
            buckets: list[tuple[str, float]] = []
            for bound in _BATCH_BUCKETS:
                buckets.append((str(bound), float(sum(n for size, n in sizes.items() if size <= bound))))
            buckets.append(("+Inf", float(sum(sizes.values()))))
            yield HistogramMetricFamily(
                _STORE_BATCH,
                "Operations per group-committed transaction (cumulative, power-of-two buckets).",
                buckets=buckets,
            )


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@final
class SessionMetrics:
    """The metrics of one session supervisor, in its own registry.

    Args:
        registry: where to register them; a new ``CollectorRegistry`` when ``None``. Never pass
            ``prometheus_client.REGISTRY`` when more than one supervisor may run in the process.

    Raises:
        ValueError: ``registry`` holds sessionvisor's session metrics already.

    .. versionadded:: 0.1
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        """The registry to serve (``serve_metrics(metrics.registry)``)."""
        self._instruments = i = _Instruments()
        self._scrape = _ScrapeCollector(i.handling)
        self._rejections = Counter(
            "sessionvisor_rejections",
            "Messages and starts refused, by reason (too_many_sessions, rate_limited, mailbox_full, "
            "shutting_down...).",
            ["reason"],
            registry=None,
        )
        self._removals = Counter(
            "sessionvisor_reaper_removals",
            "Sessions removed by the reaper, by reason.",
            ["reason"],
            registry=None,
        )
        self._snapshot_failures = Counter(
            "sessionvisor_snapshot_failures",
            "Snapshots that failed, by stage (encode, save...).",
            ["stage"],
            registry=None,
        )
        # Sessions outlive their process (issue 12): reminders, resumptions, stored expiries.
        self._reminders_fired = Counter(
            "sessionvisor_reminders_fired",
            "Durable reminders delivered to handle_info.",
            ["type"],
            registry=None,
        )
        self._reminder_lateness = Histogram(
            "sessionvisor_reminder_lateness_seconds",
            "How long after its due time a reminder reached handle_info (a downtime included).",
            ["type"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0),
            registry=None,
        )
        self._resumed = Counter(
            "sessionvisor_sessions_resumed",
            "Sessions (resume_on_start) activated at start-up because they were running before.",
            ["type"],
            registry=None,
        )
        self._stored_expired = Counter(
            "sessionvisor_stored_sessions_expired",
            "Stored sessions ended or deleted by their deadlines without being activated, by reason.",
            ["type", "reason"],
            registry=None,
        )
        _register_all(
            self.registry,
            (
                *i.collectors(),
                self._rejections,
                self._removals,
                self._snapshot_failures,
                self._reminders_fired,
                self._reminder_lateness,
                self._resumed,
                self._stored_expired,
                self._scrape,
            ),
        )
        self._rejected = _Bounded(self._rejections, (), "sessionvisor_rejections")
        self._removed = _Bounded(self._removals, (), "sessionvisor_reaper_removals")
        self._snapshot_failed = _Bounded(self._snapshot_failures, (), "sessionvisor_snapshot_failures")
        self._types: dict[str, TypeMetrics] = {}

    def __repr__(self) -> str:
        return f"<SessionMetrics types={sorted(self._types)}>"

    def for_type(self, type_name: str) -> TypeMetrics:
        """The instruments of sessions of ``type_name`` (made once, then the same object)."""
        metrics = self._types.get(type_name)
        if metrics is None:
            metrics = self._types[type_name] = TypeMetrics(self._instruments, type_name)
        return metrics

    def observe_sessions(self, fn: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        """Read ``fn()`` at each scrape: session counts by ``(type, status)``, for
        ``sessionvisor_sessions``. Replaces an earlier callback."""
        self._scrape.sessions = fn

    def observe_mailboxes(self, fn: Callable[[], Mapping[str, int]]) -> None:
        """Read ``fn()`` at each scrape: queued messages by session type, for
        ``sessionvisor_mailbox_messages``. Replaces an earlier callback."""
        self._scrape.mailboxes = fn

    def observe_store(self, store: object) -> None:
        """Expose ``store.statistics()`` at each scrape, if the store has that method.

        The fields of :class:`SQLiteStoreStatistics` that are present are read (group-commit batch
        sizes, commits, appends, events, queue length...); a store without ``statistics()``, such
        as ``MemoryStore``, adds nothing. Replaces an earlier store.
        """
        statistics = getattr(store, "statistics", None)
        self._scrape.store_statistics = statistics if callable(statistics) else None

    def observe_ownership(self, statistics: Callable[[], object]) -> None:
        """Expose a node's lease counts (``Ownership.statistics()``) at each scrape.

        .. versionadded:: 0.2
        """
        self._scrape.ownership_statistics = statistics

    def rejected(self, reason: str) -> None:
        """A start or message was refused: "too_many_sessions", "rate_limited", "mailbox_full",
        "shutting_down"..."""
        self._rejected.inc(reason)

    def removed(self, reason: str) -> None:
        """The reaper removed a session, for ``reason`` (a ``RemovalReason`` value)."""
        self._removed.inc(reason)

    def snapshot_failed(self, stage: str) -> None:
        """A snapshot failed at ``stage`` ("encode", "save"...)."""
        self._snapshot_failed.inc(stage)

    def dead_letter(self, type_name: str) -> None:
        """A message to a session of ``type_name`` could not be delivered."""
        self.for_type(type_name).dead_letter()

    def reminder_fired(self, type_name: str, late_by: float) -> None:
        """A reminder reached ``handle_info`` ``late_by`` seconds after its due time.

        .. versionadded:: 0.2
        """
        self._reminders_fired.labels(type_name).inc()
        self._reminder_lateness.labels(type_name).observe(max(0.0, late_by))

    def resumed(self, type_name: str) -> None:
        """A ``resume_on_start`` session was activated at start-up.

        .. versionadded:: 0.2
        """
        self._resumed.labels(type_name).inc()

    def stored_expired(self, type_name: str, reason: str) -> None:
        """A stored session was ended or deleted by its deadline without being activated.

        .. versionadded:: 0.2
        """
        self._stored_expired.labels(type_name, reason).inc()


@final
class TreeMetrics:
    """Restarts and escalations in supervisor trees (child ids are static names: fine as labels).

    One object serves every supervisor of a tree: the ``supervisor`` label tells them apart.

    Args:
        registry: where to register them; a new ``CollectorRegistry`` when ``None``.

    Raises:
        ValueError: ``registry`` holds sessionvisor's tree metrics already.

    .. versionadded:: 0.1
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._restarts = Counter(
            "sessionvisor_supervisor_restarts",
            "Children restarted by a supervisor tree.",
            ["supervisor", "child"],
            registry=None,
        )
        self._escalations = Counter(
            "sessionvisor_supervisor_escalations",
            "Supervisors that exceeded their restart intensity and gave up (escalated to the parent).",
            ["supervisor"],
            registry=None,
        )
        _register_all(self.registry, (self._restarts, self._escalations))
        self._restarted: dict[tuple[str, str], Callable[[], None]] = {}
        self._escalated: dict[str, Callable[[], None]] = {}

    def restarted(self, supervisor: str, child: str) -> None:
        """``supervisor`` restarted its child ``child``."""
        key = (supervisor, child)
        inc = self._restarted.get(key)
        if inc is None:
            inc = self._restarted[key] = self._restarts.labels(supervisor, child).inc
        inc()

    def escalated(self, supervisor: str) -> None:
        """``supervisor`` exceeded its restart intensity and stopped."""
        inc = self._escalated.get(supervisor)
        if inc is None:
            inc = self._escalated[supervisor] = self._escalations.labels(supervisor).inc
        inc()
