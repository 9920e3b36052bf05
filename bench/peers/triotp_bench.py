"""triotp (OTP for trio): a ``gen_server`` echo, spawned under a ``dynamic_supervisor``, restarted by a
``supervisor``. Runs in ``bench/.venvs/triotp`` (triotp pins an old trio).

Commands (see :mod:`bench.peers._common`):

* ``speed {"calls", "casts", "crashes"}``: ``gen_server.call`` round trip, ``gen_server.cast``
  throughput into one server (then one call, so that every cast was handled), and crash-to-answering
  restart latency under ``supervisor.start`` (a ``PERMANENT`` child; the crash is a cast whose handler
  raises, because a call whose handler raises leaves triotp's caller waiting forever; the latency runs
  from the raise until a call to the restarted server has returned).
* ``idle {"n"}``: ``n`` gen_servers, each a named child of one ``dynamic_supervisor``: microseconds
  and resident bytes per idle server.

Logging is off, as ``triotp.node.run`` sets it up with ``LogLevel.NONE`` (a logbook ``NullHandler``).
triotp is imported inside functions and typed ``Any``: it is not installed where mypy runs.
"""

from __future__ import annotations

import importlib
import time
import types
from collections.abc import Mapping
from typing import Any

from bench.peers._common import Figures, exit_now, latency_figures, main, settled_rss


def _import(name: str) -> Any:
    return importlib.import_module(name)


class _Crash:
    at = 0.0


def _echo_server() -> Any:
    """A module of gen_server callbacks, as triotp wants them: replies with the message."""
    gen_server = _import("triotp.gen_server")
    module = types.ModuleType("bench_triotp_echo")

    async def init(_arg: object) -> int:
        return 0

    async def handle_call(message: object, _caller: object, state: int) -> tuple[Any, int]:
        return gen_server.Reply(payload=message), state

    async def handle_cast(message: object, state: int) -> tuple[Any, int]:
        if message == "boom":
            _Crash.at = time.perf_counter()
            raise RuntimeError("boom")
        return gen_server.NoReply(), state

    module.__dict__.update(init=init, handle_call=handle_call, handle_cast=handle_cast)
    return module


def _run(fn: Any, *args: Any) -> Any:
    trio = _import("trio")
    logbook = _import("logbook")
    with logbook.NullHandler().applicationbound():
        return trio.run(fn, *args)


async def _speed(params: Mapping[str, Any]) -> Figures:
    trio = _import("trio")
    testing = _import("trio.testing")
    mailbox = _import("triotp.mailbox")
    gen_server = _import("triotp.gen_server")
    supervisor = _import("triotp.supervisor")
    echo = _echo_server()
    calls, casts, crashes = int(params["calls"]), int(params["casts"]), int(params["crashes"])
    figures: Figures = {}
    mailbox._init()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gen_server.start, echo, None, "echo")
        await testing.wait_all_tasks_blocked()
        call = gen_server.call
        start = time.perf_counter()
        for i in range(calls):
            await call("echo", i)
        figures["call_rtt_us"] = (time.perf_counter() - start) / calls * 1e6

        cast = gen_server.cast
        start = time.perf_counter()
        for i in range(casts):
            await cast("echo", i)
        await call("echo", "sync")
        figures["cast_per_s"] = casts / (time.perf_counter() - start)

        spec = supervisor.child_spec(
            id="crashy",
            task=gen_server.start,
            args=[echo, None, "crashy"],
            restart=supervisor.restart_strategy.PERMANENT,
        )
        options = supervisor.options(max_restarts=crashes + 10, max_seconds=3600)
        await nursery.start(supervisor.start, [spec], options)
        await testing.wait_all_tasks_blocked()
        gone = (mailbox.MailboxDoesNotExist, trio.ClosedResourceError, trio.BrokenResourceError)
        samples = []
        for _ in range(crashes):
            await cast("crashy", "boom")
            while True:
                try:
                    await call("crashy", "ping")
                except gone:
                    await trio.sleep(0)
                else:
                    break
            samples.append(time.perf_counter() - _Crash.at)
        nursery.cancel_scope.cancel()
    figures.update({f"restart_{k}": v for k, v in latency_figures(samples).items()})
    return figures


async def _idle(n: int) -> Figures:
    trio = _import("trio")
    testing = _import("trio.testing")
    mailbox = _import("triotp.mailbox")
    gen_server = _import("triotp.gen_server")
    supervisor = _import("triotp.supervisor")
    dynamic_supervisor = _import("triotp.dynamic_supervisor")
    echo = _echo_server()
    permanent = supervisor.restart_strategy.PERMANENT
    mailbox._init()
    before = settled_rss()
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(dynamic_supervisor.start, supervisor.options(), None)
        start = time.perf_counter()
        for i in range(n):
            name = f"s{i}"
            spec = supervisor.child_spec(
                id=name, task=gen_server.start, args=[echo, None, name], restart=permanent
            )
            await dynamic_supervisor.start_child(pool, spec)
        await testing.wait_all_tasks_blocked()
        elapsed = time.perf_counter() - start
        after = settled_rss()
        await gen_server.call(f"s{n - 1}", "ping")  # they do answer
        # Leave without tearing them down: triotp unregisters each mailbox by scanning every name
        # (mailbox.unregister_all), quadratic in n, and that is not what is measured.
        exit_now({"bytes_each": (after - before) / n, "us_each": elapsed / n * 1e6})
    raise AssertionError("unreachable")


def speed(params: Mapping[str, Any]) -> Figures:
    figures: Figures = _run(_speed, params)
    return figures


def idle(params: Mapping[str, Any]) -> Figures:
    figures: Figures = _run(_idle, int(params["n"]))
    return figures


if __name__ == "__main__":
    main({"speed": speed, "idle": idle}, exit_hard=True)
