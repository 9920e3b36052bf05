"""Sessions that outlive their process, on an SQLite file; run by tests/supervisors/test_outlive_sqlite.py.

    python -m tests.crash.outlive_driver PATH prepare --remind SECONDS [--abandon-after S]
    python -m tests.crash.outlive_driver PATH resume --run SECONDS [--abandon-after S]

``prepare`` starts three sessions: ``timer`` (schedules reminder ``r`` ``--remind`` seconds ahead),
``resumer`` (``resume_on_start``) and ``idle``; prints ``due <wall time>`` and ``ready``, then waits
to be killed. ``resume`` opens the same file and prints, as they happen, one line each (wall times):

    fired <session> <time>                   a reminder reached handle_info
    start <session> <resumed> <time>         on_start ran
    status <session> <status> <previous> <time>   a lifecycle event
    ready <time>                              sessions.ready() returned

then exits after ``--run`` seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

import anyio

from runtime import Session, SQLiteStore, event
from supervisors import ReaperPolicy, SessionSupervisor


@event(name="outlive.Rang")
class Rang:
    name: str


def say(*words: object) -> None:
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


class Clocked(Session[int]):
    type_name = "outlive.Clocked"

    def initial_state(self, args: Mapping[str, Any]) -> int:
        return 0

    def apply(self, state: int, event: object) -> int:
        return state + 1

    async def on_start(self) -> None:
        say("start", self.id, self.resumed, time.time())

    async def handle_call(self, message: object) -> object:
        assert isinstance(message, tuple)
        _, delay = message
        await self.schedule("r", delay, {"ring": self.id})
        return None

    async def handle_info(self, message: object) -> None:
        say("fired", self.id, time.time())
        await self.record(Rang("r"))


class Resumer(Clocked):
    type_name = "outlive.Resumer"
    resume_on_start = True


async def main(path: str, phase: str, seconds: float, abandon_after: float | None) -> None:
    store = SQLiteStore(path)
    policy = ReaperPolicy(abandon_after=abandon_after)
    async with SessionSupervisor(store=store, session_types=[Clocked, Resumer], reaper=policy) as sessions:
        if phase == "prepare":
            timer = await sessions.start(Clocked, "timer")
            await sessions.start(Resumer, "resumer")
            await sessions.start(Clocked, "idle")
            await timer.call(("schedule", seconds))
            say("due", time.time() + seconds)
            say("ready")
            await anyio.sleep(60)  # a safety net: killed long before
            return
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                async with sessions.lifecycle() as changes:
                    async for change in changes:
                        previous = None if change.previous is None else change.previous.value
                        say("status", change.session_id, change.status.value, previous, time.time())

            tg.start_soon(watch)
            await sessions.ready()
            say("ready", time.time())
            await anyio.sleep(seconds)
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("phase", choices=("prepare", "resume"))
    parser.add_argument("--remind", type=float, default=2.0)
    parser.add_argument("--run", type=float, default=3.0)
    parser.add_argument("--abandon-after", type=float)
    parser.add_argument("--backend", default="asyncio")
    ns = parser.parse_args()
    seconds = ns.remind if ns.phase == "prepare" else ns.run
    anyio.run(main, ns.path, ns.phase, seconds, ns.abandon_after, backend=ns.backend)
