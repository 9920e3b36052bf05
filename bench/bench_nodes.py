"""Benchmark of several nodes on one PostgresStore (issue 15). Prints one JSON object.

1. Throughput: ``--sessions`` counter sessions, ``--calls`` one-event calls each, all in flight at
   once, on one node process against the same spread over two node processes (each node owning half
   of the sessions), rounds interleaved: aggregate events/s and the ratio two/one (the use of the
   second core). The nodes are ``tests.apps.node_app`` processes driven over their stdin/stdout by this
   process, which shares the machine's two cores with them and with PostgreSQL.
2. Failover: per trial, a fresh node takes one session (one acknowledged call), is killed with
   SIGKILL, and a surviving node is asked for that session every 20 ms; the time from the kill to the
   first answered call. Median and p99 over ``--trials``, with the lease time ``--ttl``.

Usage::

    .venv/bin/python -m bench.bench_nodes [--quick] [--trials 20] [--ttl 1.0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from tests.apps.node_client import NodeProcess


def dsn() -> str:
    return os.environ.get("SESSIONVISOR_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def drop(schema: str) -> None:
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def throughput(nodes: list[NodeProcess], sessions: int, calls: int, tag: str) -> float:
    """Events/s with every session's calls in flight together, sessions spread over ``nodes``."""
    ids = [f"{tag}-{i}" for i in range(sessions)]
    for k, sid in enumerate(ids):  # each node owns its share before the clock starts
        nodes[k % len(nodes)].request("add", id=sid, n=0)
    start = time.perf_counter()
    pending = []
    for _ in range(calls):
        for k, sid in enumerate(ids):
            node = nodes[k % len(nodes)]
            pending.append((node, node.send("add", id=sid, n=1)))
    for node, req in pending:
        reply = node.wait(req, timeout=120)
        assert reply is not None, "a call got no answer"
        assert "ok" in reply, reply
    return sessions * calls / (time.perf_counter() - start)


def failover(schema: str, trials: int, ttl: float) -> list[float]:
    survivor = NodeProcess(dsn(), schema, "survivor", ttl)
    times: list[float] = []
    try:
        for trial in range(trials):
            victim = NodeProcess(dsn(), schema, f"victim-{trial}", ttl)
            sid = f"failover-{trial}"
            try:
                assert "ok" in victim.request("add", id=sid, n=1)
                victim.signal(signal.SIGKILL)
                killed = time.perf_counter()
                while True:
                    reply = survivor.request("add", id=sid, n=1)
                    if "ok" in reply:
                        times.append(time.perf_counter() - killed)
                        break
                    assert reply.get("error") == "OwnedElsewhere", reply
                    if time.perf_counter() - killed > ttl + 30:
                        raise AssertionError(f"trial {trial}: no takeover")
                    time.sleep(0.02)
            finally:
                victim.close()
            print(json.dumps({"trial": trial, "seconds": round(times[-1], 3)}), file=sys.stderr)
    finally:
        survivor.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round, 3 trials")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--ttl", type=float, default=1.0, help="lease time of the failover nodes")
    args = parser.parse_args()
    rounds, sessions, calls, trials = args.rounds, args.sessions, args.calls, args.trials
    if args.quick:
        rounds, sessions, calls, trials = 1, 50, 4, 3
    schema = f"svbench_{uuid.uuid4().hex[:12]}"
    result: dict[str, Any] = {"sessions": sessions, "calls_per_session": calls, "rounds": rounds}
    try:
        one = [NodeProcess(dsn(), schema, "solo", 10.0)]
        two = [NodeProcess(dsn(), schema, "left", 10.0), NodeProcess(dsn(), schema, "right", 10.0)]
        by_round = []
        try:
            for r in range(rounds):
                single = throughput(one, sessions, calls, f"one-{r}")
                double = throughput(two, sessions, calls, f"two-{r}")
                by_round.append({"one_node": round(single), "two_nodes": round(double)})
                print(json.dumps(by_round[-1]), file=sys.stderr)
        finally:
            for node in one + two:
                node.close()
        best_one = max(r["one_node"] for r in by_round)
        best_two = max(r["two_nodes"] for r in by_round)
        result["throughput"] = {
            "one_node_events_per_s": best_one,
            "two_nodes_events_per_s": best_two,
            "ratio": round(best_two / best_one, 3),
            "ratio_by_round": [round(r["two_nodes"] / r["one_node"], 3) for r in by_round],
            "by_round": by_round,
        }
        times = failover(schema, trials, args.ttl)
        result["failover"] = {
            "lease_ttl": args.ttl,
            "trials": trials,
            "median_s": round(statistics.median(times), 3),
            "p99_s": round(percentile(times, 0.99), 3),
            "max_s": round(max(times), 3),
            "min_s": round(min(times), 3),
        }
    finally:
        drop(schema)
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
