"""``SessionCensus``: the loaded sessions counted by type and status, for the metrics scrape.

Kept as statuses change (``moved``), so that a scrape costs nothing per session (it was a scan of every
cell: 0.2 s at 100,000; bench/README.md). The scrape runs in the metrics server's thread: it copies,
then reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._status import Status

__all__ = ["SessionCensus"]


@final
class SessionCensus:
    """Loaded sessions by ``(type name, status value)``."""

    def __init__(self) -> None:
        self._by_status: dict[tuple[str, str], int] = {}

    def moved(self, cell: SessionCell, previous: Status | None) -> None:
        """``cell`` took its status (from ``previous``; ``None`` for one new here)."""
        if previous is not None:
            self.count(cell, previous, -1)
        self.count(cell, cell.status, 1)

    def count(self, cell: SessionCell, status: Status, change: int) -> None:
        key = (cell.cls.type_name or cell.cls.__name__, status.value)
        self._by_status[key] = self._by_status.get(key, 0) + change

    def sessions(self) -> dict[tuple[str, str], int]:
        """How many loaded sessions of each (type, status) (the scrape's copy)."""
        return {key: n for key, n in list(self._by_status.items()) if n}
