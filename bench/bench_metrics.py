"""What the hot paths pay for metrics (issue 6): ``TypeMetrics`` against bare prometheus_client calls.

    python bench/bench_metrics.py [--quick] [--out FILE]

Prints JSON, nanoseconds per call (the best of several repeats, so a noisy neighbour counts less):

* ``counter_inc``: a bare ``Counter.inc()`` on a pre-labelled child: the floor.
* ``histogram_observe``: a bare ``Histogram.observe()`` on a pre-labelled child, with the
  handling-time buckets and a fast (first-bucket) and a slow (late-bucket) observation.
* ``handled``: ``TypeMetrics.handled(kind, seconds)``, one message handled (counter and histogram:
  the counter is the histogram's count, so this is one observation plus a dict look-up).
* ``handled_observer``: the function ``TypeMetrics.handled_observer(kind)`` returns, called directly.
* ``recorded``: ``TypeMetrics.recorded(count, seconds)``, once per ``record()``.
* ``naive_labels``: what a label look-up per call would cost (``.labels(type, kind)`` on a counter
  and a histogram each time): what the pre-labelled children save.

``handled_over_counter_inc`` is the ratio of ``handled`` to the bare ``Counter.inc()``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import timeit
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime._metrics import SessionMetrics
from runtime._metrics_types import HANDLING_BUCKETS

FAST = 0.00004  # 40 microseconds: falls in the first bucket
SLOW = 0.3  # falls in a late bucket: observe() scans the bounds in order


def per_call_ns(fn: Callable[[], object], number: int, repeat: int) -> float:
    """The best of ``repeat`` runs of ``number`` calls, in nanoseconds per call."""
    timer = timeit.Timer(fn)
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e9


def loop_overhead_ns(number: int, repeat: int) -> float:
    """What timeit's loop and the lambda call cost by themselves (subtracted from every figure)."""
    return per_call_ns(lambda: None, number, repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    number, repeat = (20_000, 3) if args.quick else (300_000, 7)

    registry = CollectorRegistry()
    counter = Counter("bench_bare", "A bare counter.", registry=registry)
    histogram = Histogram(
        "bench_bare_seconds",
        "A bare histogram.",
        ["type", "kind"],
        buckets=HANDLING_BUCKETS,
        registry=registry,
    )
    hist_child = histogram.labels("Game", "call")
    naive_counter = Counter("bench_naive", "Labelled per call.", ["type", "kind"], registry=registry)

    metrics = SessionMetrics()
    game = metrics.for_type("Game")
    observe_call = game.handled_observer("call")

    def naive() -> None:
        naive_counter.labels("Game", "call").inc()
        histogram.labels("Game", "call").observe(FAST)

    overhead = loop_overhead_ns(number, repeat)

    def run(fn: Callable[[], object]) -> float:
        return round(per_call_ns(fn, number, repeat) - overhead, 1)

    figures = {
        "counter_inc": run(counter.inc),
        "histogram_observe_fast": run(lambda: hist_child.observe(FAST)),
        "histogram_observe_slow": run(lambda: hist_child.observe(SLOW)),
        "handled_fast": run(lambda: game.handled("call", FAST)),
        "handled_slow": run(lambda: game.handled("call", SLOW)),
        "handled_observer_fast": run(lambda: observe_call(FAST)),
        "recorded": run(lambda: game.recorded(1, FAST)),
        "naive_labels_fast": run(naive),
    }
    result = {
        "benchmark": "metrics_hot_path",
        "unit": "ns per call (loop overhead subtracted)",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "iterations": number,
        "repeats": repeat,
        "loop_overhead_ns": round(overhead, 1),
        **figures,
        "handled_over_counter_inc": round(figures["handled_fast"] / figures["counter_inc"], 2),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
