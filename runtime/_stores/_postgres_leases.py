"""The PostgreSQL store's leases and nodes: the SQL behind :class:`runtime.abc.LeaseStore`.

Each function runs one statement on a connection in autocommit mode (from the reader pool), so each
is its own transaction. Lease times are the server's clock (``clock_timestamp()``): every node reads
the same one. The writer (:mod:`._postgres_writer`) checks the epochs of appends against the same
rows, under ``FOR SHARE``: a takeover (an ``UPDATE`` of the lease) waits for an append in flight to
commit, and an append after the takeover sees the new epoch and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._ownership import Lease, NodeInfo, Renewal

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "acquire",
    "claim_orphans",
    "join",
    "leave",
    "next_expiry",
    "nodes",
    "owner_of",
    "owners",
    "release",
    "renew",
]

_NOW = "extract(epoch FROM clock_timestamp())::float8"

_JOIN = f"""
INSERT INTO nodes (name, address, started_at, heartbeat, lease_ttl)
VALUES (%(node)s, %(address)s, {_NOW}, {_NOW}, %(ttl)s)
ON CONFLICT (name) DO UPDATE SET address = excluded.address, heartbeat = excluded.heartbeat,
    lease_ttl = excluded.lease_ttl
"""

# Free (never owned, released), expired, or this node's own (a restarted process under the same
# name): taken with the next epoch, which fences every older copy. Two nodes racing for one id: one
# inserts, the other waits on the row and then finds it held.
_ACQUIRE = f"""
INSERT INTO leases AS l (session_id, node, epoch, expires)
VALUES (%(sid)s, %(node)s, 1, {_NOW} + %(ttl)s)
ON CONFLICT (session_id) DO UPDATE SET node = excluded.node, epoch = l.epoch + 1,
    expires = excluded.expires
WHERE l.node IS NULL OR l.node = excluded.node OR l.expires < {_NOW}
RETURNING epoch, expires
"""

_OWNER = f"""
SELECT l.node, l.epoch, l.expires, n.address FROM leases AS l LEFT JOIN nodes AS n ON n.name = l.node
WHERE l.session_id = %(sid)s AND l.node IS NOT NULL AND l.expires >= {_NOW}
"""

_RELEASE = "UPDATE leases SET node = NULL, expires = 0 WHERE session_id = %s AND node = %s AND epoch = %s"

# One statement per tick, whatever the number of leases: the heartbeat and every renewal. A lease
# renews only under the epoch this node holds it with: one taken over meanwhile is lost. The rows
# are locked in session id order first, the order in which the writer takes its FOR SHARE locks on
# the leases of a batch (_postgres_writer): an UPDATE alone locks them in whatever order its plan
# meets them, and against a batch holding two of them that was a deadlock, a second's stall and a
# failed renewal or write (seen in tests/examples/test_game_server_nodes.py).
_RENEW = f"""
WITH beat AS (
    INSERT INTO nodes (name, address, started_at, heartbeat, lease_ttl)
    VALUES (%(node)s, %(address)s, {_NOW}, {_NOW}, %(ttl)s)
    ON CONFLICT (name) DO UPDATE SET heartbeat = excluded.heartbeat, address = excluded.address,
        lease_ttl = excluded.lease_ttl
    RETURNING heartbeat
), held AS (
    SELECT l.session_id, l.epoch FROM leases AS l
    JOIN unnest(%(ids)s::text[], %(epochs)s::bigint[]) AS r(s, e) ON l.session_id = r.s AND l.epoch = r.e
    WHERE l.node = %(node)s
    ORDER BY l.session_id
    FOR UPDATE OF l
), renewed AS (
    UPDATE leases AS l SET expires = {_NOW} + %(ttl)s
    FROM held WHERE l.session_id = held.session_id AND l.epoch = held.epoch AND l.node = %(node)s
    RETURNING l.session_id
)
SELECT (SELECT heartbeat FROM beat), coalesce((SELECT array_agg(session_id) FROM renewed), '{{}}')
"""

_CLAIM = f"""
WITH candidates AS (
    SELECT l.session_id FROM leases AS l JOIN sessions AS s ON s.id = l.session_id
    WHERE l.node IS NOT NULL AND l.node <> %(node)s AND l.expires < {_NOW}
      AND ((s.type = ANY(%(types)s) AND s.status = 'running')
           OR EXISTS (SELECT 1 FROM reminders AS r WHERE r.session = s.key AND r.due_at <= %(wall)s))
    ORDER BY random() LIMIT %(limit)s
    FOR UPDATE OF l SKIP LOCKED
)
UPDATE leases AS l SET node = %(node)s, epoch = l.epoch + 1, expires = {_NOW} + %(ttl)s
FROM candidates WHERE l.session_id = candidates.session_id
RETURNING l.session_id, l.epoch, l.expires
"""

# The soonest expiry of a live lease held by another node, in seconds from now: one probe of
# leases_by_node (node, expires) per node, whatever the number of leases.
_NEXT_EXPIRY = f"""
SELECT min(soonest) - {_NOW} FROM (
    SELECT (SELECT min(l.expires) FROM leases AS l WHERE l.node = n.name AND l.expires >= {_NOW}) AS soonest
    FROM nodes AS n WHERE n.name <> %(node)s
) AS per_node
"""

_NODES = f"""
SELECT n.name, n.address, n.started_at, n.heartbeat, n.lease_ttl, n.heartbeat + n.lease_ttl >= {_NOW},
    (SELECT count(*) FROM leases AS l WHERE l.node = n.name AND l.expires >= {_NOW})
FROM nodes AS n ORDER BY n.name
"""


def join(conn: psycopg.Connection[Any], node: str, address: str | None, ttl: float) -> None:
    conn.execute(_JOIN, {"node": node, "address": address, "ttl": ttl})


def leave(conn: psycopg.Connection[Any], node: str) -> None:
    with conn.transaction():
        # Locked in session id order, as _RENEW does and for its reason.
        conn.execute(
            "UPDATE leases SET node = NULL, expires = 0 WHERE session_id IN "
            "(SELECT session_id FROM leases WHERE node = %s ORDER BY session_id FOR UPDATE)",
            (node,),
        )
        conn.execute("DELETE FROM nodes WHERE name = %s", (node,))


def acquire(
    conn: psycopg.Connection[Any], session_id: str, node: str, address: str | None, ttl: float
) -> Lease | None:
    """The new lease, or ``None`` when another live node holds it."""
    row = conn.execute(_ACQUIRE, {"sid": session_id, "node": node, "ttl": ttl}).fetchone()
    if row is None:
        return None
    return Lease(session_id, node, int(row[0]), float(row[1]), address)


def owner_of(conn: psycopg.Connection[Any], session_id: str) -> Lease | None:
    row = conn.execute(_OWNER, {"sid": session_id}).fetchone()
    if row is None:
        return None
    node, epoch, expires, address = row
    return Lease(session_id, node, int(epoch), float(expires), address)


def owners(conn: psycopg.Connection[Any], session_ids: list[str]) -> dict[str, Lease]:
    rows = conn.execute(
        f"SELECT l.session_id, l.node, l.epoch, l.expires, n.address FROM leases AS l "
        f"LEFT JOIN nodes AS n ON n.name = l.node WHERE l.session_id = ANY(%s) "
        f"AND l.node IS NOT NULL AND l.expires >= {_NOW}",
        (session_ids,),
    )
    return {
        sid: Lease(sid, node, int(epoch), float(expires), address)
        for sid, node, epoch, expires, address in rows
    }


def release(conn: psycopg.Connection[Any], session_id: str, node: str, epoch: int) -> None:
    conn.execute(_RELEASE, (session_id, node, epoch))


def renew(
    conn: psycopg.Connection[Any], node: str, address: str | None, ttl: float, held: dict[str, int]
) -> Renewal:
    ids = list(held)
    row = conn.execute(
        _RENEW, {"node": node, "address": address, "ttl": ttl, "ids": ids, "epochs": [held[s] for s in ids]}
    ).fetchone()
    assert row is not None
    heartbeat, renewed = row
    kept = set(renewed)
    lost = tuple(Lease(sid, node, epoch, 0.0) for sid, epoch in held.items() if sid not in kept)
    return Renewal(len(kept), lost, float(heartbeat) + ttl)


def claim_orphans(
    conn: psycopg.Connection[Any],
    node: str,
    address: str | None,
    ttl: float,
    types: Sequence[str],
    limit: int,
    wall: float,
) -> list[Lease]:
    rows = conn.execute(
        _CLAIM,
        {"node": node, "ttl": ttl, "types": list(types), "limit": limit, "wall": wall},
    ).fetchall()
    return [Lease(sid, node, int(epoch), float(expires), address) for sid, epoch, expires in rows]


def next_expiry(conn: psycopg.Connection[Any], node: str) -> float | None:
    row = conn.execute(_NEXT_EXPIRY, {"node": node}).fetchone()
    return None if row is None or row[0] is None else max(0.0, float(row[0]))


def nodes(conn: psycopg.Connection[Any]) -> list[NodeInfo]:
    return [
        NodeInfo(name, address, started, heartbeat, ttl, bool(alive), int(leases))
        for name, address, started, heartbeat, ttl, alive, leases in conn.execute(_NODES)
    ]
