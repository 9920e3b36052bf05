"""One node of a sessionvisor cluster on PostgreSQL, driven by JSON lines on stdin (for the node tests).

    python -m tests.apps.node_app --dsn DSN --schema S --node a [--lease-ttl 2]

Each request is one line ``{"req": 1, "op": "add", "id": "s1", "n": 5}`` and gets one line back with
the same ``req``: ``{"req": 1, "ok": 5, "version": 1, "epoch": 1}`` (the new total, the version of the
event recorded and the lease's epoch, once the event is durable), or ``{"req": 1, "error":
"OwnedElsewhere", "node": "b"}``. ``add`` starts the session when the store has none; requests run
concurrently. Other ops: ``locate`` (the owning node or null), ``stats`` (the node's ownership
counters) and ``owned`` (the leases held and lost, from memory: answered even when the store is
not). A ``{"ready": "a"}`` line says the node has joined. Runs until stdin closes or it is killed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
import anyio.to_thread

from runtime import (
    OwnedElsewhere,
    OwnershipLost,
    PostgresStore,
    SessionError,
    SessionExists,
    SessionNotFound,
)
from supervisors import Node, SessionSupervisor
from tests.apps.counter import Add, Counter

LIFETIME = 120.0
"""A safety net: a node nobody stopped ends by itself."""


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def handle(sessions: SessionSupervisor, store: PostgresStore, request: dict[str, Any]) -> None:
    req = request.get("req")
    op = request.get("op")
    try:
        if op == "add":
            sid = request["id"]
            try:
                ref = await sessions.get(sid)
            except SessionNotFound:
                try:
                    ref = await sessions.start(Counter, sid)
                except SessionExists:
                    ref = await sessions.get(sid)
            total = await ref.call(Add(int(request["n"])), timeout=30)
            epoch = store.held().get(sid)
            emit({"req": req, "ok": total, "epoch": epoch})
        elif op == "locate":
            lease = await sessions.locate(request["id"])
            emit({"req": req, "ok": None if lease is None else lease.node})
        elif op == "stats":
            node = (await sessions.stats()).node
            assert node is not None
            emit(
                {
                    "req": req,
                    "ok": {"held": node.leases_held, "lost": node.lost, "refused": node.fencing_refusals},
                }
            )
        elif op == "owned":  # from memory, without asking the store (which may not answer)
            ownership = sessions.ownership
            assert ownership is not None
            counts = ownership.statistics()
            emit({"req": req, "ok": {"held": counts.leases_held, "lost": counts.lost}})
        else:
            emit({"req": req, "error": "BadRequest", "detail": f"unknown op {op!r}"})
    except OwnedElsewhere as exc:
        emit({"req": req, "error": "OwnedElsewhere", "node": exc.node, "address": exc.address})
    except OwnershipLost as exc:
        emit({"req": req, "error": "OwnershipLost", "owner": exc.owner, "epoch": exc.epoch})
    except SessionError as exc:
        emit({"req": req, "error": type(exc).__name__, "detail": str(exc)})


async def main(dsn: str, schema: str, name: str, lease_ttl: float) -> None:
    store = PostgresStore(dsn, schema=schema)
    node = Node(name, address=f"node-{name}", lease_ttl=lease_ttl)
    with anyio.move_on_after(LIFETIME):
        async with SessionSupervisor(store=store, node=node, session_types=[Counter]) as sessions:
            emit({"ready": name})
            async with anyio.create_task_group() as tg:
                while True:
                    line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                    if not line:
                        tg.cancel_scope.cancel()
                        break
                    tg.start_soon(handle, sessions, store, json.loads(line))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    args = parser.parse_args()
    anyio.run(main, args.dsn, args.schema, args.node, args.lease_ttl)
