"""Acknowledged events survive SIGKILL (issue 4): a child process driving sessions on SQLite is killed
at random moments, again and again on one file, and after each kill a new supervisor must find every
acknowledged event in the log and rebuild every session's state as the fold of its stored events.

The child is ``tests/crash/driver.py`` (``synchronous="FULL"``); it prints an event only after the call
that recorded it has returned. Kills strike its start-up and recovery as well as steady load, commits
and snapshots being written, and sessions restarting after a crash. The trials alternate the child's
backend, and the check runs on the other one. ``SESSIONVISOR_CRASH_SEED`` replays a failing run.
The second test does the same to pipelined sessions (issue 14): several callers per session and
``pipeline_depth`` above 1, so that kills strike while many calls' events are being committed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from runtime import SQLiteStore, default_registry, replay
from supervisors import SessionSupervisor
from tests.apps.recovery_app import Moved, Read, fold
from tests.crash.driver import RESTARTS, Driven

ROOT = Path(__file__).resolve().parents[2]
TRIALS = 26
PIPELINED_TRIALS = 20
SESSIONS = 4
READY_TIMEOUT = 30.0

Acked = dict[str, dict[int, Moved]]
"""Per session, the acknowledged events by version."""
Pipeline = tuple[int, int]
"""(client tasks per session, ``pipeline_depth``) of the driver."""

pytestmark = pytest.mark.slow  # a real process, SIGKILLed over and over


def run_driver(
    path: Path, out: Path, trial: int, backend: str, rng: random.Random, pipeline: Pipeline = (1, 1)
) -> bool:
    """Start the driver, kill it with SIGKILL at a random moment; return whether it was ready."""
    with out.open("w") as stdout, out.with_suffix(".err").open("w") as stderr:
        command = [sys.executable, "-m", "tests.crash.driver", str(path)]
        command += ["--sessions", str(SESSIONS), "--trial", str(trial), "--backend", backend]
        command += ["--seed", str(rng.randrange(2**32))]
        command += ["--callers", str(pipeline[0]), "--depth", str(pipeline[1])]
        child = subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr)
        try:
            ready = False
            if rng.random() < 0.25:
                # Any time from start-up (imports, opening the file, recovering sessions) on.
                time.sleep(rng.uniform(0.05, 0.6))
                ready = out.read_text().startswith("ready")
            else:
                # Under load: after a random number of acknowledgements, then a random moment.
                # Counted, not timed: a busy machine acknowledges more slowly, and a kill before
                # the first acknowledgement would test nothing.
                wanted = rng.randint(20, 120)
                deadline = time.monotonic() + READY_TIMEOUT
                while _acknowledged(out.read_text()) < wanted:
                    assert child.poll() is None, f"the driver exited: {err_tail(out)}"
                    assert time.monotonic() < deadline, f"the driver acknowledged too little: {err_tail(out)}"
                    time.sleep(0.005)
                ready = True
                time.sleep(rng.uniform(0.0, 0.1))
            assert child.poll() is None, f"the driver exited before the kill: {err_tail(out)}"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert child.returncode == -signal.SIGKILL
    return ready


def _acknowledged(text: str) -> int:
    """How many acknowledgements the driver has written so far (0 before it is ready)."""
    return text.count("\nack ") if text.startswith("ready") else 0


def err_tail(out: Path) -> str:
    return out.with_suffix(".err").read_text()[-3000:]


def parse_acks(out: Path, trial: int, acked: Acked, last_ack_trial: dict[str, int]) -> int:
    """Add the events acknowledged in ``out`` to ``acked``; return how many there were."""
    lines = out.read_text().split("\n")[:-1]  # a line cut by the kill has no newline yet
    count = 0
    for line in lines:
        if not line.startswith("ack "):
            continue
        _, sid, version, batch, index, size, n = line.split()
        event = Moved(int(batch), int(index), int(size), int(n))
        known = acked.setdefault(sid, {}).setdefault(int(version), event)
        assert known == event, f"{sid} v{version} was acknowledged as {known} and as {event}"
        last_ack_trial[sid] = trial
        count += 1
    return count


async def check_file(
    path: Path, acked: Acked, last_ack_trial: dict[str, int], trial: int, callers: int = 1
) -> int:
    """Open the file as a new process would and check it against what was acknowledged."""
    stored_total = 0
    async with SessionSupervisor(
        store=SQLiteStore(path, synchronous="FULL"), session_types=[Driven], restarts=RESTARTS
    ) as sessions:
        records = {record.id: record for record in await sessions.list()}
        assert set(acked) <= set(records), "a session that acknowledged events is gone"
        for sid, record in sorted(records.items()):
            stored = await sessions.store.read(sid)
            assert [e.version for e in stored] == list(range(1, record.version + 1)), f"{sid}: not 1..n"
            decoded = [default_registry.decode(e.type, e.schema_version, e.data) for e in stored]
            events = [e for e in decoded if isinstance(e, Moved)]
            assert events == decoded, f"{sid}: events other than the driver's"
            stored_total += len(events)
            # Every acknowledged event is in the log, at the version it was acknowledged at.
            mine = acked.get(sid, {})
            for version, event in sorted(mine.items()):
                assert version <= len(events), (
                    f"{sid}: acknowledged v{version} is lost (log ends at {len(events)})"
                )
                assert events[version - 1] == event, f"{sid} v{version}: {events[version - 1]} != {event}"
            # Appends are atomic: batches are whole, in order.
            at = 0
            while at < len(events):
                first = events[at]
                batch = events[at : at + first.size]
                assert batch == [Moved(first.batch, i, first.size, e.n) for i, e in enumerate(batch)], (
                    f"{sid}: a torn batch at v{at + 1}: {batch}"
                )
                at += first.size
            # Past the last acknowledgement, at most the calls in flight at each kill since then
            # (one per client task of the session).
            tail = events[max(mine, default=0) :]
            in_flight = {e.batch for e in tail}
            allowed = (trial - last_ack_trial.get(sid, 0) + 1) * callers
            assert len(in_flight) <= allowed, f"{sid}: unacknowledged {tail}"
            # The state is the fold of the stored events, from the snapshot the kill left or not.
            model = fold(events)
            from_snapshot = await replay(sessions.store, record, Driven(), default_registry)
            from_start = await replay(sessions.store, record, Driven(), default_registry, use_snapshot=False)
            assert from_snapshot.state == from_start.state == model
            ref = await sessions.get(sid)
            assert await ref.call(Read(), timeout=30) == (len(events), model)
    return stored_total


def test_acknowledged_events_survive_sigkill(tmp_path: Path) -> None:
    """Killed at random moments, over and over: no acknowledged event is lost, no state differs."""
    kill_repeatedly(tmp_path, TRIALS, (1, 1), min_acked=1000)


def test_acknowledged_events_survive_sigkill_in_a_pipelined_burst(tmp_path: Path) -> None:
    """The same with 8 callers per session and ``pipeline_depth=16`` (issue 14): a reply is only
    sent once its events are durable, so every acknowledged event is in the log after each kill."""
    kill_repeatedly(tmp_path, PIPELINED_TRIALS, (8, 16), min_acked=1000)


def kill_repeatedly(tmp_path: Path, trials: int, pipeline: Pipeline, min_acked: int) -> None:
    seed = int(os.environ.get("SESSIONVISOR_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    acked: Acked = {}
    last_ack_trial: dict[str, int] = {}
    total_acked = killed_under_load = 0
    started = time.monotonic()
    for trial in range(trials):
        backends = ("asyncio", "trio") if trial % 2 else ("trio", "asyncio")
        out = tmp_path / f"trial{trial}.out"
        try:
            ready = run_driver(path, out, trial, backends[0], rng, pipeline)
            count = parse_acks(out, trial, acked, last_ack_trial)
            total_acked += count
            killed_under_load += ready and count > 0
            if path.exists():
                stored = anyio.run(
                    check_file, path, acked, last_ack_trial, trial, pipeline[0], backend=backends[1]
                )
                assert stored >= sum(map(len, acked.values()))
        except Exception as exc:  # an assertion, or one raised inside the supervisor (in a group)
            raise AssertionError(f"trial {trial} (SESSIONVISOR_CRASH_SEED={seed}): {exc!r}") from exc
    assert killed_under_load >= trials // 2, f"only {killed_under_load} kills struck under load"
    assert total_acked > min_acked, f"only {total_acked} events acknowledged"
    # How long it took is printed, not asserted: on a busy machine it varies, and says nothing about
    # durability (bench/ measures speed).
    elapsed = time.monotonic() - started
    # No bound on ``elapsed``: on a shared 2-core machine it measures the neighbours (it failed at
    # 60.004 s against a 60 s bound). The test is marked slow instead.
    print(f"seed {seed}: {total_acked} acknowledged, {killed_under_load} kills under load, {elapsed:.1f}s")
