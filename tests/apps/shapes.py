"""Sessions whose states take every shape a restart must rebuild exactly (issue 13).

Each class folds the same events, ``Step(n)``, into a state of one shape. ``EXACT`` says whether its
snapshots round-trip (restart equal, of the same types, from the snapshot) or must be refused (restart
equal from the log alone).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import attrs

from runtime import Session, event

__all__ = ["EXACT", "REFUSED", "Get", "Set", "Step"]


@event(name="shapes.Step")
class Step:
    n: int


@attrs.frozen
class Get:
    pass


@event(name="shapes.Set")
class Set:
    """Issue 17's event: ``Set(2**64 + 1)`` and ``Set(nan)`` must be refused, naming ``Set.value``."""

    label: str
    value: int | float


@event(name="shapes.Scored")
class Scored:
    player: str
    points: int


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Player:
    name: str
    joined_at: datetime
    color: Color = Color.RED


@attrs.frozen
class Team:
    captain: Player
    members: tuple[Player, ...] = ()


@attrs.frozen
class Room:
    teams: dict[str, Team] = attrs.Factory(dict)
    log: list[Scored] = attrs.Factory(list)
    levels: frozenset[Level] = frozenset()
    note: str | None = None


EPOCH = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def player(n: int) -> Player:
    return Player(f"p{n}", EPOCH + timedelta(seconds=n, microseconds=n), Color.GREEN if n % 2 else Color.RED)


class _Shape(Session[Any]):
    """Answers ``Get`` with its state and records ``Step`` messages as they come."""

    snapshot_every: ClassVar[int | None] = 100

    async def handle_call(self, message: object) -> object:
        if isinstance(message, (Step, Set)):
            await self.record(message)
        return self.state


class NestedAttrs(_Shape, Session[Room]):
    def initial_state(self, args: Mapping[str, Any]) -> Room:
        return Room()

    def apply(self, state: Room, event: object) -> Room:
        assert isinstance(event, Step)
        n = event.n
        team = state.teams.get("a") or Team(player(0))
        teams = {**state.teams, "a": attrs.evolve(team, members=(*team.members, player(n)))}
        level = Level.HIGH if n % 2 else Level.LOW
        return Room(teams, [*state.log, Scored(f"p{n}", n)], state.levels | {level}, f"after {n}")


class EventList(_Shape, Session[list[Scored]]):
    """The issue's own case: a list of events, declared through the type parameter."""

    def initial_state(self, args: Mapping[str, Any]) -> list[Scored]:
        return []

    def apply(self, state: list[Scored], event: object) -> list[Scored]:
        assert isinstance(event, Step)
        return [*state, Scored(f"p{event.n}", event.n)]


class NeverSnapshots(EventList):
    """``snapshot_every = None``: no snapshot at all, not on shutdown, not on passivation."""

    snapshot_every: ClassVar[int | None] = None


class Values(_Shape, Session[dict[str, int | float]]):
    """Keeps the last value ``Set`` for each label."""

    def initial_state(self, args: Mapping[str, Any]) -> dict[str, int | float]:
        return {}

    def apply(self, state: dict[str, int | float], event: object) -> dict[str, int | float]:
        assert isinstance(event, Set)
        return {**state, event.label: event.value}


class UndeclaredEventList(_Shape):
    """The same list, undeclared: snapshots would decode into a list of dicts, so they are refused."""

    def initial_state(self, args: Mapping[str, Any]) -> list[Scored]:
        return []

    def apply(self, state: list[Scored], event: object) -> list[Scored]:
        assert isinstance(event, Step)
        return [*state, Scored(f"p{event.n}", event.n)]


class Tuples(_Shape, Session[tuple[tuple[int, str], ...]]):
    def initial_state(self, args: Mapping[str, Any]) -> tuple[tuple[int, str], ...]:
        return ()

    def apply(self, state: tuple[tuple[int, str], ...], event: object) -> tuple[tuple[int, str], ...]:
        assert isinstance(event, Step)
        return (*state, (event.n, str(event.n)))


class IntKeys(_Shape, Session[dict[int, Player]]):
    def initial_state(self, args: Mapping[str, Any]) -> dict[int, Player]:
        return {}

    def apply(self, state: dict[int, Player], event: object) -> dict[int, Player]:
        assert isinstance(event, Step)
        return {**state, event.n * 1000: player(event.n)}


class StrKeys(_Shape, Session[dict[str, list[float]]]):
    def initial_state(self, args: Mapping[str, Any]) -> dict[str, list[float]]:
        return {}

    def apply(self, state: dict[str, list[float]], event: object) -> dict[str, list[float]]:
        assert isinstance(event, Step)
        return {**state, f"k{event.n}": [event.n / 3, -0.0, 1e300]}


class Sets(_Shape, Session[dict[str, set[int]]]):
    def initial_state(self, args: Mapping[str, Any]) -> dict[str, set[int]]:
        return {"seen": set()}

    def apply(self, state: dict[str, set[int]], event: object) -> dict[str, set[int]]:
        assert isinstance(event, Step)
        return {"seen": state["seen"] | {event.n, -event.n}}


class Enums(_Shape, Session[list[Color]]):
    def initial_state(self, args: Mapping[str, Any]) -> list[Color]:
        return []

    def apply(self, state: list[Color], event: object) -> list[Color]:
        assert isinstance(event, Step)
        return [*state, Color.GREEN if event.n % 2 else Color.RED]


class Datetimes(_Shape, Session[dict[str, datetime]]):
    def initial_state(self, args: Mapping[str, Any]) -> dict[str, datetime]:
        return {}

    def apply(self, state: dict[str, datetime], event: object) -> dict[str, datetime]:
        assert isinstance(event, Step)
        return {**state, f"t{event.n}": EPOCH + timedelta(days=event.n, microseconds=7)}


class Nones(_Shape, Session[Room | None]):
    """None at first, and None inside (``note``) later."""

    def initial_state(self, args: Mapping[str, Any]) -> Room | None:
        return None

    def apply(self, state: Room | None, event: object) -> Room | None:
        assert isinstance(event, Step)
        return None if event.n == 1 else Room(note=None, log=[Scored("x", event.n)])


class NonFinite(_Shape, Session[dict[str, float]]):
    """NaN and infinities reached by ``apply`` (events cannot carry them): no snapshot can hold them."""

    def initial_state(self, args: Mapping[str, Any]) -> dict[str, float]:
        return {"sum": 0.0}

    def apply(self, state: dict[str, float], event: object) -> dict[str, float]:
        assert isinstance(event, Step)
        big = float("inf") if event.n >= 2 else 1.0
        return {"sum": state["sum"] + event.n, "big": big, "ratio": big - big}


class Opaque:
    """An object cattrs cannot structure (not attrs, no hook), with an honest ``__eq__``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)

    def __repr__(self) -> str:
        return f"Opaque({self.n})"


class Opaques(_Shape, Session[dict[str, Any]]):
    def initial_state(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def apply(self, state: dict[str, Any], event: object) -> dict[str, Any]:
        assert isinstance(event, Step)
        return {**state, f"o{event.n}": Opaque(event.n)}


EXACT: tuple[type[_Shape], ...] = (
    NestedAttrs,
    EventList,
    Tuples,
    IntKeys,
    StrKeys,
    Sets,
    Enums,
    Datetimes,
    Nones,
)
"""Classes whose snapshots come back equal, of the same types."""

REFUSED: dict[type[_Shape], str] = {
    UndeclaredEventList: "state[0]",
    NonFinite: "state['big']",
    Opaques: "state['o1']",
}
"""Classes refused snapshots, with the path their refusal names."""
