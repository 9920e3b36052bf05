"""Driving ``tests.apps.node_app`` processes: one node each, JSON lines on its stdin and stdout.

Used by tests/supervisors/test_nodes_processes.py and bench/bench_nodes.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TTL = 3.0
"""The lease time of the tests' nodes."""


class NodeProcess:
    """One node process and the replies it printed, by request number."""

    def __init__(self, dsn: str, schema: str, name: str, ttl: float = TTL) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.apps.node_app",
                "--dsn",
                dsn,
                "--schema",
                schema,
                "--node",
                name,
                "--lease-ttl",
                str(ttl),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._ready = False
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready or self.proc.poll() is not None, timeout=60):
                raise AssertionError(f"node {name} did not start")
        assert self._ready, f"node {name} exited with {self.proc.returncode}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            with self._cond:
                if "ready" in message:
                    self._ready = True
                else:
                    self._replies[message["req"]] = message
                self._cond.notify_all()

    def send(self, op: str, **fields: object) -> int:
        self._next += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"req": self._next, "op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        return self._next

    def wait(self, req: int, timeout: float = 30.0) -> dict[str, Any] | None:
        with self._cond:
            self._cond.wait_for(lambda: req in self._replies, timeout=timeout)
            return self._replies.get(req)

    def request(self, op: str, timeout: float = 30.0, **fields: object) -> dict[str, Any]:
        reply = self.wait(self.send(op, **fields), timeout)
        assert reply is not None, f"node {self.name}: no answer to {op} {fields}"
        return reply

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped node cannot die of SIGKILL
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
