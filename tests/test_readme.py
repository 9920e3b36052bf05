"""The README's shortest complete example runs and prints what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_shortest_example_runs() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "the README has no python example"
    result = subprocess.run(
        [sys.executable, "-c", blocks[0]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "5"


def test_ci_runs_the_readme_whole_suite_command() -> None:
    """The README's "whole test suite" command runs everything (``--run-slow``), and ``.ci/run``
    ends by running exactly its test step."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("Run the whole test suite") :]
    command = re.search(r"```sh\n(.*?)\n```", section, flags=re.DOTALL)
    assert command is not None
    steps = [step.strip() for step in command.group(1).split("&&")]
    assert steps[0] == "python3 -m venv .venv"
    assert steps[1] == ".venv/bin/pip install -e '.[test]'"
    assert steps[-1] == ".venv/bin/python -m pytest --run-slow"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == steps[-1]
    assert "python3 -m venv .venv" in ci
    assert ".venv/bin/python -m pip install -q -e '.[test]'" in ci
