"""A small session used across the tests: a counter whose every change is an event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import attrs

from runtime import NoReply, Reply, Session, SessionRef, event


@event(name="test.Added")
class Added:
    n: int


@event(name="test.Noted")
class Noted:
    text: str


@attrs.frozen
class Add:
    n: int


@attrs.frozen
class AddMany:
    ns: tuple[int, ...]


@attrs.frozen
class Get:
    pass


@attrs.frozen
class Boom:
    text: str = "boom"


@attrs.frozen
class AddThenBoom:
    """Records, then crashes: the event is stored although the caller gets SessionCrashed."""

    n: int


@attrs.frozen
class WaitFor:
    """Blocks the handler until the event is set (a turn that lasts as long as a test wants)."""

    gate: anyio.Event = attrs.field(eq=False)
    then_add: int = 0


@attrs.frozen
class Sleep:
    seconds: float
    then_add: int = 0


@attrs.frozen
class CallOther:
    ref: SessionRef
    message: object


@attrs.frozen
class Defer:
    pass


@attrs.frozen
class Release:
    value: object


@attrs.frozen
class Complete:
    result: object = None


@attrs.frozen
class Fail:
    reason: str


@attrs.frozen
class StopMe:
    reason: str = "normal"


@attrs.frozen
class After:
    delay: float
    message: object


class Counter(Session[int]):
    """Sums ``Added`` events; logs what happened to it in a list shared through ``args``."""

    snapshot_every = 5
    logs: dict[str, list[object]] = {}  # noqa: RUF012 - a test probe shared by every incarnation

    def initial_state(self, args: Mapping[str, Any]) -> int:
        return int(args.get("start", 0))

    def apply(self, state: int, event: object) -> int:
        match event:
            case Added(n=n):
                return state + n
        return state

    def log(self, entry: object) -> None:
        Counter.logs.setdefault(self.id, []).append(entry)

    async def on_start(self) -> None:
        self.log(("start", self.state))
        if self.metadata.get("complete_at_start"):  # a session that completes as it starts
            await self.complete("at start")

    async def on_stop(self, reason: str) -> None:
        self.log(("stop", reason))

    async def handle_call(self, message: object) -> object:
        match message:
            case Add(n=n):
                await self.record(Added(n))
                return self.state
            case AddMany(ns=ns):
                await self.record(*(Added(n) for n in ns))
                return self.state
            case Get():
                return self.state
            case Boom(text=text):
                raise RuntimeError(text)
            case AddThenBoom(n=n):
                await self.record(Added(n))
                raise RuntimeError("after record")
            case Sleep(seconds=s, then_add=n):
                await anyio.sleep(s)
                if n:
                    await self.record(Added(n))
                return self.state
            case WaitFor(gate=gate, then_add=n):
                await gate.wait()
                if n:
                    await self.record(Added(n))
                return self.state
            case CallOther(ref=ref, message=m):
                return await ref.call(m)
            case Defer():
                self.pending: Reply = self.defer_reply()
                return NoReply
            case Release(value=v):
                self.pending.send(v)
                return "released"
            case Complete(result=r):
                await self.complete(r)
                return "completed"
            case Fail(reason=r):
                await self.fail(r)
                return "failed"
            case StopMe(reason=r):
                self.stop(r)
                return "stopping"
        raise ValueError(f"unexpected call {message!r}")

    async def handle_cast(self, message: object) -> None:
        match message:
            case Add(n=n):
                await self.record(Added(n))
            case Boom(text=text):
                raise RuntimeError(text)
            case Sleep(seconds=s):
                await anyio.sleep(s)
            case WaitFor(gate=gate, then_add=n):
                await gate.wait()
                if n:
                    await self.record(Added(n))
            case After(delay=d, message=m):
                self.send_after(d, m)
            case _:
                raise ValueError(f"unexpected cast {message!r}")

    async def handle_info(self, message: object) -> None:
        self.log(("info", message))
        if isinstance(message, Add):
            await self.record(Added(message.n))
