"""The ``eventsourcing`` library's SQLite application. Runs in ``bench/.venvs/eventsourcing``.

Command (see :mod:`bench.peers._common`): ``durable {"sessions", "events_each", "replay", "dir",
"threads"}``:

* durable appends: ``sessions`` aggregates (kept in memory, as an actor keeps its state; created and
  saved before the clock starts), then ``events_each`` rounds in which every aggregate triggers one
  event and is saved (``Application.save``: one transaction, durable when it returns) — from
  ``threads`` worker threads, each owning an equal share of the aggregates (``threads=1``: in turn
  from one thread);
* replay: one aggregate with ``replay`` events and no snapshot, read back by a fresh application
  with ``repository.get`` (its events read, decoded and applied).

Persistence is ``eventsourcing.sqlite`` on a file in ``dir``: the library's defaults, which are WAL
and SQLite's default ``synchronous`` (FULL), as in sessionvisor's ``SQLiteStore``. eventsourcing is
imported inside functions and typed ``Any``: it is not installed where mypy runs.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.peers._common import Figures, main


def _import(name: str) -> Any:
    return importlib.import_module(name)


def _counter_class() -> Any:
    """An aggregate with one event, ``Ticked``, made at run time (the library is not importable
    where mypy runs). It is kept as a module global so that eventsourcing can resolve its topic."""
    domain = _import("eventsourcing.domain")

    def __init__(self: Any) -> None:
        self.count = 0

    def tick(self: Any, n: int) -> None:
        self.count += n

    namespace = {
        "__init__": __init__,
        "tick": domain.event("Ticked")(tick),
        "__module__": __name__,
        "__qualname__": "Counter",
    }
    counter = type("Counter", (domain.Aggregate,), namespace)
    globals()["Counter"] = counter
    return counter


def _application(path: str) -> Any:
    application = _import("eventsourcing.application")
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path}
    return application.Application(env=env)


def durable(params: Mapping[str, Any]) -> Figures:
    sessions, each = int(params["sessions"]), int(params["events_each"])
    replay, threads = int(params["replay"]), int(params["threads"])
    counter = _counter_class()

    app = _application(os.path.join(params["dir"], "eventsourcing-appends.db"))
    aggregates = [counter() for _ in range(sessions)]
    app.save(*aggregates)

    def work(share: list[Any]) -> None:
        save = app.save
        for _ in range(each):
            for aggregate in share:
                aggregate.tick(1)
                save(aggregate)

    shares = [aggregates[i::threads] for i in range(threads)]
    start = time.perf_counter()
    if threads == 1:
        work(aggregates)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, shares))
    appends = time.perf_counter() - start
    app.close()

    path = os.path.join(params["dir"], "eventsourcing-replay.db")
    app = _application(path)
    big = counter()
    for done in range(0, replay, 1000):
        for _ in range(min(1000, replay - done)):
            big.tick(1)
        app.save(big)
    app.close()
    app = _application(path)
    start = time.perf_counter()
    again = app.repository.get(big.id)
    replayed = time.perf_counter() - start
    if again.count != replay:
        raise AssertionError(f"replayed {again.count} events, wanted {replay}")
    app.close()
    return {
        "appends_per_s": sessions * each / appends,
        "replay_events_per_s": replay / replayed,
    }


if __name__ == "__main__":
    main({"durable": durable})
