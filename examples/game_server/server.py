"""The game server: players connect over TCP and speak line-delimited JSON to game rooms (sessions).

A connection says who it is (``hello``), then joins rooms, waits for its turn and moves. Each request
is answered in order, except ``wait``, which is answered in the background when the turn comes (so a
player can still ``look`` meanwhile). A connection that closes leaves every room it joined.
examples/README.md documents the protocol.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from time import perf_counter

import anyio
import attrs
from anyio.abc import Listener, SocketStream
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runtime import (
    CallTimeout,
    InvalidTransition,
    RateLimited,
    SessionCrashed,
    SessionError,
    SessionExists,
    SessionNotFound,
    SessionPaused,
    SessionStopped,
    ShuttingDown,
    TooManySessions,
)
from supervisors import SessionSupervisor

from .game import Join, Leave, Look, Move, Room, Wait
from .protocol import JsonLines, Message, ProtocolError

__all__ = ["GameMetrics", "GameServer", "ServerStats"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_OPS = {
    "hello": '{"op":"hello","name":"ann"}: say who you are (once per connection)',
    "join": '{"op":"join","room":"r1","size":2,"rounds":5}: join (or create) a room',
    "wait": '{"op":"wait","room":"r1","turn":0}: answered when it is your turn (or the game is over)',
    "move": '{"op":"move","room":"r1","turn":0,"word":"apple"}: play a word ("" passes)',
    "look": '{"op":"look","room":"r1"}: the room now',
    "leave": '{"op":"leave","room":"r1"}: leave a room',
}
_CALL_TIMEOUT = 5.0
_WAIT_TIMEOUT = 30.0
_WAIT_RETRIES = 100


@attrs.define
class ServerStats:
    """What the server did, for the progress line and the summary."""

    connections: int = 0
    moves: int = 0
    """Moves acknowledged (an ``ok`` answer went out)."""
    uncertain: set[tuple[str, int]] = attrs.field(factory=set)
    """Moves answered with a crash or a timeout: recorded or not, the player cannot know."""


class GameMetrics:
    """The game's own Prometheus instruments, next to sessionvisor's in the served registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.moves = Counter(
            "game_moves", "Move requests answered, by outcome.", ["outcome"], registry=registry
        )
        self.move_seconds = Histogram(
            "game_move_seconds",
            "Time from a move request to its answer, in the server.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.connections = Gauge("game_connections", "Players connected now.", registry=registry)


class GameServer:
    """Serves game rooms over TCP.

    Args:
        sessions: the supervisor the rooms run under.
        room_cls: the room class (``game.room_class(chaos)``).
        metadata: added to every room's metadata (the run's id, for the summary's count).
        turn_seconds: the turn timer of rooms this server creates.
        metrics: the game's instruments, if metrics are served.
    """

    def __init__(
        self,
        sessions: SessionSupervisor,
        room_cls: type[Room],
        *,
        metadata: Mapping[str, str],
        turn_seconds: float = 1.0,
        metrics: GameMetrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.room_cls = room_cls
        self.metadata = dict(metadata)
        self.turn_seconds = turn_seconds
        self.metrics = metrics
        self.stats = ServerStats()

    async def serve(self, listener: Listener[SocketStream]) -> None:
        """Serve players on ``listener`` until cancelled (``anyio.create_tcp_listener(...)``)."""
        async with listener:
            await listener.serve(self.handle)

    # -- one connection ---------------------------------------------------------------------------

    async def handle(self, stream: SocketStream) -> None:
        lines = JsonLines(stream)
        player: list[str] = []  # the hello'd name, once known
        rooms: set[str] = set()
        self.stats.connections += 1
        if self.metrics:
            self.metrics.connections.inc()
        try:
            async with anyio.create_task_group() as background:
                while True:
                    try:
                        request = await lines.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                        break
                    except anyio.DelimiterNotFound:
                        await self.send(lines, {"ok": False, "error": "line_too_long"}, {})
                        break
                    except ProtocolError as exc:
                        await self.send(lines, {"ok": False, "error": "bad_json", "message": str(exc)}, {})
                        continue
                    if request.get("op") == "wait":
                        background.start_soon(self.answer, lines, request, player, rooms)
                    else:
                        await self.answer(lines, request, player, rooms)
                background.cancel_scope.cancel()  # the player is gone: so are its waits
        except anyio.BrokenResourceError:
            pass
        finally:
            if self.metrics:
                self.metrics.connections.dec()
            with anyio.move_on_after(_CALL_TIMEOUT, shield=True):
                for room in rooms:  # leaving: the other players' turns need not wait for a timeout
                    try:
                        await self.sessions.ref(room).call(Leave(player[0]), timeout=_CALL_TIMEOUT)
                    except SessionError:
                        pass
                await stream.aclose()

    async def send(self, lines: JsonLines, answer: Message, request: Message) -> None:
        for key in ("op", "id", "room"):
            if key in request and key not in answer:
                answer[key] = request[key]
        try:
            await lines.send(answer)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the reader notices the closed connection

    async def answer(self, lines: JsonLines, request: Message, player: list[str], rooms: set[str]) -> None:
        try:
            answer = await self.dispatch(request, player, rooms)
        except SessionError as exc:
            answer = self.error_answer(request, exc)
        await self.send(lines, answer, request)

    async def dispatch(self, request: Message, player: list[str], rooms: set[str]) -> Message:
        op = request.get("op")
        if op == "help" or op is None:
            return {"ok": True, "ops": _OPS}
        if op == "hello":
            name = request.get("name")
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                return _bad("name", "a name is 1 to 64 letters, digits, '_', '-' or '.'")
            if player and player[0] != name:
                return _bad("name", f"this connection is {player[0]} already")
            player[:] = [name]
            return {"ok": True, "name": name}
        if op not in _OPS:
            return _bad("op", f'unknown op {op!r}; send {{"op":"help"}}')
        if not player:
            return _bad("hello", 'say who you are first: {"op":"hello","name":"ann"}')
        name = player[0]
        room = request.get("room")
        if not isinstance(room, str) or not _NAME.fullmatch(room):
            return _bad("room", "a room is 1 to 64 letters, digits, '_', '-' or '.'")
        if op == "join":
            answer = await self.join(room, name, request)
            if answer.get("ok"):
                rooms.add(room)
            return answer
        ref = self.sessions.ref(room)
        if op == "move":
            return await self.move(room, name, request)
        if op == "wait":
            turn = request.get("turn", 0)
            if not isinstance(turn, int):
                return _bad("turn", "turn is the turn number to wait for (an integer)")
            return await self.wait(room, Wait(name, turn))
        if op == "leave":
            answer = _checked(await ref.call(Leave(name), timeout=_CALL_TIMEOUT))
            rooms.discard(room)
            return answer
        return _checked(await ref.call(Look(), timeout=_CALL_TIMEOUT))

    async def join(self, room: str, name: str, request: Message) -> Message:
        size, rounds = request.get("size", 2), request.get("rounds", 5)
        if not (isinstance(size, int) and 2 <= size <= 6):
            return _bad("size", "size is the number of players, 2 to 6")
        if not (isinstance(rounds, int) and 1 <= rounds <= 50):
            return _bad("rounds", "rounds is the number of turns each player gets, 1 to 50")
        args = {"size": size, "rounds": rounds, "turn_seconds": self.turn_seconds}
        try:
            ref = await self.sessions.start(self.room_cls, room, args, metadata=self.metadata)
        except SessionExists:
            ref = self.sessions.ref(room)
        return _checked(await ref.call(Join(name), timeout=_CALL_TIMEOUT))

    async def move(self, room: str, name: str, request: Message) -> Message:
        turn, word = request.get("turn"), request.get("word", "")
        if not isinstance(turn, int) or not isinstance(word, str):
            return _bad("move", 'a move is {"op":"move","room":"r1","turn":3,"word":"apple"}')
        started = perf_counter()
        outcome = "error"
        try:
            answer = _checked(
                await self.sessions.ref(room).call(Move(name, turn, word), timeout=_CALL_TIMEOUT)
            )
            outcome = "ok" if answer.get("ok") else "rejected"
            if answer.get("ok"):
                self.stats.moves += 1
            return answer
        except (SessionCrashed, CallTimeout):
            outcome = "crashed"
            # Crashed before or after recording it: the move may be in the log. Only the log knows.
            self.stats.uncertain.add((room, turn))
            raise
        finally:
            if self.metrics:
                self.metrics.moves.labels(outcome).inc()
                self.metrics.move_seconds.observe(perf_counter() - started)

    async def wait(self, room: str, wait: Wait) -> Message:
        ref = self.sessions.ref(room)
        for _ in range(_WAIT_RETRIES):
            try:
                return _checked(await ref.call(wait, timeout=_WAIT_TIMEOUT))
            except (SessionCrashed, CallTimeout):
                # A wait is a question, not a change: ask the restarted room again.
                await anyio.sleep(0.005)
        return {"ok": False, "error": "crashed", "message": f"room {room} keeps crashing"}

    def error_answer(self, request: Message, exc: SessionError) -> Message:
        room = request.get("room")
        match exc:
            case SessionCrashed():
                return {
                    "ok": False,
                    "error": "crashed",
                    "message": f"room {room} crashed and restarts from its log: wait, then look at the turn",
                }
            case CallTimeout():
                return {"ok": False, "error": "timeout", "message": str(exc)}
            case SessionStopped(status=status):
                return {"ok": False, "error": "room_over", "status": status.value, "message": str(exc)}
            case SessionNotFound():
                return {"ok": False, "error": "no_such_room", "message": f"no room {room}: join it first"}
            case SessionPaused():
                return {"ok": False, "error": "paused", "message": str(exc)}
            case ShuttingDown():
                return {"ok": False, "error": "shutting_down", "message": "the server is shutting down"}
            case TooManySessions() | RateLimited():
                return {"ok": False, "error": "busy", "message": str(exc)}
            case InvalidTransition():
                return {"ok": False, "error": "invalid", "message": str(exc)}
        logger.warning("room %s: %s", room, exc)
        return {"ok": False, "error": "error", "message": str(exc)}


def _bad(field: str, message: str) -> Message:
    return {"ok": False, "error": "bad_request", "field": field, "message": message}


def _checked(answer: object) -> Message:
    if not isinstance(answer, dict):
        raise TypeError(f"a room answered {answer!r}, not a dict")
    return answer
