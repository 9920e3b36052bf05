"""A store wrapper whose appends can be held open and made to fail: the pipelining tests' lever.

``HeldStore(inner)`` passes everything to ``inner`` (a MemoryStore or an SQLiteStore). While
``hold()`` is in force, each append waits at the door, in arrival order, until ``release()`` lets the
oldest one (or ``release_all()`` every one) through to the inner store; ``fail(exc)`` makes the next
appends that go through raise instead. ``durable`` is each session's version as the inner store
acknowledged it, updated before the append returns: a reply sent to a caller whose events are past it
was sent before they were durable. ``snapshots`` lists the snapshots saved through it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel

from runtime import AppendExtras, EventData, Snapshot, Status
from runtime.abc import EventStore


class HeldStore:
    """See the module docstring."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self.durable: dict[str, int] = {}
        self.appends: list[tuple[str, int, int]] = []
        """``(session, expected version, event count)`` of every append that reached the inner store."""
        self.failures: deque[BaseException] = deque()
        self.snapshots: list[Snapshot] = []
        """Every snapshot saved through this store, in order."""
        self._held = False
        self._door: deque[anyio.Event] = deque()  # waiting to be let through
        self._order: deque[anyio.Event] = deque()  # let through or not, in arrival order

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def waiting(self) -> int:
        """Appends held at the door now."""
        return len(self._door)

    def hold(self) -> None:
        self._held = True

    def release(self) -> None:
        """Let the oldest held append through."""
        self._door.popleft().set()

    def release_all(self) -> None:
        """Stop holding, and let every held append through."""
        self._held = False
        while self._door:
            self._door.popleft().set()

    def fail(self, *errors: BaseException) -> None:
        """The next appends to go through raise these, in order."""
        self.failures.extend(errors)

    async def append(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[EventData],
        *,
        status: Status | None = None,
        extras: AppendExtras | None = None,
    ) -> int:
        if self._held or self._order:
            door = anyio.Event()
            if self._held:
                self._door.append(door)
            else:
                door.set()  # not held, but behind appends that were: after them
            self._order.append(door)
            try:
                await door.wait()
                # Through the door in arrival order, as a store with one queue takes them.
                while self._order[0] is not door:
                    await anyio.lowlevel.checkpoint()
            finally:
                self._order.remove(door)
        if self.failures:
            raise self.failures.popleft()
        version = await self.inner.append(session_id, expected_version, events, status=status, extras=extras)
        self.appends.append((session_id, expected_version, len(events)))
        # Two appends answered together may resume in either order: keep the highest.
        self.durable[session_id] = max(version, self.durable.get(session_id, 0))
        return version

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self.inner.save_snapshot(snapshot)
        self.snapshots.append(snapshot)
