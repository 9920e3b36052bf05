"""An event store in process memory: for tests and for sessions that need not survive the process."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, final

import attrs

from .._exceptions import SessionExists, SessionNotFound, VersionConflict
from .._records import EventData, SessionRecord, Snapshot, StoredEvent, StoreStats
from .._status import Status

__all__ = ["MemoryStore"]


@final
class MemoryStore:
    """Keeps logs, snapshots and the index in dicts. Lost when the process ends.

    It implements :class:`runtime.abc.EventStore` with the same checks as the durable stores
    (``SessionExists``, ``VersionConflict``), so tests written against it hold for them too.
    """

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}
        self._logs: dict[str, list[StoredEvent]] = {}
        self._snapshots: dict[str, Snapshot] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(sessions={len(self._records)})"

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def create(self, record: SessionRecord) -> None:
        if record.id in self._records:
            raise SessionExists(record.id)
        now = time.time()
        self._records[record.id] = attrs.evolve(record, version=0, created_at=now, updated_at=now)
        self._logs[record.id] = []

    async def append(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[EventData],
        *,
        status: Status | None = None,
    ) -> int:
        record = self._records.get(session_id)
        if record is None:
            raise SessionNotFound(session_id)
        log = self._logs[session_id]
        if len(log) != expected_version:
            raise VersionConflict(session_id, expected_version, len(log))
        now = time.time()
        for offset, e in enumerate(events, start=1):
            log.append(
                StoredEvent(session_id, expected_version + offset, e.type, e.schema_version, e.data, now)
            )
        self._records[session_id] = attrs.evolve(
            record,
            version=len(log),
            updated_at=now,
            status=record.status if status is None else status,
        )
        return len(log)

    async def read(
        self, session_id: str, from_version: int = 1, to_version: int | None = None
    ) -> Sequence[StoredEvent]:
        log = self._logs.get(session_id, [])
        stop = len(log) if to_version is None else min(to_version, len(log))
        return log[max(from_version, 1) - 1 : stop]

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.session_id in self._records:
            self._snapshots[snapshot.session_id] = snapshot

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        return self._snapshots.get(session_id)

    async def get(self, session_id: str) -> SessionRecord | None:
        return self._records.get(session_id)

    async def set_status(self, session_id: str, status: Status) -> None:
        record = self._records.get(session_id)
        if record is None:
            raise SessionNotFound(session_id)
        self._records[session_id] = attrs.evolve(record, status=status, updated_at=time.time())

    async def list(
        self,
        *,
        status: Status | None = None,
        type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Sequence[SessionRecord]:
        found = [
            r
            for r in self._records.values()
            if (status is None or r.status is status)
            and (type is None or r.type == type)
            and (not metadata or all(r.metadata.get(k) == v for k, v in metadata.items()))
        ]
        end = None if limit is None else offset + limit
        return found[offset:end]

    async def stats(self) -> StoreStats:
        return StoreStats(
            sessions=len(self._records),
            events=sum(map(len, self._logs.values())),
            snapshots=len(self._snapshots),
            by_status=dict(Counter(r.status.value for r in self._records.values())),
            by_type=dict(Counter(r.type for r in self._records.values())),
        )

    async def delete(self, session_id: str) -> None:
        self._records.pop(session_id, None)
        self._logs.pop(session_id, None)
        self._snapshots.pop(session_id, None)
