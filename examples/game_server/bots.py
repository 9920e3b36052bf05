"""Bot players: they connect over TCP like anyone else and play whole games, table after table.

Players sit at tables of ``size``; each table plays one game after another in a fresh room, each
player on its own connection. A bot now and then dozes through its turn (the room's timer takes the
turn from it) and a whole table now and then walks out mid-game (the room, left empty, is abandoned
by the reaper). Every move a room acknowledges is noted by (room, turn): after the run, the summary
looks each one up in the store.

Stopping is graceful: a bot stops between moves, never with a move in flight, so that every move it
sent has its answer.

On several nodes (``addresses``), tables start on the nodes in turn. A bot told ``redirect`` (its room
is played on another node) reconnects to the address it is given, joins again and sends its request
again; a bot whose node is gone (the connection breaks, or the node refuses it) reconnects to the next
node, and a move it had in flight then is *uncertain*: recorded or not, only the log knows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from time import perf_counter
from types import TracebackType
from typing import Any, Self

import anyio
import attrs
from anyio.abc import SocketStream

from .audit import AckJournal
from .protocol import JsonLines
from .words import BY_LETTER

__all__ = ["BotStats", "Bots", "Client", "NodeLost", "Seat"]


@attrs.define
class BotStats:
    """What the bots saw. ``acked`` holds the (room, turn) of every move acknowledged to them."""

    games: int = 0
    finished: set[str] = attrs.field(factory=set)
    walked_out: int = 0
    acked: set[tuple[str, int]] = attrs.field(factory=set)
    latencies: list[float] = attrs.field(factory=list)
    dozed: int = 0
    crashes_seen: int = 0
    rejected: int = 0
    uncertain: set[tuple[str, int]] = attrs.field(factory=set)
    """Moves whose answer was a crash or a timeout, or never came (the node died): maybe recorded."""
    redirects: int = 0
    """Answers ``redirect`` followed to another node."""
    reconnects: int = 0
    """Connections replaced because their node was gone."""
    moved_rooms: set[str] = attrs.field(factory=set)
    """Rooms whose bots lost their node mid-game and carried on elsewhere."""
    acked_after_move: int = 0
    """Moves acknowledged in those rooms after their node was lost."""


class Client:
    """One player's connection: a request, then its answer."""

    def __init__(self, stream: SocketStream) -> None:
        self.lines = JsonLines(stream)

    @classmethod
    async def connect(cls, host: str, port: int) -> Client:
        return cls(await anyio.connect_tcp(host, port))

    async def request(self, **fields: Any) -> dict[str, Any]:
        await self.lines.send(fields)
        return await self.lines.receive()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.lines.aclose()


_GONE = (OSError, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)
_RETRY = 0.05  # seconds between attempts while a room finds its next node
_PATIENCE = 60.0  # seconds a bot keeps looking for its room's node before it gives up


class NodeLost(Exception):
    """The node went away with a request in flight: it may or may not have been carried out."""


class Seat:
    """One bot's connection to the node that plays its room, following redirects and failovers.

    Args:
        addresses: every node ("host:port"), the first where to start; when a node is gone the
            next one is tried.
        name: the player.
        stats: where redirects and reconnections are counted.
    """

    def __init__(self, addresses: Sequence[str], name: str, stats: BotStats) -> None:
        self.addresses = list(addresses)
        self.at = 0
        self.name = name
        self.stats = stats
        self.room: str | None = None
        self.client: Client | None = None
        self.moved = False
        """Whether this seat lost its node at least once."""

    async def aclose(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            with anyio.CancelScope(shield=True):
                await client.lines.aclose()

    async def join(self, room: str, **fields: Any) -> dict[str, Any]:
        """Join ``room`` (created if new) on whichever node plays it."""
        answer = await self.request(op="join", room=room, **fields)
        if answer.get("ok"):
            self.room = room
        return answer

    async def request(self, **fields: Any) -> dict[str, Any]:
        """Send a request and return its answer; redirects are followed, the request sent again.

        Raises:
            NodeLost: the node went away with the request in flight (a move may be recorded).
        """
        give_up = anyio.current_time() + _PATIENCE
        while True:
            client = await self._connected(give_up)
            try:
                answer = await client.request(**fields)
            except _GONE:
                await self._lost()
                raise NodeLost from None
            if answer.get("error") != "redirect" or anyio.current_time() > give_up:
                return answer
            self.stats.redirects += 1
            address = answer.get("address")
            if isinstance(address, str) and ":" in address:
                await self.aclose()
                self.at = self._index(address)
            else:  # the room moved while this node held it: ask again where it is now
                await anyio.sleep(_RETRY)

    def _index(self, address: str) -> int:
        """Where ``address`` is among the nodes (a node not known yet is added)."""
        if address not in self.addresses:
            self.addresses.append(address)
        return self.addresses.index(address)

    async def _lost(self) -> None:
        await self.aclose()
        self.at = (self.at + 1) % len(self.addresses)
        self.moved = True
        self.stats.reconnects += 1

    async def _connected(self, give_up: float) -> Client:
        """The connection, made (hello, and join again the room joined before) if there is none."""
        while self.client is None:
            host, _, port = self.addresses[self.at].rpartition(":")
            try:
                client = await Client.connect(host, int(port))
            except OSError:
                if anyio.current_time() > give_up:
                    raise NodeLost from None
                self.at = (self.at + 1) % len(self.addresses)
                await anyio.sleep(_RETRY)
                continue
            self.client = client
            try:
                await client.request(op="hello", name=self.name)
                if self.room is not None:
                    # Joining again: the node plays it (or redirects); a finished room answers
                    # the next request itself.
                    answer = await client.request(op="join", room=self.room)
                    if answer.get("error") == "redirect":
                        if anyio.current_time() > give_up:
                            raise NodeLost
                        self.stats.redirects += 1
                        address = answer.get("address")
                        await self.aclose()
                        if isinstance(address, str) and ":" in address:
                            self.at = self._index(address)
                        await anyio.sleep(_RETRY)
            except _GONE:
                await self._lost()
                await anyio.sleep(_RETRY)
        return self.client


class Bots:
    """``players`` bots at tables of ``size``, playing until ``stop()``.

    Args:
        host, port: the game server.
        players: how many bots (rounded down to whole tables; at least one table).
        size, rounds: each game's players and turns per player.
        run_id: prefixes the rooms' names (a kept store may hold rooms of earlier runs).
        seed: makes their choices repeatable (not the timing).
        doze: the chance a bot lets its turn time out.
        walk_out: the chance a table leaves a game in the middle.
        journal: where each acknowledged move is also written as it comes (kept by a killed run).
        think: the most a bot thinks before a move, in seconds.
        addresses: the nodes ("host:port") when several play the rooms: tables start on them in
            turn, and a bot whose node is gone carries on at the next one.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        players: int,
        size: int = 2,
        rounds: int = 5,
        run_id: str = "run",
        seed: int | None = None,
        doze: float = 0.01,
        walk_out: float = 0.05,
        think: float = 0.005,
        journal: AckJournal | None = None,
        addresses: Sequence[str] = (),
    ) -> None:
        self.host, self.port = host, port
        self.addresses = list(addresses) or [f"{host}:{port}"]
        self.tables = max(1, players // size)
        self.size, self.rounds = size, rounds
        self.run_id = run_id
        self.rng = random.Random(seed)
        self.doze, self.walk_out, self.think = doze, walk_out, think
        self.stats = BotStats()
        self.journal = journal
        self.stopping = False
        self._waits: set[anyio.CancelScope] = set()

    def stop(self) -> None:
        """Finish: moves in flight get their answers; waits for a turn are abandoned."""
        self.stopping = True
        for scope in self._waits:
            scope.cancel()

    async def run(self) -> None:
        """Play until ``stop()``; returns once every bot has left."""
        async with anyio.create_task_group() as tg:
            for table in range(self.tables):
                tg.start_soon(self.table, table)

    async def table(self, table: int) -> None:
        game = 0
        n = len(self.addresses)
        start = self.addresses[table % n :] + self.addresses[: table % n]  # its node first
        while not self.stopping:
            room = f"{self.run_id}-t{table}-g{game}"
            game += 1
            self.stats.games += 1
            total = self.size * self.rounds
            leave_at = self.rng.randrange(1, total) if self.rng.random() < self.walk_out else None
            if leave_at is not None:
                self.stats.walked_out += 1
            async with anyio.create_task_group() as tg:
                for seat in range(self.size):
                    tg.start_soon(self.play, f"bot{table}-{seat}", room, leave_at, start)

    async def play(self, name: str, room: str, leave_at: int | None, addresses: Sequence[str]) -> None:
        """One bot, one game: join, then wait for each turn and move, until the game is over."""
        seat = Seat(addresses, name, self.stats)
        try:
            await self._play(seat, room, leave_at)
        except NodeLost:
            pass  # no node would take the room for _PATIENCE seconds
        finally:
            await seat.aclose()

    async def _play(self, seat: Seat, room: str, leave_at: int | None) -> None:
        stats = self.stats
        joined = await seat.join(room, size=self.size, rounds=self.rounds)
        if not joined.get("ok"):
            return
        turn = 0
        while not self.stopping:
            with anyio.CancelScope() as scope:
                self._waits.add(scope)
                try:
                    ready = await seat.request(op="wait", room=room, turn=turn)
                except NodeLost:
                    continue  # ask the room's next node
                finally:
                    self._waits.discard(scope)
            if scope.cancelled_caught or not ready.get("ok"):
                return  # stopping; or the room is over (abandoned, timed out, failed)
            if "finished" in ready:
                stats.finished.add(room)
                return
            turn = ready["turn"]
            if leave_at is not None and turn >= leave_at:
                return  # walk out: closing the connection leaves the room
            if self.rng.random() < self.doze:
                stats.dozed += 1
                turn += 1  # the room's timer takes this turn; wait for the next one
                continue
            await anyio.sleep(self.rng.random() * self.think)
            word = self.choose(ready["letter"], ready["used"])
            started = perf_counter()
            try:
                answer = await seat.request(op="move", room=room, turn=turn, word=word)
            except NodeLost:
                # The node died with the move in flight: recorded or not, wait for this turn again.
                stats.uncertain.add((room, turn))
                stats.moved_rooms.add(room)
                continue
            elapsed = perf_counter() - started
            if answer.get("ok"):
                stats.acked.add((room, turn))
                if seat.moved:
                    stats.moved_rooms.add(room)
                    stats.acked_after_move += 1
                if self.journal is not None:
                    self.journal.note(room, turn)
                stats.latencies.append(elapsed)
                if "finished" in answer:
                    stats.finished.add(room)
                    return
                turn += 1
            elif answer.get("error") in ("crashed", "timeout"):
                # Recorded or not? Wait for this turn again: it comes back only if it was not.
                stats.crashes_seen += 1
                stats.uncertain.add((room, turn))
            elif answer.get("error") in ("stale_turn", "not_your_turn", "bad_word"):
                stats.rejected += 1  # the timer was faster; wait for the turn it names
                turn = int(answer.get("turn", turn + 1))
            else:
                return

    def choose(self, letter: str, used: list[str]) -> str:
        """A word starting with ``letter`` not played yet, or "" (a pass) when none is left."""
        taken = set(used)
        words = [w for w in BY_LETTER.get(letter, ()) if w not in taken]
        return self.rng.choice(words) if words else ""
