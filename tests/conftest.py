from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from trio.testing import MockClock

from runtime.abc import EventStore
from tests.apps.counter import Counter
from tests.apps.recovery_app import Ledger
from tests.helpers import STORES
from tests.pg import PgTarget, own_schema

RUN_SLOW = "--run-slow"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        RUN_SLOW,
        action="store_true",
        help="also run the tests marked slow: real processes, kill trials, long real-time waits, "
        "property tests with many examples (the whole suite, as CI runs it)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the tests marked ``slow`` unless ``--run-slow`` is given, or ``-m`` chooses by marker."""
    if config.getoption(RUN_SLOW) or config.getoption("markexpr"):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """Every async test runs on asyncio and on trio (trio with a virtual clock)."""
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_probes() -> Iterator[None]:
    """The test apps' class-level probes (``Counter.logs``, ``Ledger.journal``) start empty in every test."""
    Counter.logs.clear()
    Ledger.journal.clear()
    yield
    Counter.logs.clear()
    Ledger.journal.clear()


@pytest.fixture
def pg() -> Iterator[PgTarget]:
    """A PostgreSQL server and a schema of this test's own (dropped afterwards); skips without one."""
    yield from own_schema()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (made with the openssl command): cert, key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (and cryptography is not a dependency)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost"
    san = "subjectAltName=IP:127.0.0.1,DNS:localhost"
    subprocess.run(
        [openssl, *request.split(), "-addext", san, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(params=sorted(STORES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    """An open store of each kind (MemoryStore, SQLiteStore, PostgresStore), closed afterwards.

    A module that defines a ``store`` fixture of its own uses that one instead.
    """
    s = STORES[request.param](request, tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()
