"""Running an example program in a subprocess, as its users would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_example(module: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m examples.<module> --metrics-port 0 ARGS`` in ``tmp_path``, finished, captured."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", f"examples.{module}", "--metrics-port", "0", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
