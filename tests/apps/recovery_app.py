"""A ledger session for the recovery and crash tests on SQLite (issue 4).

Its state is an attrs class (so that snapshots go through the codec, not just ``json``), and ``step`` is
the plain fold the tests compare every recovered state with. ``apply`` refuses negative amounts: a
stored ``rec.Added`` with ``n < 0`` makes replay raise, which is how the tests make ``apply`` fail on a
stored event. Event names are prefixed ``rec.``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import attrs

from runtime import Session, event


@event(name="rec.Added")
class Added:
    n: int


@event(name="rec.Named")
class Named:
    name: str


@event(name="rec.Moved")
class Moved:
    """One event of a batch recorded by one call of the crash driver (``index`` of ``size``)."""

    batch: int
    index: int
    size: int
    n: int


@attrs.frozen
class Tally:
    total: int = 0
    count: int = 0
    names: tuple[str, ...] = ()


def step(state: Tally, ev: object) -> Tally:
    """The state after ``ev``: what ``Ledger.apply`` does, as a plain function."""
    match ev:
        case Added(n=n) | Moved(n=n):
            if n < 0:
                raise ValueError(f"a negative amount ({n}) cannot be added")
            return attrs.evolve(state, total=state.total + n, count=state.count + 1)
        case Named(name=name):
            return attrs.evolve(state, names=(*state.names, name))
    return state


def fold(events: Iterable[object], start: Tally | None = None) -> Tally:
    """The state after ``events``, from ``start`` (default: the empty tally)."""
    state = start if start is not None else Tally()
    for ev in events:
        state = step(state, ev)
    return state


@attrs.frozen
class Put:
    """Record ``events`` in one append; the reply is ``(version, state)`` after it."""

    events: tuple[object, ...]


@attrs.frozen
class Read:
    """The reply is ``(version, state)``."""


@attrs.frozen
class Crash:
    """The handler raises: the session restarts from its log."""


@attrs.frozen
class Finish:
    """The session completes."""


class Ledger(Session[Tally]):
    """Folds ``rec.*`` events into a ``Tally``; ``args["start"]`` is the initial total."""

    type_name = "rec.Ledger"
    snapshot_every = 10
    journal: ClassVar[list[tuple[str, str, object]]] = []
    """(session id, "start" or "stop", state or reason) of every incarnation, in order."""

    def initial_state(self, args: Mapping[str, Any]) -> Tally:
        return Tally(total=int(args.get("start", 0)))

    def apply(self, state: Tally, event: object) -> Tally:
        return step(state, event)

    async def on_start(self) -> None:
        Ledger.journal.append((self.id, "start", self.state))

    async def on_stop(self, reason: str) -> None:
        Ledger.journal.append((self.id, "stop", reason))

    async def handle_call(self, message: object) -> object:
        match message:
            case Put(events=events):
                version = await self.record(*events)
                return version, self.state
            case Read():
                return self.version, self.state
            case Crash():
                raise RuntimeError("crash requested")
            case Finish():
                await self.complete()
                return "finished"
        raise ValueError(f"unexpected call {message!r}")


def ledger_class(snapshot_every: int | None) -> type[Ledger]:
    """A ``Ledger`` (same type name) that snapshots every ``snapshot_every`` events."""
    return type(f"Ledger{snapshot_every}", (Ledger,), {"snapshot_every": snapshot_every})
