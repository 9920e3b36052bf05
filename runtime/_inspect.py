"""``Inspection``: a read-only look at one session, for operators and tests; and its ``Health``."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

import attrs

from ._history import TransitionRecord, records
from ._status import Status

if TYPE_CHECKING:
    from ._actor import SessionCell

__all__ = ["Health", "HealthThresholds", "Inspection", "classify", "inspect_cell"]


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
    recent = [t for t in cell.restart_times or () if now - t <= thresholds.error_prone_within]
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
        state = instance._state
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
