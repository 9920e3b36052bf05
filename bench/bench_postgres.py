"""Benchmark of PostgresStore's group commit (issue 15). Prints one JSON object.

1,000 sessions, each with one task appending one event per call, ``--calls`` calls each, against:

* the ceiling: plain psycopg putting the same rows into the same schema from one thread, 512 rows per
  commit (the store's largest batch), as one ``COPY`` per commit (what the store does), one ``INSERT ...
  SELECT FROM unnest(...)``, or ``executemany`` (pipelined by psycopg), whichever is fastest;
* ``SQLiteStore`` (WAL, ``synchronous="FULL"``) doing the same appends in the same run.

Rounds interleave the three, so that a noisy spell of the shared machine hits them alike; the best
round of each is kept and every round is printed. The PostgreSQL server is the one at
``SESSIONVISOR_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``); each round works in a
schema of its own, dropped afterwards.

Usage::

    .venv/bin/python -m bench.bench_postgres [--quick] [--rounds 3] [--calls 20] [--backend asyncio]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import psycopg
from psycopg import sql

from runtime import EventData, PostgresStore, SessionRecord, SQLiteStore

PAYLOAD = '{"player": "p-%d", "move": [3, 4], "n": %d}'
BATCH = 512


def session_id(i: int) -> str:
    """Session ids shaped like the UUIDs applications use (their length matters to an index)."""
    return str(uuid.UUID(int=0x9B2C6F1E5A4B4C1D8E7F000000000000 + i))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def dsn() -> str:
    return os.environ.get("SESSIONVISOR_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def drop(schema: str) -> None:
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def _appenders(store: Any, sessions: int, calls: int) -> dict[str, Any]:
    await store.open()
    try:
        async with anyio.create_task_group() as tg:
            for i in range(sessions):
                tg.start_soon(store.create, SessionRecord(session_id(i), "Bench"))
        before = store.statistics()
        latencies: list[float] = []
        record = latencies.append
        clock = time.perf_counter

        async def writer(i: int) -> None:
            sid = session_id(i)
            for k in range(calls):
                event = [EventData("Moved", 1, PAYLOAD % (i, k))]
                t = clock()
                await store.append(sid, k, event)
                record(clock() - t)

        gc.collect()
        start = clock()
        async with anyio.create_task_group() as tg:
            for i in range(sessions):
                tg.start_soon(writer, i)
        elapsed = clock() - start
        after = store.statistics()
    finally:
        await store.aclose()
    events = sessions * calls
    commits = after.commits - before.commits
    return {
        "events": events,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed),
        "median_ms": round(statistics.median(latencies) * 1e3, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 2),
        "commits": commits,
        "mean_batch": round((after.operations - before.operations) / commits, 1),
    }


def postgres_round(backend: str, sessions: int, calls: int) -> dict[str, Any]:
    schema = f"svbench_{uuid.uuid4().hex[:12]}"
    try:
        store = PostgresStore(dsn(), schema=schema)
        result: dict[str, Any] = anyio.run(_appenders, store, sessions, calls, backend=backend)
        return result
    finally:
        drop(schema)


def sqlite_round(backend: str, sessions: int, calls: int) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(prefix="sv-bench-"))
    try:
        store = SQLiteStore(d / "s.db")
        result: dict[str, Any] = anyio.run(_appenders, store, sessions, calls, backend=backend)
        return result
    finally:
        shutil.rmtree(d, ignore_errors=True)


_UNNEST = (
    "INSERT INTO events (session, version, type, schema_version, data, recorded_at, epoch) "
    "SELECT k, v, t, s, d, %s, NULL FROM unnest(%s::bigint[], %s::bigint[], %s::text[], "
    "%s::integer[], %s::text[]) AS r(k, v, t, s, d)"
)
_COPY = "COPY events (session, version, type, schema_version, data, recorded_at) FROM STDIN"
_ONE_ROW = (
    "INSERT INTO events (session, version, type, schema_version, data, recorded_at) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)


def raw_round(sessions: int, calls: int) -> dict[str, Any]:
    """The store's rows by plain psycopg from one thread, BATCH rows a commit: the ceiling."""
    out: dict[str, Any] = {"batch": BATCH}
    for way in ("copy", "unnest", "executemany"):
        schema = f"svbench_{uuid.uuid4().hex[:12]}"
        try:
            # The store's own schema, made by opening (and closing) a store on it.
            anyio.run(_make_schema, schema)
            with psycopg.connect(dsn()) as conn:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
                now = time.time()
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO sessions (id, type, status, args, metadata, created_at, updated_at) "
                        "VALUES (%s, 'Bench', 'running', '{}', '{}', %s, %s)",
                        [(session_id(i), now, now) for i in range(sessions)],
                    )
                    cur.execute("SELECT key FROM sessions ORDER BY key LIMIT 1")
                    first = cur.fetchone()
                    assert first is not None
                conn.commit()
                base = int(first[0])
                rows = [
                    (base + i, k + 1, "Moved", 1, PAYLOAD % (i, k), now)
                    for k in range(calls)
                    for i in range(sessions)
                ]
                gc.collect()
                start = time.perf_counter()
                with conn.cursor() as cur:
                    for at in range(0, len(rows), BATCH):
                        chunk = rows[at : at + BATCH]
                        if way == "copy":
                            with cur.copy(_COPY) as copy:
                                for row in chunk:
                                    copy.write_row(row)
                        elif way == "unnest":
                            cols = [list(column) for column in zip(*chunk, strict=True)]
                            cur.execute(_UNNEST, (now, cols[0], cols[1], cols[2], cols[3], cols[4]))
                        else:
                            cur.executemany(_ONE_ROW, chunk)
                        conn.commit()
                out[f"{way}_events_per_s"] = round(len(rows) / (time.perf_counter() - start))
        finally:
            drop(schema)
    out["events_per_s"] = max(out[f"{way}_events_per_s"] for way in ("copy", "unnest", "executemany"))
    return out


async def _make_schema(schema: str) -> None:
    store = PostgresStore(dsn(), schema=schema)
    await store.open()
    await store.aclose()


def server_settings() -> dict[str, str]:
    with psycopg.connect(dsn()) as conn:
        return {
            name: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0])  # type: ignore[index]
            for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method", "commit_delay")
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100 sessions, 5 calls, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--calls", type=int, default=20, help="appends per session")
    parser.add_argument("--backend", choices=["asyncio", "trio"], action="append")
    args = parser.parse_args()
    sessions, calls, rounds = args.sessions, args.calls, args.rounds
    if args.quick:
        sessions, calls, rounds = 100, 5, 1
    backends = args.backend or ["asyncio", "trio"]
    by_round: list[dict[str, Any]] = []
    for _ in range(rounds):
        this: dict[str, Any] = {"raw_psycopg": raw_round(sessions, calls)}
        for backend in backends:
            this[f"postgres_{backend}"] = postgres_round(backend, sessions, calls)
            this[f"sqlite_{backend}"] = sqlite_round(backend, sessions, calls)
        by_round.append(this)
        print(json.dumps(this), file=sys.stderr)

    def best(name: str) -> dict[str, Any]:
        return max((r[name] for r in by_round), key=lambda r: float(r["events_per_s"]))

    ceiling = best("raw_psycopg")
    result: dict[str, Any] = {
        "sessions": sessions,
        "calls_per_session": calls,
        "rounds": rounds,
        "raw_psycopg": ceiling,
    }
    for backend in backends:
        pg, lite = best(f"postgres_{backend}"), best(f"sqlite_{backend}")
        result[f"postgres_{backend}"] = pg
        result[f"sqlite_{backend}"] = lite
        result[f"postgres_{backend}_vs_ceiling"] = round(pg["events_per_s"] / ceiling["events_per_s"], 3)
        result[f"postgres_{backend}_vs_sqlite"] = round(pg["events_per_s"] / lite["events_per_s"], 3)
        result[f"postgres_{backend}_vs_ceiling_by_round"] = [
            round(r[f"postgres_{backend}"]["events_per_s"] / r["raw_psycopg"]["events_per_s"], 3)
            for r in by_round
        ]
        result[f"postgres_{backend}_vs_sqlite_by_round"] = [
            round(r[f"postgres_{backend}"]["events_per_s"] / r[f"sqlite_{backend}"]["events_per_s"], 3)
            for r in by_round
        ]
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "load_average": os.getloadavg(),
        "server": server_settings(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
