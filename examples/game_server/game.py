"""A game room as a session: a word chain for 2 to 6 players, with a turn timer.

Each word must start with the last letter of the word before it, be in the dictionary and not have
been played in this game; it scores one point per letter. A player may pass (the empty word). A
player who lets the turn timer run out loses the turn. After ``rounds`` turns each, the room
completes with the scores as its result; a room everyone has left is abandoned by the reaper.

Every move is an event (``game.Played``), recorded before the reply is sent: a room that crashes
restarts from its log and has every move it acknowledged. ``--chaos`` crashes rooms on purpose,
before or after recording a move (:class:`Chaos`), to show it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import attrs

from runtime import NoReply, Reply, Session, event

from .words import WORDS

__all__ = [
    "Chaos",
    "ChaosCrash",
    "Complete",
    "Finished",
    "Join",
    "Joined",
    "Leave",
    "Left",
    "Look",
    "Move",
    "Played",
    "Room",
    "RoomState",
    "Started",
    "TurnLost",
    "TurnTimer",
    "Wait",
    "room_class",
]

Answer = dict[str, object]
"""A room's answer to a call: JSON-ready, sent to the player as it is (``ok`` says how it went)."""

# -- events (what the log keeps; the names are global, hence the prefix) --------------------------


@event(name="game.Joined")
class Joined:
    player: str


@event(name="game.Left")
class Left:
    player: str


@event(name="game.Started")
class Started:
    order: tuple[str, ...]
    letter: str


@event(name="game.Played")
class Played:
    """A move: ``word`` is "" for a pass."""

    player: str
    turn: int
    word: str
    points: int


@event(name="game.TurnLost")
class TurnLost:
    """The player did not move in time ("timeout"), or left during their turn ("left")."""

    player: str
    turn: int
    reason: str


@event(name="game.Finished")
class Finished:
    pass


# -- state ------------------------------------------------------------------------------------------


@attrs.frozen
class RoomState:
    size: int
    rounds: int
    turn_seconds: float
    phase: Literal["lobby", "playing", "finished"] = "lobby"
    players: tuple[str, ...] = ()
    present: tuple[str, ...] = ()
    scores: dict[str, int] = attrs.field(factory=dict)
    turn: int = 0
    current: str | None = None
    letter: str = ""
    used: tuple[str, ...] = ()

    @property
    def total_turns(self) -> int:
        return self.size * self.rounds

    def next_after(self, player: str, present: tuple[str, ...] | None = None) -> str | None:
        """The next player still present after ``player``, in turn order."""
        present = self.present if present is None else present
        order = self.players
        start = order.index(player)
        for k in range(1, len(order) + 1):
            candidate = order[(start + k) % len(order)]
            if candidate in present:
                return candidate
        return None

    def result(self) -> dict[str, object]:
        best = max(self.scores.values(), default=0)
        winners = sorted(p for p, s in self.scores.items() if s == best)
        return {"scores": dict(self.scores), "winners": winners, "turns": self.turn}


# -- messages (calls and timers; never stored) ------------------------------------------------------


@attrs.frozen
class Join:
    player: str


@attrs.frozen
class Leave:
    player: str


@attrs.frozen
class Move:
    player: str
    turn: int
    word: str


@attrs.frozen
class Wait:
    """Answered when it is ``player``'s turn number ``turn`` or later, or the game is over."""

    player: str
    turn: int = 0


@attrs.frozen
class Look:
    pass


@event(name="game.TurnTimer")
class TurnTimer:
    """The turn timer's message: a durable reminder, so registered with the codec (never recorded)."""

    turn: int


@attrs.frozen
class Complete:
    """To itself: the game is over, end the session."""


# -- chaos --------------------------------------------------------------------------------------------


class ChaosCrash(RuntimeError):
    """A crash on purpose (``--chaos``): the room restarts from its log."""


@attrs.define
class Chaos:
    """Makes rooms crash with ``probability`` per move, before or after recording it, at random.

    ``lost_replies`` lists the moves recorded whose reply the crash took: the store has them, the
    player was never told (so the summary can explain every stored move nobody acknowledged).
    """

    probability: float = 0.0
    rng: random.Random = attrs.field(factory=random.Random)
    before: int = 0
    after: int = 0
    lost_replies: set[tuple[str, int]] = attrs.field(factory=set)

    def roll(self) -> Literal["before", "after"] | None:
        if self.probability <= 0 or self.rng.random() >= self.probability:
            return None
        return "before" if self.rng.random() < 0.5 else "after"


# -- the session ----------------------------------------------------------------------------------


def _error(code: str, message: str, **extra: object) -> Answer:
    return {"ok": False, "error": code, "message": message, **extra}


class Room(Session[RoomState]):
    """One game room: players join, take turns (with a timer), score, and the room completes.

    Rooms that were being played when the server stopped (or was killed) are resumed when it starts
    again (``resume_on_start``): their turn timers carry on, and the rules finish them (turns lost
    by timeout) or the reaper abandons them once every player is gone.
    """

    resume_on_start = True

    type_name = "game.Room"
    snapshot_every = 50
    chaos: ClassVar[Chaos | None] = None
    """Set on the class made by :func:`room_class`; ``None``: never crash on purpose."""

    transitions: ClassVar[Mapping[tuple[str, str], str]] = {
        ("lobby", "game.Joined"): "lobby",
        ("lobby", "game.Left"): "lobby",
        ("lobby", "game.Started"): "playing",
        ("playing", "game.Joined"): "playing",  # a player who left comes back
        ("playing", "game.Left"): "playing",
        ("playing", "game.Played"): "playing",
        ("playing", "game.TurnLost"): "playing",
        ("playing", "game.Finished"): "finished",
    }

    def __init__(self) -> None:
        super().__init__()
        self.waiters: list[tuple[Wait, Reply]] = []

    def initial_state(self, args: Mapping[str, Any]) -> RoomState:
        return RoomState(
            size=int(args.get("size", 2)),
            rounds=int(args.get("rounds", 5)),
            turn_seconds=float(args.get("turn_seconds", 1.0)),
        )

    def label(self, state: RoomState) -> str:
        return state.phase

    def apply(self, state: RoomState, event: object) -> RoomState:
        match event:
            case Joined(player=p):
                players = state.players if p in state.players else (*state.players, p)
                present = state.present if p in state.present else (*state.present, p)
                return attrs.evolve(
                    state,
                    players=players,
                    present=present,
                    scores={**state.scores, p: state.scores.get(p, 0)},
                )
            case Left(player=p):
                present = tuple(x for x in state.present if x != p)
                return attrs.evolve(state, present=present)
            case Started(order=order, letter=letter):
                return attrs.evolve(state, phase="playing", players=order, current=order[0], letter=letter)
            case Played(player=p, word=word, points=points):
                return attrs.evolve(
                    state,
                    scores={**state.scores, p: state.scores.get(p, 0) + points},
                    used=(*state.used, word) if word else state.used,
                    letter=word[-1] if word else state.letter,
                    turn=state.turn + 1,
                    current=state.next_after(p),
                )
            case TurnLost(player=p):
                return attrs.evolve(state, turn=state.turn + 1, current=state.next_after(p))
            case Finished():
                return attrs.evolve(state, phase="finished", current=None)
        return state

    # -- lifecycle --------------------------------------------------------------------------------

    async def on_start(self) -> None:
        if self.state.phase == "finished":
            # The last move was recorded, then the room crashed before it could complete: finish
            # now, in a turn of its own (complete() ends the session after the message it is in).
            self.send_after(0, Complete())
            return
        # The turn timer is a durable reminder: it survives crashes, passivation and restarts of
        # the server. Only a room of an older server (whose timer died with it) needs one now.
        if self.state.phase == "playing" and "turn" not in self.reminders:
            await self.arm_timer()

    async def arm_timer(self) -> None:
        """The current turn ends in ``turn_seconds`` (replacing the previous turn's timer)."""
        state = self.state
        if state.phase == "playing" and state.current is not None:
            await self.schedule("turn", state.turn_seconds, TurnTimer(state.turn))

    # -- calls --------------------------------------------------------------------------------------

    async def handle_call(self, message: object) -> object:
        match message:
            case Move():
                return await self.move(message)
            case Wait():
                return self.wait(message)
            case Join(player=p):
                return await self.join(p)
            case Leave(player=p):
                return await self.leave(p)
            case Look():
                return self.look()
        return _error("bad_request", f"the room does not understand {type(message).__name__}")

    async def join(self, player: str) -> Answer:
        state = self.state
        if player in state.present:
            return self.look()
        if state.phase == "lobby":
            if len(state.players) >= state.size:
                return _error("room_full", f"room {self.id} is full ({state.size} players)")
            events: list[object] = [Joined(player)]
            if len(state.present) + 1 == state.size:
                order = (*state.players, player)
                letter = random.choice("abcdefghilmnoprstw")
                events.append(Started(order, letter))
            await self.record(*events)
            await self.after_change()
            return self.look()
        if state.phase == "playing" and player in state.players:
            await self.record(Joined(player))
            await self.after_change()
            return self.look()
        return _error("game_started", f"room {self.id} has started without {player}")

    async def leave(self, player: str) -> Answer:
        state = self.state
        if player not in state.present:
            return _error("not_in_room", f"{player} is not in room {self.id}")
        events: list[object] = [Left(player)]
        if state.phase == "playing" and state.current == player:
            events.append(TurnLost(player, state.turn, "left"))
            if state.turn + 1 >= state.total_turns:
                events.append(Finished())
        await self.record(*events)
        await self.after_change()
        return {"ok": True, "left": self.id}

    async def move(self, move: Move) -> Answer:
        state = self.state
        if state.phase != "playing":
            return _error("not_playing", f"room {self.id} is {state.phase}")
        if move.turn != state.turn:
            return _error(
                "stale_turn", f"turn {move.turn} is over; this is turn {state.turn}", turn=state.turn
            )
        if move.player != state.current:
            return _error("not_your_turn", f"it is {state.current}'s turn", turn=state.turn)
        word = move.word.strip().lower()
        if word:
            problem = self.check_word(word)
            if problem is not None:
                return _error("bad_word", problem, turn=state.turn)
        played = Played(move.player, state.turn, word, len(word))
        chaos = self.chaos
        crash = chaos.roll() if chaos is not None else None
        if chaos is not None and crash == "before":
            chaos.before += 1
            raise ChaosCrash(f"room {self.id}: chaos crash before recording turn {state.turn}")
        last = state.turn + 1 >= state.total_turns
        await self.record(*((played, Finished()) if last else (played,)))
        if chaos is not None and crash == "after":
            chaos.after += 1
            chaos.lost_replies.add((self.id, played.turn))
            raise ChaosCrash(f"room {self.id}: chaos crash after recording turn {played.turn}")
        score = self.state.scores[move.player]
        await self.after_change()
        answer: Answer = {"ok": True, "turn": played.turn, "word": word, "points": played.points}
        answer["score"] = score
        answer["next"] = self.state.current
        if last:
            answer["finished"] = self.state.result()
        return answer

    def check_word(self, word: str) -> str | None:
        state = self.state
        if not word.startswith(state.letter):
            return f"{word!r} does not start with {state.letter!r}"
        if word not in WORDS:
            return f"{word!r} is not in the dictionary"
        if word in state.used:
            return f"{word!r} was played already"
        return None

    def wait(self, wait: Wait) -> object:
        if wait.player not in self.state.players:
            return _error("not_in_room", f"{wait.player} is not in room {self.id}")
        answer = self.wait_answer(wait)
        if answer is not None:
            return answer
        self.waiters.append((wait, self.defer_reply()))
        return NoReply

    def wait_answer(self, wait: Wait) -> Answer | None:
        state = self.state
        if state.phase == "finished":
            return {"ok": True, "finished": state.result()}
        if state.phase == "playing" and state.current == wait.player and state.turn >= wait.turn:
            return {
                "ok": True,
                "your_turn": True,
                "turn": state.turn,
                "letter": state.letter,
                "used": list(state.used),
                "seconds": state.turn_seconds,
            }
        return None

    def look(self) -> Answer:
        state = self.state
        return {
            "ok": True,
            "room": self.id,
            "phase": state.phase,
            "players": list(state.players),
            "present": list(state.present),
            "scores": dict(state.scores),
            "turn": state.turn,
            "current": state.current,
            "letter": state.letter,
        }

    async def after_change(self) -> None:
        """Answer the waiters whose turn came, re-arm the timer, complete a finished game."""
        still = []
        for wait, reply in self.waiters:
            answer = self.wait_answer(wait)
            if answer is None:
                still.append((wait, reply))
            else:
                reply.send(answer)
        self.waiters = still
        if self.state.phase == "finished":
            await self.unschedule("turn")
            await self.complete(self.state.result())
        else:
            await self.arm_timer()

    # -- timers -------------------------------------------------------------------------------------

    async def handle_info(self, message: object) -> None:
        if isinstance(message, Complete):
            await self.complete(self.state.result())
            return
        if not isinstance(message, TurnTimer):
            return
        state = self.state
        if state.phase != "playing" or state.turn != message.turn or state.current is None:
            return  # a move beat the timer
        events: list[object] = [TurnLost(state.current, state.turn, "timeout")]
        if state.turn + 1 >= state.total_turns:
            events.append(Finished())
        await self.record(*events)
        await self.after_change()


def room_class(chaos: Chaos | None) -> type[Room]:
    """The room class a server runs: ``Room``, crashing on purpose as ``chaos`` says."""
    if chaos is None or chaos.probability <= 0:
        return Room

    class ChaosRoom(Room):
        pass

    ChaosRoom.chaos = chaos
    return ChaosRoom
