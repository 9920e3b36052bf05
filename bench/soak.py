"""A soak of the main job: ``python -m examples.game_server`` with chaos, for a given duration (issue 17).

    python bench/soak.py --duration 600 --backend trio [--chaos 0.02] [--bots 16] [--out FILE]

Runs the game server with its bots and ``--chaos`` (rooms crash on purpose), and alongside them
hostile peers: each second a few connections that send a line that once killed the server (or random
bytes), connections that trickle a request in a byte at a time, and ones that pipeline requests and
never read. Every ``--interval`` seconds (60: "per minute") it samples the server process:

* ``rss_mb``, ``fds``, ``threads``: from /proc (Linux);
* ``tasks``, ``connections``: the server's ``game_tasks`` and ``game_connections`` gauges (/metrics);
* ``moves``: moves acknowledged in the interval (``game_moves_total{outcome="ok"}``), and per second.

At the end it prints the table, the program's own summary (whose audit must find no acknowledged move
lost: exit status 0), and the whole as JSON (``--out`` writes it to a file too). ``growth`` compares
the last sample with the one after the first interval (the warm-up: the first rooms, caches, the
collector's generations), so a steady server shows growth near 0 and a leak a steady rise.

The machine may be shared: throughput moves with the neighbours' load; RSS, fds and tasks should not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

HOSTILE_LINES = (
    b'{"op":["x"]}',
    b'{"op":{}}',
    b'{"op":"help","id":' + b"7" * 5000 + b"}",
    b"[" * 50_000,
    b'{"op":"help","id":NaN}',
    b'{"op":"hello","name":"x"}\n{"op":"join","room":"r","size":true}',
    b'{"op":"hello","name":"spam"}\n' + b'{"op":"wait","room":"nowhere"}\n' * 200,
)


def _proc(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return {"rss_mb": round(rss / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    wanted = {
        "tasks": r"^game_tasks (\S+)$",
        "connections": r"^game_connections (\S+)$",
        "moves_total": r'^game_moves_total\{outcome="ok"\} (\S+)$',
    }
    found = {}
    for name, pattern in wanted.items():
        match = re.search(pattern, text, re.MULTILINE)
        found[name] = float(match.group(1)) if match else 0.0
    return found


class Hostile:
    """Hostile peers, on threads: counts what the server answered and what it did not."""

    KINDS = ("line", "bytes", "trickle", "deaf")

    def __init__(self, port: int, rate: float, seed: int, kinds: tuple[str, ...] = KINDS) -> None:
        self.port, self.rate, self.kinds = port, rate, kinds
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.counts = {"sent": 0, "answered": 0, "closed_by_server": 0, "failed_to_connect": 0}
        self.lock = threading.Lock()

    def count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def run(self) -> None:
        workers: list[threading.Thread] = []
        while not self.stop.wait(1 / self.rate):
            kind = self.rng.choice(self.kinds)
            worker = threading.Thread(target=self.one, args=(kind, self.rng.random()), daemon=True)
            worker.start()
            workers.append(worker)
            workers = [w for w in workers if w.is_alive()]
        for worker in workers:
            worker.join(timeout=30)

    def one(self, kind: str, r: float) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        except OSError:
            self.count("failed_to_connect")
            return
        try:
            self.count("sent")
            if kind == "line":
                sock.sendall(HOSTILE_LINES[int(r * len(HOSTILE_LINES))] + b"\n")
            elif kind == "bytes":
                sock.sendall(random.Random(r).randbytes(2000) + b"\n")
            elif kind == "trickle":  # a byte every 2 s: the server's request timeout (10 s) ends it
                for byte in b'{"op":"help"' * 2:
                    sock.sendall(bytes([byte]))
                    if self.stop.wait(2):
                        return
            else:  # deaf: pipelines requests and never reads (the send timeout ends it)
                sock.setblocking(False)
                with contextlib.suppress(OSError):
                    for _ in range(2000):
                        sock.send(b'{"op":"help"}\n' * 50)
                        time.sleep(0.005)
                return
            sock.settimeout(20)
            data = sock.recv(65536)
            self.count("answered" if data else "closed_by_server")
        except OSError:
            self.count("closed_by_server")
        finally:
            sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--chaos", type=float, default=0.02, help="the game's crash probability per move")
    parser.add_argument("--bots", type=int, default=16)
    parser.add_argument("--hostile", type=float, default=4, help="hostile connections per second")
    parser.add_argument(
        "--hostile-kinds",
        default="line,line,bytes,trickle,deaf",
        help="what the hostile peers do, drawn at random (repeat a kind to weigh it): line (a line "
        "that once killed the server), bytes (random), trickle (a byte every 2 s), deaf (never reads)",
    )
    parser.add_argument("--interval", type=float, default=60, help="seconds between samples (default 60)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="sessionvisor-soak-")
    command = [
        sys.executable, "-m", "examples.game_server", "--duration", str(args.duration),
        "--backend", args.backend, "--chaos", str(args.chaos), "--bots", str(args.bots),
        "--metrics-port", "0", "--progress", str(args.interval), "--seed", str(args.seed),
        "--db", os.path.join(workdir, "soak.db"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stderr is not None
    output: list[str] = []
    url, port = "", 0
    for line in process.stdout:
        output.append(line)
        if line.startswith("metrics: "):
            url = line.split()[1]
        if line.startswith("game server: "):
            port = int(line.split()[2].rsplit(":", 1)[1])
            break
    if not (url and port):
        print("".join(output), process.stderr.read(), file=sys.stderr)
        return 1
    rest = threading.Thread(target=lambda: output.extend(process.stdout or ()), daemon=True)
    rest.start()
    errors: list[str] = []
    err_reader = threading.Thread(target=lambda: errors.extend(process.stderr or ()), daemon=True)
    err_reader.start()
    hostile = Hostile(port, args.hostile, args.seed, tuple(args.hostile_kinds.split(",")))
    hostile_thread = threading.Thread(target=hostile.run, daemon=True)
    if args.hostile > 0:
        hostile_thread.start()

    samples: list[dict[str, float]] = []
    began = time.monotonic()
    last_moves, last_time = 0.0, began
    print(f"soak: {args.backend}, {args.duration:g} s, chaos {args.chaos:g}, pid {process.pid}", flush=True)
    print(
        f"{'minute':>6} {'rss_mb':>7} {'fds':>5} {'threads':>7} {'tasks':>6} {'conns':>5} "
        f"{'moves':>7} {'/s':>6}"
    )
    while process.poll() is None:
        time.sleep(max(0.0, began + args.interval * (len(samples) + 1) - time.monotonic()))
        if time.monotonic() - began > args.duration - 1 or process.poll() is not None:
            break
        try:
            sample: dict[str, float] = {"t": round(time.monotonic() - began, 1), **_proc(process.pid)}
            sample.update(_scrape(url))
        except (OSError, AttributeError) as exc:
            print(f"sample failed: {exc}", flush=True)
            continue
        now = time.monotonic()
        sample["moves"] = sample["moves_total"] - last_moves
        sample["moves_per_s"] = round(sample["moves"] / (now - last_time), 1)
        last_moves, last_time = sample["moves_total"], now
        samples.append(sample)
        print(
            f"{sample['t'] / 60:6.1f} {sample['rss_mb']:7.1f} {sample['fds']:5.0f} {sample['threads']:7.0f} "
            f"{sample['tasks']:6.0f} {sample['connections']:5.0f} {sample['moves']:7.0f} "
            f"{sample['moves_per_s']:6.0f}",
            flush=True,
        )
    hostile.stop.set()
    if hostile_thread.is_alive():
        hostile_thread.join(timeout=60)
    code = process.wait()
    rest.join(timeout=10)
    err_reader.join(timeout=10)
    summary = (
        "".join(output[output.index(next(x for x in output if x.startswith("== summary"))) :])
        if any(x.startswith("== summary") for x in output)
        else ""
    )
    print(summary, end="")
    base = samples[1] if len(samples) > 2 else (samples[0] if samples else {})
    last = samples[-1] if samples else {}
    growth = (
        {key: round(last[key] - base[key], 1) for key in ("rss_mb", "fds", "threads", "tasks")}
        if last
        else {}
    )
    tracebacks = sum("Traceback" in line for line in errors)
    result: dict[str, Any] = {
        "benchmark": "soak",
        "backend": args.backend,
        "duration_s": args.duration,
        "chaos": args.chaos,
        "bots": args.bots,
        "hostile_per_s": args.hostile,
        "hostile_kinds": args.hostile_kinds,
        "exit_status": code,
        "samples": samples,
        "growth_after_warmup": growth,
        "hostile": hostile.counts,
        "stderr_tracebacks": tracebacks,
        "stderr_tail": [line.rstrip() for line in errors[-5:]],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "note": "a shared machine: throughput varies with other load; RSS, fds and tasks should not",
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
