"""Raw ``sqlite3`` with batching: the floor under any SQLite event store. Standard library only.

Command (see :mod:`bench.peers._common`): ``durable {"sessions", "events_each", "replay", "dir"}``:

* durable appends: ``events_each`` rounds, each inserting one JSON event for every one of
  ``sessions`` sessions in one transaction (``executemany``, one commit per round): what a perfect
  group commit would do with every session appending at once, without any actor, queue or wakeup;
* replay: one session's ``replay`` events selected in version order, each ``json.loads``-ed and
  folded into a count.

The connection is set up as sessionvisor's ``SQLiteStore`` writer is: WAL, ``synchronous=FULL``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from bench.peers._common import Figures, main

_SCHEMA = """
CREATE TABLE events (
    position INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (session_id, version)
)
"""
_INSERT = "INSERT INTO events (session_id, version, type, data) VALUES (?, ?, ?, ?)"


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(_SCHEMA)
    return conn


def durable(params: Mapping[str, Any]) -> Figures:
    sessions, each, replay = int(params["sessions"]), int(params["events_each"]), int(params["replay"])
    conn = _connect(os.path.join(params["dir"], "sqlite3-appends.db"))
    ids = [f"s{i}" for i in range(sessions)]
    start = time.perf_counter()
    for version in range(1, each + 1):
        rows = [(sid, version, "Ticked", json.dumps({"n": 1})) for sid in ids]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, rows)
        conn.execute("COMMIT")
    appends = time.perf_counter() - start
    conn.close()

    conn = _connect(os.path.join(params["dir"], "sqlite3-replay.db"))
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(_INSERT, [("big", v, "Ticked", json.dumps({"n": 1})) for v in range(1, replay + 1)])
    conn.execute("COMMIT")
    conn.close()
    conn = sqlite3.connect(os.path.join(params["dir"], "sqlite3-replay.db"))
    start = time.perf_counter()
    count = 0
    for (data,) in conn.execute("SELECT data FROM events WHERE session_id = ? ORDER BY version", ("big",)):
        count += json.loads(data)["n"]
    replayed = time.perf_counter() - start
    conn.close()
    if count != replay:
        raise AssertionError(f"replayed {count} events, wanted {replay}")
    return {"appends_per_s": sessions * each / appends, "replay_events_per_s": replay / replayed}


if __name__ == "__main__":
    main({"durable": durable})
