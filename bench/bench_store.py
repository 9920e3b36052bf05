"""Benchmarks of the SQLite event store (issue 4). Prints one JSON object.

1. Group commit: 1,000 concurrent writers, each appending one event per call, on a temp file in WAL
   with synchronous=FULL: events/s and per-call latency, against raw sqlite3 batched inserts of the
   same rows into the same schema on the same disk (the ceiling), and one writer alone.
2. Replay: reading a 100,000-event log back and decoding every payload, with the stdlib json and
   with orjson when it is installed (to pick the codec by measurement).
3. Peers: the ``eventsourcing`` library's SQLite application (one event per save, sequentially
   and from 8 threads, and repository.get on a 100,000-event history), run by
   ``bench/peers/eventsourcing_bench.py`` in its own virtual environment ``bench/.venvs/eventsourcing``
   (made by :mod:`bench.peers.venvs` when missing: ``python -m venv`` + pip, pinned in
   ``bench/peers/requirements-eventsourcing.txt``; nothing of it enters the project's dependencies).

Also measured: the events table as a rowid table with a (session_id, version) index (what the
store uses) against a WITHOUT ROWID table keyed by (session_id, version).

Usage::

    /tmp/v/bin/python bench/bench_store.py [--quick] [--rounds 3] [--backend asyncio] [--no-peers]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.peers import venvs  # noqa: E402
from runtime import EventData, SessionRecord  # noqa: E402
from runtime._stores import _sqlite_schema, _sqlite_writer  # noqa: E402
from runtime._stores.sqlite import SQLiteStore  # noqa: E402

PAYLOAD = '{"player": "p-%d", "move": [3, 4], "n": %d}'


def session_id(i: int) -> str:
    """Session ids shaped like the UUIDs applications use (their length matters to an index)."""
    return str(uuid.UUID(int=0x9B2C6F1E5A4B4C1D8E7F000000000000 + i))


TARGETS = {
    "appenders_events_per_s": 100_000,
    "appenders_vs_eventsourcing_saves": 15,
    "replay_events_per_s": 300_000,
    "replay_vs_eventsourcing_get": 5,
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def fresh_dir(base: str | None) -> Path:
    return Path(tempfile.mkdtemp(prefix="sv-bench-", dir=base))


# -- 1. group commit ---------------------------------------------------------------------------


async def _appenders(path: Path, writers: int, per_writer: int) -> dict[str, Any]:
    store = SQLiteStore(path)
    await store.open()
    try:
        async with anyio.create_task_group() as tg:
            for i in range(writers):
                tg.start_soon(store.create, SessionRecord(session_id(i), "Bench"))
        before = store.statistics()
        latencies: list[float] = []
        record = latencies.append
        clock = time.perf_counter

        async def writer(i: int) -> None:
            sid = session_id(i)
            for k in range(per_writer):
                event = [EventData("Moved", 1, PAYLOAD % (i, k))]
                t = clock()
                await store.append(sid, k, event)
                record(clock() - t)

        gc.collect()
        start = clock()
        async with anyio.create_task_group() as tg:
            for i in range(writers):
                tg.start_soon(writer, i)
        elapsed = clock() - start
        after = store.statistics()
    finally:
        await store.aclose()
    events = writers * per_writer
    commits = after.commits - before.commits
    return {
        "events": events,
        "seconds": elapsed,
        "events_per_s": events / elapsed,
        "median_ms": statistics.median(latencies) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "commits": commits,
        "mean_batch": (after.operations - before.operations) / commits,
    }


def appenders_round(backend: str, base: str | None, writers: int, per_writer: int) -> dict[str, Any]:
    d = fresh_dir(base)
    try:
        result: dict[str, Any] = anyio.run(_appenders, d / "s.db", writers, per_writer, backend=backend)
        return result
    finally:
        shutil.rmtree(d, ignore_errors=True)


RAW_INSERT = (
    "INSERT INTO events (session, version, type, schema_version, data, recorded_at) VALUES (?, ?, ?, ?, ?, ?)"
)


def raw_ceiling(base: str | None, writers: int, per_writer: int, batch: int, rounds: int) -> dict[str, Any]:
    """The same rows into the same schema by plain sqlite3 in one thread, ``batch`` rows a commit.

    Two ways: executemany of a one-row INSERT, and 128-row INSERTs (what the store does); the
    ceiling is the faster.
    """
    multi = _sqlite_writer._INSERT_ROWS[128]
    out: dict[str, Any] = {"batch": batch}
    for way in ("executemany", "multirow"):
        best = 0.0
        for _ in range(rounds):
            d = fresh_dir(base)
            try:
                conn = _sqlite_schema.connect_writer(d / "raw.db", "FULL")
                now = time.time()
                conn.executemany(
                    "INSERT INTO sessions VALUES (?, ?, 'Bench', 'running', '{}', '{}', ?, ?)",
                    [(i + 1, session_id(i), now, now) for i in range(writers)],
                )
                rows = [
                    (i + 1, k + 1, "Moved", 1, PAYLOAD % (i, k), now)
                    for k in range(per_writer)
                    for i in range(writers)
                ]
                gc.collect()
                start = time.perf_counter()
                for at in range(0, len(rows), batch):
                    conn.execute("BEGIN IMMEDIATE")
                    chunk = rows[at : at + batch]
                    if way == "executemany":
                        conn.executemany(RAW_INSERT, chunk)
                    else:
                        flat = [v for row in chunk for v in row]
                        step = 128 * 6
                        for i in range(0, len(flat) - step + 1, step):
                            conn.execute(multi, flat[i : i + step])
                        rest = len(flat) % step
                        if rest:
                            conn.executemany(RAW_INSERT, chunk[len(chunk) - rest // 6 :])
                    conn.execute("COMMIT")
                best = max(best, len(rows) / (time.perf_counter() - start))
                conn.close()
            finally:
                shutil.rmtree(d, ignore_errors=True)
        out[f"{way}_events_per_s"] = best
    out["events_per_s"] = max(out["executemany_events_per_s"], out["multirow_events_per_s"])
    return out


async def _sequential(path: Path, appends: int) -> dict[str, Any]:
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.create(SessionRecord("s", "Bench"))
        latencies = []
        start = time.perf_counter()
        for k in range(appends):
            t = time.perf_counter()
            await store.append("s", k, [EventData("Moved", 1, PAYLOAD % (0, k))])
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
    finally:
        await store.aclose()
    return {
        "events_per_s": appends / elapsed,
        "median_ms": statistics.median(latencies) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }


def bench_sequential(backend: str, base: str | None, appends: int) -> dict[str, Any]:
    d = fresh_dir(base)
    try:
        return {"appends": appends, **anyio.run(_sequential, d / "s.db", appends, backend=backend)}
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- 2. replay ---------------------------------------------------------------------------------


def _codecs() -> dict[str, Callable[[str], Any]]:
    """The stdlib json, and orjson when it is installed (imported by name: it is no dependency)."""
    codecs: dict[str, Callable[[str], Any]] = {"json": json.loads}
    try:
        codecs["orjson"] = importlib.import_module("orjson").loads
    except ImportError:
        pass
    return codecs


async def _replay(path: Path, events: int, rounds: int) -> dict[str, Any]:
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.create(SessionRecord("long", "Bench"))
        version = 0
        while version < events:
            chunk = [
                EventData("Moved", 1, PAYLOAD % (n, n)) for n in range(version, min(events, version + 1000))
            ]
            version = await store.append("long", version, chunk)
        result: dict[str, Any] = {"events": events}
        best_read = float("inf")
        for _ in range(rounds):
            gc.collect()
            start = time.perf_counter()
            log = await store.read("long")
            best_read = min(best_read, time.perf_counter() - start)
            assert len(log) == events
        result["read_only_events_per_s"] = events / best_read
        for name, loads in _codecs().items():
            # One loads() per payload, as a codec decodes events one by one; and "batched": all
            # payloads of the read decoded by one loads() of a JSON array joined from them (a codec
            # can do that on replay, and fall back to one by one to name a bad payload).
            for way in ("each", "batched"):
                best = float("inf")
                for _ in range(rounds):
                    gc.collect()
                    start = time.perf_counter()
                    log = await store.read("long")
                    if way == "each":
                        decoded = [loads(e.data) for e in log]
                    else:
                        decoded = loads("[" + ",".join([e.data for e in log]) + "]")
                    best = min(best, time.perf_counter() - start)
                    assert len(decoded) == events
                suffix = "" if way == "each" else "_batched"
                result[f"read_and_{name}{suffix}_events_per_s"] = events / best
    finally:
        await store.aclose()
    return result


def bench_replay(backend: str, base: str | None, events: int, rounds: int) -> dict[str, Any]:
    d = fresh_dir(base)
    try:
        return anyio.run(_replay, d / "s.db", events, rounds, backend=backend)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- layouts of the events table ------------------------------------------------------------


LAYOUTS = {
    # name: (key column type, WITHOUT ROWID?, page size)
    "text_id_without_rowid_4k": ("TEXT", True, 4096),
    "text_id_rowid_plus_index_4k": ("TEXT", False, 4096),
    "int_key_rowid_plus_index_4k": ("INTEGER", False, 4096),
    "int_key_rowid_plus_index_8k (the store)": ("INTEGER", False, 8192),
}


def bench_layouts(base: str | None, events: int, sessions: int, batch: int) -> dict[str, Any]:
    """Interleaved appends to many sessions (UUID-shaped ids), then one long session's log scanned.

    The events table keyed by the session's id (text) or by an integer key, as a WITHOUT ROWID table
    clustered by (session, version) or as a rowid table with a (session, version) index.
    """
    out = {}
    for name, (key_type, without_rowid, page_size) in LAYOUTS.items():
        if without_rowid:
            ddl = (
                f"CREATE TABLE events (session {key_type} NOT NULL, version INTEGER NOT NULL, "
                "type TEXT NOT NULL, schema_version INTEGER NOT NULL, data TEXT NOT NULL, "
                "recorded_at REAL NOT NULL, PRIMARY KEY (session, version)) WITHOUT ROWID"
            )
        else:
            ddl = (
                f"CREATE TABLE events (position INTEGER PRIMARY KEY, session {key_type} NOT NULL, "
                "version INTEGER NOT NULL, type TEXT NOT NULL, schema_version INTEGER NOT NULL, "
                "data TEXT NOT NULL, recorded_at REAL NOT NULL, UNIQUE (session, version))"
            )

        def key(i: int, text: bool = key_type == "TEXT") -> object:
            return (session_id(i) if i >= 0 else "long") if text else i + 2

        d = fresh_dir(base)
        try:
            conn = sqlite3.connect(d / "l.db", isolation_level=None)
            conn.execute(f"PRAGMA page_size = {page_size:d}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA wal_autocheckpoint = {16 * 1024 * 1024 // page_size:d}")
            conn.execute(ddl)
            # Every other row belongs to the long session, the rest to `sessions` others.
            rows = []
            for k in range(events):
                rows.append((key(-1), k + 1, "Moved", 1, PAYLOAD % (k, k), 1.0))
                rows.append((key(k % sessions), k // sessions + 1, "Moved", 1, PAYLOAD % (k, k), 1.0))
            gc.collect()
            start = time.perf_counter()
            for at in range(0, len(rows), batch):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(RAW_INSERT, rows[at : at + batch])
                conn.execute("COMMIT")
            insert_rate = len(rows) / (time.perf_counter() - start)
            scan = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                got = conn.execute(
                    "SELECT version, type, schema_version, data, recorded_at FROM events "
                    "WHERE session = ? ORDER BY version",
                    (key(-1),),
                ).fetchall()
                scan = min(scan, time.perf_counter() - start)
                assert len(got) == events
            out[name] = {
                "interleaved_insert_rows_per_s": insert_rate,
                "scan_rows_per_s": events / scan,
                "file_kib": (d / "l.db").stat().st_size // 1024 + (d / "l.db-wal").stat().st_size // 1024,
            }
            conn.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return out


# -- 3. peers ---------------------------------------------------------------------------------


def _peer(command: str, params: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [
            str(venvs.python("eventsourcing")),
            "-m",
            "bench.peers.eventsourcing_bench",
            command,
            json.dumps(params),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=HERE.parent,
    )
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def bench_eventsourcing(base: str | None, saves: int, history: int, threads: int) -> dict[str, Any]:
    """eventsourcing's save rate (one event per save), sequential and threaded, and its replay."""
    if not venvs.usable("eventsourcing"):
        venvs.create("eventsourcing")
    d = fresh_dir(base)
    try:
        sequential = _peer(
            "durable",
            {"sessions": 1, "events_each": saves, "replay": history, "dir": str(d), "threads": 1},
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    d = fresh_dir(base)
    try:
        threaded = _peer(
            "durable",
            {
                "sessions": threads,
                "events_each": max(1, saves // threads),
                "replay": 1000,
                "dir": str(d),
                "threads": threads,
            },
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {
        "version": venvs.version("eventsourcing"),
        "sequential_saves_per_s": sequential["appends_per_s"],
        f"threaded_{threads}_saves_per_s": threaded["appends_per_s"],
        "saves_per_s": max(sequential["appends_per_s"], threaded["appends_per_s"]),
        "repository_get_events": history,
        "repository_get_events_per_s": sequential["replay_events_per_s"],
    }


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (a smoke test)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement (best is kept)")
    parser.add_argument("--backend", action="append", choices=["asyncio", "trio"], help="default: both")
    parser.add_argument("--no-peers", action="store_true", help="skip the eventsourcing peer")
    parser.add_argument("--dir", default=None, help="where the temp databases go (default: the temp dir)")
    args = parser.parse_args()
    backends = args.backend or ["asyncio", "trio"]
    rounds = 1 if args.quick else args.rounds
    writers, per_writer = (200, 10) if args.quick else (1000, 100)
    replay_events = 10_000 if args.quick else 100_000

    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "store": {
            "synchronous": "FULL",
            "max_batch": _sqlite_writer.MAX_BATCH,
            "wal_autocheckpoint_pages": _sqlite_schema.WAL_AUTOCHECKPOINT_PAGES,
        },
        "appenders": {},
        "sequential": {},
        "replay": {},
    }
    # Rounds interleave the ceiling and the store on each backend, so that each round's ratio
    # compares runs made under the same load (this machine is shared).
    ceilings: list[dict[str, Any]] = []
    runs: dict[str, list[dict[str, Any]]] = {backend: [] for backend in backends}
    for _ in range(rounds):
        ceilings.append(raw_ceiling(args.dir, writers, per_writer, _sqlite_writer.MAX_BATCH, 1))
        for backend in backends:
            runs[backend].append(appenders_round(backend, args.dir, writers, per_writer))
    result["raw_ceiling"] = max(ceilings, key=lambda c: c["events_per_s"])
    result["raw_ceiling"]["rounds_events_per_s"] = [round(c["events_per_s"]) for c in ceilings]
    for backend in backends:
        best = max(runs[backend], key=lambda r: r["events_per_s"])
        ratios = [r["events_per_s"] / c["events_per_s"] for r, c in zip(runs[backend], ceilings, strict=True)]
        result["appenders"][backend] = {
            "writers": writers,
            "appends_per_writer": per_writer,
            **best,
            "rounds_events_per_s": [round(r["events_per_s"]) for r in runs[backend]],
            "ratio_to_raw_ceiling_by_round": [round(x, 2) for x in ratios],
            "ratio_to_raw_ceiling_best": max(ratios),
        }
        result["sequential"][backend] = bench_sequential(backend, args.dir, 200 if args.quick else 2000)
        result["replay"][backend] = bench_replay(backend, args.dir, replay_events, rounds)
    result["layouts"] = bench_layouts(args.dir, replay_events, writers, _sqlite_writer.MAX_BATCH)
    # Each codec at its best way of decoding, on its worse backend.
    codecs = {
        codec: min(
            max(v for k, v in replay.items() if k.startswith(f"read_and_{codec}_"))
            for replay in result["replay"].values()
        )
        for codec in _codecs()
    }
    result["codec_pick"] = max(codecs, key=lambda k: codecs[k])

    if not args.no_peers:
        peer = bench_eventsourcing(args.dir, 300 if args.quick else 3000, replay_events, threads=8)
        result["eventsourcing"] = peer
        es_save = peer["saves_per_s"]
        es_get = peer["repository_get_events_per_s"]
        checks: dict[str, Any] = {}
        for backend in backends:
            appenders = result["appenders"][backend]["events_per_s"]
            replay = result["replay"][backend]
            codec = result["codec_pick"]
            pick = max((k for k in replay if k.startswith(f"read_and_{codec}")), key=lambda k: replay[k])
            checks[backend] = {
                "appenders_events_per_s": [round(appenders), appenders >= TARGETS["appenders_events_per_s"]],
                "appenders_vs_eventsourcing_saves": [
                    round(appenders / es_save, 1),
                    appenders / es_save >= TARGETS["appenders_vs_eventsourcing_saves"],
                ],
            }
            for label, key in (
                ("json", "read_and_json_events_per_s"),
                (pick[len("read_and_") : -len("_events_per_s")], pick),
            ):
                rate = replay[key]
                checks[backend][f"replay_{label}_events_per_s"] = [
                    round(rate),
                    rate >= TARGETS["replay_events_per_s"],
                ]
                checks[backend][f"replay_{label}_vs_eventsourcing_get"] = [
                    round(rate / es_get, 1),
                    rate / es_get >= TARGETS["replay_vs_eventsourcing_get"],
                ]
        result["targets"] = {"wanted": TARGETS, "met": checks}
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
