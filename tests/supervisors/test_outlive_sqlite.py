"""Sessions outlive their process (issue 12), with real processes on SQLite killed with SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0


def prepare(path: Path, remind: float, *extra: str) -> float:
    """Run the first process until it has scheduled its reminder, then SIGKILL it; the due time."""
    command = [sys.executable, "-m", "tests.crash.outlive_driver", str(path), "prepare"]
    command += ["--remind", str(remind), *extra]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            due_line = ""
            for line in child.stdout:
                if line.startswith("due "):
                    due_line = line
                if line.strip() == "ready":
                    break
            assert due_line, "the first process ended before it was ready"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert child.returncode == -signal.SIGKILL
    return float(due_line.split()[1])


def resume(path: Path, run: float, *extra: str) -> list[list[str]]:
    """Run the second process for ``run`` seconds; the lines it printed, split in words."""
    command = [sys.executable, "-m", "tests.crash.outlive_driver", str(path), "resume", "--run", str(run)]
    done = subprocess.run([*command, *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()]


def test_reminder_fires_on_time_after_a_kill(tmp_path: Path) -> None:
    """Scheduled 2 s ahead, the process killed, a new one 0.5 s later: fired at the due time.

    Also: the resume_on_start session runs again without any message (resumed=True); the others
    do not start until something wakes them.
    """
    path = tmp_path / "s.db"
    due = prepare(path, 2.0)
    time.sleep(0.5)
    lines = resume(path, 3.0)
    ready = next(float(w[1]) for w in lines if w[0] == "ready")
    fired = [float(w[2]) for w in lines if w[0] == "fired"]
    assert len(fired) == 1, lines
    # At the due time; on a machine so busy that the new process was not ready by then (it has
    # 1.5 s to start), right after it is.
    assert due - 0.05 <= fired[0] <= max(due, ready) + 0.5, (fired[0] - due, ready - due, lines)
    starts = {w[1]: w[2] for w in lines if w[0] == "start"}
    assert starts == {"resumer": "True", "timer": "False"}, lines


def test_reminder_due_during_downtime_fires_right_after_start(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    due = prepare(path, 0.3)
    time.sleep(3.0)
    lines = resume(path, 2.0)
    ready = next(float(w[1]) for w in lines if w[0] == "ready")
    fired = [float(w[2]) for w in lines if w[0] == "fired"]
    assert len(fired) == 1, lines
    assert fired[0] > due + 2.5
    assert fired[0] - ready < 0.5, lines


def test_session_left_running_is_abandoned_without_contact(tmp_path: Path) -> None:
    """abandon_after=1: ABANDONED about 1 s after the new process starts, with its lifecycle event,
    never activated (no on_start)."""
    path = tmp_path / "s.db"
    prepare(path, 30.0, "--abandon-after", "1")
    time.sleep(0.5)
    lines = resume(path, 2.5, "--abandon-after", "1")
    ready = next(float(w[1]) for w in lines if w[0] == "ready")
    abandoned = {w[1]: (w[3], float(w[4])) for w in lines if w[0] == "status" and w[2] == "abandoned"}
    assert "idle" in abandoned, lines
    previous, at = abandoned["idle"]
    assert previous == "passivated"
    assert ready + 0.8 <= at <= ready + 1.6, (at - ready, lines)
    starts = [w for w in lines if w[0] == "start" and w[1] == "idle"]
    assert starts == [], lines


pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL"), pytest.mark.slow]
