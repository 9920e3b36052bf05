"""``python -m examples.game_server``: the word-game server with bot players, then a summary.

Runs the game server on 127.0.0.1 with ``--bots`` bot players for ``--duration`` seconds on the
embedded SQLite store (./sessionvisor-game.db or ``--db``; an existing file is kept, ``--new-db``
starts afresh), serves ``/metrics``, prints progress every two seconds and a summary at the end.
``--chaos P`` crashes rooms with probability P per move; the summary then shows that no acknowledged
move was lost. Started again on the same file after a kill, it says how many rooms it resumed, lets
their timers and the reaper finish or abandon them, and checks the moves the killed run acknowledged
too (from the journal of acknowledged moves beside the file).

``--dsn DSN --node NAME`` runs it as one node among several sharing a PostgreSQL schema; ``--dsn DSN
--nodes 3`` starts three such nodes, plays the bots against them, kills one with SIGKILL midway and
audits the moves and the rooms' owners across all of them (cluster.py).

Exit status: 0 when every acknowledged move is in the store (and every stored move nobody
acknowledged is explained by a crash), 1 otherwise, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import random
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import anyio
import attrs
from anyio.abc import SocketAttribute

from runtime import HostStats, PostgresStore, SQLiteStore, Status, StoreError, serve_metrics
from runtime.abc import EventStore
from supervisors import (
    Backoff,
    Config,
    Node,
    ReaperPolicy,
    RestartPolicy,
    SessionSupervisor,
)

from .._common import count_tasks, load_or_exit, open_store, store_opens
from .audit import AckJournal, Audit, count_stored_moves, read_journal
from .bots import Bots
from .game import Chaos, ChaosCrash, room_class
from .server import GameMetrics, GameServer

DEFAULT_DB = "sessionvisor-game.db"

# Without --config: with bots, rooms everyone left are abandoned after 3 s; played by hand (--bots 0),
# after 10 minutes without a request, so that a person can think. Idle rooms are passivated after
# 10 s (their turn timers are durable reminders: they wake them), and a room may crash often
# (--chaos) before it is quarantined.
DEFAULT_CONFIG = Config(
    reaper=ReaperPolicy(idle_timeout=10, abandon_after=3, terminal_ttl=5),
    restarts=RestartPolicy(max_restarts=100, within=10, backoff=Backoff(initial=0.001, maximum=0.05)),
)
HAND_PLAY_ABANDON_AFTER = 600.0


@attrs.frozen(kw_only=True)
class Options:
    duration: float
    bots: int
    chaos: float
    config: str | None
    db: str | None
    new_db: bool
    host: str
    port: int
    metrics_port: int | None
    backend: Literal["asyncio", "trio"]
    size: int
    rounds: int
    turn_seconds: float
    seed: int | None
    progress: float
    doze: float
    walk_out: float
    dsn: str | None = None
    schema: str = "sessionvisor_game"
    node: str | None = None
    lease_ttl: float | None = None
    nodes: int = 0
    kill_after: float | None = None
    serve_bots: bool = False
    run_id: str | None = None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m examples.game_server",
        description="A multiplayer word game: game rooms are sessions; bots play them; nothing is lost.",
    )
    parser.add_argument(
        "--duration", type=float, help="seconds to run (default 20 with bots, 0 = until Ctrl-C)"
    )
    parser.add_argument("--bots", type=int, default=16, help="bot players (default 16; 0 = server only)")
    parser.add_argument("--chaos", type=float, default=0.01, help="crash probability per move (default 0.01)")
    parser.add_argument("--config", help="a sessionvisor TOML file (examples/sessionvisor.toml)")
    parser.add_argument("--db", help=f"SQLite file to use (default: {DEFAULT_DB}); an existing one is kept")
    parser.add_argument("--new-db", action="store_true", help="remove the SQLite file first: start afresh")
    parser.add_argument("--host", default="127.0.0.1", help="address of the game server (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port of the game server (default 0: any)")
    parser.add_argument("--metrics-port", type=int, help="port of /metrics (default 9464; 0: any)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--size", type=int, default=2, help="players per game (default 2)")
    parser.add_argument("--rounds", type=int, default=10, help="turns per player per game (default 10)")
    parser.add_argument("--turn-seconds", type=float, default=1.0, help="turn timer (default 1 s)")
    parser.add_argument("--doze", type=float, default=0.003, help="chance a bot sleeps through a turn")
    parser.add_argument("--walk-out", type=float, default=0.05, help="chance a table quits a game midway")
    parser.add_argument("--seed", type=int, help="seed for the bots' and the chaos' choices")
    parser.add_argument("--progress", type=float, default=2.0, help="seconds between progress lines")
    parser.add_argument(
        "--dsn",
        help="keep the rooms in PostgreSQL at this DSN (a PostgresStore) instead of SQLite, e.g. "
        "postgresql://postgres@127.0.0.1:5432/test",
    )
    parser.add_argument(
        "--schema", default="sessionvisor_game", help="the PostgresStore's schema (with --dsn)"
    )
    parser.add_argument(
        "--node",
        help="run as this node among several sharing --dsn: rooms another node owns are redirected there",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=0,
        help="start this many node processes on --dsn, play the bots against them, SIGKILL one "
        "midway (--kill-after) and audit the moves and owners across all of them",
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        help="seconds a node's leases last without renewal (default 10; 2 with --nodes)",
    )
    parser.add_argument(
        "--kill-after",
        type=float,
        help="with --nodes: seconds into the run when one node is killed with SIGKILL (default: a "
        "third of --duration; beyond --duration, none is)",
    )
    # A node started by --nodes: bot-style configuration, its run's id given (not for people).
    parser.add_argument("--serve-bots", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.node is not None and ns.dsn is None:
        parser.error("--node needs --dsn: nodes share a PostgreSQL store")
    if ns.nodes:
        if ns.dsn is None:
            parser.error("--nodes needs --dsn: the nodes share a PostgreSQL store")
        if ns.node is not None:
            parser.error("--nodes starts its own nodes: leave --node out")
        if not 2 <= ns.nodes <= 8:
            parser.error("--nodes is 2 to 8")
    if ns.lease_ttl is not None and not 0 < ns.lease_ttl < math.inf:
        parser.error("--lease-ttl is a positive number of seconds")
    if (ns.lease_ttl is not None and ns.node is None and not ns.nodes) or (
        ns.kill_after is not None and not ns.nodes
    ):
        parser.error("--lease-ttl goes with --node or --nodes, --kill-after with --nodes")
    if ns.dsn is not None and ns.db is not None:
        parser.error("--db and --dsn name two stores: give one")
    if not 0 <= ns.chaos < 1:
        parser.error("--chaos is a probability: 0 <= P < 1")
    if ns.bots < 0 or not 2 <= ns.size <= 6 or ns.rounds < 1 or ns.turn_seconds <= 0:
        parser.error("--bots >= 0, 2 <= --size <= 6, --rounds >= 1, --turn-seconds > 0")
    duration = ns.duration if ns.duration is not None else (20.0 if ns.bots else 0.0)
    if ns.nodes and (ns.bots < 2 or duration <= 0):
        parser.error("--nodes plays bots for a while: --bots >= 2 and --duration > 0")
    return Options(
        duration=duration,
        bots=ns.bots,
        chaos=ns.chaos,
        config=ns.config,
        db=ns.db,
        new_db=ns.new_db,
        host=ns.host,
        port=ns.port,
        metrics_port=ns.metrics_port,
        backend=ns.backend,
        size=ns.size,
        rounds=ns.rounds,
        turn_seconds=ns.turn_seconds,
        seed=ns.seed,
        progress=ns.progress,
        doze=ns.doze,
        walk_out=ns.walk_out,
        dsn=ns.dsn,
        schema=ns.schema,
        node=ns.node,
        lease_ttl=ns.lease_ttl,
        nodes=ns.nodes,
        kill_after=ns.kill_after,
        serve_bots=ns.serve_bots,
        run_id=ns.run_id,
    )


@attrs.define
class Tally:
    """Rooms by what happened to them, from the lifecycle feed."""

    started: int = 0
    ended: Counter[Status] = attrs.field(factory=Counter)


async def count_lifecycle(sessions: SessionSupervisor, tally: Tally) -> None:
    async with sessions.lifecycle(buffer=100_000) as feed:
        async for change in feed:
            if change.type != "game.Room":
                continue
            if change.previous is None:
                tally.started += 1
            elif change.status.terminal:
                tally.ended[change.status] += 1


async def show_progress(
    sessions: SessionSupervisor, server: GameServer, tally: Tally, every: float, began: float
) -> None:
    last_moves, last_time = 0, began
    while True:
        await anyio.sleep(every)
        now = anyio.current_time()
        stats = await sessions.stats()
        moves = server.stats.moves
        rate = (moves - last_moves) / max(now - last_time, 1e-9)
        last_moves, last_time = moves, now
        tasks = count_tasks()
        if server.metrics:
            server.metrics.tasks.set(tasks)
        print(
            f"{now - began:6.1f}s  games {tally.started} ({tally.ended[Status.COMPLETED]} finished, "
            f"{tally.ended[Status.ABANDONED]} abandoned)  moves {moves} ({rate:.0f}/s)  "
            f"restarts {stats.restarts}  recoveries {stats.recoveries}  active rooms {stats.active}  "
            f"connections {server.stats.open}  tasks {tasks}",
            flush=True,
        )


async def stop_on_signals(stop: anyio.Event) -> None:
    """Ctrl-C or SIGTERM stops the run; later ones are noted, never raised (the summary still comes)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if stop.is_set():
                print("still stopping: the summary follows", flush=True)
            else:
                print("stopping...", flush=True)
                stop.set()


async def run(options: Options, config: Config) -> int:
    """:func:`main`, with the signals watched from its first line to its last."""
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signals, stop)
        status = await main(options, config, stop)
        tg.cancel_scope.cancel()
    return status


async def postgres_opens(dsn: str, schema: str) -> bool:
    """Whether the PostgreSQL store opens; if not, one line on stderr says why (the caller exits 2)."""
    probe = PostgresStore(dsn, schema=schema)
    try:
        await probe.open()
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    await probe.aclose()
    return True


def new_run_id() -> str:
    """A run's id: its rooms' names begin with it, and their metadata hold it (``run``)."""
    return f"{time.strftime('%H%M%S')}-{secrets.token_hex(2)}"


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main(options: Options, config: Config, stop: anyio.Event | None = None) -> int:
    run_id = options.run_id or new_run_id()
    rng = random.Random(options.seed)
    chaos = Chaos(options.chaos, random.Random(rng.random()))
    room_cls = room_class(chaos)
    store: EventStore
    if options.dsn is not None:
        if not await postgres_opens(options.dsn, options.schema):
            return 2
        store, path = PostgresStore(options.dsn, schema=options.schema), None
        where = f"PostgreSQL (schema {options.schema})" + (f", node {options.node}" if options.node else "")
    else:
        store, path = open_store(options.db, config, DEFAULT_DB, new=options.new_db)
        if not await store_opens(path, config):
            return 2
        where = path or "in memory"
    journal_path = None if path is None else path + ".acked"
    if options.new_db and journal_path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(journal_path)
    tally = Tally()
    bots: Bots | None = None
    print(
        f"sessionvisor game server on {options.backend}; store {where}; run {run_id}; chaos {options.chaos:g}"
    )
    try:
        listener = await anyio.create_tcp_listener(local_host=options.host, local_port=options.port)
    except OSError as exc:
        print(f"error: cannot listen on {options.host}:{options.port}: {exc}", file=sys.stderr)
        return 2
    game_port = listener.extra(SocketAttribute.local_port)
    # A node tells clients of rooms it does not own where to go: its own address, as they reach it.
    node = None
    if options.node is not None:
        ttl = options.lease_ttl if options.lease_ttl is not None else 10.0
        node = Node(options.node, address=f"{options.host}:{game_port}", lease_ttl=ttl)
    sessions = config.session_supervisor(session_types=[room_cls], store=store, node=node)
    journal = None
    async with sessions:
        await sessions.ready()
        if sessions.to_resume:
            print(
                f"resumed {sessions.to_resume} rooms from the previous run: their turn timers carry "
                "on, and they finish by the rules or are abandoned once nobody plays"
            )
        server = GameServer(
            sessions,
            room_cls,
            metadata={"run": run_id},
            turn_seconds=options.turn_seconds,
            metrics=GameMetrics(sessions.registry),  # the game's instruments next to sessionvisor's
        )
        async with contextlib.AsyncExitStack() as stack:
            if config.metrics.enabled:
                port = config.metrics.port if options.metrics_port is None else options.metrics_port
                try:
                    endpoint = await stack.enter_async_context(
                        serve_metrics(sessions.registry, config.metrics.host, port)
                    )
                except OSError as exc:
                    await listener.aclose()
                    # One line, on stderr, naming the address and the cause once.
                    cause = os.strerror(exc.errno) if exc.errno else str(exc)
                    print(
                        f"error: cannot serve metrics on {config.metrics.host}:{port} ({cause}); "
                        "--metrics-port 0 picks a free port",
                        file=sys.stderr,
                    )
                    return 2
                print(f"metrics: {endpoint.url}")
            began = anyio.current_time()
            async with anyio.create_task_group() as tg:
                if stop is None:
                    stop = anyio.Event()
                tg.start_soon(count_lifecycle, sessions, tally)
                tg.start_soon(server.serve, listener)
                print(
                    f"game server: {options.host}:{game_port}  (play by hand: nc {options.host} {game_port})"
                )
                tg.start_soon(show_progress, sessions, server, tally, options.progress, began)
                bots_done = anyio.Event()
                if options.bots:
                    if journal_path is not None:
                        journal = AckJournal(journal_path, run_id)
                    bots = Bots(
                        options.host,
                        game_port,
                        players=options.bots,
                        size=options.size,
                        rounds=options.rounds,
                        run_id=run_id,
                        seed=rng.randrange(2**32),
                        doze=options.doze,
                        walk_out=options.walk_out,
                        journal=journal,
                    )
                    print(
                        f"{bots.tables * options.size} bots at {bots.tables} tables, "
                        f"for {options.duration:g} s"
                    )

                    async def play(bots: Bots) -> None:
                        await bots.run()
                        bots_done.set()

                    tg.start_soon(play, bots)
                with anyio.move_on_after(options.duration or math.inf):
                    await stop.wait()
                if bots is not None:
                    bots.stop()  # between moves: every move sent gets its answer
                    with anyio.move_on_after(10):
                        await bots_done.wait()
                played = anyio.current_time() - began
                tg.cancel_scope.cancel()
        host_stats = await sessions.stats()
    if journal is not None:
        journal.close()
    # The supervisor has drained, snapshotted and closed the store: count the moves in its logs.
    earlier = {} if journal_path is None else read_journal(journal_path)
    earlier.pop(run_id, None)
    if bots is None and not earlier:
        print(f"ran {played:.1f} s: {server.stats.moves} moves acknowledged")
        return 0
    audit_store: EventStore = store
    if path is not None:
        audit_store = SQLiteStore(path)
    elif options.dsn is not None:  # the supervisor closed its store: a new one reads the logs
        audit_store = PostgresStore(options.dsn, schema=options.schema)
    await audit_store.open()
    try:
        audit = None
        if bots is not None:
            audit = await count_stored_moves(audit_store, [run_id], bots.stats.acked, server.stats.uncertain)
        before = None
        if earlier:
            acked_before = set().union(*earlier.values())
            # A killed run's moves stored but not acknowledged: the kill came before the answer.
            before = await count_stored_moves(audit_store, list(earlier), acked_before, acked_before)
    finally:
        await audit_store.aclose()
    if audit is not None and bots is not None:
        print_summary(options, host_stats, bots, chaos, audit, played)
    else:
        print(f"ran {played:.1f} s: {server.stats.moves} moves acknowledged")
    if before is not None:
        print_earlier(earlier, before)
    ok = (audit is None or audit.ok) and (before is None or not before.acked_not_stored)
    return 0 if ok else 1


def print_earlier(earlier: dict[str, set[tuple[str, int]]], audit: Audit) -> None:
    """The moves acknowledged by earlier runs on this file (killed ones included), checked again."""
    acked = sum(map(len, earlier.values()))
    lost = len(audit.acked_not_stored)
    verdict = "all stored" if not lost else "ACKNOWLEDGED MOVES ARE MISSING"
    print(
        f"earlier    {len(earlier)} earlier run(s) on this file: {acked} moves acknowledged, "
        f"{acked - lost} stored ({verdict}); {len(audit.stored_not_acked)} stored but unanswered "
        "when their run stopped"
    )
    for room, turn in sorted(audit.acked_not_stored)[:10]:
        print(f"             missing: room {room} turn {turn}")


def print_summary(
    options: Options,
    host_stats: HostStats,
    bots: Bots,
    chaos: Chaos,
    audit: Audit,
    played: float,
) -> None:
    b = bots.stats
    acked = len(b.acked)
    status = Counter(audit.by_status)
    unfinished = sum(n for s, n in status.items() if not Status(s).terminal)
    print()
    print(f"== summary: {played:.1f} s on {options.backend} ==")
    print(
        f"games      {sum(status.values())} played: {status['completed']} finished, "
        f"{status['abandoned']} abandoned (everyone left), {status['failed']} failed, "
        f"{unfinished} unfinished at exit"
    )
    print(f"           bots walked out of {b.walked_out} games, dozed through {b.dozed} turns")
    print(
        f"moves      acknowledged {acked} ({acked / max(played, 1e-9):.0f}/s), "
        f"latency p50 {_percentile(b.latencies, 50) * 1000:.2f} ms, "
        f"p99 {_percentile(b.latencies, 99) * 1000:.2f} ms"
    )
    print(
        f"crashes    {chaos.before + chaos.after} on purpose ({chaos.before} before recording the move, "
        f"{chaos.after} after); restarts {host_stats.restarts}, recoveries {host_stats.recoveries}"
    )
    print(f"store      moves stored {len(audit.stored)} (counted from the logs after shutdown)")
    print(
        f"           stored, not acknowledged: {len(audit.stored_not_acked)}"
        f" ({len(audit.explained)} recorded, then the room crashed before replying;"
        f" {len(audit.unexplained)} unexplained)"
    )
    lost = len(audit.acked_not_stored)
    verdict = "no acknowledged move was lost" if not lost else "ACKNOWLEDGED MOVES ARE MISSING"
    print(f"           acknowledged, not stored: {lost}  ({verdict})")
    for room, turn in sorted(audit.acked_not_stored)[:10]:
        print(f"             missing: room {room} turn {turn}")
    for room, turn in sorted(audit.unexplained)[:10]:
        print(f"             unexplained: room {room} turn {turn}")


def setup(argv: Sequence[str] | None = None) -> tuple[Options, Config]:
    """Parse the command line, read the configuration (exit 2 if bad), set up logging."""
    options = parse_args(argv)
    default = DEFAULT_CONFIG
    if not options.bots and not options.serve_bots:  # played by hand: people think longer than bots
        default = attrs.evolve(
            default, reaper=attrs.evolve(default.reaper, abandon_after=HAND_PLAY_ABANDON_AFTER)
        )
    return options, load_or_exit(options.config, default, ChaosCrash)


if __name__ == "__main__":
    options, config = setup()
    if options.nodes:
        from .cluster import run_cluster

        sys.exit(anyio.run(run_cluster, options, backend=options.backend))
    # Hundreds of rooms with moves in flight: let their short-lived objects die in the collector's
    # first generation instead of being walked again by older ones (README, "Performance").
    gc.set_threshold(20_000, 10, 10)
    sys.exit(anyio.run(run, options, config, backend=options.backend))
