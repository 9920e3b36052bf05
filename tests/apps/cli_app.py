"""A small app for the command line's tests: ``--app tests.apps.cli_app`` imports it.

``Duel`` has a state machine (lobby -> playing -> finished) and snapshots every 3 events; ``Notebook``
is stored under a ``type_name`` of its own. Event names start with ``cliapp.`` (they are global).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from runtime import Session, event


@event(name="cliapp.Joined")
class Joined:
    player: str


@event(name="cliapp.Started")
class Started:
    pass


@event(name="cliapp.Moved")
class Moved:
    player: str
    square: int


@event(name="cliapp.Finished")
class Finished:
    winner: str


@event(name="cliapp.Noted")
class Noted:
    text: str


@attrs.frozen
class Board:
    phase: str = "lobby"
    players: tuple[str, ...] = ()
    moves: tuple[int, ...] = ()
    winner: str | None = None


@attrs.frozen
class Join:
    player: str


@attrs.frozen
class Start:
    pass


@attrs.frozen
class Move:
    player: str
    square: int


@attrs.frozen
class Finish:
    winner: str


@attrs.frozen
class Note:
    text: str


class Duel(Session[Board]):
    """Two players join, play moves, one wins."""

    snapshot_every = 3
    transitions = {  # noqa: RUF012 - the declared state machine (a ClassVar in Session)
        ("lobby", "cliapp.Joined"): "lobby",
        ("lobby", "cliapp.Started"): "playing",
        ("playing", "cliapp.Moved"): "playing",
        ("playing", "cliapp.Finished"): "finished",
    }

    def initial_state(self, args: Mapping[str, Any]) -> Board:
        return Board()

    def label(self, state: Board) -> str:
        return state.phase

    def apply(self, state: Board, event: object) -> Board:
        match event:
            case Joined(player=p):
                return attrs.evolve(state, players=(*state.players, p))
            case Started():
                return attrs.evolve(state, phase="playing")
            case Moved(square=s):
                return attrs.evolve(state, moves=(*state.moves, s))
            case Finished(winner=w):
                return attrs.evolve(state, phase="finished", winner=w)
        return state

    async def handle_call(self, message: object) -> object:
        match message:
            case Join(player=p):
                await self.record(Joined(p))
            case Start():
                await self.record(Started())
            case Move(player=p, square=s):
                await self.record(Moved(p, s))
            case Finish(winner=w):
                await self.record(Finished(w))
                await self.complete(w)
            case _:
                raise ValueError(f"unexpected call {message!r}")
        return self.version


class Notebook(Session[list[str]]):
    """Keeps notes; stored as "cliapp.Notebook"."""

    type_name = "cliapp.Notebook"
    snapshot_every = None

    def initial_state(self, args: Mapping[str, Any]) -> list[str]:
        return list(args.get("notes", ()))

    def apply(self, state: list[str], event: object) -> list[str]:
        if isinstance(event, Noted):
            return [*state, event.text]
        return state

    async def handle_call(self, message: object) -> object:
        if isinstance(message, Note):
            return await self.record(Noted(message.text))
        raise ValueError(f"unexpected call {message!r}")
