"""examples/prometheus/alerts.yml passes Debian's ``promtool check rules`` and its unit tests.

promtool comes with Debian's ``prometheus`` package (.ci/run installs it). Where it is missing the
tests skip with a message, except in CI (``CI=true``) or with ``SESSIONVISOR_REQUIRE_PROMTOOL=1``,
where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[1] / "examples" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        required = (
            os.environ.get("CI", "").lower() == "true"
            or os.environ.get("SESSIONVISOR_REQUIRE_PROMTOOL") == "1"
        )
        message = (
            "promtool is not installed: apt-get install prometheus (Debian's package) to check the "
            "alert rules"
        )
        if required:
            pytest.fail(message + " (required here: CI=true or SESSIONVISOR_REQUIRE_PROMTOOL=1)")
        pytest.skip(message)
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=RULES, capture_output=True, text=True, timeout=120, check=False)


def test_rules_are_valid(promtool: str) -> None:
    """promtool check rules: the file parses and every expression is valid PromQL."""
    done = run(promtool, "check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rules_fire_when_they_should(promtool: str) -> None:
    """promtool test rules: each alert fires on its series, with its labels and text, and not before."""
    done = run(promtool, "test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_unit_tested() -> None:
    """Each alert of alerts.yml is the subject of at least one promtool test case."""
    rules = (RULES / "alerts.yml").read_text()
    tests = (RULES / "alerts.test.yml").read_text()
    alerts = {
        line.split(":", 1)[1].strip() for line in rules.splitlines() if line.strip().startswith("- alert:")
    }
    tested = {
        line.split(":", 1)[1].strip() for line in tests.splitlines() if line.strip().startswith("alertname:")
    }
    assert alerts
    assert alerts == tested


def values_of(name: str, key: str) -> set[str]:
    """The values of the lines of ``name`` that start with ``key`` (a YAML key, at any indentation)."""
    lines = (RULES / name).read_text().splitlines()
    return {line.split(":", 1)[1].strip() for line in lines if line.strip().startswith(key)}
