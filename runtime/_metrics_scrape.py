"""The figures a scrape reads rather than keeps: sessions by status, queued messages, the store.

Each is O(session types) or O(1) at scrape time: the counts behind them are kept as they change
(statuses by the host, queued messages by the mailboxes), never found by walking every session.
One failing callback loses its own family for that scrape, not the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import final

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ._metrics_lean import LeanHistogram

__all__ = ["ScrapeCollector"]

logger = logging.getLogger(__name__)

_BATCH_BUCKETS = tuple(1 << i for i in range(13))  # 1 .. 4096: SQLiteStore's power-of-two buckets

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


@final
class ScrapeCollector:
    """The figures read at scrape time: sessions by status, mailboxes, the store, message counts."""

    def __init__(self, handling: LeanHistogram, queued: Callable[[], Mapping[str, int]]) -> None:
        self.handling = handling
        self.queued = queued
        """Messages queued by session type (``SessionMetrics`` reads its types' mailbox counts)."""
        self.sessions: Callable[[], Mapping[tuple[str, str], int]] | None = None
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
        for values, n in self.handling.totals():
            family.add_metric(list(values), n)
        return family

    def _sessions(self) -> Iterator[Metric]:
        if self.sessions is None:
            return
        family = GaugeMetricFamily(_SESSIONS, "Sessions by type and status.", labels=["type", "status"])
        for (type_name, status), n in sorted(self.sessions().items()):
            family.add_metric([type_name, status], n)
        yield family

    def _mailboxes(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            _MAILBOXES, "Messages queued in mailboxes, by session type.", labels=["type"]
        )
        for type_name, n in sorted(self.queued().items()):
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
