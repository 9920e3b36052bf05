"""Reaper benchmarks (issue 5): pass cost against the total, and the memory of passivated sessions.

    python bench/bench_reaper.py [--quick] [--backend asyncio|trio|both]

Prints JSON.

* ``pass``: one reaper pass over N sessions of which D are due (idle), for N = 10,000 and 100,000
  with the same D = 1,000, on an injected clock. The pass pops the due deadlines and asks each
  session to passivate; target: the 100,000 pass takes <= 1.5x the 10,000 pass, and <= 10 ms.
  ``settled_ms`` adds the time until every due session has actually passivated (snapshot written,
  task ended), which is the sessions' own work, not the reaper's.
* ``passivated_memory``: memory per passivated session for 100,000 sessions on a SQLite file (the
  cell the supervisor keeps for each and its reaper deadlines), started and passivated in batches
  of 2,000; ``python_bytes_each`` is what tracemalloc sees still allocated, ``rss_bytes_each`` the
  process's growth (which also holds allocator slack). Target <= 1 KB. Run in a child process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Mapping
from typing import Any

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime import Session
from runtime.testing import ManualClock
from supervisors import ReaperPolicy, SessionSupervisor

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Idle(Session[int]):
    snapshot_every = None

    def initial_state(self, args: Mapping[str, Any]) -> int:
        return 0

    async def handle_call(self, message: object) -> object:
        return message


async def reaper_pass(total: int, due: int) -> dict[str, float]:
    clock = ManualClock()
    policy = ReaperPolicy(idle_timeout=100)
    async with SessionSupervisor(clock=clock, reaper=policy, drain_timeout=0) as sessions:
        for i in range(total):
            if i == due:
                clock._now = 50.0  # the rest were active later: not due at 101
            await sessions.start(Idle, f"s{i}")
        await anyio.wait_all_tasks_blocked()
        clock._now = 101.0  # move time without waking the reaper: the pass is run by hand
        gc.collect()
        started = time.perf_counter()
        stats = await sessions.reaper.reap()
        pass_s = time.perf_counter() - started
        await anyio.wait_all_tasks_blocked()
        settled_s = time.perf_counter() - started
        assert stats.due == due, stats
        assert stats.total == due, stats
        assert sessions.active_count == total - due
    return {"pass_ms": pass_s * 1e3, "settled_ms": settled_s * 1e3}


async def child_passivated(n: int) -> dict[str, float]:
    """Start and passivate ``n`` sessions in batches (so the active peak stays small), then weigh
    what the supervisor keeps: RSS, and what tracemalloc sees still allocated by Python."""
    from runtime import SQLiteStore

    with tempfile.TemporaryDirectory() as tmp:
        clock = ManualClock()
        store = SQLiteStore(os.path.join(tmp, "s.db"), synchronous="NORMAL")
        policy = ReaperPolicy(idle_timeout=10)
        async with SessionSupervisor(store=store, clock=clock, reaper=policy, drain_timeout=0) as sessions:

            async def batch(prefix: str, count: int) -> None:
                async with anyio.create_task_group() as tg:
                    for lo in range(0, count, 100):

                        async def start_some(lo: int) -> None:
                            for i in range(lo, min(lo + 100, count)):
                                await sessions.start(Idle, f"{prefix}{i}")

                        tg.start_soon(start_some, lo)
                clock._now += 11.0
                await sessions.reaper.reap()
                while sessions.active_count:
                    await sessions.wait_actor_ended()

            await batch("warm", 2_000)  # imports, connections, caches, allocator arenas
            gc.collect()
            tracemalloc.start()
            traced_before = tracemalloc.get_traced_memory()[0]
            before = rss_bytes()
            for chunk in range(0, n, 2_000):
                await batch(f"s{chunk}-", min(2_000, n - chunk))
            gc.collect()
            after = rss_bytes()
            traced_after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            assert sessions.active_count == 0
            assert len(sessions.cells()) == n + 2_000
    return {
        "rss_bytes_each": (after - before) / n,
        "python_bytes_each": (traced_after - traced_before) / n,
    }


def run_child(n: int, backend: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--n", str(n), "--backend", backend],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def bench_backend(backend: str, quick: bool) -> dict[str, Any]:
    small, large, due = (2_000, 20_000, 200) if quick else (10_000, 100_000, 1_000)
    rounds = 1 if quick else 3
    a = min((anyio.run(reaper_pass, small, due, backend=backend) for _ in range(rounds)), key=_pass)
    b = min((anyio.run(reaper_pass, large, due, backend=backend) for _ in range(rounds)), key=_pass)
    memory = run_child(2_000 if quick else 100_000, backend)
    return {
        "pass": {
            "due": due,
            f"sessions_{small}": a,
            f"sessions_{large}": b,
            "ratio": b["pass_ms"] / a["pass_ms"],
            "target": "ratio <= 1.5, pass_ms <= 10",
        },
        "passivated_memory": {**memory, "target": "python_bytes_each <= 1024"},
    }


def _pass(r: dict[str, float]) -> float:
    return r["pass_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", default="both", choices=["asyncio", "trio", "both"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(anyio.run(child_passivated, args.n, backend=args.backend)))
        return
    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]
    report = {
        "benchmark": "reaper",
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "quick": args.quick,
        "results": {b: bench_backend(b, args.quick) for b in backends},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
