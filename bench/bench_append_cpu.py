"""CPU time of SQLiteStore appends (issue 13: the acknowledged head costs the writer a row update).

    python bench/bench_append_cpu.py [ROOT ...]

Each ROOT is a source tree holding ``runtime/`` (default: this repository), e.g. ``git archive``
exports of two commits: they run in turn, each in its own process, three rounds interleaved.
Measured: ``time.process_time()`` (every thread of the process, the writer's included) around
20,000 single-event appends made by 1,000 tasks to 1,000 sessions at once (``synchronous="NORMAL"``,
so that the disk's fsync does not dominate). CPU time moves far less than wall time on a shared
machine. Prints JSON: CPU milliseconds per 1,000 appends, per root and round.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

_CHILD = r"""
import json, os, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
import anyio
import runtime
from runtime import EventData, SessionRecord, SQLiteStore
assert runtime.__file__.startswith(sys.argv[1]), runtime.__file__

async def main():
    with tempfile.TemporaryDirectory() as d:
        store = SQLiteStore(os.path.join(d, "s.db"), synchronous="NORMAL")
        await store.open()
        ids = [f"session-{n:04d}" for n in range(1000)]
        for sid in ids:
            await store.create(SessionRecord(sid, "Game", args={"mode": "duel"}, metadata={"ch": "c1"}))
        data = [EventData("Scored", 1, '{"points":3}')]

        async def client(sid):
            for v in range(20):
                await store.append(sid, v, data)

        started = time.process_time()
        async with anyio.create_task_group() as tg:
            for sid in ids:
                tg.start_soon(client, sid)
        used = time.process_time() - started
        await store.aclose()
        print(json.dumps(used * 1000 / 20))

anyio.run(main)
"""


def main() -> None:
    roots = sys.argv[1:] or [str(HERE.parent)]
    results: dict[str, list[float]] = {root: [] for root in roots}
    for _ in range(3):
        for root in roots:
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, str(Path(root).resolve())],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[root].append(round(float(out), 2))
    print(json.dumps({"cpu_ms_per_1000_appends": results}, indent=2))


if __name__ == "__main__":
    main()
