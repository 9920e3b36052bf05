"""sessionvisor's own figures for ``python -m bench``, with the project's interpreter.

Commands (see :mod:`bench.peers._common`), each with a ``backend`` (``asyncio`` or ``trio``):

* ``speed {"backend", "calls", "casts", "crashes"}``: ``bench/bench_session.py``'s
  ``session_call_rtt``, ``session_cast_throughput`` and ``crash_restart`` (MemoryStore, a 3-event
  log replayed on each restart);
* ``idle {"backend", "n"}``: ``bench_session``'s ``child_session_idle`` (``n`` sessions started one
  after the other by one ``SessionSupervisor``, all parked on their mailboxes);
* ``durable {"backend", "sessions", "events_each", "replay", "dir"}``: on ``SQLiteStore``
  (``synchronous=FULL``, the default): ``sessions`` sessions started, then one task per session
  making ``events_each`` calls in a row that each record one event (durable before the reply); and
  one session with ``replay`` events and no snapshot (written with the store's ``append``),
  reactivated by a fresh supervisor: the time from ``get`` to the first reply (read, decode, apply).
* ``reaper {"backend", "n", "passes"}``: ``n`` idle sessions under a ``ReaperPolicy(idle_timeout=60)``
  on a clock moved by hand: the mean time of a ``reap()`` pass when nothing is due, then, with the
  clock moved past every deadline, the time per session of the pass that passivates all of them
  (the pass, plus every session finishing its passivation). The reaper is looked up at run time:
  :func:`reaper_available` says whether this checkout has it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import anyio

import supervisors
from bench import bench_session
from bench.peers._common import Figures, main
from runtime import Session, SessionRecord, default_registry, event
from supervisors import SessionSupervisor

try:
    from runtime import SQLiteStore  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # not exported yet
    from runtime._stores.sqlite import SQLiteStore


@event(name="bench.peers.Added")
class Added:
    n: int


class Tally(Session[int]):
    """Counts: ``"add"`` records one event, ``("bulk", k)`` records ``k`` in one append."""

    snapshot_every = None
    type_name = "bench.peers.Tally"

    def initial_state(self, args: Mapping[str, Any]) -> int:
        return 0

    def apply(self, state: int, event: object) -> int:
        assert isinstance(event, Added)
        return state + event.n

    async def handle_call(self, message: object) -> object:
        if message == "add":
            await self.record(Added(1))
        elif isinstance(message, tuple) and message[0] == "bulk":
            await self.record(*[Added(1)] * message[1])
        return self.state


async def durable_appends(path: str, sessions: int, each: int) -> float:
    """Events per second, ``sessions`` sessions appending at once, one event per call."""
    async with SessionSupervisor(store=SQLiteStore(path), drain_timeout=0) as supervisor:
        refs = [await supervisor.start(Tally, f"s{i}") for i in range(sessions)]

        async def client(call: Any) -> None:
            for _ in range(each):
                await call("add", timeout=60)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for ref in refs:
                tg.start_soon(client, ref.call)
        elapsed = time.perf_counter() - start
        if await refs[-1].call("count") != each:
            raise AssertionError("lost appends")
    return sessions * each / elapsed


async def replay(path: str, events: int) -> float:
    """Events per second replayed when a session with ``events`` events and no snapshot comes back.

    The log is written through the store's own API (``create`` + ``append``, 1,000 events per
    append), not by a running session: a supervisor snapshots its sessions when it shuts down, and
    the replay measured here must start from nothing.
    """
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.create(SessionRecord("big", Tally.type_name))
        encoded = default_registry.encode(Added(1))
        for done in range(0, events, 1000):
            await store.append("big", done, [encoded] * min(1000, events - done))
    finally:
        await store.aclose()
    async with SessionSupervisor(store=SQLiteStore(path), session_types=[Tally]) as supervisor:
        start = time.perf_counter()
        ref = await supervisor.get("big")
        count = await ref.call("count", timeout=60)
        elapsed = time.perf_counter() - start
    if count != events:
        raise AssertionError(f"replayed to {count}, wanted {events}")
    return events / elapsed


class HandClock:
    """A clock that moves only when told to; nothing sleeping on it ever wakes by itself."""

    def __init__(self) -> None:
        self.time = 0.0

    def now(self) -> float:
        return self.time

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep_forever()


def reaper_available() -> bool:
    """Whether this checkout's ``supervisors`` has the reaper (``ReaperPolicy``)."""
    return getattr(supervisors, "ReaperPolicy", None) is not None


async def reaper_passes(n: int, passes: int) -> Figures:
    """Reaper pass cost with ``n`` idle sessions: nothing due, then all of them due at once."""
    clock = HandClock()
    reaper_policy: Any = getattr(supervisors, "ReaperPolicy", None)  # looked up: it is new
    policy = reaper_policy(idle_timeout=60.0)
    options: dict[str, Any] = {"reaper": policy, "clock": clock, "drain_timeout": 0}
    sessions: Any
    async with SessionSupervisor(**options) as sessions:
        for i in range(n):
            await sessions.start(Tally, f"s{i}")
        await anyio.wait_all_tasks_blocked()
        start = time.perf_counter()
        for _ in range(passes):
            await sessions.reap()
        idle_pass = (time.perf_counter() - start) / passes
        clock.time = 61.0
        start = time.perf_counter()
        stats = await sessions.reap()
        await anyio.wait_all_tasks_blocked()
        passivate = time.perf_counter() - start
        if stats.total != n:
            raise AssertionError(f"passivated {stats.total} of {n} sessions")
    return {"pass_idle_us": idle_pass * 1e6, "passivate_us_each": passivate / n * 1e6}


def speed(params: Mapping[str, Any]) -> Figures:
    backend = params["backend"]
    calls, casts, crashes = int(params["calls"]), int(params["casts"]), int(params["crashes"])
    call_rtt = anyio.run(bench_session.session_call_rtt, calls, backend=backend)
    cast_per_s = anyio.run(bench_session.session_cast_throughput, casts, backend=backend)
    restart = anyio.run(bench_session.crash_restart, crashes, backend=backend)
    return {
        "call_rtt_us": call_rtt * 1e6,
        "cast_per_s": cast_per_s,
        **{f"restart_{k}": v for k, v in restart.items()},
    }


def idle(params: Mapping[str, Any]) -> Figures:
    return anyio.run(bench_session.child_session_idle, int(params["n"]), backend=params["backend"])


def durable(params: Mapping[str, Any]) -> Figures:
    backend, directory = params["backend"], params["dir"]
    sessions, each, events = int(params["sessions"]), int(params["events_each"]), int(params["replay"])
    appends = anyio.run(
        durable_appends, os.path.join(directory, f"sv-{backend}-appends.db"), sessions, each, backend=backend
    )
    replayed = anyio.run(replay, os.path.join(directory, f"sv-{backend}-replay.db"), events, backend=backend)
    return {"appends_per_s": appends, "replay_events_per_s": replayed}


def reaper(params: Mapping[str, Any]) -> Figures:
    figures: Figures = anyio.run(
        reaper_passes, int(params["n"]), int(params["passes"]), backend=params["backend"]
    )
    return figures


if __name__ == "__main__":
    main({"speed": speed, "idle": idle, "durable": durable, "reaper": reaper})
