"""The game server: players connect over TCP and speak line-delimited JSON to game rooms (sessions).

A connection says who it is (``hello``), then joins rooms, waits for its turn and moves. Each request
is answered in order, except ``wait``, which is answered in the background when the turn comes (so a
player can still ``look`` meanwhile). A connection that closes leaves every room it joined.
examples/README.md documents the protocol.

The server is a template to copy, so it is written for hostile peers (issue 17): any line gets an
answer with a named error, or closes that one connection; each connection is bounded (``Limits``:
requests in progress, rooms, line length, idle and slow peers, peers that do not read); the number of
connections is capped, with a clear refusal beyond; and running out of file descriptors makes the
server wait and accept again, never stop.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
from collections.abc import Mapping
from time import perf_counter
from typing import TypeGuard

import anyio
import attrs
from anyio.abc import ByteStream, Listener, SocketAttribute, SocketListener, SocketStream
from anyio.streams.stapled import MultiListener
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runtime import (
    CallTimeout,
    InvalidTransition,
    OwnedElsewhere,
    OwnershipLost,
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
from .protocol import MAX_LINE, JsonLines, LineTimeout, Message, ProtocolError, encode
from .sockets import accept

__all__ = ["GameMetrics", "GameServer", "Limits", "ServerStats"]

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
_MAX_WORD = 64
_MAX_ID = 128  # characters of a string "id" (echoed in the answer)
_MAX_TURN = 2**31

# accept() failing for want of resources: wait for some to be freed (as trio's serve_listeners does).
_ACCEPT_CAPACITY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# accept() failing for that one connection (gone before it was accepted): accept the next one.
_ACCEPT_SKIP = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "EPROTO",
        "EPERM",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ECONNRESET",
    )
    if hasattr(errno, name)
)
_ACCEPT_BACKOFF = (0.01, 1.0)  # first and longest wait, doubling in between


@attrs.frozen(kw_only=True)
class Limits:
    """What one peer may take of the server, and how many peers it serves (examples/README.md).

    Every limit answers with a named error (``busy``, ``too_many_rooms``, ``server_full``...) or closes
    the one connection at fault; none of them stops the server.

    Attributes:
        max_connections: connections served at once; one more is answered ``server_full`` and closed.
        max_line: the longest request line, in bytes; a longer one is answered ``line_too_long``, and
            the connection closed (the rest of the line cannot be told from the next request).
        max_pending: requests in progress on one connection (``wait``s included); more are answered
            ``busy`` until some are answered.
        max_rooms: rooms one connection is in at once.
        room_burst: rooms one connection may create in a row; then ...
        rooms_per_second: ... one more each 1/rooms_per_second seconds.
        idle_timeout: seconds a connection may send nothing (its ``wait``s pending or not) before it is
            closed with ``idle``.
        request_timeout: seconds from the first byte of a request line to its end: a peer that
            trickles a line in is closed with ``too_slow``.
        send_timeout: seconds an answer may wait for the peer to read it; a peer that does not read
            its answers is closed.
    """

    max_connections: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    max_line: int = attrs.field(default=MAX_LINE, validator=attrs.validators.ge(64))
    max_pending: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    max_rooms: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    room_burst: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    rooms_per_second: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))
    idle_timeout: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    request_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    send_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))


class _Bucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate`` per second."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst, self.rate = burst, rate
        self.tokens = float(burst)
        self.checked = anyio.current_time()

    def take(self) -> bool:
        now = anyio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.checked) * self.rate)
        self.checked = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def give_back(self) -> None:
        self.tokens = min(self.burst, self.tokens + 1)


@attrs.define
class _Peer:
    """One connection's state."""

    lines: JsonLines
    rooms_left: _Bucket
    player: str | None = None
    """The hello'd name, once known."""
    rooms: set[str] = attrs.field(factory=set)
    pending: int = 0


@attrs.define
class ServerStats:
    """What the server did, for the progress line and the summary."""

    connections: int = 0
    """Connections served (since the start)."""
    open: int = 0
    """Connections open now."""
    refused: int = 0
    """Connections refused with ``server_full``."""
    accept_errors: int = 0
    """accept() failures for want of resources (file descriptors, memory): each one waited and retried."""
    closed_by_limits: int = 0
    """Connections closed by a limit: idle, too slow, line too long, not reading their answers."""
    internal_errors: int = 0
    """Requests (or connections) that failed in the server itself: each one is logged."""
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
        self.tasks = Gauge(
            "game_tasks", "Tasks in the event loop, at the last progress line.", registry=registry
        )


class GameServer:
    """Serves game rooms over TCP.

    Args:
        sessions: the supervisor the rooms run under.
        room_cls: the room class (``game.room_class(chaos)``).
        metadata: added to every room's metadata (the run's id, for the summary's count).
        turn_seconds: the turn timer of rooms this server creates.
        metrics: the game's instruments, if metrics are served.
        limits: what each connection may take, and how many are served at once.
    """

    def __init__(
        self,
        sessions: SessionSupervisor,
        room_cls: type[Room],
        *,
        metadata: Mapping[str, str],
        turn_seconds: float = 1.0,
        metrics: GameMetrics | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.sessions = sessions
        self.room_cls = room_cls
        self.metadata = dict(metadata)
        self.turn_seconds = turn_seconds
        self.metrics = metrics
        self.limits = limits if limits is not None else Limits()
        self.stats = ServerStats()

    async def serve(self, listener: Listener[SocketStream]) -> None:
        """Serve players on ``listener`` until cancelled (``anyio.create_tcp_listener(...)``).

        Unlike ``listener.serve(handler)``, a failing accept() does not end the serving: without file
        descriptors (EMFILE, ENFILE) or memory it waits, from 10 ms doubling up to 1 s, and accepts
        again; a connection reset before it was accepted (ECONNABORTED) is skipped.
        """
        listeners = listener.listeners if isinstance(listener, MultiListener) else [listener]
        async with listener, anyio.create_task_group() as tg:
            for one in listeners:
                if not isinstance(one, SocketListener):
                    raise TypeError(f"GameServer serves socket listeners, got {one!r}")
                # Its socket, not its accept(): connections become RawSocketStreams (sockets.py says why).
                tg.start_soon(self._accept_loop, one.extra(SocketAttribute.raw_socket), tg)

    async def _accept_loop(self, listening: socket.socket, tg: anyio.abc.TaskGroup) -> None:
        first, longest = _ACCEPT_BACKOFF
        delay = first
        while True:
            try:
                stream = await accept(listening)
            except OSError as exc:
                if exc.errno not in _ACCEPT_SKIP | _ACCEPT_CAPACITY:
                    raise
                if exc.errno in _ACCEPT_SKIP:
                    continue
                self.stats.accept_errors += 1
                if delay == first:  # once per run of failures, not once per retry
                    logger.warning(
                        "accept() failed (%s) with %d connections open: accepting again in %g s, and "
                        "more slowly while it lasts",
                        exc.strerror or exc,
                        self.stats.open,
                        delay,
                    )
                await anyio.sleep(delay)
                delay = min(delay * 2, longest)
                continue
            delay = first
            if self.stats.open >= self.limits.max_connections:
                self.stats.refused += 1
                tg.start_soon(self._refuse, stream)
            else:
                self.stats.open += 1  # counted here, so that a burst of accepts cannot overshoot
                tg.start_soon(self.handle, stream)

    async def _refuse(self, stream: ByteStream) -> None:
        full = {
            "ok": False,
            "error": "server_full",
            "message": f"the server serves {self.limits.max_connections} connections at most: try later",
        }
        with anyio.move_on_after(1):
            try:
                await stream.send(encode(full))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
        with anyio.CancelScope(shield=True):
            await stream.aclose()

    # -- one connection ---------------------------------------------------------------------------

    async def handle(self, stream: ByteStream) -> None:
        """Serve one connection; whatever happens in it ends here (logged), never in the server.

        Counts as one of ``stats.open`` (``serve`` counts it before starting this).
        """
        limits = self.limits
        lines = JsonLines(
            stream,
            max_line=limits.max_line,
            idle_timeout=limits.idle_timeout,
            request_timeout=limits.request_timeout,
            send_timeout=limits.send_timeout,
        )
        peer = _Peer(lines, _Bucket(limits.room_burst, limits.rooms_per_second))
        self.stats.connections += 1
        if self.metrics:
            self.metrics.connections.inc()
        try:
            await self._converse(peer)
        except Exception:
            self.stats.internal_errors += 1
            logger.exception("connection from %s failed; closed", _address(stream))
        finally:
            self.stats.open -= 1
            if self.metrics:
                self.metrics.connections.dec()
            with anyio.move_on_after(_CALL_TIMEOUT, shield=True):
                for room in peer.rooms:  # leaving: the other players' turns need not wait for a timeout
                    try:
                        assert peer.player is not None  # only a hello'd player joins rooms
                        await self.sessions.ref(room).call(Leave(peer.player), timeout=_CALL_TIMEOUT)
                    except SessionError:
                        pass
                await stream.aclose()

    async def _converse(self, peer: _Peer) -> None:
        lines = peer.lines
        try:
            async with anyio.create_task_group() as background:
                while True:
                    try:
                        request = await lines.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                        break
                    except anyio.DelimiterNotFound:
                        self.stats.closed_by_limits += 1
                        message = f"a request is one line of {self.limits.max_line} bytes at most"
                        await self.send(peer, {"ok": False, "error": "line_too_long", "message": message}, {})
                        break
                    except LineTimeout as exc:
                        self.stats.closed_by_limits += 1
                        error = "idle" if exc.idle else "too_slow"
                        await self.send(peer, {"ok": False, "error": error, "message": f"{exc}: closing"}, {})
                        break
                    except ProtocolError as exc:
                        await self.send(peer, {"ok": False, "error": "bad_json", "message": str(exc)}, {})
                        continue
                    if peer.pending >= self.limits.max_pending:
                        message = f"{peer.pending} requests in progress on this connection: wait for answers"
                        await self.send(peer, {"ok": False, "error": "busy", "message": message}, request)
                        continue
                    peer.pending += 1
                    if request.get("op") == "wait":
                        background.start_soon(self.answer, peer, request)
                    else:
                        await self.answer(peer, request)
                background.cancel_scope.cancel()  # the player is gone: so are its waits
        except anyio.BrokenResourceError:
            pass

    async def send(self, peer: _Peer, answer: Message, request: Message) -> None:
        """Answer ``request`` (its ``op``, ``id`` and ``room`` echoed, when they are fit to be)."""
        for key in ("op", "id", "room"):
            if key in request and key not in answer and _echoable(key, request[key]):
                answer[key] = request[key]
        try:
            await peer.lines.send(answer)
        except (ValueError, TypeError):
            # Never reached by the rooms' own answers; if one ever is, the peer still gets an answer.
            self.stats.internal_errors += 1
            logger.exception("answer %r is not JSON", answer)
            await self.send(peer, _internal(), request)
        except TimeoutError:
            # The peer does not read its answers; half a line may be out: end the connection.
            self.stats.closed_by_limits += 1
            with anyio.CancelScope(shield=True):
                await peer.lines.aclose()  # the reader sees ClosedResourceError and ends
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The peer is gone: the requests it pipelined before going need no answers. Without
            # this, the reader would answer each of them into the void first (seconds of CPU).
            with anyio.CancelScope(shield=True):
                await peer.lines.aclose()

    async def answer(self, peer: _Peer, request: Message) -> None:
        try:
            try:
                answer = await self.dispatch(request, peer)
            except SessionError as exc:
                answer = self.error_answer(request, exc)
            except Exception:
                # A bug, not the peer's fault: log it, answer it, and serve the connection on.
                self.stats.internal_errors += 1
                logger.exception("request %.200r failed", request)
                answer = _internal()
            await self.send(peer, answer, request)
        finally:
            peer.pending -= 1

    async def dispatch(self, request: Message, peer: _Peer) -> Message:
        op = request.get("op")
        if "id" in request and not _echoable("id", request["id"]):
            return _bad("id", f"an id is a number, or a string of {_MAX_ID} characters at most")
        if op == "help" or op is None:
            return {"ok": True, "ops": _OPS}
        if not isinstance(op, str) or op not in {"hello", *_OPS}:
            return _bad("op", f'unknown op {op!r:.80}; send {{"op":"help"}}')
        if op == "hello":
            name = request.get("name")
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                return _bad("name", "a name is 1 to 64 letters, digits, '_', '-' or '.'")
            if peer.player is not None and peer.player != name:
                return _bad("name", f"this connection is {peer.player} already")
            peer.player = name
            return {"ok": True, "name": name}
        if peer.player is None:
            return _bad("hello", 'say who you are first: {"op":"hello","name":"ann"}')
        name = peer.player
        room = request.get("room")
        if not isinstance(room, str) or not _NAME.fullmatch(room):
            return _bad("room", "a room is 1 to 64 letters, digits, '_', '-' or '.'")
        if op == "join":
            answer = await self.join(room, name, request, peer)
            if answer.get("ok"):
                peer.rooms.add(room)
            return answer
        ref = self.sessions.ref(room)
        if op == "move":
            return await self.move(room, name, request)
        if op == "wait":
            turn = request.get("turn", 0)
            if not _is_int(turn, 0, _MAX_TURN):
                return _bad("turn", "turn is the turn number to wait for (an integer, 0 or more)")
            return await self.wait(room, Wait(name, turn))
        if op == "leave":
            answer = _checked(await ref.call(Leave(name), timeout=_CALL_TIMEOUT))
            peer.rooms.discard(room)
            return answer
        return _checked(await ref.call(Look(), timeout=_CALL_TIMEOUT))

    async def join(self, room: str, name: str, request: Message, peer: _Peer) -> Message:
        size, rounds = request.get("size", 2), request.get("rounds", 5)
        if not _is_int(size, 2, 6):
            return _bad("size", "size is the number of players, 2 to 6")
        if not _is_int(rounds, 1, 50):
            return _bad("rounds", "rounds is the number of turns each player gets, 1 to 50")
        if room not in peer.rooms and len(peer.rooms) >= self.limits.max_rooms:
            return {
                "ok": False,
                "error": "too_many_rooms",
                "message": f"this connection is in {len(peer.rooms)} rooms already: leave one first",
            }
        ref = self.sessions.ref(room)
        if not peer.rooms_left.take():
            # Out of room creations for now: joining a room that exists is still fine.
            try:
                return _checked(await ref.call(Join(name), timeout=_CALL_TIMEOUT))
            except SessionNotFound:
                return {
                    "ok": False,
                    "error": "busy",
                    "message": f"this connection creates {self.limits.rooms_per_second:g} rooms per "
                    f"second at most: join an existing room, or try again shortly",
                }
        args = {"size": size, "rounds": rounds, "turn_seconds": self.turn_seconds}
        try:
            ref = await self.sessions.start(self.room_cls, room, args, metadata=self.metadata)
        except SessionExists:
            peer.rooms_left.give_back()  # not created: joined
        return _checked(await ref.call(Join(name), timeout=_CALL_TIMEOUT))

    async def move(self, room: str, name: str, request: Message) -> Message:
        turn, word = request.get("turn"), request.get("word", "")
        if not _is_int(turn, 0, _MAX_TURN) or not isinstance(word, str) or len(word) > _MAX_WORD:
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
            case OwnedElsewhere(node=node, address=address):
                # Several nodes: the room lives on another one; the client reconnects there.
                return {
                    "ok": False,
                    "error": "redirect",
                    "node": node,
                    "address": address,
                    "message": f"room {room} is played on node {node}: connect to {address} and send again",
                }
            case OwnershipLost(owner=owner):
                return {
                    "ok": False,
                    "error": "redirect",
                    "node": owner,
                    "address": None,
                    "message": f"room {room} moved to another node: send the request again to learn where",
                }
        logger.warning("room %s: %s", room, exc)
        return {"ok": False, "error": "error", "message": str(exc)}


def _bad(field: str, message: str) -> Message:
    return {"ok": False, "error": "bad_request", "field": field, "message": message}


def _internal() -> Message:
    return {"ok": False, "error": "internal", "message": "the server failed on this request (it is logged)"}


def _is_int(value: object, low: int, high: int) -> TypeGuard[int]:
    # bool is an int to Python, not to the protocol: {"turn": true} is not turn 1.
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _echoable(key: str, value: object) -> bool:
    """Whether the request's ``key`` may be copied into the answer (small, plain and valid)."""
    if key == "id":
        if isinstance(value, str):
            return len(value) <= _MAX_ID and _is_unicode(value)
        return value is None or isinstance(value, int | float)  # finite and in range: decode checked
    if key == "op":
        return isinstance(value, str) and (value in _OPS or value in ("hello", "help"))
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def _is_unicode(text: str) -> bool:
    # JSON's \ud800 escapes can make a lone surrogate, which no UTF-8 peer could read back.
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _address(stream: ByteStream) -> object:
    try:
        return stream.extra(SocketAttribute.remote_address)
    except (anyio.TypedAttributeLookupError, OSError):
        return "?"


def _checked(answer: object) -> Message:
    if not isinstance(answer, dict):
        raise TypeError(f"a room answered {answer!r}, not a dict")
    return answer
