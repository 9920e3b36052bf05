"""Helpers shared by the test modules: restart policies, a store that fails on demand, timing on a clock.

Fixtures live in ``tests/conftest.py``; plain values, classes and functions live here and are imported
by name (``from tests.helpers import NO_BACKOFF``), so that each is written once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from runtime import (
    AppendExtras,
    EventData,
    MemoryStore,
    PostgresStore,
    SessionRef,
    Snapshot,
    SQLiteStore,
    Status,
    StoredEvent,
    StoredSession,
)
from runtime.abc import EventStore
from runtime.testing import ManualClock
from supervisors import Backoff, RestartPolicy
from tests.apps.counter import WaitFor
from tests.pg import PgTarget

__all__ = [
    "GRANULARITY",
    "NO_BACKOFF",
    "STORES",
    "ProxyStore",
    "StoreFactory",
    "busy",
    "fails_at",
    "no_backoff",
    "status_of",
]

StoreFactory = Callable[[pytest.FixtureRequest, Path], EventStore]


def _postgres(request: pytest.FixtureRequest, _path: Path) -> EventStore:
    target: PgTarget = request.getfixturevalue("pg")  # a schema of this test's own
    return PostgresStore(target.dsn, schema=target.schema)


STORES: dict[str, StoreFactory] = {
    # time.time looked up at each call, so that a test can pin it (test_store_contract's WallClock).
    "memory": lambda _request, _path: MemoryStore(clock=lambda: time.time()),
    "sqlite": lambda _request, path: SQLiteStore(path / "s.db"),
    "postgres": _postgres,
}
"""Every store, made for one test: the ``store`` fixture (tests/conftest.py) runs a test on each."""

GRANULARITY = 0.005
"""A timeout fires at the end of its bucket of the deadline wheel: up to this much after its deadline."""


def no_backoff(max_restarts: int = 3, within: float = 60.0) -> RestartPolicy:
    """Restart at once (no backoff delay), at most ``max_restarts`` times ``within`` seconds."""
    return RestartPolicy(max_restarts=max_restarts, within=within, backoff=Backoff(initial=0))


NO_BACKOFF = no_backoff()
"""Restart at once, three times a minute at most."""


def status_of(ref: SessionRef) -> Status | None:
    """The ref's status, read through a call (so that type checkers do not narrow it between reads)."""
    return ref.status


async def busy(ref: SessionRef) -> anyio.Event:
    """Keep the session in one turn until the returned event is set."""
    gate = anyio.Event()
    await ref.cast(WaitFor(gate))
    await anyio.wait_all_tasks_blocked()
    return gate


async def fails_at(
    clock: ManualClock, operation: Callable[[], Awaitable[object]], steps: Sequence[float]
) -> tuple[float, BaseException]:
    """Run ``operation`` while the clock moves by ``steps``: when (virtual time) and what it raised.

    Raises:
        AssertionError: it raised before the last step, or never.
    """
    outcome: list[tuple[float, BaseException]] = []

    async def run() -> None:
        try:
            await operation()
        except Exception as exc:
            outcome.append((clock.now(), exc))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        for step in steps:
            assert not outcome, f"raised early, at {clock.now()}"
            await clock.advance(step)
    assert outcome, "never raised"
    return outcome[0]


class ProxyStore:
    """Any store, with failures and distortions on demand; it keeps every snapshot saved through it.

    ``fail_append`` fails every append while set; ``fail_read`` fails the next read (``read`` or
    ``load_session``, which a recovery uses) once; ``fail_snapshot`` fails every snapshot while set;
    ``repeat_on_read`` makes reads return the event at that version twice (as a store without a unique
    key could). Everything else goes to the inner store as it is.
    """

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self.fail_append = False
        self.fail_read = False
        self.fail_snapshot = False
        self.repeat_on_read: int | None = None
        self.snapshots: list[Snapshot] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[EventData],
        *,
        status: Status | None = None,
        extras: AppendExtras | None = None,
    ) -> int:
        if self.fail_append:
            raise OSError("injected append failure")
        return await self.inner.append(session_id, expected_version, events, status=status, extras=extras)

    async def read(
        self, session_id: str, from_version: int = 1, to_version: int | None = None
    ) -> Sequence[StoredEvent]:
        self._fail_read_once()
        return self._distort(await self.inner.read(session_id, from_version, to_version))

    async def load_session(
        self, session_id: str, *, after_snapshot: bool = True, to_version: int | None = None
    ) -> StoredSession | None:
        self._fail_read_once()
        view = await self.inner.load_session(session_id, after_snapshot=after_snapshot, to_version=to_version)
        return None if view is None else attrs.evolve(view, events=self._distort(view.events))

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        if self.fail_snapshot:
            raise OSError("injected snapshot failure")
        await self.inner.save_snapshot(snapshot)
        self.snapshots.append(snapshot)

    def _fail_read_once(self) -> None:
        if self.fail_read:
            self.fail_read = False
            raise OSError("injected read failure")

    def _distort(self, stored_events: Sequence[StoredEvent]) -> list[StoredEvent]:
        events = list(stored_events)
        for i, stored in enumerate(events):
            if stored.version == self.repeat_on_read:
                events.insert(i + 1, stored)
                break
        return events
