"""pykka (one thread per actor): a ``ThreadingActor`` echo. Runs in ``bench/.venvs/pykka``.

Commands (see :mod:`bench.peers._common`):

* ``speed {"calls", "casts"}``: ``ActorRef.ask`` round trip from the main thread, and
  ``ActorRef.tell`` throughput into one actor (then one ``ask``, so that every message was handled).
* ``idle {"n"}``: ``n`` started actors: microseconds per ``start()`` and resident bytes per idle actor.
  Each actor is a thread, so ``n`` is capped by the kernel's thread limits (``pid_max``,
  ``threads-max``, the cgroup's ``pids.max``); the resident figure leaves out each thread's kernel stack
  and task structures, which the kernel keeps outside the process's RSS.

pykka has no supervisor, so it has no restart figure. pykka is imported inside functions and typed
``Any``: it is not installed where mypy runs.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Mapping
from typing import Any

from bench.peers._common import Figures, exit_now, main, settled_rss


def _echo_class() -> Any:
    pykka = importlib.import_module("pykka")

    def on_receive(self: object, message: object) -> object:
        return message

    # Daemon threads, so that leaving the process never waits for thousands of actors to stop.
    return type("Echo", (pykka.ThreadingActor,), {"on_receive": on_receive, "use_daemon_thread": True})


def speed(params: Mapping[str, Any]) -> Figures:
    calls, casts = int(params["calls"]), int(params["casts"])
    ref = _echo_class().start()
    ask, tell = ref.ask, ref.tell
    ask("warm up")
    start = time.perf_counter()
    for i in range(calls):
        ask(i)
    call_rtt = (time.perf_counter() - start) / calls
    start = time.perf_counter()
    for i in range(casts):
        tell(i)
    ask("sync")
    cast_per_s = casts / (time.perf_counter() - start)
    ref.stop()
    return {"call_rtt_us": call_rtt * 1e6, "cast_per_s": cast_per_s}


def idle(params: Mapping[str, Any]) -> Figures:
    n = int(params["n"])
    echo = _echo_class()
    before = settled_rss()
    start = time.perf_counter()
    refs = [echo.start() for _ in range(n)]
    elapsed = time.perf_counter() - start
    for ref in refs:  # every actor's loop has run and is parked on its inbox
        ref.ask("ping")
    after = settled_rss()
    exit_now({"bytes_each": (after - before) / n, "us_each": elapsed / n * 1e6})


if __name__ == "__main__":
    main({"speed": speed, "idle": idle})
