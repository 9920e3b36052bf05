"""The peers' own virtual environments, under ``bench/.venvs/<peer>`` (git-ignored).

Each peer is installed from PyPI into a venv of its own, never into the project's environment:
triotp pins an old trio that sessionvisor cannot share. The versions are pinned in
``bench/peers/requirements-<peer>.txt``. Run ``python -m bench.peers.venvs [PEER ...]`` (or
``bench/peers/setup.sh``) to create them; ``python -m bench`` creates missing ones itself, except with
``--quick`` or ``--no-setup``.

Standard library only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PEERS = ("triotp", "pykka", "eventsourcing")
HERE = Path(__file__).resolve().parent
VENVS = HERE.parent / ".venvs"


def requirements(peer: str) -> Path:
    """The pinned requirements file of ``peer``."""
    return HERE / f"requirements-{peer}.txt"


def python(peer: str) -> Path:
    """The interpreter of ``peer``'s venv (which may not exist)."""
    return VENVS / peer / "bin" / "python"


def usable(peer: str) -> bool:
    """Whether ``peer``'s venv exists and has the peer installed."""
    interpreter = python(peer)
    if not interpreter.exists():
        return False
    check = subprocess.run(
        [str(interpreter), "-c", f"import {peer}"], capture_output=True, text=True, check=False
    )
    return check.returncode == 0


def create(peer: str, *, base: str = sys.executable) -> None:
    """Create ``peer``'s venv with ``base``'s Python version and install its pinned requirements.

    ``base`` is the project's interpreter by default, so that every contender runs on the same
    Python. Raises ``subprocess.CalledProcessError`` when venv or pip fails.
    """
    target = VENVS / peer
    subprocess.run([base, "-m", "venv", "--clear", str(target)], check=True)
    pip = [str(python(peer)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(requirements(peer))], check=True)


def version(peer: str) -> str:
    """The installed version of ``peer`` (and of trio beside triotp) in its venv."""
    names = [peer, "trio"] if peer == "triotp" else [peer]
    code = f"import importlib.metadata as m; print(', '.join(n + ' ' + m.version(n) for n in {names!r}))"
    out = subprocess.run([str(python(peer)), "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def main() -> None:
    wanted = sys.argv[1:] or list(PEERS)
    unknown = sorted(set(wanted) - set(PEERS))
    if unknown:
        sys.exit(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    for peer in wanted:
        print(f"creating {VENVS / peer} ({requirements(peer).read_text().strip()})", flush=True)
        create(peer)
        print(f"  {version(peer)}", flush=True)


if __name__ == "__main__":
    main()
