"""Per-session transition history: a small ring buffer of what each message did.

The actor appends one plain tuple per message (cheap on the hot path); records are built only when
someone reads them (``inspect``, ``export_history``).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from ._status import Status

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._mailbox import Envelope
    from ._session import Session

__all__ = ["HistoryConfig", "TransitionRecord", "history_json", "note_turn"]


@attrs.frozen(kw_only=True)
class HistoryConfig:
    """Whether to keep each session's recent transitions, and how many.

    .. versionadded:: 0.1
    """

    enabled: bool = True
    max_transitions: int = attrs.field(default=50, validator=attrs.validators.ge(1))


@attrs.frozen
class TransitionRecord:
    """What one message did to a session.

    Attributes:
        sequence: the session's message number in this process (from 1).
        wall_time: when handling began (``time.time()``, for display).
        kind: "call", "cast", "info" or a system message ("stop", "pause", "resume", ...).
        message_type: the message's class name.
        status_before, status_after: the session's status around the message.
        label_before, label_after: its state-machine labels (``None`` without ``transitions``).
        events: how many events the message recorded.
        duration: seconds spent handling it.
        error: the exception that ended it, as ``"Type: message"``, if any.
    """

    sequence: int
    wall_time: float
    kind: str
    message_type: str
    status_before: Status
    status_after: Status
    label_before: str | None
    label_after: str | None
    events: int
    duration: float
    error: str | None


# The raw form kept in the ring buffer: the fields of TransitionRecord, in order, except that the
# statuses are kept as their values and the start as time.perf_counter() (converted to wall time
# when read). Only strings, numbers and None: the garbage collector stops tracking such a tuple.
RawTransition = tuple[int, float, str, str, str, str, str | None, str | None, int, float, str | None]


def note_turn(
    cell: SessionCell,
    instance: Session[Any],
    env: Envelope,
    started: float,
    duration: float,
    status_before: Status,
    version_before: int,
    label_before: str | None,
    error: Exception | None,
) -> None:
    """Keep a transition record of the message just handled (a plain tuple: it is per message).

    Its fields are strings and numbers only, so that the garbage collector stops tracking it at
    its first pass (a ring of 50 per session would otherwise be walked by every full collection).
    """
    history = cell.history
    if history is None:
        if cell.status is Status.PASSIVATED:
            return  # it just passivated and let its history go: keep it that way
        history = cell.history = deque(maxlen=cell.host.history.max_transitions)
    label_after = None
    if label_before is not None:
        try:
            label_after = instance.label(instance.state)
        except Exception:
            label_after = "?"
    history.append(
        (
            cell.messages,
            started,
            env.kind._value_,
            type(env.message).__name__,
            status_before._value_,
            cell.status._value_,
            label_before,
            label_after,
            cell.version - version_before,
            duration,
            None if error is None else f"{type(error).__name__}: {error}",
        )
    )


def records(raw: Iterable[RawTransition]) -> tuple[TransitionRecord, ...]:
    # The raw start is time.perf_counter() (cheap on the hot path); wall time is worked out here.
    to_wall = time.time() - time.perf_counter()
    return tuple(
        TransitionRecord(seq, at + to_wall, kind, name, Status(s0), Status(s1), l0, l1, n, took, err)
        for seq, at, kind, name, s0, s1, l0, l1, n, took, err in raw
    )


def _jsonable(record: TransitionRecord) -> dict[str, Any]:
    data = attrs.asdict(record)
    data["status_before"] = record.status_before.value
    data["status_after"] = record.status_after.value
    return data


def history_json(session_id: str, transitions: Iterable[TransitionRecord]) -> str:
    """A session's transitions as a JSON document (``export_history``)."""
    return json.dumps(
        {"session_id": session_id, "transitions": [_jsonable(t) for t in transitions]}, indent=2
    )
