"""Raw anyio, the floor under sessionvisor: the same work with bare tasks and memory object streams.

Commands (see :mod:`bench.peers._common`), each with a ``backend`` (``asyncio`` or ``trio``):

* ``speed {"backend", "calls", "casts", "crashes"}``: call round trip and cast throughput as
  ``bench/bench_session.py`` measures them (its ``raw_call_rtt`` and ``raw_cast_throughput``), and
  crash-to-answering restart latency of the minimal anyio restart loop (:func:`raw_restart`);
* ``idle {"backend", "n"}``: ``n`` tasks each parked on its own stream (``bench_session``'s
  ``child_raw_idle``);
* ``scan {"n", "passes"}``: the reaper one would write first, a scan of every session's
  last-activity time per pass (a dict of ``n`` floats, nothing due): the mean time of a pass. It
  uses no event loop, so it has no backend.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import ObjectSendStream

from bench import bench_session
from bench.peers._common import Figures, latency_figures, main


class _Crash:
    at = 0.0


async def raw_restart(n: int) -> Figures:
    """A server task on a kept stream, restarted by the least code that restarts a task on anyio.

    ``while True: try: async with create_task_group() as tg: tg.start_soon(server)`` / ``except
    Exception: continue``; the mailbox (a memory object stream) outlives each incarnation, as a
    session's does. A cast makes the server raise; the latency runs from that raise until a call to
    the restarted server has been answered. Nothing is replayed (the server has no state).
    """
    Request = tuple[object, ObjectSendStream[object] | None]
    send, receive = anyio.create_memory_object_stream[Request](100)

    async def server() -> None:
        async for message, reply in receive:
            if message == "boom":
                _Crash.at = time.perf_counter()
                raise RuntimeError("boom")
            if reply is not None:
                async with reply:
                    await reply.send(message)

    async def restart_loop() -> None:
        while True:
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(server)
            except Exception:
                continue

    samples = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(restart_loop)
        for _ in range(n):
            await send.send(("boom", None))
            reply_send, reply_receive = anyio.create_memory_object_stream[object](1)
            await send.send(("ping", reply_send))
            async with reply_receive:
                await reply_receive.receive()
            samples.append(time.perf_counter() - _Crash.at)
        tg.cancel_scope.cancel()
    return latency_figures(samples)


def speed(params: Mapping[str, Any]) -> Figures:
    backend = params["backend"]
    calls, casts, crashes = int(params["calls"]), int(params["casts"]), int(params["crashes"])
    call_rtt = anyio.run(bench_session.raw_call_rtt, calls, backend=backend)
    cast_per_s = anyio.run(bench_session.raw_cast_throughput, casts, backend=backend)
    restart = anyio.run(raw_restart, crashes, backend=backend)
    return {
        "call_rtt_us": call_rtt * 1e6,
        "cast_per_s": cast_per_s,
        **{f"restart_{k}": v for k, v in restart.items()},
    }


def idle(params: Mapping[str, Any]) -> Figures:
    return anyio.run(bench_session.child_raw_idle, int(params["n"]), backend=params["backend"])


def scan(params: Mapping[str, Any]) -> Figures:
    n, passes = int(params["n"]), int(params["passes"])
    last_active = {f"s{i}": 0.0 for i in range(n)}
    idle_timeout, now = 60.0, 1.0
    start = time.perf_counter()
    for _ in range(passes):
        due = [sid for sid, t in last_active.items() if t + idle_timeout <= now]
        assert not due
    return {"pass_idle_us": (time.perf_counter() - start) / passes * 1e6}


if __name__ == "__main__":
    main({"speed": speed, "idle": idle, "scan": scan})
