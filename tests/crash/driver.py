"""Drive load through sessions on an SQLite file and print every acknowledged event; run until killed.

    python -m tests.crash.driver PATH --sessions 4 --trial 0 --backend asyncio [--callers 8 --depth 16]

Run from the repository's root by ``tests/supervisors/test_crash_sqlite.py``, which kills it with
SIGKILL at a random moment. Sessions ``c0``, ``c1``... are started if the file does not have them yet,
and reactivated from it otherwise. One client task per session calls ``Put`` in a loop, each call
recording a batch of 1 to 3 ``rec.Moved`` events in one append, and now and then crashes its session
(so that kills also strike restarts). Once a call has returned, and only then, its events are printed
and flushed, one line each::

    ack <session> <version> <batch> <index> <size> <n>

With ``--callers K`` each session has K client tasks calling it at once, and ``--depth N`` gives the
sessions ``pipeline_depth = N`` (issue 14): a pipelined burst, its events committed while the
session takes the next calls. A ``ready`` line says every session is resolved. Batch numbers start at
``trial * 1,000,000`` so that they never repeat across the runs on one file.
"""

from __future__ import annotations

import argparse
import random
import sys

import anyio

from runtime import SessionCrashed, SessionNotFound, SessionRef, SQLiteStore
from supervisors import Backoff, RestartPolicy, SessionSupervisor
from tests.apps.recovery_app import Crash, Ledger, Moved, Put, ledger_class

SNAPSHOT_EVERY = 7
"""Small, so that kills also strike snapshots being written."""
Driven = ledger_class(SNAPSHOT_EVERY)
RESTARTS = RestartPolicy(max_restarts=1_000_000, within=1.0, backoff=Backoff(initial=0))
LIFETIME = 60.0
"""A safety net: a driver nobody killed ends by itself."""


def driven(depth: int) -> type[Ledger]:
    """The driver's session class with ``pipeline_depth = depth`` (the same stored type)."""
    return Driven if depth == 1 else type(f"Driven{depth}", (Driven,), {"pipeline_depth": depth})


async def drive(path: str, sessions: int, trial: int, seed: int, callers: int = 1, depth: int = 1) -> None:
    rng = random.Random(seed)
    out = sys.stdout
    store = SQLiteStore(path, synchronous="FULL")
    cls = driven(depth)
    async with SessionSupervisor(store=store, session_types=[cls], restarts=RESTARTS) as supervisor:
        refs: list[SessionRef] = []
        for i in range(sessions):
            sid = f"c{i}"
            try:
                refs.append(await supervisor.get(sid))
            except SessionNotFound:
                refs.append(await supervisor.start(cls, sid))
        out.write("ready\n")
        out.flush()
        batches = iter(range(trial * 1_000_000, (trial + 1) * 1_000_000))

        async def client(ref: SessionRef, rng: random.Random) -> None:
            while True:
                if rng.random() < 0.05:
                    try:
                        await ref.call(Crash(), timeout=None)
                    except SessionCrashed:
                        pass
                    continue
                batch = next(batches)
                size = rng.randint(1, 3)
                events = tuple(Moved(batch, i, size, rng.randint(0, 99)) for i in range(size))
                reply = await ref.call(Put(events), timeout=None)
                assert isinstance(reply, tuple)
                last = reply[0]
                first = last - size + 1
                out.write(
                    "".join(
                        f"ack {ref.id} {first + i} {e.batch} {e.index} {e.size} {e.n}\n"
                        for i, e in enumerate(events)
                    )
                )
                out.flush()

        with anyio.move_on_after(LIFETIME):
            async with anyio.create_task_group() as tg:
                for ref in refs:
                    for _ in range(callers):
                        tg.start_soon(client, ref, random.Random(rng.random()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path")
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--trial", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--callers", type=int, default=1, help="client tasks per session")
    parser.add_argument("--depth", type=int, default=1, help="the sessions' pipeline_depth")
    args = parser.parse_args()
    anyio.run(
        drive,
        args.path,
        args.sessions,
        args.trial,
        args.seed,
        args.callers,
        args.depth,
        backend=args.backend,
    )


if __name__ == "__main__":
    main()
