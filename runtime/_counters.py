"""What a host has done since it started: counts behind ``stats()``, fed by its sessions' actors."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, final

import attrs

from ._ownership import NodeInfo, OwnershipStatistics
from ._records import Outcomes, StoreStats

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._mailbox import Envelope
    from ._metrics import SessionMetrics

__all__ = ["HostCounters", "HostStats"]

logger = logging.getLogger(__name__)


@attrs.frozen
class HostStats:
    """What a host has done since it started, with its store's counts."""

    active: int
    known: int
    starts: int
    restarts: int
    quarantined: int
    dead_letters: int
    snapshot_failures: int
    events_recorded: int
    recoveries: int
    store: StoreStats
    node: OwnershipStatistics | None = None
    """This node's leases, takeovers and fencing refusals (``None`` without a node).

    .. versionadded:: 0.2
    """
    nodes: tuple[NodeInfo, ...] = ()
    """Every node sharing the store, alive or not (empty without a node).

    .. versionadded:: 0.2
    """
    outcomes: Mapping[str, Outcomes] = attrs.field(factory=dict)
    """How the stored sessions of each type turned out (:meth:`runtime.abc.EventStore.outcomes`).

    .. versionadded:: 0.1
    """


@final
class HostCounters:
    """The host's own counts, each also fed to the session type's Prometheus metrics."""

    __slots__ = (
        "dead_letters",
        "events_recorded",
        "metrics",
        "quarantined",
        "recoveries",
        "restarts",
        "snapshot_failures",
        "starts",
    )

    def __init__(self, metrics: SessionMetrics) -> None:
        self.metrics = metrics
        self.starts = 0
        self.restarts = 0
        self.quarantined = 0
        self.dead_letters = 0
        self.snapshot_failures = 0
        self.events_recorded = 0
        self.recoveries = 0

    def started(self, cell: SessionCell) -> None:
        self.starts += 1
        cell.metrics.started()

    def restarted(self, cell: SessionCell, reason: str) -> None:
        self.restarts += 1
        cell.metrics.restarted(reason)

    def quarantine(self, cell: SessionCell) -> None:
        self.quarantined += 1
        cell.metrics.quarantined()

    def recorded(self, cell: SessionCell, count: int, seconds: float) -> None:
        self.events_recorded += count
        cell.metrics.recorded(count, seconds)

    def recovery(self, cell: SessionCell, outcome: str, events: int, seconds: float) -> None:
        if outcome == "ok":
            self.recoveries += 1
        cell.metrics.recovered(outcome, seconds, events)

    def snapshot_failure(self, cell: SessionCell, stage: str) -> None:
        self.snapshot_not_written(stage)

    def snapshot_not_written(self, stage: str) -> None:
        """A snapshot was not written ("encode", "save", "inexact"...), whichever session's."""
        self.snapshot_failures += 1
        self.metrics.snapshot_failed(stage)

    def dead_letter(self, cell: SessionCell, env: Envelope) -> None:
        self.dead_letters += 1
        cell.metrics.dead_letter()
        logger.debug("dead letter for session %r: %r", cell.id, env)

    def stats(
        self,
        *,
        active: int,
        known: int,
        store: StoreStats,
        node: OwnershipStatistics | None = None,
        nodes: tuple[NodeInfo, ...] = (),
        outcomes: Mapping[str, Outcomes] | None = None,
    ) -> HostStats:
        return HostStats(
            active=active,
            known=known,
            starts=self.starts,
            restarts=self.restarts,
            quarantined=self.quarantined,
            dead_letters=self.dead_letters,
            snapshot_failures=self.snapshot_failures,
            events_recorded=self.events_recorded,
            recoveries=self.recoveries,
            store=store,
            node=node,
            nodes=nodes,
            outcomes=dict(outcomes or {}),
        )
