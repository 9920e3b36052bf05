"""An event store in process memory: for tests and for sessions that need not survive the process."""

from __future__ import annotations

import heapq
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, final

import attrs

from .._exceptions import SessionExists, SessionNotFound, VersionConflict
from .._ids import check_session_id
from .._records import (
    ENDED,
    AppendExtras,
    EventData,
    Outcomes,
    Reminder,
    SessionOrder,
    SessionRecord,
    Snapshot,
    StoredEvent,
    StoredSession,
    StoreStats,
    nearest_rank,
)
from .._status import Status

__all__ = ["MemoryStore"]


@final
class MemoryStore:
    """Keeps logs, snapshots and the index in dicts. Lost when the process ends.

    It implements :class:`runtime.abc.EventStore` with the same checks as the durable stores
    (``SessionExists``, ``VersionConflict``), so tests written against it hold for them too.
    Reminders and session deadlines are found through heaps ordered by due time (entries made stale
    by a change are dropped when they reach the top), not by a scan.

    Args:
        clock: where record times (``created_at``, ``updated_at``, ``recorded_at``) come from;
            ``time.time`` unless a test runs on a manual clock.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._now = clock
        self._records: dict[str, SessionRecord] = {}
        self._logs: dict[str, list[StoredEvent]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._reminders: dict[str, dict[str, Reminder]] = {}
        self._reminder_heap: list[tuple[float, str, str]] = []  # (due_at, session, name)
        self._deadline_heap: list[tuple[float, str]] = []  # (deadline, session)
        self._replies: dict[str, OrderedDict[str, str]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(sessions={len(self._records)})"

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def create(self, record: SessionRecord) -> None:
        if check_session_id(record.id) in self._records:
            raise SessionExists(record.id)
        now = self._now()
        self._records[record.id] = attrs.evolve(
            record,
            version=0,
            created_at=now,
            updated_at=now,
            handled=0,
            status_reason=None,
            error_type=None,
        )
        self._logs[record.id] = []
        if record.deadline is not None:
            self._push_deadline(record.deadline, record.id)

    async def append(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[EventData],
        *,
        status: Status | None = None,
        extras: AppendExtras | None = None,
    ) -> int:
        record = self._records.get(session_id)
        if record is None:
            raise SessionNotFound(session_id)
        # Checked against the acknowledged head, as the durable stores do: a log that lost its
        # tail takes no more events (recovery reports it instead).
        if record.version != expected_version:
            raise VersionConflict(session_id, expected_version, record.version)
        log = self._logs[session_id]
        now = self._now()
        for offset, e in enumerate(events, start=1):
            log.append(
                StoredEvent(session_id, expected_version + offset, e.type, e.schema_version, e.data, now)
            )
        version = expected_version + len(events)
        if status is None:
            record = _advanced(record, version, now)
        else:
            record = attrs.evolve(
                record, version=version, updated_at=now, status=status, status_reason=None, error_type=None
            )
        if extras is not None:
            for fired in extras.fired:
                kept = self._reminders.get(session_id, {})
                if kept.get(fired.name) == fired:
                    del kept[fired.name]
            for reminder in extras.scheduled:
                self._keep_reminder(reminder)
            if extras.reply is not None:
                replies = self._replies.setdefault(session_id, OrderedDict())
                replies[extras.reply.key] = extras.reply.reply
                replies.move_to_end(extras.reply.key)
                while len(replies) > max(extras.reply.keep, 1):
                    replies.popitem(last=False)
            if extras.handled is not None:
                record = attrs.evolve(record, handled=extras.handled)
            if extras.deadline is not None:
                record = attrs.evolve(record, deadline=extras.deadline)
        self._records[session_id] = record
        if extras is not None and extras.deadline is not None:
            self._push_deadline(extras.deadline, session_id)
        return version

    async def read(
        self, session_id: str, from_version: int = 1, to_version: int | None = None
    ) -> Sequence[StoredEvent]:
        log = self._logs.get(session_id, [])
        stop = len(log) if to_version is None else min(to_version, len(log))
        return log[max(from_version, 1) - 1 : stop]

    async def load_session(
        self, session_id: str, *, after_snapshot: bool = True, to_version: int | None = None
    ) -> StoredSession | None:
        # No await in here: nothing else runs in between, so this is one consistent view.
        record = self._records.get(session_id)
        if record is None:
            return None
        snapshot = self._snapshots.get(session_id) if after_snapshot else None
        log = self._logs.get(session_id, [])
        stop = len(log) if to_version is None else max(0, min(to_version, len(log)))
        start = 0 if snapshot is None else snapshot.version
        kept = self._reminders.get(session_id)
        reminders = sorted(kept.values(), key=lambda r: (r.due_at, r.name)) if kept else []
        return StoredSession(record, snapshot, log[start:stop], log[-1].version if log else 0, reminders)

    async def load_sessions(
        self, session_ids: Sequence[str], *, after_snapshot: bool = True
    ) -> list[StoredSession | None]:
        """``load_session`` for several sessions (in one view, like the SQL stores)."""
        return [await self.load_session(sid, after_snapshot=after_snapshot) for sid in session_ids]

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.session_id in self._records:
            self._snapshots[snapshot.session_id] = snapshot

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        return self._snapshots.get(session_id)

    async def get(self, session_id: str) -> SessionRecord | None:
        return self._records.get(check_session_id(session_id))

    async def set_status(
        self,
        session_id: str,
        status: Status,
        *,
        reason: str | None = None,
        error_type: str | None = None,
    ) -> None:
        record = self._records.get(session_id)
        if record is None:
            raise SessionNotFound(session_id)
        self._records[session_id] = attrs.evolve(
            record, status=status, updated_at=self._now(), status_reason=reason, error_type=error_type
        )

    async def list(
        self,
        *,
        status: Status | None = None,
        type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
        order_by: SessionOrder = "created_at",
        descending: bool = False,
        created_after: float | None = None,
        created_before: float | None = None,
        updated_after: float | None = None,
        updated_before: float | None = None,
    ) -> Sequence[SessionRecord]:
        if order_by not in ("created_at", "updated_at"):
            raise ValueError(f"order_by must be 'created_at' or 'updated_at', not {order_by!r}")
        found = [
            r
            for r in self._records.values()
            if (status is None or r.status is status)
            and (type is None or r.type == type)
            and (not metadata or all(r.metadata.get(k) == v for k, v in metadata.items()))
            and (created_after is None or r.created_at >= created_after)
            and (created_before is None or r.created_at < created_before)
            and (updated_after is None or r.updated_at >= updated_after)
            and (updated_before is None or r.updated_at < updated_before)
        ]
        if order_by == "created_at":
            found.sort(key=lambda r: (r.created_at, r.id), reverse=descending)
        else:
            found.sort(key=lambda r: (r.updated_at, r.id), reverse=descending)
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

    async def outcomes(self) -> Mapping[str, Outcomes]:
        by_type: dict[str, list[SessionRecord]] = {}
        for record in self._records.values():
            by_type.setdefault(record.type, []).append(record)
        return {name: _outcomes(name, records) for name, records in sorted(by_type.items())}

    async def delete(self, session_id: str) -> None:
        self._records.pop(session_id, None)
        self._logs.pop(session_id, None)
        self._snapshots.pop(session_id, None)
        self._reminders.pop(session_id, None)
        self._replies.pop(session_id, None)

    # -- reminders, deadlines, idempotent replies -----------------------------------------------

    async def set_reminder(self, reminder: Reminder) -> None:
        if reminder.session_id not in self._records:
            raise SessionNotFound(reminder.session_id)
        self._keep_reminder(reminder)

    def _keep_reminder(self, reminder: Reminder) -> None:
        self._reminders.setdefault(reminder.session_id, {})[reminder.name] = reminder
        heap = self._reminder_heap
        heapq.heappush(heap, (reminder.due_at, reminder.session_id, reminder.name))
        if len(heap) > 1024 and len(heap) > 4 * sum(map(len, self._reminders.values())):
            # Mostly replaced or removed entries: rebuild from what is kept (amortised O(1)).
            heap[:] = [
                (r.due_at, r.session_id, r.name) for kept in self._reminders.values() for r in kept.values()
            ]
            heapq.heapify(heap)

    async def remove_reminder(self, session_id: str, name: str) -> None:
        kept = self._reminders.get(session_id)
        if kept is not None:
            kept.pop(name, None)

    async def reminders(self, session_id: str) -> Sequence[Reminder]:
        return sorted(self._reminders.get(session_id, {}).values(), key=lambda r: (r.due_at, r.name))

    async def due_reminders(self, until: float, *, limit: int) -> Sequence[Reminder]:
        heap = self._reminder_heap
        found: list[Reminder] = []
        taken: set[tuple[float, str, str]] = set()
        while heap and heap[0][0] <= until and len(found) < limit:
            entry = heapq.heappop(heap)
            due_at, sid, name = entry
            reminder = self._reminders.get(sid, {}).get(name)
            if reminder is None or reminder.due_at != due_at or entry in taken:
                continue  # replaced, removed, or a duplicate entry: drop it from the heap
            found.append(reminder)
            taken.add(entry)
        for entry in taken:
            heapq.heappush(heap, entry)
        return found

    async def set_deadline(self, session_id: str, deadline: float | None) -> None:
        record = self._records.get(session_id)
        if record is None:
            return
        self._records[session_id] = attrs.evolve(record, deadline=deadline)
        if deadline is not None:
            self._push_deadline(deadline, session_id)

    def _push_deadline(self, deadline: float, session_id: str) -> None:
        heap = self._deadline_heap
        heapq.heappush(heap, (deadline, session_id))
        if len(heap) > 1024 and len(heap) > 4 * len(self._records):
            heap[:] = [(r.deadline, r.id) for r in self._records.values() if r.deadline is not None]
            heapq.heapify(heap)

    async def due_sessions(self, until: float, *, limit: int) -> Sequence[SessionRecord]:
        heap = self._deadline_heap
        found: list[SessionRecord] = []
        taken: set[tuple[float, str]] = set()
        while heap and heap[0][0] <= until and len(found) < limit:
            entry = heapq.heappop(heap)
            deadline, sid = entry
            record = self._records.get(sid)
            if record is None or record.deadline != deadline or entry in taken:
                continue
            found.append(record)
            taken.add(entry)
        for entry in taken:
            heapq.heappush(heap, entry)
        return found

    async def load_reply(self, session_id: str, key: str) -> str | None:
        replies = self._replies.get(session_id)
        return None if replies is None else replies.get(key)


def _outcomes(type_name: str, records: Sequence[SessionRecord]) -> Outcomes:
    ended = [r for r in records if r.status in ENDED]
    durations = sorted(r.updated_at - r.created_at for r in ended)
    completed = sum(r.status is Status.COMPLETED for r in ended)
    n = len(ended)
    return Outcomes(
        type=type_name,
        by_status=dict(Counter(r.status.value for r in records)),
        ended=n,
        completed=completed,
        success_rate=completed / n if n else None,
        duration_mean=sum(durations) / n if n else None,
        duration_p50=nearest_rank(durations, 50),
        duration_p95=nearest_rank(durations, 95),
        events_mean=sum(r.version for r in ended) / n if n else None,
    )


_RECORD_FIELDS = (
    "id",
    "type",
    "status",
    "args",
    "metadata",
    "version",
    "created_at",
    "updated_at",
    "deadline",
    "handled",
    "status_reason",
    "error_type",
)
if tuple(field.name for field in attrs.fields(SessionRecord)) != _RECORD_FIELDS:  # pragma: no cover
    raise RuntimeError("SessionRecord's fields changed: update memory._advanced and _RECORD_FIELDS")


def _advanced(r: SessionRecord, version: int, now: float) -> SessionRecord:
    """``attrs.evolve(r, version=version, updated_at=now)``, on the path of every append: positional
    arguments cost a third of evolve's walk of the fields (0.7 against 1.8 µs)."""
    return SessionRecord(
        r.id,
        r.type,
        r.status,
        r.args,
        r.metadata,
        version,
        r.created_at,
        now,
        r.deadline,
        r.handled,
        r.status_reason,
        r.error_type,
    )
