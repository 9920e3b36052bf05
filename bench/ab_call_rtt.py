"""The call round trip at depth 1 of two source trees, interleaved, in CPU time (issue 14). Prints JSON.

Two figures per backend: a call that records nothing (``asyncio``, ``trio``) and a call that records
one event on MemoryStore (``asyncio/one_event``, ``trio/one_event``).

    python bench/ab_call_rtt.py BASE_TREE NEW_TREE [ROUNDS] [CALLS]

Each round runs ``bench_session``'s ``Echo`` session (``call`` with no events, or ``"tick"``, which
records one event; 1,000 warm-up calls, then CALLS timed) in a fresh process per tree, alternating
which goes first, both backends, best of 3 per process. Timed with ``time.process_time``: on a
shared, loaded machine the time a process spends descheduled is not the runtime's, and wall-clock
A/B figures swung +-50% there.
"""

import json
import statistics
import subprocess
import sys

base, new = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 6
calls = int(sys.argv[4]) if len(sys.argv) > 4 else 20_000
PY = sys.executable
CODE = """
import sys, json, anyio
sys.path.insert(0, {tree!r})
sys.path.insert(0, {tree!r} + '/bench')
import time
import bench_session as b
from supervisors import SessionSupervisor

async def rtt(n, message=None):
    # bench_session.session_call_rtt, timed in CPU time: the machine is shared, and time spent
    # descheduled is not the runtime's.
    async with SessionSupervisor() as sessions:
        ref = await sessions.start(b.Echo, "echo")
        call = ref.call
        for i in range(1000):
            await call(i if message is None else message)
        start = time.process_time()
        for i in range(n):
            await call(i if message is None else message)
        return (time.process_time() - start) / n

out = {{}}
for backend in ('asyncio', 'trio'):
    out[backend] = min(anyio.run(rtt, {calls}, backend=backend) for _ in range(3)) * 1e6
    one = min(anyio.run(rtt, {calls}, 'tick', backend=backend) for _ in range(3))
    out[backend + '/one_event'] = one * 1e6
print(json.dumps(out))
"""
res: dict[str, dict[str, list[float]]] = {
    name: {"asyncio": [], "trio": [], "asyncio/one_event": [], "trio/one_event": []}
    for name in ("base", "new")
}
for r in range(rounds):
    for name, tree in (("base", base), ("new", new)) if r % 2 == 0 else (("new", new), ("base", base)):
        p = subprocess.run(
            [PY, "-c", CODE.format(tree=tree, calls=calls)], capture_output=True, text=True, cwd=tree
        )
        if p.returncode:
            print(p.stderr[-2000:])
            sys.exit(1)
        d = json.loads(p.stdout)
        for k in d:
            res[name][k].append(d[k])
summary: dict[str, object] = {}
for figure in res["base"]:
    b, n = res["base"][figure], res["new"][figure]
    ratios = [y / x for x, y in zip(b, n, strict=True)]
    summary[figure] = {
        "base_median_us": statistics.median(b),
        "new_median_us": statistics.median(n),
        "ratio_of_medians": statistics.median(n) / statistics.median(b),
        "median_of_round_ratios": statistics.median(ratios),
        "rounds": len(b),
        "base_us": [round(x, 2) for x in b],
        "new_us": [round(x, 2) for x in n],
    }
print(json.dumps(summary, indent=1))
