"""``Inspection``: a read-only look at one session, for operators and tests."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

import attrs

from ._history import TransitionRecord, records
from ._status import Status

if TYPE_CHECKING:
    from ._actor import SessionCell

__all__ = ["Health", "Inspection", "inspect_cell"]


class Health(enum.Enum):
    """How a session looks from outside: a hint for operators, not a status."""

    HEALTHY = "healthy"
    STALE = "stale"
    """No message from outside for a long time."""
    STUCK = "stuck"
    """Messages are waiting but the session has not taken one for a long time."""
    ERROR_PRONE = "error_prone"
    """It restarted often recently."""


@attrs.frozen
class Inspection:
    """What a session is doing now. Times are seconds on the runtime's clock.

    ``state`` is ``None`` when the session is not active in this process (it is not activated just
    to be looked at).
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
    possible_transitions: tuple[str, ...] = ()
    recent_transitions: tuple[TransitionRecord, ...] = ()


def inspect_cell(cell: SessionCell, now: float) -> Inspection:
    instance = cell.instance
    state = instance._state if instance is not None else None
    possible: tuple[str, ...] = ()
    transitions = cell.cls.transitions
    if instance is not None and transitions:
        label = instance.label(state)
        possible = tuple(sorted(e for (lb, e) in transitions if lb == label))
    depth = cell.mailbox_depth
    health = Health.HEALTHY
    if len(cell.restart_times or ()) >= 3:
        health = Health.ERROR_PRONE
    return Inspection(
        id=cell.id,
        type=cell.cls.type_name or cell.cls.__name__,
        status=cell.status,
        state=state,
        version=cell.version,
        mailbox_depth=depth,
        restarts=cell.restarts,
        active=cell.active,
        messages=cell.messages,
        time_in_state=now - cell.status_since,
        age=now - cell.started_at,
        idle_for=now - cell.last_active,
        health=health,
        status_reason=cell.status_reason,
        possible_transitions=possible,
        recent_transitions=records(cell.history or ()),
    )
