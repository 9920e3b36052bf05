"""Rebuilding a session's state from its store: snapshot, then the tail of its log, checked.

Used by the actor on every recovery, and on its own by whoever must read a session without
activating it (inspection of a passivated session, the command line).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs

from ._events import STATUS_EVENT, EventRegistry, decode_state
from ._exact import snapshot_type
from ._exceptions import CorruptEventLog, RecoveryFailed, UnknownEventType

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._records import Reminder, SessionRecord, StoredSession
    from ._session import Session
    from .abc import EventStore

__all__ = ["Replayed", "replay"]

logger = logging.getLogger(__name__)


@attrs.frozen
class Replayed:
    """What a replay produced.

    Attributes:
        state: the state after ``version`` events.
        version: how many events are folded into ``state``.
        replayed: how many events were read and applied (the tail after the snapshot).
        snapshot_version: the version of the snapshot used, or 0 when none was.
        snapshot_rejected: why a stored snapshot was not used ("state_version", "decode"), if so.
        record: the session's index entry, read in the same view as the log.
    """

    state: Any
    version: int
    replayed: int
    snapshot_version: int = 0
    snapshot_rejected: str | None = None
    record: SessionRecord | None = None
    """The index entry read with the log, in the same view (``None`` only if made by hand)."""
    reminders: Sequence[Reminder] | None = None
    """The session's reminders read in the same view (``None``: the store did not read them)."""


async def replay(
    store: EventStore,
    record: SessionRecord,
    session: Session[Any],
    events: EventRegistry,
    *,
    to_version: int | None = None,
    use_snapshot: bool = True,
) -> Replayed:
    """Rebuild ``session``'s state from ``store``; the instance is only used for its pure methods.

    Args:
        store: where the log and snapshots are.
        record: the session's index entry, for its args (the version its log must reach is read
            again, with the log).
        session: an instance of the session's class (``initial_state`` and ``apply`` are called).
        events: the registry that decodes stored events (with upcasters).
        to_version: stop after this version (the command line's ``replay --to``); no snapshot
            beyond it is used.
        use_snapshot: start from the latest usable snapshot rather than from the first event.

    Raises:
        CorruptEventLog: a gap or duplicate in versions, an undecodable payload, an unknown event
            type, a snapshot beyond the last event, or a log shorter ("truncated tail") or longer
            than the head the store acknowledged.
        RecoveryFailed: ``initial_state`` or ``apply`` raised.
    """
    sid = record.id
    try:
        state = session.initial_state(record.args)
    except Exception as exc:
        raise RecoveryFailed(sid, 0, exc) from exc
    # The index entry, the snapshot and the log after it, in one consistent view (issue 17: read
    # apart, another writer's append and snapshot in between looked like a corrupt log).
    view = await store.load_session(sid, after_snapshot=use_snapshot, to_version=to_version)
    return await fold(store, sid, state, session, events, view, to_version=to_version)


async def fold(
    store: EventStore,
    sid: str,
    state: Any,
    session: Session[Any],
    events: EventRegistry,
    view: StoredSession | None,
    *,
    to_version: int | None = None,
) -> Replayed:
    """The second half of :func:`replay`: fold ``view`` (read by ``load_session`` or
    ``load_sessions``) onto ``state``, the session's ``initial_state``; same checks and errors."""
    cls = type(session)
    if view is None:
        raise CorruptEventLog(sid, 0, "the session is no longer in the store's index")
    head = view.record.version
    version = 0
    snapshot_version = 0
    rejected: str | None = None
    stored_events = view.events
    snapshot = view.snapshot
    if snapshot is not None:
        if snapshot.version > head:
            raise CorruptEventLog(
                sid,
                snapshot.version,
                f"its snapshot is at version {snapshot.version}, beyond the last event ({head})",
            )
        if snapshot.state_version != cls.state_version:
            rejected = "state_version"
        elif to_version is None or snapshot.version <= to_version:
            try:
                state = decode_state(snapshot.data, snapshot_type(cls, state))
            except Exception as exc:
                logger.warning(
                    "session %r: snapshot at version %d cannot be decoded (%s); replaying the whole log",
                    sid,
                    snapshot.version,
                    exc,
                )
                rejected = "decode"
            else:
                version = snapshot_version = snapshot.version
        if version == 0:
            # The snapshot is not used: the events up to it too. They were acknowledged before
            # it was taken, so they are the same in any later view.
            before = await store.read(sid, 1, snapshot.version if to_version is None else to_version)
            stored_events = [*before, *stored_events]
    decode = events.decode
    apply = session.apply
    expected = version + 1
    for stored in stored_events:
        if stored.version != expected:
            problem = (
                f"version {stored.version} appears again (duplicate)"
                if stored.version < expected
                else f"versions {expected}..{stored.version - 1} are missing (gap)"
            )
            raise CorruptEventLog(sid, expected, problem)
        try:
            ev = decode(stored.type, stored.schema_version, stored.data)
        except UnknownEventType as exc:
            raise CorruptEventLog(sid, expected, str(exc)) from exc
        except Exception as exc:
            raise CorruptEventLog(
                sid, expected, f"payload of {stored.type!r} cannot be decoded: {exc}"
            ) from exc
        if stored.type != STATUS_EVENT:
            try:
                state = apply(state, ev)
            except Exception as exc:
                raise RecoveryFailed(sid, expected, exc) from exc
        expected += 1
    last = expected - 1
    # The log's own end against the head the store acknowledged (issue 13): a snapshot may cover
    # the lost events, so the events replayed alone cannot tell.
    end = view.log_version
    if end > head:
        raise CorruptEventLog(
            sid, head + 1, f"the log holds {end - head} events beyond the acknowledged head ({head})"
        )
    must_reach = head if to_version is None else min(to_version, head)
    if min(last, end) < must_reach:
        at = min(last, end)
        raise CorruptEventLog(
            sid,
            at + 1,
            f"truncated tail: the log ends at version {at} but the store acknowledged {head} "
            f"events (versions {at + 1}..{head} are lost)",
        )
    return Replayed(state, last, len(stored_events), snapshot_version, rejected, view.record, view.reminders)
