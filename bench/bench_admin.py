"""The admin endpoint (issue 16): scrape and ``/sessions/{id}`` latency, and what scraping costs calls.

    python bench/bench_admin.py [--backend asyncio|trio] [--sessions N] [--quick] [--out FILE]
                                [--new-connections]

Prints JSON. One process holds a ``SessionSupervisor`` with ``--sessions`` sessions started (each an
active task, 100,000 by default) and serves its registry twice at once: with ``serve_admin``
(hypercorn in the event loop, ``/metrics`` rendered in a worker thread) and with
``runtime.serve_metrics`` (the threaded ``wsgiref`` server), so that both answer the same registry.
The HTTP clients run in another process (``urllib``, a new connection per request), so that their
CPU is not taken from the server's event loop (the machine has 2 cores).

* ``scrape_ms``: ``/metrics`` latency, median and p99, on each server, the two interleaved; and
  ``*_cpu_ms``, the CPU time this process spent per scrape on each (HTTP and rendering).
* ``session_ms``: ``/sessions/{id}`` latency (random loaded ids), median and p99.
* ``call_rtt``: the mean ``call`` round trip to one session, in rounds that alternate between no
  scraping and a client scraping the admin endpoint's ``/metrics`` every 100 ms; ``slowdown`` is the
  ratio of the medians of the rounds (1.03 is 3% slower). The scraper keeps one connection open,
  as Prometheus does (``--new-connections``: a new one per scrape). The machine is shared: rounds
  interleave so that a noisy spell hits both sides alike. ``slowdown_cpu`` is the same ratio in the CPU time
  of this process (every thread: the loop and the worker rendering ``/metrics``), which a loaded
  machine does not inflate; ``scrapes_per_100ms`` checks the scraper kept its period (1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Any

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime import Session, serve_metrics
from supervisors import SessionSupervisor, serve_admin

# The client: a separate process that GETs URLs and prints each latency (ms), or scrapes on a period.
_CLIENT = textwrap.dedent(
    """
    import json, sys, time, urllib.request
    mode, period, urls = sys.argv[1], float(sys.argv[2]), json.loads(sys.stdin.read())
    out = []
    if mode == "each":
        for url in urls:
            t = time.perf_counter()
            with urllib.request.urlopen(url, timeout=60) as r:
                r.read()
            out.append((time.perf_counter() - t) * 1000)
        print(json.dumps(out))
    else:  # "every": scrape urls[0] every period seconds, until killed, on one kept-alive
        # connection as Prometheus does (a new connection per scrape with "every-new")
        import http.client, urllib.parse
        target = urllib.parse.urlsplit(urls[0])
        conn = None
        while True:
            t = time.perf_counter()
            if mode == "every-new" or conn is None:
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            conn.request("GET", target.path)
            with conn.getresponse() as r:
                r.read()
            if mode == "every-new":
                conn.close()
            time.sleep(max(0.0, period - (time.perf_counter() - t)))
    """
)


class Echo(Session[int]):
    """The smallest session: a call answers at once, no event recorded."""

    def initial_state(self, args: Any) -> int:
        return 0

    async def handle_call(self, message: object) -> object:
        return message


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def fetch_each(urls: list[str]) -> list[float]:
    done = await anyio.run_process(
        [sys.executable, "-c", _CLIENT, "each", "0"], input=json.dumps(urls).encode(), check=True
    )
    result: list[float] = json.loads(done.stdout)
    return result


async def call_rtt_us(sessions: SessionSupervisor, calls: int) -> tuple[float, float]:
    """The mean round trip of ``calls`` calls, in wall-clock and in the process's CPU microseconds.

    The CPU time is every thread of this process (the event loop, the worker thread rendering
    ``/metrics``): what a scrape costs the process serving the calls, without the time a loaded
    machine keeps it descheduled.
    """
    ref = sessions.ref("s0")
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(calls):
        await ref.call(i)
    return (time.perf_counter() - started) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6


class RenderCount:
    """A collector that adds no series and counts how often the registry was rendered."""

    def __init__(self) -> None:
        self.count = 0

    def collect(self) -> list[Any]:
        self.count += 1
        return []


async def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.sessions
    started = time.perf_counter()
    async with SessionSupervisor() as sessions:
        for i in range(n):
            await sessions.start(Echo, f"s{i}")
        load_s = time.perf_counter() - started
        renders = RenderCount()
        sessions.registry.register(renders)
        async with (
            serve_admin(sessions, port=0) as admin,
            serve_metrics(sessions.registry, port=0) as metrics,
        ):
            await sessions.ready()
            # Scrape latency, the two servers taking turns.
            admin_ms: list[float] = []
            threaded_ms: list[float] = []
            admin_cpu = threaded_cpu = 0.0  # this process's CPU seconds while each server was scraped
            for _ in range(args.rounds):
                cpu = time.process_time()
                admin_ms += await fetch_each([admin.metrics_url] * args.scrapes)
                admin_cpu += time.process_time() - cpu
                cpu = time.process_time()
                threaded_ms += await fetch_each([metrics.url] * args.scrapes)
                threaded_cpu += time.process_time() - cpu
            rng = random.Random(1)
            ids = [f"{admin.url}/sessions/s{rng.randrange(n)}" for _ in range(args.lookups)]
            session_ms = await fetch_each(ids)
            # The call round trip without and with a scraper, rounds interleaved.
            quiet: list[tuple[float, float]] = []
            scraped: list[tuple[float, float]] = []
            scrapes: list[float] = []
            await call_rtt_us(sessions, args.calls)  # warm up
            for _ in range(args.rounds):
                quiet.append(await call_rtt_us(sessions, args.calls))

                mode = "every-new" if args.new_connections else "every"
                async with await anyio.open_process(
                    [sys.executable, "-c", _CLIENT, mode, "0.1"], stdin=subprocess.PIPE
                ) as scraper:
                    assert scraper.stdin is not None
                    await scraper.stdin.send(json.dumps([admin.metrics_url]).encode())
                    await scraper.stdin.aclose()
                    await anyio.sleep(0.3)  # the first scrapes are under way
                    counted = renders.count
                    started = time.perf_counter()
                    scraped.append(await call_rtt_us(sessions, args.calls))
                    elapsed = time.perf_counter() - started
                    scrapes.append(round((renders.count - counted) / elapsed * 0.1, 2))
                    scraper.terminate()

    return {
        "backend": args.backend,
        "sessions": n,
        "load_seconds": round(load_s, 2),
        "scrape_ms": {
            "serve_admin": {"median": statistics.median(admin_ms), "p99": percentile(admin_ms, 99)},
            "serve_metrics": {"median": statistics.median(threaded_ms), "p99": percentile(threaded_ms, 99)},
            "count_each": len(admin_ms),
            # what one scrape costs the serving process in CPU time (HTTP, rendering, the idle loop)
            "serve_admin_cpu_ms": round(admin_cpu / len(admin_ms) * 1000, 3),
            "serve_metrics_cpu_ms": round(threaded_cpu / len(threaded_ms) * 1000, 3),
        },
        "session_ms": {
            "median": statistics.median(session_ms),
            "p99": percentile(session_ms, 99),
            "count": len(session_ms),
        },
        "call_rtt": {
            "calls_per_round": args.calls,
            "scraper": "new connection per scrape" if args.new_connections else "one kept-alive connection",
            "rounds": args.rounds,
            "quiet_us": [round(w, 2) for w, _ in quiet],
            "scraped_us": [round(w, 2) for w, _ in scraped],
            "slowdown": statistics.median(w for w, _ in scraped) / statistics.median(w for w, _ in quiet),
            "quiet_cpu_us": [round(c, 2) for _, c in quiet],
            "scraped_cpu_us": [round(c, 2) for _, c in scraped],
            "slowdown_cpu": statistics.median(c for _, c in scraped) / statistics.median(c for _, c in quiet),
            "scrapes_per_100ms": scrapes,  # 1.0: the scraper kept its period
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1,000 sessions, few rounds")
    parser.add_argument("--out", help="also write the JSON to this file")
    parser.add_argument(
        "--new-connections",
        action="store_true",
        help="the periodic scraper opens a connection per scrape (default: one kept alive, as Prometheus)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.rounds, args.scrapes, args.lookups, args.calls = 1_000, 2, 5, 20, 20_000
    else:
        args.rounds, args.scrapes, args.lookups, args.calls = 7, 15, 500, 100_000
    result = anyio.run(run, args, backend=args.backend)
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
