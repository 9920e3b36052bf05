"""What both SQL stores make of the rows they read: index entries, events and outcomes.

SQLite and PostgreSQL return the same columns for these (each store selects them so), so one
function per record type turns them into the runtime's records, and a JSON text is made one way for
both.
"""

from __future__ import annotations

import json
from functools import partial
from itertools import starmap
from types import MemberDescriptorType
from typing import TYPE_CHECKING, Any

import attrs

from .._records import ENDED, Outcomes, SessionRecord, StoredEvent
from .._status import Status

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = ["ORDER_BY", "dump", "events", "outcomes", "record"]

ORDER_BY = {
    ("created_at", False): " ORDER BY created_at, id",
    ("created_at", True): " ORDER BY created_at DESC, id DESC",
    ("updated_at", False): " ORDER BY updated_at, id",
    ("updated_at", True): " ORDER BY updated_at DESC, id DESC",
}
"""The ORDER BY clause of ``list(order_by=..., descending=...)``: ties broken by id."""


def dump(value: Mapping[str, Any], *, sort_keys: bool) -> str:
    """``value`` as compact JSON text (no NaN); ``TypeError``/``ValueError`` when it is not JSON."""
    return json.dumps(dict(value), sort_keys=sort_keys, separators=(",", ":"), allow_nan=False)


def record(row: tuple[Any, ...]) -> SessionRecord:
    """The index entry of a row ``id, type, status, args, metadata, version, created_at, updated_at,
    deadline, handled, status_reason, error_type`` (``args`` and ``metadata`` as JSON text)."""
    sid, type_name, status, args, metadata, *rest = row
    return SessionRecord(sid, type_name, Status(status), json.loads(args), json.loads(metadata), *rest)


_EVENT_FIELDS = ("session_id", "version", "type", "schema_version", "data", "recorded_at")


def _slot_setters() -> tuple[Callable[[object, object], None], ...] | None:
    """StoredEvent's slot setters, when filling the slots is all its ``__init__`` does.

    Replays build one StoredEvent per event, and attrs' frozen ``__init__`` (an ``object.__setattr__``
    per field) is half the cost of reading a log back (bench/README.md, issue 4). When StoredEvent is
    a plain slotted attrs class (no validators, converters, init hooks or cached hash), setting its
    slots directly makes the same object for less; otherwise (``None``) reads use ``__init__``.
    """
    try:
        fields = attrs.fields(StoredEvent)
        plain = (
            tuple(f.name for f in fields) == _EVENT_FIELDS
            and all(f.validator is None and f.converter is None for f in fields)
            and set(getattr(StoredEvent, "__slots__", ())) - {"__weakref__"} == set(_EVENT_FIELDS)
            and not hasattr(StoredEvent, "__attrs_pre_init__")
            and not hasattr(StoredEvent, "__attrs_post_init__")
            and all(isinstance(StoredEvent.__dict__.get(n), MemberDescriptorType) for n in _EVENT_FIELDS)
        )
    except (TypeError, AttributeError):  # pragma: no cover - StoredEvent changed shape
        return None
    if not plain:  # pragma: no cover - idem
        return None
    setters = tuple(StoredEvent.__dict__[n].__set__ for n in _EVENT_FIELDS)
    sample = ("s", 1, "T", 1, "{}", 1.0)
    made = object.__new__(StoredEvent)
    for setter, value in zip(setters, sample, strict=True):
        setter(made, value)
    return setters if made == StoredEvent(*sample) else None


_SETTERS = _slot_setters()


def events(session_id: str, rows: Iterable[tuple[Any, ...]]) -> list[StoredEvent]:
    """StoredEvents of ``session_id`` from ``(version, type, schema_version, data, recorded_at)`` rows."""
    if _SETTERS is None:  # StoredEvent is not plain
        return list(starmap(partial(StoredEvent, session_id), rows))
    set_session, set_version, set_type, set_schema, set_data, set_recorded = _SETTERS
    new = object.__new__
    out: list[StoredEvent] = []
    add = out.append
    for version, type_name, schema_version, data, recorded_at in rows:
        event = new(StoredEvent)
        set_session(event, session_id)
        set_version(event, version)
        set_type(event, type_name)
        set_schema(event, schema_version)
        set_data(event, data)
        set_recorded(event, recorded_at)
        add(event)
    return out


def outcomes(
    type_name: str,
    by_status: dict[str, int],
    mean: Any,
    p50: float | None,
    p95: float | None,
    events_mean: Any,
) -> Outcomes:
    """One type's :class:`Outcomes` from its counts by status and, of its ended sessions, the mean
    and nearest-rank percentiles of their durations and their mean log length (``None`` when none
    ended; the means may come as ``Decimal``)."""
    n = sum(by_status.get(status.value, 0) for status in ENDED)
    completed = by_status.get(Status.COMPLETED.value, 0)
    return Outcomes(
        type=type_name,
        by_status=by_status,
        ended=n,
        completed=completed,
        success_rate=completed / n if n else None,
        duration_mean=None if mean is None else float(mean),
        duration_p50=p50,
        duration_p95=p95,
        events_mean=None if events_mean is None else float(events_mean),
    )
