"""Crash-to-restarted latency of a plain child under ``Supervisor``, against hand-written restart loops.

Each incarnation of the child calls ``task_status.started()``, lets the scheduler settle for a couple of
checkpoints, notes the time and raises. The latency is the time from that raise until the next
incarnation has called ``task_status.started()``. Three ways of restarting it, in the same run, on both
backends:

* ``supervisor``: ``Supervisor([ChildSpec("child", child)])`` (ONE_FOR_ONE, permanent, a restart
  intensity large enough never to give up);
* ``task_loop``: the minimal hand-written anyio loop that runs the child as a task, like the supervisor
  does: ``while True: try: async with create_task_group() as tg: await tg.start(child)`` /
  ``except Exception: continue``;
* ``direct_loop``: the same loop calling the child in the loop's own task
  (``await child(task_status=...)``), with no task at all: a floor, not a like-for-like comparison.

Prints JSON: per backend, the median and p99 latency of each in microseconds, and the supervisor's
ratios to the loops (of medians and of p99s).

Run: ``python bench/bench_tree.py [--samples N] [--warmup N] [--backend asyncio|trio]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from supervisors import ChildSpec, Supervisor


class _Crash(Exception):
    pass


class _Probe:
    """The benchmarked child: measures from its crash to its successor's ``started()``."""

    def __init__(self, samples: int, warmup: int) -> None:
        self.wanted = samples + warmup
        self.warmup = warmup
        self.latencies: list[float] = []
        self.crashed_at: float | None = None
        self.done = anyio.Event()

    async def child(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if self.crashed_at is not None:
            self.latencies.append(time.perf_counter() - self.crashed_at)
            self.crashed_at = None
        task_status.started()
        if len(self.latencies) >= self.wanted:
            self.done.set()
            await anyio.sleep_forever()
        # Let whoever restarted us finish its own work, so that each crash meets an idle restarter.
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        self.crashed_at = time.perf_counter()
        raise _Crash

    def measured(self) -> list[float]:
        return self.latencies[self.warmup :]


class _NoStatus(TaskStatus[None]):
    def started(self, value: None = None) -> None:
        pass


async def _supervisor(probe: _Probe) -> None:
    tree = Supervisor([ChildSpec("child", probe.child)], max_restarts=10 * probe.wanted, within=60.0)
    async with anyio.create_task_group() as tg:
        await tg.start(tree.run)
        await probe.done.wait()
        tg.cancel_scope.cancel()


async def _task_loop(probe: _Probe) -> None:
    async def restart_loop() -> None:
        while True:
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(probe.child)
            except Exception:
                continue

    async with anyio.create_task_group() as tg:
        tg.start_soon(restart_loop)
        await probe.done.wait()
        tg.cancel_scope.cancel()


async def _direct_loop(probe: _Probe) -> None:
    async def restart_loop() -> None:
        status = _NoStatus()
        while True:
            try:
                await probe.child(task_status=status)
            except Exception:
                continue

    async with anyio.create_task_group() as tg:
        tg.start_soon(restart_loop)
        await probe.done.wait()
        tg.cancel_scope.cancel()


_CASES: dict[str, Callable[[_Probe], Awaitable[None]]] = {
    "supervisor": _supervisor,
    "task_loop": _task_loop,
    "direct_loop": _direct_loop,
}


def _summary(latencies: list[float]) -> dict[str, float]:
    us = sorted(x * 1e6 for x in latencies)
    p99 = us[min(len(us) - 1, round(0.99 * (len(us) - 1)))]
    return {"median_us": round(statistics.median(us), 2), "p99_us": round(p99, 2)}


async def _bench_backend(samples: int, warmup: int, rounds: int) -> dict[str, object]:
    # Interleave the cases over several rounds so that drift (CPU frequency, other load) hits all alike.
    collected: dict[str, list[float]] = {name: [] for name in _CASES}
    for _ in range(rounds):
        for name, case in _CASES.items():
            probe = _Probe(samples // rounds, warmup)
            gc.collect()
            await case(probe)
            collected[name] += probe.measured()
    result: dict[str, object] = {name: _summary(values) for name, values in collected.items()}
    sup = _summary(collected["supervisor"])
    for loop in ("task_loop", "direct_loop"):
        base = _summary(collected[loop])
        result[f"ratio_to_{loop}"] = {
            "median": round(sup["median_us"] / base["median_us"], 2),
            "p99": round(sup["p99_us"] / base["p99_us"], 2),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=20_000, help="measured restarts per case")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured restarts per round")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per case")
    parser.add_argument("--backend", choices=["asyncio", "trio"], action="append")
    args = parser.parse_args(argv)
    report: dict[str, object] = {
        "python": platform.python_version(),
        "samples": args.samples,
        "unit": "microseconds, crash to restarted child's task_status.started()",
    }
    for backend in args.backend or ["asyncio", "trio"]:
        report[backend] = anyio.run(_bench_backend, args.samples, args.warmup, args.rounds, backend=backend)
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
