"""``Inspection``: a read-only look at one session, for operators and tests; and its ``Health``."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

import attrs

from ._history import TransitionRecord, records
from ._status import Status

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from ._cell import SessionCell
    from ._counters import HostStats
    from ._host import SessionHost

__all__ = [
    "Health",
    "HealthThresholds",
    "Inspection",
    "classify",
    "debug_dump",
    "find_cells",
    "inspect_cell",
]


class Health(enum.Enum):
    """How a session looks from outside: a hint for operators, not a status."""

    HEALTHY = "healthy"
    STALE = "stale"
    """No message from outside for longer than ``HealthThresholds.stale_after``."""
    STUCK = "stuck"
    """Messages wait while one turn has lasted longer than ``HealthThresholds.stuck_after``."""
    ERROR_PRONE = "error_prone"
    """At least ``error_prone_restarts`` restarts within ``error_prone_within`` seconds."""


@attrs.frozen(kw_only=True)
class HealthThresholds:
    """When ``inspect`` calls a session stale, stuck or error-prone (seconds on the runtime's clock).

    .. versionadded:: 0.1
    """

    stale_after: float = 3600.0
    stuck_after: float = 30.0
    error_prone_restarts: int = 3
    error_prone_within: float = 300.0


@attrs.frozen
class Inspection:
    """What a session is doing now. Times are seconds on the runtime's clock.

    ``state`` of a session that is not active in this process is rebuilt from the store without
    activating it (``None`` if it cannot be, e.g. a corrupt log: see ``status_reason``).
    ``recent_transitions`` are those of the current incarnation (passivation lets them go).
    """

    id: str
    type: str
    status: Status
    state: Any
    version: int
    mailbox_depth: int
    restarts: int
    active: bool
    messages: int
    time_in_state: float
    age: float
    idle_for: float
    health: Health
    status_reason: Any = None
    label: str | None = None
    possible_transitions: tuple[str, ...] = ()
    recent_transitions: tuple[TransitionRecord, ...] = ()


def classify(cell: SessionCell, now: float, thresholds: HealthThresholds) -> Health:
    """The health of a session at ``now`` (most serious first: stuck, error-prone, stale)."""
    turn = cell.turn_started
    if turn is not None and cell.mailbox_depth and now - turn > thresholds.stuck_after:
        return Health.STUCK
    window = cell.restart_window
    recent = [
        t for t in (window.times if window is not None else ()) if now - t <= thresholds.error_prone_within
    ]
    if len(recent) >= thresholds.error_prone_restarts:
        return Health.ERROR_PRONE
    if not cell.status.terminal and now - cell.last_active > thresholds.stale_after:
        return Health.STALE
    return Health.HEALTHY


def inspect_cell(
    cell: SessionCell, now: float, thresholds: HealthThresholds, state: Any = None
) -> Inspection:
    """An ``Inspection`` of ``cell``; ``state`` stands in when no incarnation is live."""
    instance = cell.instance
    label: str | None = None
    possible: tuple[str, ...] = ()
    transitions = cell.cls.transitions
    if instance is not None:
        state = instance.state
    if transitions and (instance is not None or state is not None):
        label = (instance or cell.cls()).label(state)
        possible = tuple(sorted(e for (lb, e) in transitions if lb == label))
    return Inspection(
        id=cell.id,
        type=cell.cls.type_name or cell.cls.__name__,
        status=cell.status,
        state=state,
        version=cell.version,
        mailbox_depth=cell.mailbox_depth,
        restarts=cell.restarts,
        active=cell.active,
        messages=cell.messages,
        time_in_state=now - cell.status_since,
        age=now - cell.started_at,
        idle_for=now - cell.last_active,
        health=classify(cell, now, thresholds),
        status_reason=cell.status_reason,
        label=label,
        possible_transitions=possible,
        recent_transitions=records(cell.history or ()),
    )


def debug_dump(
    now: float, cells: Sequence[SessionCell], health: HealthThresholds, stats: HostStats, host: SessionHost
) -> dict[str, Any]:
    """``SessionHost.debug_dump``: the loaded sessions by status and type, one line each, the counts."""
    by_status: dict[str, int] = {}
    by_type: dict[str, int] = {}
    summaries = []
    for cell in cells:
        type_name = cell.cls.type_name or cell.cls.__name__
        by_status[cell.status.value] = by_status.get(cell.status.value, 0) + 1
        by_type[type_name] = by_type.get(type_name, 0) + 1
        summaries.append(
            {
                "id": cell.id,
                "type": type_name,
                "status": cell.status.value,
                "active": cell.active,
                "version": cell.version,
                "mailbox": cell.mailbox_depth,
                "restarts": cell.restarts,
                "messages": cell.messages,
                "idle_for": round(now - cell.last_active, 3),
                "health": inspect_cell(cell, now, health).health.value,
            }
        )
    store_stats = attrs.asdict(stats.store)
    statistics = getattr(host.store, "statistics", None)
    if callable(statistics):
        figures = statistics()
        store_stats["statistics"] = attrs.asdict(figures) if attrs.has(type(figures)) else repr(figures)
    counts = attrs.asdict(stats)
    del counts["store"], counts["outcomes"]
    return {
        "sessions": {"by_status": by_status, "by_type": by_type, "loaded": len(summaries)},
        "host": counts,
        "store": store_stats,
        "outcomes": {name: attrs.asdict(o) for name, o in stats.outcomes.items()},
        "lifecycle": {"published": host.lifecycle_hub.published, "dropped": host.lifecycle_hub.dropped},
        "summaries": summaries,
    }


def find_cells(
    cells: Iterable[SessionCell],
    now: float,
    thresholds: HealthThresholds,
    status: Status | None,
    label: str | None,
    where: Callable[[Inspection], bool] | None,
) -> list[SessionCell]:
    """The cells matching every filter given (``SessionHost.find``): live state, no store reads."""
    found = []
    for cell in cells:
        if status is not None and cell.status is not status:
            continue
        if label is not None or where is not None:
            view = inspect_cell(cell, now, thresholds)
            if label is not None and view.label != label:
                continue
            if where is not None and not where(view):
                continue
        found.append(cell)
    return found
