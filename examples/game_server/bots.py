"""Bot players: they connect over TCP like anyone else and play whole games, table after table.

Players sit at tables of ``size``; each table plays one game after another in a fresh room, each
player on its own connection. A bot now and then dozes through its turn (the room's timer takes the
turn from it) and a whole table now and then walks out mid-game (the room, left empty, is abandoned
by the reaper). Every move a room acknowledges is noted by (room, turn): after the run, the summary
looks each one up in the store.

Stopping is graceful: a bot stops between moves, never with a move in flight, so that every move it
sent has its answer.
"""

from __future__ import annotations

import random
from time import perf_counter
from types import TracebackType
from typing import Any, Self

import anyio
import attrs
from anyio.abc import SocketStream

from .audit import AckJournal
from .protocol import JsonLines
from .words import BY_LETTER

__all__ = ["BotStats", "Bots", "Client"]


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
    ) -> None:
        self.host, self.port = host, port
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
                    tg.start_soon(self.play, f"bot{table}-{seat}", room, leave_at)

    async def play(self, name: str, room: str, leave_at: int | None) -> None:
        """One bot, one game: join, then wait for each turn and move, until the game is over."""
        stats = self.stats
        async with await Client.connect(self.host, self.port) as client:
            await client.request(op="hello", name=name)
            joined = await client.request(op="join", room=room, size=self.size, rounds=self.rounds)
            if not joined.get("ok"):
                return
            turn = 0
            while not self.stopping:
                with anyio.CancelScope() as scope:
                    self._waits.add(scope)
                    try:
                        ready = await client.request(op="wait", room=room, turn=turn)
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
                answer = await client.request(op="move", room=room, turn=turn, word=word)
                elapsed = perf_counter() - started
                if answer.get("ok"):
                    stats.acked.add((room, turn))
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
