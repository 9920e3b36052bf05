"""How a session comes to run in a host: started new, or made from its index entry and activated.

A new session's index entry is kept (under its lease, when several nodes share the store) before
its first incarnation runs, from its initial state, with no recovery. A stored session gets a cell
from its index entry, inactive until a message, a resumption at start-up or a takeover activates it
(its task recovers it first). The host keeps the cells and its methods of the same names are the
public face; these make the cells, calling the host's hooks (``admit_start``, ``first_deadline``,
``note_loaded``) so that a supervisor's overrides apply.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._cell import SessionCell
from ._events import check_value
from ._exceptions import SessionExists, ShuttingDown, UnencodableValue, UnknownSessionType
from ._ids import check_session_id
from ._records import SessionRecord
from ._status import Status

if TYPE_CHECKING:
    from ._host import SessionHost
    from ._ref import SessionRef
    from ._session import Session

__all__ = ["activate", "load", "resume", "start"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


async def start(
    host: SessionHost,
    cells: dict[str, SessionCell],
    cls: type[Session[Any]],
    session_id: str | None,
    args: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
) -> SessionRef:
    """See ``SessionHost.start``; ``cells`` are the host's, by id."""
    if host.closing or not host.running:
        raise ShuttingDown(session_id)
    sid = check_session_id(session_id) if session_id is not None else secrets.token_urlsafe(16)
    if sid in cells:
        raise SessionExists(sid)
    # Empty ones are shared: with 100,000 sessions two empty dicts each add up.
    args = dict(args) if args else _EMPTY
    metadata = dict(metadata) if metadata else _EMPTY
    for path, value in (("args", args), ("metadata", metadata)):
        try:
            check_value(value, path)
        except UnencodableValue as exc:
            raise UnencodableValue(exc.path, exc.value, exc.reason, session_id=sid) from None
    type_name = host.register_type(cls)
    await host.admit_start(sid)
    first = cls()
    state = first.initial_state(args)  # bad args fail the start, before anything is kept

    def refuse_taken() -> None:
        if sid in cells:
            raise SessionExists(sid)

    async with host.leases.starting(sid, refuse_taken):
        await _create(host, sid, type_name, args, metadata)
        if sid in cells:  # the store accepted it, so only a racing load could have added it
            raise SessionExists(sid)
        cell = SessionCell(host, sid, cls, args, metadata, Status.RUNNING)
        cell.journal.adopt(first, state, 0)
        cells[sid] = cell
        cell.activate(first)
        host.statuses.started(cell)
        return cell.ref


async def _create(
    host: SessionHost, sid: str, type_name: str, args: Mapping[str, Any], metadata: Mapping[str, Any]
) -> None:
    """Keep a new session in the store; with a node, give its lease back if that fails."""
    deadline = host.first_deadline(host.wall())
    try:
        await host.store.create(
            SessionRecord(sid, type_name, Status.RUNNING, args, metadata, deadline=deadline)
        )
    except BaseException:
        await host.leases.release(sid)
        raise


def load(
    host: SessionHost,
    cells: dict[str, SessionCell],
    types: Mapping[str, type[Session[Any]]],
    record: SessionRecord,
) -> SessionCell:
    """See ``SessionHost.load``; ``cells`` and ``types`` are the host's, by id and by type name."""
    session_id = record.id
    cell = cells.get(session_id)  # loaded meanwhile by another task?
    if cell is not None:
        return cell
    cls = types.get(record.type)
    if cls is None:
        raise UnknownSessionType(session_id, record.type)
    status = record.status
    if status is Status.RUNNING:
        status = Status.PASSIVATED  # stored by an earlier process: activated on demand
    cell = SessionCell(host, session_id, cls, record.args, record.metadata, status, record.version)
    cell.status_reason = record.status_reason  # why it FAILED, if the index was told (issue 13)
    cell.messages = cell.handled_stored = record.handled
    # Ages count from the session's creation, even across processes (wall clock to ours).
    cell.started_at -= max(0.0, time.time() - record.created_at)
    if status.terminal:
        cell.status_since -= max(0.0, time.time() - record.updated_at)
    cells[session_id] = cell
    host.note_loaded(cell)
    return cell


def resume(host: SessionHost, record: SessionRecord) -> bool:
    """See ``SessionHost.resume``."""
    if host.closing or not host.running:
        return False
    cell = host.load(record)
    if cell.active or cell.status is not Status.PASSIVATED:
        return False
    cell.resuming = True
    host.statuses.take(cell, Status.RUNNING, "resumed")
    cell.activate()
    host.metrics.resumed(cell.cls.type_name or cell.cls.__name__)
    return True


async def activate(host: SessionHost, session_id: str) -> SessionRef:
    """See ``SessionHost.activate``."""
    cell = await host.cell(session_id)
    if cell.status is Status.PASSIVATED:
        host.statuses.take(cell, Status.RUNNING, "activated")
    elif cell.status.terminal:
        raise cell.refusal()
    if not cell.active:
        cell.activate()
    return cell.ref
