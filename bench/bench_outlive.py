"""Sessions outlive their process (issue 12): reminder lateness, start-up on a large store, resumption.

    python bench/bench_outlive.py [--quick] [--only lateness,startup,resume] [--backend asyncio|trio]

Prints JSON. Each figure is set against a baseline measured in the same run (the machine is shared
and noisy: rounds of the two sides are interleaved, and the ratio is what to read).

* ``lateness``: 1,000 sessions, each with a durable reminder every 100 ms (the handler schedules the
  next one) for 30 s, on an SQLite file; how late each reached ``handle_info`` (p50, p99), against a
  bare anyio loop doing the same (1,000 tasks, ``sleep_until`` every 100 ms). Target: p99 <= 2x the
  bare loop's. Three interleaved rounds of 10 s each side. Also the cyclic collector's passes
  during each side (``gc_passes``: young, middle, full; ``gc_full_ms``: the full passes' durations):
  the tail beyond the bare loop's is the full passes and the backlog each leaves. Then the same
  again (``gc_tuned``) with the collector setting README.md recommends for many sessions in flight,
  ``gc.set_threshold(20_000, 10, 10)``, set for the whole process: both sides run under it.
* ``startup``: a store of 1,000,000 sessions built through the store API (100,000 not ended with
  deadlines an hour away, 1,000 of them with a reminder due within the next minute, the rest ended);
  in a fresh process, the time until ``SessionSupervisor`` is entered and ``ready()`` returned, and
  the process's RSS growth; against opening the same file with ``sqlite3`` and counting the rows
  (the floor). Targets: ready <= 1 s, growth <= 50 MB. Also one store reaper pass right after (its
  cost is the due sessions', not the store's).
* ``resume``: 10,000 ``resume_on_start`` sessions stored as running; a fresh process resumes them at
  ``max_resumes_per_second=5000`` while a client calls another session (1 s timeout) in a loop.
  ``achieved_per_s`` counts a session once it has recovered (its state read back), from the return
  of ``ready()`` (which lists the sessions to resume: ``ready_s``); ``activated_per_s`` once its
  activation was started (the pacing alone). Target: the
  achieved rate within 10% of the setting, no call timing out.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime import CallTimeout, Reminder, Session, SessionRecord, SQLiteStore, Status
from supervisors import ReaperPolicy, SessionSupervisor

HERE = os.path.abspath(__file__)


class Ticker(Session[int]):
    """Schedules its reminder ``tick`` every ``period`` seconds; notes how late each came."""

    type_name = "bench.Ticker"
    snapshot_every = None
    late: ClassVar[list[float]] = []
    period: ClassVar[float] = 0.1
    running: ClassVar[bool] = True

    def initial_state(self, args: Mapping[str, Any]) -> int:
        return 0

    async def handle_call(self, message: object) -> object:
        if message == "go":
            await self.schedule("tick", self.period, time.time() + self.period)
        return None

    async def handle_info(self, message: object) -> None:
        assert isinstance(message, float)
        Ticker.late.append(time.time() - message)
        if Ticker.running:
            await self.schedule("tick", self.period, time.time() + self.period)


class Resumed(Session[int]):
    type_name = "bench.Resumed"
    resume_on_start = True
    snapshot_every = None

    def initial_state(self, args: Mapping[str, Any]) -> int:
        return 0

    async def handle_call(self, message: object) -> object:
        return message


class _Collections:
    """The cyclic collector's passes while installed (``with``): how many of each generation, and
    how long each full pass took (``gc.callbacks``; the collector's policy is left as it is)."""

    def __init__(self) -> None:
        self.passes = [0, 0, 0]
        self.full_ms: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self.passes[generation] += 1
        if generation == 2:
            self.full_ms.append((time.perf_counter() - self._started) * 1000)

    def __enter__(self) -> _Collections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def figures(self, prefix: str) -> dict[str, Any]:
        full = sorted(round(ms) for ms in self.full_ms)
        return {f"{prefix}gc_passes": self.passes, f"{prefix}gc_full_ms": full}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else 0.0


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover


# -- lateness ---------------------------------------------------------------------------------------


async def _reminders_round(sessions_n: int, seconds: float, folder: str, n: int) -> list[float]:
    Ticker.late, Ticker.running = [], True
    store = SQLiteStore(os.path.join(folder, f"late{n}.db"))
    async with SessionSupervisor(store=store, session_types=[Ticker]) as sessions:
        refs = [await sessions.start(Ticker) for _ in range(sessions_n)]
        for ref in refs:
            await ref.call("go")
        await anyio.sleep(seconds)
        Ticker.running = False
        await anyio.sleep(2 * Ticker.period)
    return Ticker.late


async def _bare_round(tasks: int, seconds: float, period: float) -> list[float]:
    late: list[float] = []
    stop = anyio.current_time() + seconds

    async def ticker() -> None:
        due = anyio.current_time() + period
        while due < stop:
            await anyio.sleep_until(due)
            late.append(anyio.current_time() - due)
            due = anyio.current_time() + period

    async with anyio.create_task_group() as tg:
        for _ in range(tasks):
            tg.start_soon(ticker)
    return late


GC_TUNED = (20_000, 10, 10)
"""The collector setting README.md ("Performance") recommends with many sessions in flight."""


async def _lateness(quick: bool, threshold: tuple[int, int, int] | None) -> dict[str, Any]:
    n, rounds, seconds = (200, 2, 2.0) if quick else (1000, 3, 10.0)
    ours: list[float] = []
    bare: list[float] = []
    ours_gc, bare_gc = _Collections(), _Collections()
    default = gc.get_threshold()
    if threshold is not None:  # the whole process, both sides alike
        gc.set_threshold(*threshold)
    try:
        with tempfile.TemporaryDirectory() as folder:
            for r in range(rounds):
                with bare_gc:
                    bare += await _bare_round(n, seconds, Ticker.period)
                with ours_gc:
                    ours += await _reminders_round(n, seconds, folder, r)
    finally:
        gc.set_threshold(*default)
    p99, base99 = _pct(ours, 99), _pct(bare, 99)
    return {
        "sessions": n,
        "period_s": Ticker.period,
        "seconds": rounds * seconds,
        "gc_threshold": list(threshold or default),
        "fired": len(ours),
        "p50_ms": round(_pct(ours, 50) * 1000, 3),
        "p99_ms": round(p99 * 1000, 3),
        "bare_p50_ms": round(_pct(bare, 50) * 1000, 3),
        "bare_p99_ms": round(base99 * 1000, 3),
        "p99_ratio": round(p99 / base99, 2) if base99 else None,
        "target": "p99 <= 2x the bare loop's",
        **ours_gc.figures(""),
        **bare_gc.figures("bare_"),
    }


async def lateness(quick: bool) -> dict[str, Any]:
    """Under CPython's default collector, then under README's setting (``GC_TUNED``), each side
    against the bare loop under the same setting: the tail under the default is the collector's
    full passes (``gc_full_ms``) and the backlog each leaves behind it."""
    default = await _lateness(quick, None)
    tuned = await _lateness(quick, GC_TUNED)
    return {**default, "gc_tuned": tuned}


# -- the large store ---------------------------------------------------------------------------------


async def build_store(path: str, total: int, live: int, due: int) -> float:
    """``total`` sessions through the store API: ``live`` running (``due`` with a reminder due
    within the next minute), the rest completed. Returns the seconds it took."""
    started = time.perf_counter()
    now = time.time()
    store = SQLiteStore(path, synchronous="NORMAL")
    await store.open()
    try:
        batch = 2000

        async def create(i: int) -> None:
            running = i < live
            record = SessionRecord(
                f"s{i:07d}",
                Ticker.type_name,
                Status.RUNNING if running else Status.COMPLETED,
                deadline=now + 3600 if running else None,
            )
            await store.create(record)

        for first in range(0, total, batch):
            async with anyio.create_task_group() as tg:
                for i in range(first, min(total, first + batch)):
                    tg.start_soon(create, i)
        async with anyio.create_task_group() as tg:
            for i in range(due):
                reminder = Reminder(f"s{i:07d}", "tick", now + 5 + 50 * i / due, json.dumps({"json": 0.0}))
                tg.start_soon(store.set_reminder, reminder)
    finally:
        await store.aclose()
    return time.perf_counter() - started


async def _startup_child(path: str) -> dict[str, Any]:
    before = _rss_mb()
    started = time.perf_counter()
    store = SQLiteStore(path)
    policy = ReaperPolicy(abandon_after=3600)
    async with SessionSupervisor(store=store, session_types=[Ticker, Resumed], reaper=policy) as sessions:
        await sessions.ready()
        ready = time.perf_counter() - started
        grown = _rss_mb() - before
        pass_started = time.perf_counter()
        await sessions.store_reaper.reap()
        pass_ms = (time.perf_counter() - pass_started) * 1000
        return {
            "ready_s": round(ready, 3),
            "rss_growth_mb": round(grown, 1),
            "loaded_sessions": len(sessions.cells()),
            "reminders_scheduled": len(sessions.reminder_scheduler),
            "store_reaper_pass_ms": round(pass_ms, 2),
            "store_reaper_looked_at": sessions.store_reaper.looked_at,
        }


def _floor_child(path: str) -> dict[str, Any]:
    before = _rss_mb()
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    (count,) = conn.execute("SELECT count(*) FROM sessions").fetchone()
    conn.close()
    return {
        "count_s": round(time.perf_counter() - started, 3),
        "rss_growth_mb": round(_rss_mb() - before, 1),
        "rows": count,
    }


def _child(what: str, path: str, backend: str, *extra: str) -> dict[str, Any]:
    """Run this file as a fresh process measuring ``what``; its JSON figures."""
    command = [sys.executable, HERE, "--child", what, "--path", path, "--backend", backend, *extra]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=3600)
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


async def startup(quick: bool, backend: str) -> dict[str, Any]:
    total, live, due = (20_000, 2_000, 100) if quick else (1_000_000, 100_000, 1_000)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "big.db")
        built = await build_store(path, total, live, due)
        rounds = []
        for _ in range(2):  # interleaved: ours, the floor, ours, the floor
            ours_round = await anyio.to_thread.run_sync(_child, "startup", path, backend)
            floor_round = await anyio.to_thread.run_sync(_child, "floor", path, backend)
            rounds.append((ours_round, floor_round))
    ours = min((r[0] for r in rounds), key=lambda f: f["ready_s"])
    floor = min((r[1] for r in rounds), key=lambda f: f["count_s"])
    return {
        "sessions": total,
        "not_ended": live,
        "reminders_due_within_a_minute": due,
        "build_s": round(built, 1),
        **ours,
        "sqlite3_count_s": floor["count_s"],
        "sqlite3_rss_growth_mb": floor["rss_growth_mb"],
        "targets": "ready <= 1 s, RSS growth <= 50 MB",
    }


# -- resumption -----------------------------------------------------------------------------------


async def _resume_child(path: str, rate: float) -> dict[str, Any]:
    store = SQLiteStore(path)
    policy = ReaperPolicy(max_resumes_per_second=rate)
    timeouts = calls = 0
    async with SessionSupervisor(store=store, session_types=[Resumed], reaper=policy) as sessions:
        entered = time.perf_counter()
        await sessions.ready()
        # The pacing runs from here: ``ready`` returns once the list to resume is read.
        started = time.perf_counter()
        total = sessions.to_resume
        probe = await sessions.start(Resumed, "probe")

        activated = 0.0

        async def client() -> None:
            nonlocal timeouts, calls, activated
            # Until every resumed session has been activated and has recovered (its state read
            # back from the store: the work a resumption is).
            while sessions.counters.recoveries < total:
                if not activated and sessions.resumed >= total:
                    activated = time.perf_counter() - started
                try:
                    await probe.call("ping", timeout=1.0)
                except CallTimeout:
                    timeouts += 1
                calls += 1
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(client)
        elapsed = time.perf_counter() - started
    return {
        "resumed": total,
        "ready_s": round(started - entered, 3),
        "setting_per_s": rate,
        "achieved_per_s": round(total / elapsed, 1),
        "activated_per_s": round(total / (activated or elapsed), 1),
        "calls_meanwhile": calls,
        "calls_timed_out": timeouts,
    }


async def resume(quick: bool, backend: str) -> dict[str, Any]:
    n, rate = (2_000, 1000.0) if quick else (10_000, 5000.0)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "resume.db")
        store = SQLiteStore(path, synchronous="NORMAL")
        await store.open()
        try:
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(store.create, SessionRecord(f"r{i}", Resumed.type_name))
        finally:
            await store.aclose()
        figures = await anyio.to_thread.run_sync(_child, "resume", path, backend, "--rate", str(rate))
    figures["within_10_percent"] = abs(figures["achieved_per_s"] - rate) <= 0.1 * rate
    return figures


async def main(quick: bool, only: list[str], backend: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "backend": backend,
        "cpus": os.cpu_count(),
        "quick": quick,
    }
    if "lateness" in only:
        out["lateness"] = await lateness(quick)
    if "startup" in only:
        out["startup"] = await startup(quick, backend)
    if "resume" in only:
        out["resume"] = await resume(quick, backend)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="lateness,startup,resume")
    parser.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    parser.add_argument("--child", choices=("startup", "floor", "resume"))
    parser.add_argument("--path")
    parser.add_argument("--rate", type=float, default=5000.0)
    ns = parser.parse_args()
    if ns.child == "floor":
        print(json.dumps(_floor_child(ns.path)))
    elif ns.child == "startup":
        print(json.dumps(anyio.run(_startup_child, ns.path, backend=ns.backend)))
    elif ns.child == "resume":
        print(json.dumps(anyio.run(_resume_child, ns.path, ns.rate, backend=ns.backend)))
    else:
        print(
            json.dumps(
                anyio.run(main, ns.quick, ns.only.split(","), ns.backend, backend=ns.backend), indent=2
            )
        )
