"""``python -m bench --quick`` (the comparison with the peers, issue 8) still runs: it exits 0 and
writes a JSON report holding sessionvisor's figures. Peers whose venv is missing are skipped by the
benchmark itself, so this needs no network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_quick_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert report["errors"] == []
    for backend in ("asyncio", "trio"):
        ours = report["results"][f"sessionvisor-{backend}"]
        assert ours["speed"]["call_rtt_us"] > 0
        assert ours["speed"]["cast_per_s"] > 0
        assert ours["speed"]["restart_median_us"] > 0
        assert ours["durable"]["appends_per_s"] > 0
        assert ours["durable"]["replay_events_per_s"] > 0
        assert all(idle["bytes_each"] > 0 and idle["us_each"] > 0 for idle in ours["idle"].values())
    figures = {row["figure"] for row in report["comparison"]}
    assert "call round trip" in figures
    assert "| call round trip |" in done.stdout
