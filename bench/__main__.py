"""sessionvisor against its peers, side by side, with one command (issue 8).

    python -m bench [--quick] [--rounds N] [--no-setup] [--out FILE]

Runs every contender as a subprocess (see :mod:`bench.peers`), each figure measured in the same run,
and prints a Markdown table of the figures with sessionvisor's ratio to each contender. Writes the
whole report as JSON to ``bench/results/latest.json`` (``bench/results/quick.json`` with ``--quick``,
so that the test suite never overwrites a full run), or to ``--out``.

Contenders: sessionvisor on asyncio and on trio; raw anyio on each (bare tasks and streams, the
floor); triotp (``gen_server`` / ``supervisor`` on trio), pykka (``ThreadingActor``, one thread per
actor); raw ``sqlite3`` batching and the ``eventsourcing`` library's SQLite application for
persistence. Peers run with their own virtual environments under ``bench/.venvs/``: a full run
creates the missing ones (``pip install`` from PyPI); ``--quick`` and ``--no-setup`` skip peers
whose venv is missing, with a note.

Speed figures (round trip, throughput, restart latency, durable appends, replay) are the best of
``--rounds`` rounds, the contenders taking turns within each round so that a noisy spell of the
machine hits them alike. Spawn cost and memory are measured once per contender and size, each in a
fresh process. Exits 1 if any contender failed (after writing what was measured).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.peers import venvs
from bench.peers.sessionvisor_bench import reaper_available

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

Figures = dict[str, float]

BACKENDS = ("asyncio", "trio")
PYKKA_MAX_ACTORS = 10_000
"""pykka starts one thread per actor: 30,000 fail here ("can't start new thread"; pid_max is 32,768)."""


# -- sizes -----------------------------------------------------------------------------------------


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "calls": 2_000,
            "casts": 10_000,
            "crashes": 100,
            "idle": [1_000],
            "sessions": 100,
            "events_each": 3,
            "replay": 2_000,
            "reaper": [1_000],
            "passes": 20,
            "rounds": 1,
        }
    return {
        "calls": 20_000,
        "casts": 100_000,
        "crashes": 2_000,
        "idle": [10_000, 100_000],
        "sessions": 1_000,
        "events_each": 20,
        "replay": 50_000,
        "reaper": [1_000, 10_000, 100_000],
        "passes": 200,
        "rounds": 3,
    }


# -- contenders ------------------------------------------------------------------------------------


class Contender:
    """One side of the comparison: a script of :mod:`bench.peers` and the interpreter that runs it."""

    def __init__(self, key: str, label: str, module: str, python: str, **fixed: Any) -> None:
        self.key = key
        self.label = label
        self.module = f"bench.peers.{module}"
        self.python = python
        self.fixed = fixed

    def run(self, what: str, params: Mapping[str, Any], timeout: float = 3600.0) -> Figures:
        """Run one command of the script in a fresh process; its figures."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        argv = [self.python, "-m", self.module, what, json.dumps({**self.fixed, **params})]
        out = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if out.returncode != 0:
            tail = "\n".join(out.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"{self.label}: {what} exited {out.returncode}: {tail}")
        figures: Figures = json.loads(out.stdout.strip().splitlines()[-1])
        return figures


def contenders(quick: bool, setup: bool, notes: list[str], versions: dict[str, str]) -> list[Contender]:
    ours = sys.executable
    found = [
        *(
            Contender(f"sessionvisor-{b}", f"sessionvisor ({b})", "sessionvisor_bench", ours, backend=b)
            for b in BACKENDS
        ),
        *(Contender(f"anyio-{b}", f"raw anyio ({b})", "anyio_bench", ours, backend=b) for b in BACKENDS),
        Contender("sqlite3", "raw sqlite3, batched", "sqlite3_bench", ours),
        Contender("scan", "naive scan of every session", "anyio_bench", ours),
    ]
    labels = {
        "triotp": "triotp",
        "pykka": "pykka",
        "eventsourcing": "eventsourcing (SQLite)",
    }
    for peer in venvs.PEERS:
        if not venvs.usable(peer):
            if quick or not setup:
                notes.append(
                    f"{peer} skipped: no venv at {venvs.VENVS / peer} (create it with bench/peers/setup.sh)"
                )
                continue
            print(f"creating the {peer} venv (pip install from PyPI) ...", file=sys.stderr, flush=True)
            try:
                venvs.create(peer)
            except (subprocess.CalledProcessError, OSError) as exc:
                notes.append(f"{peer} skipped: could not create its venv: {exc}")
                continue
        versions[peer] = venvs.version(peer)
        found.append(Contender(peer, labels[peer], f"{peer}_bench", str(venvs.python(peer))))
    return found


def _best(figures: Figures, new: Figures) -> Figures:
    """Per figure, the better of two rounds: the lower time, the higher rate."""
    best = dict(figures)
    for key, value in new.items():
        if key not in best:
            best[key] = value
        elif key.endswith("_per_s"):
            best[key] = max(best[key], value)
        else:
            best[key] = min(best[key], value)
    return best


def measure(
    found: Sequence[Contender], size: Mapping[str, Any], reaper: bool, errors: list[str]
) -> dict[str, Any]:
    """Every figure of every contender: ``results[key][kind]``."""
    results: dict[str, dict[str, Any]] = {c.key: {"label": c.label} for c in found}
    speed = [c for c in found if c.key.split("-")[0] in ("sessionvisor", "anyio", "triotp", "pykka")]
    durable = [c for c in found if c.key.split("-")[0] in ("sessionvisor", "sqlite3", "eventsourcing")]
    idle = [c for c in found if c.key.split("-")[0] in ("sessionvisor", "anyio", "triotp", "pykka")]
    speed_params = {k: size[k] for k in ("calls", "casts", "crashes")}

    def attempt(c: Contender, what: str, params: Mapping[str, Any]) -> Figures | None:
        print(f"  {c.label}: {what} {json.dumps(params)}", file=sys.stderr, flush=True)
        try:
            return c.run(what, params)
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
            errors.append(f"{c.label}: {what}: {exc}")
            return None

    for round_ in range(size["rounds"]):
        print(f"round {round_ + 1} of {size['rounds']}", file=sys.stderr, flush=True)
        for c in speed:
            figures = attempt(c, "speed", speed_params)
            if figures is not None:
                results[c.key]["speed"] = _best(results[c.key].get("speed", {}), figures)
        with tempfile.TemporaryDirectory(prefix="sessionvisor-bench-") as tmp:
            for c in durable:
                directory = os.path.join(tmp, c.key)
                os.mkdir(directory)
                params = {
                    "sessions": size["sessions"],
                    "events_each": size["events_each"],
                    "replay": size["replay"],
                    "dir": directory,
                }
                if c.key == "eventsourcing":
                    params["threads"] = 1  # its best: more threads only queue on its writer lock
                figures = attempt(c, "durable", params)
                if figures is not None:
                    results[c.key]["durable"] = _best(results[c.key].get("durable", {}), figures)
    for n in size["idle"]:
        for c in idle:
            if c.key == "pykka" and n > PYKKA_MAX_ACTORS:
                continue
            figures = attempt(c, "idle", {"n": n})
            if figures is not None:
                results[c.key].setdefault("idle", {})[str(n)] = figures
    for n in size["reaper"] if reaper else ():
        for c in found:
            what = "reaper" if c.key.startswith("sessionvisor-") else "scan" if c.key == "scan" else None
            if what is not None:
                figures = attempt(c, what, {"n": n, "passes": size["passes"]})
                if figures is not None:
                    results[c.key].setdefault("reaper", {})[str(n)] = figures
    return results


# -- comparisons -----------------------------------------------------------------------------------


class Figure:
    """One row group of the table: how to read a figure from a contender's results."""

    def __init__(
        self, title: str, unit: str, higher_is_better: bool, read: Callable[[Mapping[str, Any]], float | None]
    ) -> None:
        self.title = title
        self.unit = unit
        self.higher_is_better = higher_is_better
        self.read = read


def _get(*path: str) -> Callable[[Mapping[str, Any]], float | None]:
    def read(results: Mapping[str, Any]) -> float | None:
        value: Any = results
        for key in path:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        return float(value)

    return read


def figures_of(size: Mapping[str, Any]) -> list[Figure]:
    rows = [
        Figure("call round trip", "µs", False, _get("speed", "call_rtt_us")),
        Figure("cast throughput", "msg/s", True, _get("speed", "cast_per_s")),
    ]
    for n in size["idle"]:
        rows.append(Figure(f"spawn cost, {n:,} actors", "µs each", False, _get("idle", str(n), "us_each")))
        rows.append(
            Figure(f"memory per idle actor, {n:,}", "bytes each", False, _get("idle", str(n), "bytes_each"))
        )
    rows += [
        Figure("crash → answering, median", "µs", False, _get("speed", "restart_median_us")),
        Figure("crash → answering, p99", "µs", False, _get("speed", "restart_p99_us")),
        Figure(
            f"durable appends, {size['sessions']:,} sessions",
            "events/s",
            True,
            _get("durable", "appends_per_s"),
        ),
        Figure(
            f"replay, {size['replay']:,} events", "events/s", True, _get("durable", "replay_events_per_s")
        ),
    ]
    for n in size["reaper"]:
        title = f"reaper pass, nothing due, {n:,} sessions"
        rows.append(Figure(title, "µs", False, _get("reaper", str(n), "pass_idle_us")))
    for n in size["reaper"]:
        title = f"reaper passivating all {n:,}"
        rows.append(Figure(title, "µs each", False, _get("reaper", str(n), "passivate_us_each")))
    return rows


def compare(results: Mapping[str, Mapping[str, Any]], size: Mapping[str, Any]) -> list[dict[str, Any]]:
    """For each figure, ours on each backend, each other contender's, and our ratio to it.

    The ratio is how many times better sessionvisor does: the contender's time ÷ ours, or our rate ÷
    the contender's (above 1: sessionvisor is ahead). A raw anyio baseline is compared with
    sessionvisor on its own backend only.
    """
    table = []
    for figure in figures_of(size):
        ours = {b: figure.read(results.get(f"sessionvisor-{b}", {})) for b in BACKENDS}
        against = []
        for key, res in results.items():
            if key.startswith("sessionvisor-"):
                continue
            theirs = figure.read(res)
            if theirs is None:
                continue
            ratios: dict[str, float | None] = {}
            for b in BACKENDS:
                mine = ours[b]
                if (
                    mine is None
                    or not theirs
                    or not mine
                    or (key.startswith("anyio-") and key != f"anyio-{b}")
                ):
                    ratios[b] = None
                else:
                    ratios[b] = mine / theirs if figure.higher_is_better else theirs / mine
            against.append({"contender": res["label"], "value": theirs, "ratio": ratios})
        table.append(
            {
                "figure": figure.title,
                "unit": figure.unit,
                "higher_is_better": figure.higher_is_better,
                "sessionvisor": ours,
                "against": against,
            }
        )
    return table


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 10_000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def markdown(table: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| figure | unit | sessionvisor asyncio | sessionvisor trio | against | its figure "
        "| x (asyncio) | x (trio) |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for row in table:
        ours = row["sessionvisor"]
        first = f"| {row['figure']} | {row['unit']} | {_fmt(ours['asyncio'])} | {_fmt(ours['trio'])} "
        blank = "| | | | "
        if not row["against"]:
            lines.append(first + "| — | — | — | — |")
        for i, other in enumerate(row["against"]):
            ratio = other["ratio"]
            lines.append(
                (first if i == 0 else blank)
                + f"| {other['contender']} | {_fmt(other['value'])} "
                + f"| {_ratio(ratio['asyncio'])} | {_ratio(ratio['trio'])} |"
            )
    return "\n".join(lines)


# -- the machine -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if models:
            info["cpu"] = models[0]
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def source() -> str:
    """The commit measured, and whether the library's code differs from it (unknown outside git)."""
    git = ["git", "-C", str(ROOT)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "runtime", "supervisors"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = " + uncommitted changes in runtime/ or supervisors/" if dirty.stdout.strip() else ""
    return head.stdout.strip() + changed


# -- driver ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="sessionvisor against its peers, side by side (issue 8)."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, in seconds (the test suite)")
    parser.add_argument("--rounds", type=int, help="rounds of the speed figures (default: 3, quick: 1)")
    parser.add_argument("--no-setup", action="store_true", help="do not create missing peer venvs")
    parser.add_argument("--out", type=Path, help="where to write the JSON report")
    args = parser.parse_args(argv)

    size = sizes(args.quick)
    if args.rounds:
        size["rounds"] = args.rounds
    reaper = reaper_available()
    notes: list[str] = [
        f"pykka is one thread per actor: measured up to {PYKKA_MAX_ACTORS:,} actors only",
        "pykka has no supervisor: no restart figure",
    ]
    if not reaper:
        notes.append("reaper pass cost: not measured, this checkout has no supervisors.ReaperPolicy")
    errors: list[str] = []
    versions = {name: importlib.metadata.version(name) for name in ("sessionvisor", "anyio", "trio")}
    started = time.perf_counter()
    found = contenders(args.quick, not args.no_setup, notes, versions)
    results = measure(found, size, reaper, errors)
    table = compare(results, size)
    report = {
        "benchmark": "peers",
        "date": time.strftime("%Y-%m-%d"),
        "quick": args.quick,
        "machine": machine(),
        "source": source(),
        "versions": versions,
        "sizes": size,
        "notes": notes,
        "errors": errors,
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
        "comparison": table,
    }
    out = args.out or RESULTS / ("quick.json" if args.quick else "latest.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    print(markdown(table))
    print()
    host = report["machine"]
    print(
        "x = how many times better sessionvisor does: the contender's time / ours, or our rate / its "
        "rate (above 1: sessionvisor ahead)."
    )
    print(
        f"{report['date']}; {host.get('cpu', platform.machine())}, {host['cores']} cores; {host['python']}; "
        f"source {report['source']}; {report['seconds']} s."
    )
    for note in notes:
        print(f"note: {note}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    print(f"wrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
