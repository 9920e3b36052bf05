"""What every contender's script shares: its command line, memory readings and its JSON answer.

Standard library only: this module runs in the peers' virtual environments too.

A script is run as ``python -m bench.peers.<name> WHAT PARAMS``: ``WHAT`` names the measurement and
``PARAMS`` is a JSON object of its sizes. It prints one JSON object (the figures) on the last line of
its standard output.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

PAGE = os.sysconf("SC_PAGE_SIZE")

Figures = dict[str, float]
Command = Callable[[Mapping[str, Any]], Figures]


def rss_bytes() -> int:
    """The process's resident set size now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def settled_rss() -> int:
    """The resident set size after a full collection, so that garbage is not counted."""
    gc.collect()
    return rss_bytes()


def latency_figures(samples: list[float]) -> Figures:
    """Median and 99th percentile of ``samples`` (seconds), in microseconds."""
    samples = sorted(samples)
    return {
        "median_us": statistics.median(samples) * 1e6,
        "p99_us": samples[max(0, int(len(samples) * 0.99) - 1)] * 1e6,
    }


def exit_now(figures: Figures) -> NoReturn:
    """Print ``figures`` and leave the process at once, skipping every teardown.

    For measurements whose teardown (thousands of threads or tasks) would take longer than the
    measurement itself and measure nothing.
    """
    print(json.dumps(figures), flush=True)
    sys.stderr.flush()
    os._exit(0)


def main(commands: Mapping[str, Command], *, exit_hard: bool = False) -> None:
    """Run the command that ``sys.argv`` names and print its figures as JSON.

    ``exit_hard`` leaves at once after printing (``os._exit``), for scripts whose teardown (thousands
    of threads, say) would cost more than the measurement and measures nothing.
    """
    if len(sys.argv) != 3 or sys.argv[1] not in commands:
        sys.exit(f"usage: python -m {sys.argv[0]} {{{','.join(commands)}}} PARAMS_JSON")
    figures = commands[sys.argv[1]](json.loads(sys.argv[2]))
    if exit_hard:
        exit_now(figures)
    print(json.dumps(figures), flush=True)
