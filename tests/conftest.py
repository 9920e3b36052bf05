from __future__ import annotations

from collections.abc import Iterator

import pytest
from trio.testing import MockClock

from tests.pg import PgTarget, own_schema


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """Every async test runs on asyncio and on trio (trio with a virtual clock)."""
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"


@pytest.fixture
def pg() -> Iterator[PgTarget]:
    """A PostgreSQL server and a schema of this test's own (dropped afterwards); skips without one."""
    yield from own_schema()
