"""Prometheus instruments for sessions and supervisor trees (the endpoint: ``_metrics_server``).

Every supervisor has its own :class:`~prometheus_client.CollectorRegistry` (never the global
``REGISTRY``), so that two runtimes in one process keep separate figures and tests start from zero.
Metric names start with ``sessionvisor_``. Labels are bounded: session type, status, message kind,
reason, outcome, stage; a session id is never a label (millions of ids would be millions of series).

This module holds the registries (``SessionMetrics``, ``TreeMetrics``); the per-type instruments the
hot paths use are in ``_metrics_types`` (lean, lock-free ones in ``_metrics_lean``), and what a
scrape reads rather than keeps (sessions by status, queued messages, the store's group commit) in
``_metrics_scrape``. The hot paths (a message handled, events recorded, a message queued) pay for an
attribute look-up and an addition: every child is labelled when its :class:`TypeMetrics` is made,
and the message counter is derived from the handling-time histogram at scrape time instead of
being incremented a second time per message. ``bench/bench_metrics.py`` measures it. A scrape does
O(session types) work, whatever the number of sessions (``bench/bench_admin.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.registry import Collector

# The endpoint and the per-type instruments live in their own modules; their names stay importable here.
from ._metrics_lean import Bounded
from ._metrics_scrape import ScrapeCollector
from ._metrics_server import MetricsServer, serve_metrics
from ._metrics_types import MESSAGE_KINDS, Instruments, TypeMetrics

__all__ = [
    "MESSAGE_KINDS",
    "MetricsServer",
    "SessionMetrics",
    "TreeMetrics",
    "TypeMetrics",
    "serve_metrics",
]

logger = logging.getLogger(__name__)


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
        self._instruments = i = Instruments()
        self._scrape = ScrapeCollector(i.handling, self._queued)
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
        self._rejected = Bounded(self._rejections, (), "sessionvisor_rejections")
        self._removed = Bounded(self._removals, (), "sessionvisor_reaper_removals")
        self._snapshot_failed = Bounded(self._snapshot_failures, (), "sessionvisor_snapshot_failures")
        self._types: dict[str, TypeMetrics] = {}

    def __repr__(self) -> str:
        return f"<SessionMetrics types={sorted(self._types)}>"

    def for_type(self, type_name: str) -> TypeMetrics:
        """The instruments of sessions of ``type_name`` (made once, then the same object)."""
        metrics = self._types.get(type_name)
        if metrics is None:
            metrics = self._types[type_name] = TypeMetrics(self._instruments, type_name)
        return metrics

    def _queued(self) -> dict[str, int]:
        """Messages queued by session type: kept by the mailboxes, so a scrape is O(types)."""
        return {name: metrics.queued.value for name, metrics in list(self._types.items())}

    def observe_sessions(self, fn: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        """Read ``fn()`` at each scrape: session counts by ``(type, status)``, for
        ``sessionvisor_sessions``. Replaces an earlier callback."""
        self._scrape.sessions = fn

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
