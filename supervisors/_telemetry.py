"""Reaper and runtime telemetry as Prometheus metrics (issue 16): is the reaper working, how big is it.

A reaper that silently stops would let idle sessions pile up in memory and ended ones linger in the
store; these series make that alertable (examples/prometheus/alerts.yml):

* ``sessionvisor_reaper_passes_total``, ``sessionvisor_reaper_errors_total`` (checks that failed),
  ``sessionvisor_reaper_crashes_total`` (its loop crashed and was restarted);
* ``sessionvisor_reaper_pass_duration_seconds``: a histogram of pass durations;
* ``sessionvisor_reaper_deadlines``: deadlines waiting in its wheel;
* ``sessionvisor_reaper_overdue_seconds``: how long past its planned wake-up the reaper is. A working
  reaper keeps it near 0 whatever the load (it sleeps until its next deadline); a stopped or hung
  one lets it grow. Real (monotonic) seconds, so meaningful with the default clock only;
* ``sessionvisor_reaper_estimated_memory_bytes``: the reaper's estimate of the active sessions'
  memory at its last memory check (with ``max_memory_bytes`` set; the estimate walks every session,
  so a scrape never computes it);
* ``sessionvisor_ready``: 1 once ``sessions.ready()`` has returned, 0 before and while stopping;
* ``sessionvisor_sessions_loaded`` and ``sessionvisor_sessions_stored``: sessions in this process
  and in the store. The stored count is as of the last ``sessions.stats()`` (``serve_admin``
  refreshes it every minute); it is absent until then.

Counters carry no ``_created`` series: they are read from the reaper at scrape time, and it starts
with its supervisor, whose start time Prometheus already has from the process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, final

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from ._reaper import CleanupStats, Reaper
    from ._sessions import SessionSupervisor

__all__ = ["Telemetry"]

# A pass pops what is due and re-checks each session: microseconds for a few, seconds for a backlog.
_PASS_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


@final
class Telemetry:
    """The reaper's and the supervisor's figures on ``registry``, read from ``sessions`` at scrape time."""

    def __init__(self, sessions: SessionSupervisor, registry: CollectorRegistry) -> None:
        self._sessions = sessions
        self.stored: int | None = None
        """Sessions in the store, as of the last count."""
        self._pass_seconds = Histogram(
            "sessionvisor_reaper_pass_duration_seconds",
            "Time of one reaper pass (acting on every deadline that is due).",
            buckets=_PASS_BUCKETS,
            registry=None,
        )
        registry.register(self._pass_seconds)
        registry.register(self)

    def watch(self, reaper: Reaper) -> None:
        """Observe each pass of ``reaper`` (a supervisor makes a new one each time it starts)."""
        reaper.observe_pass = self._observe

    def _observe(self, stats: CleanupStats) -> None:
        self._pass_seconds.observe(stats.duration)

    def describe(self) -> list[Metric]:
        return [
            *self._families(),
            GaugeMetricFamily("sessionvisor_reaper_estimated_memory_bytes", ""),
            GaugeMetricFamily("sessionvisor_ready", ""),
            GaugeMetricFamily("sessionvisor_sessions_stored", ""),
        ]

    def collect(self) -> Iterator[Metric]:
        reaper = self._sessions.reaper
        passes, errors, crashes, deadlines, overdue, loaded = self._families()
        passes.add_metric([], reaper.passes)
        errors.add_metric([], reaper.errors)
        crashes.add_metric([], reaper.crashes)
        deadlines.add_metric([], len(reaper))
        due = reaper.due_monotonic
        overdue.add_metric([], max(0.0, time.monotonic() - due) if math.isfinite(due) else 0.0)
        loaded.add_metric([], self._sessions.loaded_count)
        yield from (passes, errors, crashes, deadlines, overdue, loaded)
        if reaper.last_estimate is not None:  # measured by the memory checks only: no scan here
            yield GaugeMetricFamily(
                "sessionvisor_reaper_estimated_memory_bytes",
                "The reaper's estimate of the active sessions' memory, at its last memory check.",
                value=reaper.last_estimate,
            )
        yield GaugeMetricFamily(
            "sessionvisor_ready",
            "1 once the supervisor is ready (sessions.ready() returned) and not shutting down.",
            value=1.0 if self._sessions.is_ready else 0.0,
        )
        if self.stored is not None:
            yield GaugeMetricFamily(
                "sessionvisor_sessions_stored",
                "Sessions in the store (as of the last count: sessions.stats(), or serve_admin's).",
                value=self.stored,
            )

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
    ]:
        return (
            CounterMetricFamily("sessionvisor_reaper_passes", "Reaper passes (each acts on what is due)."),
            CounterMetricFamily("sessionvisor_reaper_errors", "Reaper checks that failed (logged)."),
            CounterMetricFamily(
                "sessionvisor_reaper_crashes", "Times the reaper's loop crashed and was restarted."
            ),
            GaugeMetricFamily("sessionvisor_reaper_deadlines", "Deadlines waiting in the reaper's wheel."),
            GaugeMetricFamily(
                "sessionvisor_reaper_overdue_seconds",
                "Seconds the reaper is past its planned wake-up (near 0 while it works).",
            ),
            GaugeMetricFamily("sessionvisor_sessions_loaded", "Sessions loaded in this process."),
        )
