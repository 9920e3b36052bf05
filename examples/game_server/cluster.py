"""``python -m examples.game_server --dsn DSN --nodes 3``: the game on three nodes, one killed midway.

Starts ``--nodes`` node processes (``python -m examples.game_server --node a`` and so on, on one
PostgreSQL schema, each serving the game on its own port), plays the bots against all of them (each
table starts on one node; redirects are followed, and a bot whose node dies carries on at another),
kills one node with SIGKILL after ``--kill-after`` seconds, stops the others with SIGTERM at the end,
and audits what all of them stored:

- every move acknowledged to a bot is in a log (0 lost), and every move stored but not acknowledged
  had its answer lost (the node died with it in flight) or was answered with a crash;
- no room was recorded by two nodes: each room's log is one line of versions whose fencing epochs
  never go back (a node that lost a room can never record after the node that took it over).

Exit status 0 when the audit passes, 1 when it fails (or a surviving node failed), 2 when the nodes
could not start.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from runtime import PostgresStore

from .audit import check_owners, count_stored_moves
from .bots import Bots

if TYPE_CHECKING:
    from .__main__ import Options

__all__ = ["run_cluster"]

_REPO = Path(__file__).resolve().parents[2]
_START_TIMEOUT = 60.0  # seconds for a node to say where it serves
_STOP_TIMEOUT = 30.0  # seconds for a node to drain and exit after SIGTERM
_LEASE_TTL = 2.0  # the nodes' default lease: a killed node's rooms move after this long


class NodeProcess:
    """One node: a ``python -m examples.game_server --node NAME`` process, its output in files."""

    def __init__(self, name: str, argv: list[str], logs: Path) -> None:
        self.name = name
        self.out_path = logs / f"{name}.out"
        self.err_path = logs / f"{name}.err"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
        }
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        self.address: str | None = None
        self.killed = False

    async def wait_address(self, host: str) -> str:
        """The node's game address, once it prints it."""
        prefix = "game server: "
        with anyio.fail_after(_START_TIMEOUT):
            while True:
                for line in self.out_path.read_text().splitlines():
                    if line.startswith(prefix):
                        self.address = line[len(prefix) :].split()[0]
                        return self.address
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"node {self.name} exited with {self.process.returncode}: {self.errors(5)}"
                    )
                await anyio.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.killed = True

    async def stop(self) -> int:
        """SIGTERM, then wait for it to drain and exit (SIGKILL after ``_STOP_TIMEOUT``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            await anyio.to_thread.run_sync(self.process.wait, _STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await anyio.to_thread.run_sync(self.process.wait)
        return self.process.returncode

    def errors(self, last: int = 0) -> str:
        lines = [line for line in self.err_path.read_text().splitlines() if line.strip()]
        return "\n".join(lines[-last:] if last else lines)

    def tracebacks(self) -> int:
        return self.err_path.read_text().count("Traceback")


def node_argv(options: Options, name: str, run_id: str, ttl: float) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "examples.game_server",
        "--dsn",
        str(options.dsn),
        "--schema",
        options.schema,
        "--node",
        name,
        "--lease-ttl",
        str(ttl),
        "--bots",
        "0",
        "--serve-bots",
        "--run-id",
        f"{run_id}-{name}",
        "--host",
        options.host,
        "--metrics-port",
        "0",
        "--chaos",
        str(options.chaos),
        "--backend",
        options.backend,
        "--progress",
        str(options.progress),
    ]
    if options.config is not None:
        argv += ["--config", options.config]
    if options.seed is not None:
        argv += ["--seed", str(options.seed + ord(name))]
    return argv


async def run_cluster(options: Options) -> int:
    """Start the nodes, play, kill one, stop the rest, audit; the exit status."""
    from .__main__ import new_run_id

    run_id = options.run_id or new_run_id()
    ttl = options.lease_ttl if options.lease_ttl is not None else _LEASE_TTL
    kill_after = options.kill_after if options.kill_after is not None else options.duration / 3
    names = [chr(ord("a") + i) for i in range(options.nodes)]
    victim = names[1]
    logs = Path(tempfile.mkdtemp(prefix="sessionvisor-nodes-"))
    print(
        f"sessionvisor game on {options.nodes} nodes ({', '.join(names)}) on {options.backend}; "
        f"PostgreSQL schema {options.schema}; run {run_id}; lease_ttl {ttl:g} s; "
        f"chaos {options.chaos:g}; node logs in {logs}",
        flush=True,
    )
    nodes = [NodeProcess(name, node_argv(options, name, run_id, ttl), logs) for name in names]
    try:
        try:
            addresses = [await node.wait_address(options.host) for node in nodes]
        except (RuntimeError, TimeoutError) as exc:
            print(f"error: the nodes did not start: {exc}", file=sys.stderr)
            return 2
        for node, address in zip(nodes, addresses, strict=True):
            print(f"node {node.name}: {address} (pid {node.process.pid})")
        rng = random.Random(options.seed)
        first, _, port = addresses[0].rpartition(":")
        bots = Bots(
            first,
            int(port),
            players=options.bots,
            size=options.size,
            rounds=options.rounds,
            run_id=run_id,
            seed=rng.randrange(2**32),
            doze=options.doze,
            walk_out=options.walk_out,
            addresses=addresses,
        )
        print(
            f"{bots.tables * options.size} bots at {bots.tables} tables on {options.nodes} nodes, for "
            f"{options.duration:g} s; SIGKILL to node {victim} at {kill_after:g} s",
            flush=True,
        )
        began = anyio.current_time()
        killed_at: float | None = None
        moves_at_kill = 0
        done = anyio.Event()

        async def play() -> None:
            await bots.run()
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(play)
            last, last_time = 0, began
            end = began + options.duration
            while (now := anyio.current_time()) < end:
                step = min(options.progress, end - now)
                if killed_at is None and kill_after < options.duration:
                    step = min(step, max(0.0, began + kill_after - now))
                await anyio.sleep(step)
                now = anyio.current_time()
                if killed_at is None and now - began >= kill_after and kill_after < options.duration:
                    nodes[1].kill()
                    killed_at, moves_at_kill = now - began, len(bots.stats.acked)
                    print(
                        f"{killed_at:6.1f}s  SIGKILL node {victim}: its rooms move to the others "
                        f"{ttl:g} s after its last renewal",
                        flush=True,
                    )
                    continue
                moves = len(bots.stats.acked)
                if now - last_time >= options.progress * 0.99 or now >= end:
                    rate = (moves - last) / max(now - last_time, 1e-9)
                    print(
                        f"{now - began:6.1f}s  moves {moves} ({rate:.0f}/s)  "
                        f"redirects {bots.stats.redirects}  reconnections {bots.stats.reconnects}  "
                        f"rooms moved {len(bots.stats.moved_rooms)}",
                        flush=True,
                    )
                    last, last_time = moves, now
            bots.stop()  # between moves: every move sent gets its answer (or its node died)
            with anyio.move_on_after(15):
                await done.wait()
            tg.cancel_scope.cancel()
        played = anyio.current_time() - began
    finally:
        with anyio.CancelScope(shield=True):
            codes = {node.name: await node.stop() for node in nodes}
    store = PostgresStore(str(options.dsn), schema=options.schema)
    await store.open()
    try:
        runs = [f"{run_id}-{name}" for name in names]
        stored = await count_stored_moves(store, runs, bots.stats.acked, bots.stats.uncertain)
        owners = await check_owners(store, runs)
    finally:
        await store.aclose()
    failed_nodes = {
        node.name: codes[node.name] for node in nodes if not node.killed and codes[node.name] != 0
    }
    errors = {node.name: node.tracebacks() for node in nodes}
    b = bots.stats
    print()
    print(f"== audit across {options.nodes} nodes: {played:.1f} s on {options.backend} ==")
    if killed_at is not None:
        print(
            f"failover   node {victim} killed at {killed_at:.1f} s ({moves_at_kill} moves acknowledged "
            f"before); {len(b.moved_rooms)} rooms carried on elsewhere, {b.acked_after_move} moves "
            f"acknowledged in them afterwards"
        )
    print(
        f"moves      acknowledged {len(b.acked)} ({len(b.acked) / max(played, 1e-9):.0f}/s); "
        f"stored {len(stored.stored)} in {sum(stored.by_status.values())} rooms"
    )
    print(
        f"           stored, not acknowledged: {len(stored.stored_not_acked)} ({len(stored.explained)} "
        f"answered with a crash or lost with their node; {len(stored.unexplained)} unexplained)"
    )
    lost = len(stored.acked_not_stored)
    verdict = "no acknowledged move was lost" if not lost else "ACKNOWLEDGED MOVES ARE MISSING"
    print(f"           acknowledged, not stored: {lost}  ({verdict})")
    for room, turn in sorted(stored.acked_not_stored)[:10]:
        print(f"             missing: room {room} turn {turn}")
    two = len(owners.went_back | owners.forks)
    verdict = "no room was recorded by two nodes" if not two else "ROOMS RECORDED BY TWO NODES"
    print(
        f"owners     {owners.rooms} rooms' logs read: {len(owners.leases)} recorded under more than one "
        f"lease (moved, or released and taken again), epochs in order in every log"
        if not two
        else f"owners     {owners.rooms} rooms' logs read: epochs go back in {len(owners.went_back)}, "
        f"versions fork in {len(owners.forks)}"
    )
    print(f"           rooms recorded by two nodes: {two}  ({verdict})")
    for room in sorted(owners.went_back | owners.forks)[:10]:
        print(f"             two owners: room {room}")
    if owners.unfenced:
        print(
            f"           {len(owners.unfenced)} rooms have events recorded without an epoch (not by a node)"
        )
    print(
        f"bots       redirects followed {b.redirects}, reconnections {b.reconnects}, crashes answered "
        f"{b.crashes_seen}, walked out of {b.walked_out} games"
    )
    state = ", ".join(
        f"{node.name}: {'killed' if node.killed else f'exit {codes[node.name]}'}"
        + (f" ({errors[node.name]} tracebacks in {node.err_path})" if errors[node.name] else "")
        for node in nodes
    )
    print(f"nodes      {state}")
    ok = stored.ok and owners.ok and not failed_nodes
    if not ok:
        for name in failed_nodes:
            print(f"node {name} failed:\n{nodes[names.index(name)].errors(20)}", file=sys.stderr)
    if ok and not any(errors.values()):
        _remove_logs(nodes, logs)
    return 0 if ok else 1


def _remove_logs(nodes: list[NodeProcess], logs: Path) -> None:
    """A clean run leaves no files behind (a failed one keeps the nodes' output for reading)."""
    with contextlib.suppress(OSError):
        for node in nodes:
            node.out_path.unlink()
            node.err_path.unlink()
        logs.rmdir()
