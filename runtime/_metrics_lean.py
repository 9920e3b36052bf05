"""Lean Prometheus instruments for the per-message and per-event paths, and bounded label sets.

``prometheus_client``'s ``Counter.inc`` and ``Histogram.observe`` take a lock (about 650 ns for an
observation); these are a bisect and an addition on the event loop's thread, and are exposed as
ordinary Prometheus families at scrape time. ``Bounded`` keeps free-form label values (reasons,
stages) to at most 100 per metric.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, final

from prometheus_client import Counter
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

__all__ = ["Bounded", "LeanChild", "LeanCount", "LeanCounter", "LeanHistogram"]

logger = logging.getLogger(__name__)

_MAX_LABEL_VALUES = 100
"""Distinct values one free-form label (a reason, a stage) may take before the rest become "other"."""

_OTHER = "other"


@final
class Bounded:
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
class LeanChild:
    """One (type, kind) series of the handling-time histogram: bucket counts and a sum.

    Observing is a bisect and two additions, with no lock: it runs on the event loop's thread for
    every message. A scrape (in the exposition server's thread) may see one observation in the
    count before the sum; a scrape is a sample anyway.
    """

    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum = 0.0


class Lean(Generic[_Child]):
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
class LeanHistogram(Lean[LeanChild]):
    """A histogram for per-message and per-event paths, kept cheaper than prometheus_client's.

    ``Histogram.observe`` takes a lock and walks the buckets (about 650 ns); this costs about a
    quarter of that, and it is paid by every message. Exposed as an ordinary Prometheus histogram.
    """

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...], buckets: tuple[float, ...]):
        super().__init__(name, documentation, labels)
        self.bounds = tuple(float(b) for b in buckets)

    def _new_child(self) -> LeanChild:
        return LeanChild(len(self.bounds) + 1)

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
        names = (*(repr(bound) for bound in self.bounds), "+Inf")
        for values, child in list(self._children.items()):
            running = 0
            buckets: list[tuple[str, float]] = []
            for name, n in zip(names, list(child.counts), strict=True):
                running += n
                buckets.append((name, running))
            family.add_metric(list(values), buckets, child.sum)
        yield family

    def totals(self) -> list[tuple[tuple[str, ...], int]]:
        """The number of observations of each series, by label values (a scrape's message counts)."""
        return [(values, sum(child.counts)) for values, child in list(self._children.items())]


@final
class LeanCount:
    """One series of a :class:`LeanCounter`: a number, added to without a lock (see LeanChild)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


@final
class LeanCounter(Lean[LeanCount]):
    """A labelled counter for the per-event path, cheaper than prometheus_client's (no lock).

    Exposed as an ordinary Prometheus counter (``<name>_total``).
    """

    def _new_child(self) -> LeanCount:
        return LeanCount()

    def _empty(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=list(self.label_names))

    def describe(self) -> list[Metric]:
        return [self._empty()]

    def collect(self) -> Iterator[Metric]:
        family = self._empty()
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family
