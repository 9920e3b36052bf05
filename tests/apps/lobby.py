"""A session with a declared state machine: lobby -> playing -> finished."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from runtime import Session, event


@event(name="lobby.Started")
class Started:
    pass


@event(name="lobby.Scored")
class Scored:
    points: int


@event(name="lobby.Finished")
class Finished:
    pass


@attrs.frozen
class Game:
    phase: str = "lobby"
    score: int = 0


class Lobby(Session[Game]):
    transitions = {  # noqa: RUF012 - the class-level table the runtime reads
        ("lobby", "lobby.Started"): "playing",
        ("playing", "lobby.Scored"): "playing",
        ("playing", "lobby.Finished"): "finished",
    }

    def initial_state(self, args: Mapping[str, Any]) -> Game:
        return Game()

    def label(self, state: Game) -> str:
        return state.phase

    def apply(self, state: Game, event: object) -> Game:
        match event:
            case Started():
                return attrs.evolve(state, phase="playing")
            case Scored(points=p):
                return attrs.evolve(state, score=state.score + p)
            case Finished():
                return attrs.evolve(state, phase="finished")
        return state

    async def handle_call(self, message: object) -> object:
        await self.record(message)
        return self.state
