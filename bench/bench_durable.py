"""Sessions on SQLite (issue 4): recording, replay and recovery through the runtime. Prints JSON.

    /tmp/v/bin/python bench/bench_durable.py [--quick] [--rounds 3] [--backend asyncio] [--dir DIR]

Figures, each on a fresh file in WAL mode with ``synchronous="FULL"`` (the store's default):

1. ``record``: 1,000 sessions under one ``SessionSupervisor``, one client task each making calls in a
   row, each call recording one event: events/s over the whole run, and the latency of ``record``
   itself (timed around the ``await self.record(...)`` in the handler) and of the call, median and
   p99. Against the ceiling measured in the same round on the same disk: plain ``sqlite3`` inserting
   the same rows into the same schema in one thread, as many rows per transaction as the store's
   writer commits at most (``MAX_BATCH``). Rounds interleave the ceiling and the sessions, so that a
   noisy spell of a shared machine hits both. Two baselines run the same protocol (1,000 servers,
   one request each at a time, one JSON row per request through a group commit, the answer once
   it is durable) with no runtime at all, in the same rounds: ``raw_anyio_calls`` written with
   anyio's primitives (memory object streams, Events, ``to_thread``), and ``bare_asyncio_calls``
   with asyncio's barest (futures, one writer thread, ``call_soon_threadsafe``): the most one event
   loop of CPython does, whatever the runtime. ``gc_tuned``: the sessions again with the garbage
   collector's first generation at 20,000 objects (``GC_TUNED``). Two more figures say where the
   time goes: the same load on ``MemoryStore`` (the session machinery alone: no I/O, no thread)
   and the same appends made straight to ``SQLiteStore`` by 1,000 tasks (the store alone).
2. ``replay``: a long log (written with the store's ``append``, no snapshot) folded by
   ``runtime.replay(..., use_snapshot=False)``: read, decode and apply; events/s, best of the rounds.
3. ``recovery``: a session of 10,000 events with ``snapshot_every=100``, its snapshot at version
   9,901 (taken by the runtime) and 99 events after it, the worst tail that setting allows; median
   and p99 over repeats of: ``runtime.replay`` from the snapshot; a crash in a running supervisor
   until the restarted session has answered the next call; and the first call on the session in a
   new supervisor on the file (a new process: its store opens its first reader connection then).

4. ``one_session``: one session, 100 concurrent callers, each call recording one event (issue 14), on
   ``MemoryStore`` and on SQLite, with ``pipeline_depth`` 1 and 64 (``--depth``): events/s and the
   call latency, median and p99. Rounds interleave the four, so that each SQLite figure has its
   MemoryStore figure from the same spell of the machine.

Targets (issue 4): >= 100,000 events/s with 1,000 concurrent sessions; recovery <= 2 ms. Issue 14:
one session on SQLite at ``pipeline_depth=64`` >= 0.5x the same load on MemoryStore; 1,000 sessions
at depth 1 >= 0.5x the bare asyncio protocol (``bare_asyncio_calls``).

``--only record|one_session|replay|recovery`` (repeatable) runs only those parts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, ClassVar

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from runtime import (  # noqa: E402
    MemoryStore,
    Session,
    SessionCrashed,
    SessionRecord,
    SQLiteStore,
    default_registry,
    event,
    replay,
)
from runtime._stores import _sqlite_writer  # noqa: E402
from supervisors import Backoff, RestartPolicy, SessionSupervisor  # noqa: E402

TARGETS = {"events_per_s": 100_000, "recovery_ms": 2.0}
MAX_BATCH: int = getattr(_sqlite_writer, "MAX_BATCH", 512)


@event(name="bench.durable.Recorded")
class Recorded:
    n: int


class Recorder(Session[int]):
    """Counts its events. A call with an int records one event; ``("bulk", k)`` records ``k`` at once."""

    type_name = "bench.durable.Recorder"
    snapshot_every = 100
    record_latencies: ClassVar[list[float]] = []
    crashed_at: ClassVar[float] = 0.0

    def initial_state(self, args: Mapping[str, Any]) -> int:
        return 0

    def apply(self, state: int, event: object) -> int:
        return state + 1

    async def handle_call(self, message: object) -> object:
        if isinstance(message, int):
            started = time.perf_counter()
            await self.record(Recorded(message))
            Recorder.record_latencies.append(time.perf_counter() - started)
            return None
        if isinstance(message, tuple):
            _, count = message
            await self.record(*(Recorded(i) for i in range(count)))
        elif message == "crash":
            Recorder.crashed_at = time.perf_counter()
            raise RuntimeError("crash requested")
        return self.state


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def fresh_dir(base: str | None) -> Path:
    return Path(tempfile.mkdtemp(prefix="sv-durable-", dir=base))


# -- 1. recording ----------------------------------------------------------------------------------


# What an application with many concurrent sessions may set (README, "Performance"): a larger
# first generation lets the objects of calls in flight die young instead of being promoted and
# walked again by the older generations' passes.
GC_TUNED = (20_000, 10, 10)


async def _sessions(
    path: Path, sessions: int, calls: int, gc_threshold: tuple[int, int, int] | None = None
) -> dict[str, Any]:
    if gc_threshold is not None:
        default = gc.get_threshold()
        gc.set_threshold(*gc_threshold)
        try:
            return await _sessions(path, sessions, calls)
        finally:
            gc.set_threshold(*default)
    store = SQLiteStore(path, synchronous="FULL")
    async with SessionSupervisor(store=store, drain_timeout=60) as supervisor:
        refs = [await supervisor.start(Recorder, f"s{i:04d}") for i in range(sessions)]
        Recorder.record_latencies.clear()
        call_latencies: list[float] = []
        clock = time.perf_counter
        before = store.statistics()

        async def client(call: Any) -> None:
            for k in range(calls):
                started = clock()
                await call(k, timeout=120)
                call_latencies.append(clock() - started)

        gc.collect()
        start = clock()
        async with anyio.create_task_group() as tg:
            for ref in refs:
                tg.start_soon(client, ref.call)
        elapsed = clock() - start
        after = store.statistics()
        if await refs[-1].call("read") != calls:
            raise AssertionError("events went missing")
    events = sessions * calls
    record = Recorder.record_latencies
    commits = after.commits - before.commits
    return {
        "events": events,
        "seconds": elapsed,
        "events_per_s": events / elapsed,
        "record_median_ms": statistics.median(record) * 1e3,
        "record_p99_ms": percentile(record, 0.99) * 1e3,
        "call_median_ms": statistics.median(call_latencies) * 1e3,
        "call_p99_ms": percentile(call_latencies, 0.99) * 1e3,
        "commits": commits,
        "mean_batch": (after.operations - before.operations) / max(1, commits),
    }


def _raw_schema(path: Path, sessions: int) -> tuple[str, list[object]]:
    """Make the store's schema with ``sessions`` sessions in ``path``; the INSERT for an event row
    and each session's key, for plain sqlite3 writing the same rows as the store."""

    async def make_schema() -> None:
        store = SQLiteStore(path)
        await store.open()
        try:
            for i in range(sessions):
                await store.create(SessionRecord(f"s{i:04d}", Recorder.type_name or "Recorder"))
        finally:
            await store.aclose()

    anyio.run(make_schema)
    with closing(sqlite3.connect(path)) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        by_key = "session_id" not in columns  # events refer to the index's integer key
        refs = [r[0] for r in conn.execute(f"SELECT {'key' if by_key else 'id'} FROM sessions ORDER BY id")]
    column = "session" if by_key else "session_id"
    insert = (
        f"INSERT INTO events ({column}, version, type, schema_version, data, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    return insert, refs


def _raw_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def raw_ceiling(directory: Path, sessions: int, calls: int, batch: int) -> dict[str, Any]:
    """The same rows into the same schema with plain sqlite3, ``batch`` rows per transaction."""
    path = directory / "raw.db"
    insert, refs = _raw_schema(path, sessions)
    with closing(_raw_connection(path)) as conn:
        encoded = default_registry.encode(Recorded(0))
        now = time.time()
        rows = [
            (ref, k + 1, encoded.type, encoded.schema_version, f'{{"n":{k}}}', now)
            for k in range(calls)
            for ref in refs
        ]
        gc.collect()
        start = time.perf_counter()
        for at in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, rows[at : at + batch])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
    return {"batch": batch, "events_per_s": len(rows) / elapsed}


# The same protocol with no runtime: 1,000 server tasks, each taking one request at a time from its
# client, appending one JSON row through a group commit and answering once it is durable. What a
# programmer would write by hand, twice: with anyio's primitives (a memory object stream per
# server, an Event per reply, the commit in ``anyio.to_thread``), and with asyncio's barest ones
# (futures, one writer thread woken by a queue, ``call_soon_threadsafe``): the floor of CPython.


def raw_anyio_calls(path: Path, sessions: int, calls: int, backend: str) -> float:
    insert, refs = _raw_schema(path, sessions)
    conn = _raw_connection(path)
    try:
        elapsed = anyio.run(_raw_anyio_run, conn, insert, refs, calls, backend=backend)
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
        assert count == sessions * calls, count
    finally:
        conn.close()
    return sessions * calls / elapsed


async def _raw_anyio_run(conn: sqlite3.Connection, insert: str, refs: list[object], calls: int) -> float:
    pending: list[tuple[tuple[Any, ...], anyio.Event]] = []
    kick = [anyio.Event()]
    kind = Recorder.type_name

    def commit(rows: list[tuple[Any, ...]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")

    async def committer() -> None:
        while True:
            await kick[0].wait()
            kick[0] = anyio.Event()
            batch = pending[:MAX_BATCH]
            del pending[:MAX_BATCH]
            if pending:
                kick[0].set()
            await anyio.to_thread.run_sync(commit, [row for row, _ in batch])
            for _, done in batch:
                done.set()

    async def server(ref: object, requests: Any) -> None:
        version = 0
        async with requests:
            async for n, reply in requests:
                done = anyio.Event()
                row = (ref, version + 1, kind, 1, json.dumps({"n": n}), time.time())
                pending.append((row, done))
                kick[0].set()
                await done.wait()
                version += 1
                reply.append(version)
                reply[0].set()

    async def client(requests: Any) -> None:
        async with requests:
            for k in range(calls):
                reply: list[Any] = [anyio.Event()]
                await requests.send((k, reply))
                await reply[0].wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(committer)
        senders = []
        for ref in refs:
            send, receive = anyio.create_memory_object_stream[Any](1)
            tg.start_soon(server, ref, receive)
            senders.append(send)
        gc.collect()
        start = time.perf_counter()
        async with anyio.create_task_group() as clients:
            for send in senders:
                clients.start_soon(client, send)
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    return elapsed


def bare_asyncio_calls(path: Path, sessions: int, calls: int) -> float:
    insert, refs = _raw_schema(path, sessions)
    conn = _raw_connection(path)
    requests: SimpleQueue[Any] = SimpleQueue()
    kind = Recorder.type_name

    async def main() -> float:
        loop = asyncio.get_running_loop()

        def wake(batch: list[Any]) -> None:
            for _, done in batch:
                done.set_result(None)

        def writer() -> None:
            while (first := requests.get()) is not None:
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(requests.get_nowait())
                    except Empty:
                        break
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(insert, [row for row, _ in batch])
                conn.execute("COMMIT")
                loop.call_soon_threadsafe(wake, batch)

        async def server(ref: object, box: list[Any]) -> None:
            version = 0
            while True:
                if not box[0]:
                    box[1] = loop.create_future()
                    await box[1]
                n, reply = box[0].pop()
                done = loop.create_future()
                requests.put(((ref, version + 1, kind, 1, json.dumps({"n": n}), time.time()), done))
                await done
                version += 1
                reply.set_result(version)

        async def client(box: list[Any]) -> None:
            for k in range(calls):
                reply = loop.create_future()
                box[0].append((k, reply))
                if box[1] is not None and not box[1].done():
                    box[1].set_result(None)
                await reply

        thread = threading.Thread(target=writer)
        thread.start()
        boxes: list[list[Any]] = [[[], None] for _ in refs]
        servers = [asyncio.ensure_future(server(ref, box)) for ref, box in zip(refs, boxes, strict=True)]
        await asyncio.sleep(0)
        gc.collect()
        start = time.perf_counter()
        await asyncio.gather(*(client(box) for box in boxes))
        elapsed = time.perf_counter() - start
        requests.put(None)
        thread.join()
        for task in servers:
            task.cancel()
        await asyncio.gather(*servers, return_exceptions=True)
        return elapsed

    try:
        elapsed = asyncio.run(main())
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
        assert count == sessions * calls, count
    finally:
        conn.close()
    return sessions * calls / elapsed


async def _memory_sessions(sessions: int, calls: int) -> float:
    """The same load on MemoryStore: what the session machinery alone allows (no I/O, no thread)."""
    async with SessionSupervisor(store=MemoryStore()) as supervisor:
        refs = [await supervisor.start(Recorder, f"s{i:04d}") for i in range(sessions)]

        async def client(call: Any) -> None:
            for k in range(calls):
                await call(k, timeout=120)

        gc.collect()
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for ref in refs:
                tg.start_soon(client, ref.call)
        return sessions * calls / (time.perf_counter() - start)


async def _store_appends(path: Path, sessions: int, calls: int) -> float:
    """The same appends made straight to SQLiteStore by one task per session (no sessions)."""
    store = SQLiteStore(path, synchronous="FULL")
    await store.open()
    try:
        for i in range(sessions):
            await store.create(SessionRecord(f"s{i:04d}", Recorder.type_name or "Recorder"))

        async def appender(sid: str) -> None:
            for k in range(calls):
                await store.append(sid, k, [default_registry.encode(Recorded(k))])

        gc.collect()
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(sessions):
                tg.start_soon(appender, f"s{i:04d}")
        return sessions * calls / (time.perf_counter() - start)
    finally:
        await store.aclose()


def _in_fresh_dir(base: str | None, fn: Any, *args: Any) -> Any:
    """``fn(path, *args)`` (synchronous), with ``path`` a new file in a new temp directory."""
    d = fresh_dir(base)
    try:
        return fn(d / "s.db", *args)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_record(
    backends: list[str], base: str | None, sessions: int, calls: int, rounds: int
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
    ceilings: list[float] = []
    bare: list[float] = []
    raw_anyio: dict[str, list[float]] = {b: [] for b in backends}
    tuned: dict[str, list[float]] = {b: [] for b in backends}
    memory: dict[str, list[float]] = {b: [] for b in backends}
    appends: dict[str, list[float]] = {b: [] for b in backends}
    for _ in range(rounds):
        d = fresh_dir(base)
        try:
            ceilings.append(raw_ceiling(d, sessions, calls, MAX_BATCH)["events_per_s"])
        finally:
            shutil.rmtree(d, ignore_errors=True)
        bare.append(_in_fresh_dir(base, bare_asyncio_calls, sessions, calls))
        for backend in backends:
            raw_anyio[backend].append(_in_fresh_dir(base, raw_anyio_calls, sessions, calls, backend))
            run = in_dir(base, _sessions, sessions, calls, backend=backend)
            run["ratio_to_ceiling_this_round"] = run["events_per_s"] / ceilings[-1]
            run["ratio_to_bare_asyncio_this_round"] = run["events_per_s"] / bare[-1]
            run["ratio_to_raw_anyio_this_round"] = run["events_per_s"] / raw_anyio[backend][-1]
            runs[backend].append(run)
            tuned[backend].append(
                in_dir(base, _sessions, sessions, calls, GC_TUNED, backend=backend)["events_per_s"]
            )
            memory[backend].append(anyio.run(_memory_sessions, sessions, calls, backend=backend))
            appends[backend].append(in_dir(base, _store_appends, sessions, calls, backend=backend))
    out: dict[str, Any] = {
        "sessions": sessions,
        "calls_each": calls,
        "raw_ceiling": {"batch": MAX_BATCH, "events_per_s": max(ceilings), "rounds": ceilings},
        "bare_asyncio_calls": {"events_per_s": max(bare), "rounds": bare},
    }
    for backend, backend_runs in runs.items():
        best = max(backend_runs, key=lambda r: r["events_per_s"])
        out[backend] = {
            **best,
            "ratio_to_ceiling": best["events_per_s"] / max(ceilings),
            "rounds_events_per_s": [round(r["events_per_s"]) for r in backend_runs],
            "raw_anyio_calls_events_per_s": max(raw_anyio[backend]),
            "gc_tuned_events_per_s": max(tuned[backend]),
            "same_load_on_memory_store_events_per_s": max(memory[backend]),
            "store_appends_alone_events_per_s": max(appends[backend]),
        }
    return out


# -- 4. one busy session ---------------------------------------------------------------------------


def _depth_class(depth: int) -> type[Recorder]:
    """``Recorder`` with ``pipeline_depth = depth`` (a class attribute a runtime without it ignores)."""
    return type(f"Recorder{depth}", (Recorder,), {"pipeline_depth": depth})


async def _one_session(path: Path | None, callers: int, calls: int, depth: int) -> dict[str, Any]:
    """``callers`` tasks calling one session ``calls`` times each, one event per call.

    On ``SQLiteStore(path)`` (WAL + FULL), or on ``MemoryStore`` when ``path`` is ``None``.
    """
    store = MemoryStore() if path is None else SQLiteStore(path, synchronous="FULL")
    cls = _depth_class(depth)
    async with SessionSupervisor(store=store, drain_timeout=60) as supervisor:
        ref = await supervisor.start(cls, "busy")
        call = ref.call
        latencies: list[float] = []
        clock = time.perf_counter

        async def client(first: int) -> None:
            for k in range(first, first + calls):
                started = clock()
                await call(k, timeout=120)
                latencies.append(clock() - started)

        gc.collect()
        start = clock()
        async with anyio.create_task_group() as tg:
            for c in range(callers):
                tg.start_soon(client, c * calls)
        elapsed = clock() - start
        if await call("read", timeout=120) != callers * calls:
            raise AssertionError("events went missing")
    events = callers * calls
    return {
        "events_per_s": events / elapsed,
        "call_median_ms": statistics.median(latencies) * 1e3,
        "call_p99_ms": percentile(latencies, 0.99) * 1e3,
    }


def bench_one_session(
    backends: list[str], base: str | None, callers: int, calls: int, depth: int, rounds: int
) -> dict[str, Any]:
    """Memory and SQLite at depth 1 and ``depth``, interleaved per round; the best round of each."""
    configs = [("memory", 1), ("memory", depth), ("sqlite", 1), ("sqlite", depth)]
    out: dict[str, Any] = {"callers": callers, "calls_each": calls, "depth": depth}
    for backend in backends:
        runs: dict[str, list[dict[str, Any]]] = {f"{s}_depth_{d}": [] for s, d in configs}
        ratios: list[float] = []
        for _ in range(rounds):
            for store, d in configs:
                if store == "memory":
                    run = anyio.run(_one_session, None, callers, calls, d, backend=backend)
                else:
                    run = in_dir(base, _one_session, callers, calls, d, backend=backend)
                runs[f"{store}_depth_{d}"].append(run)
            this_round = {key: r[-1]["events_per_s"] for key, r in runs.items()}
            ratios.append(this_round[f"sqlite_depth_{depth}"] / this_round["memory_depth_1"])
        best = {key: max(r, key=lambda x: x["events_per_s"]) for key, r in runs.items()}
        out[backend] = {
            **best,
            "rounds_events_per_s": {key: [round(x["events_per_s"]) for x in r] for key, r in runs.items()},
            f"sqlite_depth_{depth}_to_memory_depth_1": best[f"sqlite_depth_{depth}"]["events_per_s"]
            / best["memory_depth_1"]["events_per_s"],
            f"sqlite_depth_{depth}_to_memory_depth_{depth}": best[f"sqlite_depth_{depth}"]["events_per_s"]
            / best[f"memory_depth_{depth}"]["events_per_s"],
            "sqlite_depth_1_to_memory_depth_1": best["sqlite_depth_1"]["events_per_s"]
            / best["memory_depth_1"]["events_per_s"],
            f"rounds_sqlite_depth_{depth}_to_memory_depth_1": [round(r, 3) for r in ratios],
        }
    return out


# -- 2. replay -------------------------------------------------------------------------------------


async def _write_log(store: SQLiteStore, sid: str, events: int, start: int = 0) -> None:
    version = start
    while version < start + events:
        chunk = [
            default_registry.encode(Recorded(n)) for n in range(version, min(start + events, version + 1000))
        ]
        version = await store.append(sid, version, chunk)


async def _replay(path: Path, events: int, rounds: int) -> dict[str, Any]:
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.create(SessionRecord("long", Recorder.type_name or "Recorder"))
        await _write_log(store, "long", events)
        record = await store.get("long")
        assert record is not None
        best = float("inf")
        for _ in range(rounds):
            gc.collect()
            start = time.perf_counter()
            done = await replay(store, record, Recorder(), default_registry, use_snapshot=False)
            best = min(best, time.perf_counter() - start)
            assert done.state == events
    finally:
        await store.aclose()
    return {"events": events, "seconds": best, "events_per_s": events / best}


# -- 3. recovery -----------------------------------------------------------------------------------


async def _recovery(path: Path, events: int, repeats: int) -> dict[str, Any]:
    every = Recorder.snapshot_every
    assert every is not None
    head = events - (every - 1)  # the snapshot's version: the tail after it is every - 1 events
    async with SessionSupervisor(store=SQLiteStore(path)) as supervisor:
        ref = await supervisor.start(Recorder, "big")
        done = 0
        while done < head:
            count = min(every, head - done)
            done = await ref.call(("bulk", count), timeout=120)  # type: ignore[assignment]
    store = SQLiteStore(path)
    await store.open()
    try:
        snapshot = await store.load_snapshot("big")
        assert snapshot is not None
        assert snapshot.version == head, snapshot
        await _write_log(store, "big", events - head, start=head)
        record = await store.get("big")
        assert record is not None
        assert record.version == events
        direct = []
        for _ in range(repeats):
            start = time.perf_counter()
            got = await replay(store, record, Recorder(), default_registry)
            direct.append(time.perf_counter() - start)
            assert (got.state, got.snapshot_version, got.replayed) == (events, head, events - head)
    finally:
        await store.aclose()

    # A crash in a running supervisor: recovery from the same snapshot and tail each time (the
    # session records nothing, so it takes no newer snapshot).
    restarts = []
    policy = RestartPolicy(max_restarts=repeats + 1, within=3600.0, backoff=Backoff(initial=0))
    async with SessionSupervisor(store=SQLiteStore(path), session_types=[Recorder], restarts=policy) as sup:
        ref = await sup.get("big")
        assert await ref.call("read", timeout=60) == events
        for _ in range(repeats):
            with contextlib.suppress(SessionCrashed):
                await ref.call("crash", timeout=60)
            assert await ref.call("read", timeout=60) == events
            restarts.append(time.perf_counter() - Recorder.crashed_at)
        assert (await sup.store.load_snapshot("big")) == snapshot

    # A new process: a new supervisor on the file, its first call to the session (opening the
    # store's first reader connection is part of it).
    first_call = []
    for _ in range(repeats):
        async with SessionSupervisor(store=SQLiteStore(path), session_types=[Recorder]) as supervisor:
            start = time.perf_counter()
            ref = await supervisor.get("big")
            state = await ref.call("read", timeout=60)
            first_call.append(time.perf_counter() - start)
            assert state == events
        # Leaving snapshots the session at its last version: put the older one back.
        store = SQLiteStore(path)
        await store.open()
        try:
            await store.save_snapshot(snapshot)
        finally:
            await store.aclose()
    return {
        "events": events,
        "snapshot_every": every,
        "snapshot_version": head,
        "tail": events - head,
        "repeats": repeats,
        "replay_median_ms": statistics.median(direct) * 1e3,
        "replay_p99_ms": percentile(direct, 0.99) * 1e3,
        "crash_to_recovered_median_ms": statistics.median(restarts) * 1e3,
        "crash_to_recovered_p99_ms": percentile(restarts, 0.99) * 1e3,
        "new_process_first_call_median_ms": statistics.median(first_call) * 1e3,
        "new_process_first_call_p99_ms": percentile(first_call, 0.99) * 1e3,
    }


def in_dir(base: str | None, fn: Any, *args: Any, backend: str) -> Any:
    """``fn(path, *args)`` on ``backend``, with ``path`` a new file in a new temp directory."""
    d = fresh_dir(base)
    try:
        return anyio.run(fn, d / "s.db", *args, backend=backend)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- main ------------------------------------------------------------------------------------------


PARTS = ("record", "one_session", "replay", "recovery")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (a smoke test)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per throughput figure (best is kept)")
    parser.add_argument("--backend", action="append", choices=["asyncio", "trio"], help="default: both")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only these parts (default: all)")
    parser.add_argument("--depth", type=int, default=64, help="pipeline_depth of the one-session figure")
    parser.add_argument("--dir", default=None, help="where the temp databases go (default: the temp dir)")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args()
    backends = args.backend or ["asyncio", "trio"]
    parts = args.only or list(PARTS)
    rounds = 1 if args.quick else args.rounds
    sessions, calls = (1000, 5) if args.quick else (1000, 100)
    callers, calls_each = (100, 5) if args.quick else (100, 100)
    replay_events = 20_000 if args.quick else 200_000
    repeats = 10 if args.quick else 50

    result: dict[str, Any] = {
        "benchmark": "durable",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "machine": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "store": {"synchronous": "FULL", "journal_mode": "WAL", "max_batch": MAX_BATCH},
    }
    checks: dict[str, dict[str, bool]] = {backend: {} for backend in backends}
    if "record" in parts:
        record = result["record"] = bench_record(backends, args.dir, sessions, calls, rounds)
        for backend in backends:
            figures = record[backend]
            checks[backend]["events_per_s >= 100,000"] = figures["events_per_s"] >= TARGETS["events_per_s"]
            checks[backend][">= 0.5x bare asyncio"] = (
                figures["events_per_s"] / record["bare_asyncio_calls"]["events_per_s"] >= 0.5
            )
    if "one_session" in parts:
        one = result["one_session"] = bench_one_session(
            backends, args.dir, callers, calls_each, args.depth, rounds
        )
        for backend in backends:
            ratio = one[backend][f"sqlite_depth_{args.depth}_to_memory_depth_1"]
            checks[backend][f"one session, depth {args.depth}: >= 0.5x MemoryStore"] = ratio >= 0.5
    if "replay" in parts:
        result["replay"] = {
            backend: max(
                (in_dir(args.dir, _replay, replay_events, 3, backend=backend) for _ in range(rounds)),
                key=lambda r: r["events_per_s"],
            )
            for backend in backends
        }
    if "recovery" in parts:
        recovery = result["recovery"] = {
            backend: in_dir(args.dir, _recovery, 10_000, repeats, backend=backend) for backend in backends
        }
        for backend in backends:
            for name in ("replay", "crash_to_recovered", "new_process_first_call"):
                checks[backend][f"{name} <= 2 ms"] = (
                    recovery[backend][f"{name}_median_ms"] <= TARGETS["recovery_ms"]
                )
    result["checks"] = checks
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
