"""What checking snapshots for an exact round trip costs on the call round trip (issue 13).

    python bench/bench_exact.py [--quick] [--backend asyncio|trio|both] [--out FILE]

Prints JSON. A session whose state is a list of ``size`` attrs events records one event per call and
snapshots every 100 events (the default), on MemoryStore. The same calls run with every snapshot
checked (``share=None``), with only a class's first snapshot checked (``share=0``), and with the
default budget (1% of the process's time), in interleaved rounds; the figures are CPU time per call
(less sensitive than wall time to a shared, busy machine), medians of the rounds, and ratios to the
first-only run of the same round.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping
from typing import Any

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime import Session, event
from runtime._exact import CHECK_SHARE, SnapshotGuard
from supervisors import SessionSupervisor


@event(name="bench.exact.Scored")
class Scored:
    player: str
    points: int


class Board(Session[list[Scored]]):
    """Keeps the last ``size`` scores: a state of constant size, snapshotted every 100 events."""

    type_name = "bench.exact.Board"
    size = 100

    def initial_state(self, args: Mapping[str, Any]) -> list[Scored]:
        return [Scored(f"p{i}", i) for i in range(self.size)]

    def apply(self, state: list[Scored], event: object) -> list[Scored]:
        assert isinstance(event, Scored)
        return [*state[1:], event]

    async def handle_call(self, message: object) -> object:
        assert isinstance(message, int)
        await self.record(Scored("p", message))
        return None


async def calls(n: int, share: float | None) -> dict[str, float]:
    async with SessionSupervisor() as sessions:
        sessions.snapshots = SnapshotGuard(lambda stage: None, share=share)
        ref = await sessions.start(Board, "b")
        call = ref.call
        for i in range(500):
            await call(i)
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            await call(i)
        checks = sessions.snapshots.checks
        return {
            "wall_us": (time.perf_counter() - wall) / n * 1e6,
            "cpu_us": (time.process_time() - cpu) / n * 1e6,
            "checks": checks,
        }


MODES: dict[str, float | None] = {"first_only": 0.0, "budget": CHECK_SHARE, "every": None}


def bench_backend(backend: str, sizes: list[int], n: int, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in sizes:
        Board.size = size
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for r in range(rounds):
            order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
            for mode in order:
                runs[mode].append(anyio.run(calls, n, MODES[mode], backend=backend))
        base = statistics.median(x["cpu_us"] for x in runs["first_only"])
        out[f"state_of_{size}"] = {
            mode: {
                "cpu_us_per_call": statistics.median(x["cpu_us"] for x in rs),
                "wall_us_per_call": statistics.median(x["wall_us"] for x in rs),
                "checks": rs[-1]["checks"],
                "cpu_ratio_to_first_only": statistics.median(x["cpu_us"] for x in rs) / base,
            }
            for mode, rs in runs.items()
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--backend", default="both", choices=["asyncio", "trio", "both"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args()
    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]
    sizes, n, rounds = ([10], 300, 1) if args.quick else ([10, 100, 1000], 5000, args.rounds)
    report = {
        "benchmark": "exact",
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "quick": args.quick,
        "calls": n,
        "rounds": rounds,
        "results": {b: bench_backend(b, sizes, n, rounds) for b in backends},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
