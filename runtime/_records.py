"""The plain records that stores keep and return: events, snapshots, the session index."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._status import Status

__all__ = ["EventData", "SessionRecord", "Snapshot", "StoreStats", "StoredEvent"]


@attrs.frozen
class EventData:
    """An encoded event, ready to append: its registered type name, schema version and JSON text."""

    type: str
    schema_version: int
    data: str


@attrs.frozen
class StoredEvent:
    """An event as the store holds it: ``version`` is its 1-based position in the session's log."""

    session_id: str
    version: int
    type: str
    schema_version: int
    data: str
    recorded_at: float
    """Wall-clock time (``time.time()``) of the append; for display only."""


@attrs.frozen
class Snapshot:
    """A session's state as JSON after its first ``version`` events, under ``state_version``."""

    session_id: str
    version: int
    state_version: int
    data: str
    taken_at: float = 0.0


@attrs.frozen
class SessionRecord:
    """A session's entry in the store's index, behind ``list`` and ``stats``.

    ``args`` are what ``initial_state`` is called with on every recovery; ``metadata`` is free-form
    JSON for filtering (user, channel). Times are wall-clock seconds, for display only.
    """

    id: str
    type: str
    status: Status = Status.RUNNING
    args: Mapping[str, Any] = attrs.field(factory=dict)
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0


@attrs.frozen
class StoreStats:
    """Counts a store reports: sessions by status and type, events and snapshots kept."""

    sessions: int
    events: int
    snapshots: int
    by_status: Mapping[str, int]
    by_type: Mapping[str, int]
