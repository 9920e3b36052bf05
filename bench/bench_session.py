"""Session actor benchmarks (issue 2), each a ratio against a raw anyio baseline in the same run.

    python bench/bench_session.py [--quick] [--backend asyncio|trio|both] [--out FILE]

Prints JSON. Figures:

* ``call_rtt``: ``ref.call`` round trip with no events, against a raw anyio memory-stream
  request/reply that makes a fresh reply stream per call (target ratio <= 1.3).
* ``cast_throughput``: casts per second into one session, against raw one-way stream throughput
  with a buffer of 1000 (target ratio >= 0.8).
* ``idle_sessions``: RSS and start time per idle session for N sessions, against N raw tasks each
  parked on its own stream (target <= 2x the raw cost, <= 10 KB each). Each side runs in a fresh
  child process so that neither sees the other's heap.
* ``crash_restart``: from a handler raising to the restarted session answering the next call, on
  MemoryStore with a short log (target median <= 100 microseconds).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime import Session, SessionCrashed, event
from supervisors import Backoff, RestartPolicy, SessionSupervisor

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


@event(name="bench.Ticked")
class Ticked:
    n: int


class Echo(Session[int]):
    snapshot_every = None
    crash_at: float = 0.0

    def initial_state(self, args: Mapping[str, Any]) -> int:
        return 0

    def apply(self, state: int, event: object) -> int:
        return state + 1

    async def handle_call(self, message: object) -> object:
        if message == "boom":
            Echo.crash_at = time.perf_counter()
            raise RuntimeError("boom")
        if message == "tick":
            await self.record(Ticked(1))
        return message

    async def handle_cast(self, message: object) -> None:
        pass


# -- call round trip -------------------------------------------------------------------------------


async def raw_call_rtt(n: int) -> float:
    send, receive = anyio.create_memory_object_stream[tuple[object, ObjectSendStream[object]]](100)

    async def server() -> None:
        async with receive:
            async for message, reply in receive:
                async with reply:
                    await reply.send(message)

    async with anyio.create_task_group() as tg:
        tg.start_soon(server)
        start = time.perf_counter()
        for i in range(n):
            reply_send, reply_receive = anyio.create_memory_object_stream[object](1)
            await send.send((i, reply_send))
            async with reply_receive:
                await reply_receive.receive()
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    return elapsed / n


async def session_call_rtt(n: int) -> float:
    async with SessionSupervisor() as sessions:
        ref = await sessions.start(Echo, "echo")
        call = ref.call
        start = time.perf_counter()
        for i in range(n):
            await call(i)
        return (time.perf_counter() - start) / n


# -- cast throughput -------------------------------------------------------------------------------


async def raw_cast_throughput(n: int) -> float:
    send, receive = anyio.create_memory_object_stream[object](1000)
    done = anyio.Event()

    async def consumer() -> None:
        count = 0
        async with receive:
            async for _ in receive:
                count += 1
                if count == n:
                    done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        start = time.perf_counter()
        for i in range(n):
            await send.send(i)
        await done.wait()
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    return n / elapsed


async def session_cast_throughput(n: int) -> float:
    async with SessionSupervisor() as sessions:
        ref = await sessions.start(Echo, "echo")
        cast = ref.cast
        start = time.perf_counter()
        for i in range(n):
            await cast(i)
        await ref.call("sync", timeout=None)  # FIFO: every cast was handled before this reply
        return n / (time.perf_counter() - start)


# -- idle sessions (children) ----------------------------------------------------------------------


async def child_raw_idle(n: int) -> dict[str, float]:
    gc.collect()
    before = rss_bytes()
    streams: list[ObjectSendStream[object]] = []

    async def parked(receive: ObjectReceiveStream[object]) -> None:
        async with receive:
            async for _ in receive:
                pass

    async with anyio.create_task_group() as tg:
        start = time.perf_counter()
        for _ in range(n):
            send, receive = anyio.create_memory_object_stream[object](1000)
            streams.append(send)
            tg.start_soon(parked, receive)
        await anyio.wait_all_tasks_blocked()
        elapsed = time.perf_counter() - start
        gc.collect()
        after = rss_bytes()
        tg.cancel_scope.cancel()
    return {"bytes_each": (after - before) / n, "us_each": elapsed / n * 1e6}


async def child_session_idle(n: int) -> dict[str, float]:
    gc.collect()
    before = rss_bytes()
    async with SessionSupervisor(drain_timeout=0) as sessions:
        start = time.perf_counter()
        for i in range(n):
            await sessions.start(Echo, f"s{i}")
        await anyio.wait_all_tasks_blocked()
        elapsed = time.perf_counter() - start
        gc.collect()
        after = rss_bytes()
    return {"bytes_each": (after - before) / n, "us_each": elapsed / n * 1e6}


def run_child(kind: str, n: int, backend: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--n", str(n), "--backend", backend],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


# -- crash to restarted ----------------------------------------------------------------------------


async def crash_restart(n: int) -> dict[str, float]:
    policy = RestartPolicy(max_restarts=n + 1, within=3600.0, backoff=Backoff(initial=0))
    async with SessionSupervisor(restarts=policy) as sessions:
        ref = await sessions.start(Echo, "crashy")
        for _ in range(3):
            await ref.call("tick")  # a short log to replay
        samples = []
        for _ in range(n):
            try:
                await ref.call("boom")
            except SessionCrashed:
                pass
            await ref.call("ping")
            samples.append(time.perf_counter() - Echo.crash_at)
    samples.sort()
    return {
        "median_us": statistics.median(samples) * 1e6,
        "p99_us": samples[int(len(samples) * 0.99) - 1] * 1e6,
    }


# -- driver ----------------------------------------------------------------------------------------


def best_of(rounds: int, backend: str, fn: Callable[..., Awaitable[float]], *args: object) -> float:
    return min(anyio.run(fn, *args, backend=backend) for _ in range(rounds))


def bench_backend(backend: str, quick: bool) -> dict[str, Any]:
    calls = 5_000 if quick else 50_000
    casts = 20_000 if quick else 200_000
    idle = 2_000 if quick else 100_000
    crashes = 200 if quick else 5_000
    rounds = 1 if quick else 3

    raw_rtt = best_of(rounds, backend, raw_call_rtt, calls)
    our_rtt = best_of(rounds, backend, session_call_rtt, calls)
    raw_tput = -best_of(rounds, backend, _neg, raw_cast_throughput, casts)
    our_tput = -best_of(rounds, backend, _neg, session_cast_throughput, casts)
    raw_idle = run_child("raw-idle", idle, backend)
    our_idle = run_child("session-idle", idle, backend)
    crash = anyio.run(crash_restart, crashes, backend=backend)
    return {
        "call_rtt": {
            "raw_us": raw_rtt * 1e6,
            "session_us": our_rtt * 1e6,
            "ratio": our_rtt / raw_rtt,
            "target": "<= 1.3",
        },
        "cast_throughput": {
            "raw_per_s": raw_tput,
            "session_per_s": our_tput,
            "ratio": our_tput / raw_tput,
            "target": ">= 0.8",
        },
        "idle_sessions": {
            "n": idle,
            "raw_bytes_each": raw_idle["bytes_each"],
            "session_bytes_each": our_idle["bytes_each"],
            "memory_ratio": our_idle["bytes_each"] / raw_idle["bytes_each"],
            "raw_start_us_each": raw_idle["us_each"],
            "session_start_us_each": our_idle["us_each"],
            "start_time_ratio": our_idle["us_each"] / raw_idle["us_each"],
            "target": "memory_ratio <= 2, session_bytes_each <= 10240",
        },
        "crash_restart": {**crash, "target": "median_us <= 100"},
    }


async def _neg(fn: Any, n: int) -> float:
    return -float(await fn(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, for the test suite")
    parser.add_argument("--backend", default="both", choices=["asyncio", "trio", "both"])
    parser.add_argument("--out", help="also write the JSON to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        fn = {"raw-idle": child_raw_idle, "session-idle": child_session_idle}[args.child]
        print(json.dumps(anyio.run(fn, args.n, backend=args.backend)))
        return

    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]
    report = {
        "benchmark": "session",
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "quick": args.quick,
        "results": {b: bench_backend(b, args.quick) for b in backends},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
