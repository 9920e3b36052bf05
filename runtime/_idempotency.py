"""Calls a client may retry: ``ref.call(message, idempotency_key="k")``.

The call's turn is staged: the events its handler records are checked and applied to the live state
at once (the handler sees them), but appended only when the handler returns, in one append together
with the reply (as JSON) under the key (``AppendExtras.reply``). The reply is sent once that append is
durable. If the handler raises, or the append fails, none of the turn's events is kept and the state is
put back as it was. A later call with a key the store still has returns the stored reply without
running the handler: after a timeout, a crash or a process restart, the client learns what happened
instead of doing it twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import attrs

from ._events import loads, to_json
from ._exceptions import SessionError, UnencodableValue, UnstorableReply, describe_value
from ._records import IdempotentReply
from ._session import NoReply

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._records import EventData
    from ._session import Session

__all__ = ["Idempotent", "Staged", "decode_reply", "encode_reply", "idempotent_call"]


@final
@attrs.frozen
class Idempotent:
    """A call's message with its idempotency key (the envelope's message)."""

    key: str
    message: object


@final
class Staged:
    """The idempotent turn in progress: its key, its events not yet appended, the state before."""

    __slots__ = ("events", "key", "state_before", "version_before")

    def __init__(self, key: str, state_before: object, version_before: int) -> None:
        self.key = key
        self.events: list[EventData] = []
        self.state_before = state_before
        self.version_before = version_before


def encode_reply(session_id: str, key: str, value: object) -> str:
    """The reply as JSON text, or ``UnstorableReply`` naming the field JSON cannot hold exactly."""
    try:
        return to_json(value, path="reply")
    except UnencodableValue as exc:
        raise UnstorableReply(
            session_id, key, exc.path, f"is {describe_value(exc.value)}: {exc.reason}"
        ) from exc


def decode_reply(text: str) -> object:
    return loads(text)


async def idempotent_call(cell: SessionCell, instance: Session[Any], call: Idempotent) -> object:
    """Answer from the stored reply, or run the handler with its events staged and append them
    with the reply (one append) before answering."""
    journal = cell.journal
    stored = await cell.host.store.load_reply(cell.id, call.key)
    if stored is not None:
        return decode_reply(stored)
    staged = cell.staged = Staged(call.key, instance._state, instance._version)
    try:
        result = await instance.handle_call(call.message)
        text = None
        if result is not NoReply:
            try:
                text = encode_reply(cell.id, call.key, result)
            except SessionError as exc:
                journal.record_error = exc
                raise
        if staged.events or text is not None:
            reply = None if text is None else IdempotentReply(call.key, text, cell.cls.idempotency_keys_kept)
            before = staged.version_before
            version = await journal.append(before, [], None, reply)
            cell.version = instance._version = version
            every = cell.cls.snapshot_every
            if every is not None and version // every != before // every:
                journal.snapshot_soon(instance)
        return result
    except BaseException:
        if staged.events:  # nothing of the call is kept: the state goes back
            instance._state = staged.state_before
            instance._version = cell.version = staged.version_before
        raise
    finally:
        cell.staged = None
